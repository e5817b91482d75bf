//! `POST /v1/chat/completions`: one request context ([`Call`]) through named phases.
//!
//! - **resolve**: parse and check the body, find the model group;
//! - per attempt: **pick** a deployment (the router), check the prompt fits its context window
//!   (**preflight**, where context-window fallbacks exist), **admit** it (bulkhead queue, rpm/tpm),
//!   **prepare** the upstream request (its provider file; once per deployment), **exchange**
//!   (send, read the head), **answer** (a whole body, or the stream relay), **record** the
//!   outcome in the shard's view of the deployment;
//! - after a failed attempt, the router's **next step**: retry in the group (at once on
//!   another deployment, after a backoff on the same one), fall back to another group, or
//!   fail — rendered in one place ([`super::failure::render`]);
//! - **finish**: metrics and the access log, with every attempt.
//!
//! Nothing reaches the client before an attempt's answer begins, so every failure before that
//! can be retried; a stream is retried only before its first byte.

mod admit;
mod cache;
mod call;
mod headers;
mod key_limits;
mod preflight;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

pub use self::cache::MAX_CACHED_BYTES;

use self::admit::Picked;
use self::call::{AttemptEnd, PreparedCache};
use self::headers::RouteHeaders;
use super::failure;
use super::relay::{RelayOutcome, LARGE_BUFFER};
use super::GatewayShard;
use crate::api::{ApiError, ChatRequestView};
use crate::config::{Deployment, Snapshot};
use crate::http1::{Request, ResponseWriter, ServerIo};
use crate::keys::db::SpendRow;
use crate::keys::shard::Caller;
use crate::router::policy::{next_step, Progress};
use crate::router::{strategy, DeploymentState, Failure, FailureClass, HealthChange, NextStep};
use crate::telemetry::metrics::RequestRecord;
use crate::telemetry::otel::{self, AnswerReport, AttemptReport, RequestReport, RequestSpans};
use crate::telemetry::redact::redact_str;
use crate::telemetry::trace_context::TraceContext;

/// One attempt, for the access log and the response headers.
pub struct Attempt<'r> {
    /// Borrowed from the request's snapshot: a clone would write the reference count that
    /// every shard shares.
    pub deployment: &'r Arc<Deployment>,
    /// The status the attempt ended with (the upstream's, or the gateway's for a failure it
    /// saw itself).
    pub status: u16,
    pub class: Option<FailureClass>,
    pub ms: u64,
}

/// The request's context: what every phase reads, and what they leave for the next.
pub struct Call<'r> {
    pub gw: &'r GatewayShard,
    pub snap: &'r Arc<Snapshot>,
    pub req: &'r Request,
    pub view: ChatRequestView,
    /// The client's body's tree, built the first time something reads it (most requests go
    /// upstream as their bytes, and nothing does): see [`Call::body`].
    tree: std::cell::OnceCell<serde_json::Value>,
    /// The OpenAI request fields at the body's top level, bit per id (`dsl::schema`).
    pub body_fields: u64,
    /// Where the top-level members of the bytes that go upstream are, when the check noted it
    /// for exactly those bytes (not when the gateway took its own members out).
    body_members: Option<crate::json::TopMembers>,
    /// The client's body bytes without the gateway's own members (`cache`), when it had any.
    pub raw_override: Option<Vec<u8>>,
    pub started: Instant,
    /// When the current attempt started (its client span's start).
    pub attempt_started: Instant,
    /// When the answering attempt ended, if nothing was awaited since: the request's end for
    /// its duration (one clock read less).
    answered_at: Option<Instant>,
    pub attempts: Vec<Attempt<'r>>,
    /// Attempts made in the current group.
    pub in_group: u32,
    /// Fallback groups entered, in order (the requested group is `view.model`): empty, and
    /// without an allocation, for most requests.
    pub fallbacks: Vec<String>,
    /// Retries so far (attempts after a failed one in the same group).
    pub retries: u32,
    /// What the answer was, for metrics and the log.
    pub out: RelayOutcome,
    pub upstream_secs: Option<f64>,
    /// When the current attempt's upstream exchange ended, if nothing was awaited since:
    /// the attempt's end for its record (one clock read less).
    attempt_ended: Option<Instant>,
    /// The client's trace continued (W3C `traceparent`), or a new one.
    pub trace: TraceContext,
    /// The request's spans, when tracing is on and this trace is sampled.
    pub spans: Option<Box<RequestSpans>>,
    /// Who is calling (the key whose budget and spend this request counts against).
    pub caller: &'r Caller,
    /// What the response cache does for this request, when it is on.
    pub cache: Option<cache::CachePlan>,
    /// The answer came from the response cache.
    pub cache_hit: bool,
    /// The model group answers name (`llmux.response_model: requested`, the default).
    pub response_model: Option<crate::gateway::response_model::ResponseModel>,
}

pub async fn chat_completions<IO: ServerIo>(
    gw: &GatewayShard,
    snap: &Arc<Snapshot>,
    req: &Request,
    caller: &Caller,
    w: &mut ResponseWriter<'_, IO>,
) {
    let started = Instant::now();
    // resolve
    let max_depth = snap.server.max_json_depth;
    let checked = if snap.check_without_tree {
        ChatRequestView::check(&req.body, max_depth)
    } else {
        ChatRequestView::check_with_tree(&req.body, max_depth)
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(e) => {
            let _ = w.send_error(&e).await;
            return;
        }
    };
    let view = checked.view;
    let body_fields = checked.fields;
    let mut tree = checked.tree;
    let (cache_controls, raw_override) = if checked.has_cache {
        // The gateway's own member: taken out of the tree and of the bytes that go upstream.
        let mut body = match tree.take() {
            Some(t) => t,
            None => match ChatRequestView::parse(&req.body, max_depth) {
                Ok((_, t)) => t,
                Err(e) => {
                    let _ = w.send_error(&e).await;
                    return;
                }
            },
        };
        let taken = cache::take_body_controls(&mut body, &req.body);
        tree = Some(body);
        match taken {
            Ok(Some((c, raw))) => (Some(c), Some(raw)),
            Ok(None) => (None, None),
            Err(e) => {
                let _ = w.send_error(&e).await;
                return;
            }
        }
    } else {
        (None, None)
    };
    let tree = tree.map_or_else(std::cell::OnceCell::new, std::cell::OnceCell::from);
    let body_members = checked.members.filter(|_| raw_override.is_none());
    let Some(group) = snap.group(&view.model) else {
        let _ = w.send_error(&ApiError::model_not_found(&view.model)).await;
        return;
    };
    // The key's checks, in LiteLLM's order, now that the model is known.
    if let Caller::Key(key) = caller {
        let providers: Vec<&str> = group
            .deployments
            .iter()
            .map(|d| d.provider.as_str())
            .collect();
        if let Err(refusal) = key.check(&view.model, &providers, crate::util::unix_ms() as i64) {
            let _ = w
                .send_error(&refusal.to_error(snap.keys.budget_status))
                .await;
            return;
        }
    }
    // The key's own limits (rpm, tpm, parallel requests), held until the request ends.
    let key_admission = match caller {
        Caller::Key(key) => match key_limits::admit(gw, key, req.body.len()).await {
            Ok(a) => Some((key, a)),
            Err(limited) => {
                let retry_after = limited.retry_after_secs.to_string();
                let _ = w
                    .send(
                        limited.error.status(),
                        "application/json",
                        &[("retry-after", retry_after.as_str())],
                        &limited.error.to_json(),
                    )
                    .await;
                return;
            }
        },
        _ => None,
    };
    let cache = cache::CachePlan::new(
        snap.keys.cache.as_ref(),
        caller,
        req,
        raw_override.as_deref().unwrap_or(&req.body),
        cache_controls.as_ref(),
        &view.model,
    );
    let hit = match &cache {
        Some(plan) => plan.get().await,
        None => None,
    };
    let mut trace = TraceContext::from_request(req.header("traceparent").map(str::as_bytes));
    let spans = if snap.tracing.enabled {
        let sampled = otel::sampled(snap.tracing.sampling_ratio, &trace);
        // The decision travels on in the `traceparent` sent upstream.
        trace.flags = (trace.flags & !1) | u8::from(sampled);
        sampled.then(|| {
            gw.spans
                .fit_queue(snap.tracing.max_queue_spans, snap.tracing.max_export_batch);
            let raw = raw_override.as_deref().unwrap_or(&req.body);
            let body = crate::json::LazyDoc::new(raw, &tree, max_depth);
            Box::new(RequestSpans::begin(
                &trace,
                view.stream,
                body.tree(),
                started,
            ))
        })
    } else {
        None
    };
    let response_model = snap
        .response_model_requested
        .then(|| crate::gateway::response_model::ResponseModel::new(&view.model));
    let mut call = Call {
        gw,
        snap,
        req,
        in_group: 0,
        fallbacks: Vec::new(),
        view,
        tree,
        body_fields,
        body_members,
        raw_override,
        started,
        attempt_started: started,
        answered_at: None,
        // Most requests make one attempt: allocated at its size, not grown from nothing.
        attempts: Vec::with_capacity(1),
        retries: 0,
        out: RelayOutcome::default(),
        upstream_secs: None,
        attempt_ended: None,
        trace,
        spans,
        caller,
        response_model,
        cache,
        cache_hit: false,
    };
    if let Some(body) = hit {
        call.serve_cached(&body, w).await;
        call.finish(w);
        drop(key_admission);
        return;
    }
    call.run(w).await;
    if let Some(dep) = call
        .attempts
        .last()
        .map(|a| a.deployment)
        .filter(|_| call.out.ttft_secs.is_some() && call.out.usage.is_empty())
    {
        // A stream went out and no usage came with it (cut, client gone, none sent).
        call.answered_at = None;
        call.estimate_usage(dep).await;
    }
    if let Some((key, admitted)) = &key_admission {
        let actual = call.out.usage.prompt + call.out.usage.completion;
        if key.record.tpm_limit.is_some() && actual > 0 {
            gw.router.limiter.correct(
                &key.limiter_id,
                admitted.estimated_tokens,
                actual,
                gw.router.now(),
            );
        }
    }
    call.finish(w);
    drop(key_admission);
}

impl<'r> Call<'r> {
    /// The attempt loop: until an answer began, or the router says fail.
    async fn run<IO: ServerIo>(&mut self, w: &mut ResponseWriter<'_, IO>) {
        let snap = self.snap;
        let router = &self.gw.router;
        let settings = &snap.router;
        let mut prepared = PreparedCache::default();
        // Deployments of the current group tried, and held back at their limits (bit per index).
        let mut tried: u64 = 0;
        let mut held_back: u64 = 0;
        // The last failure an upstream (or the gateway) returned: the answer if the group then
        // has no deployment left to try.
        let mut last: Option<Failure> = None;
        loop {
            let current = self.progress().current();
            let picked = match snap.group(current) {
                Some(group) => admit::pick(self, group, tried),
                // A fallback group that is not in the config (warned about at load).
                None => Picked::Unavailable(failure::unavailable(
                    current,
                    "the model group is not configured",
                    1_000,
                    503,
                )),
            };
            let (group, view, index, probe) = match picked {
                Picked::Deployment {
                    group,
                    view,
                    index,
                    probe,
                } => (group, view, index, probe),
                Picked::Unavailable(f) => {
                    // Nothing to try in this group: its fallbacks, if any, else the last real
                    // failure (more telling than "none available") or this one.
                    let f = last.take().unwrap_or(f);
                    match self.decide(&f, 0, false) {
                        NextStep::Fallback { group } => {
                            self.fall_back(group);
                            (tried, held_back) = (0, 0);
                            continue;
                        }
                        _ => return self.fail(w, &f).await,
                    }
                }
            };
            let dep: &'r Arc<Deployment> = &group.deployments[index];
            let bit = 1u64 << index.min(63);
            if held_back & bit != 0 {
                // Every deployment that could take the request is held back at its limits.
                let f = last.take().unwrap_or_else(|| {
                    failure::held_back(&dep.id, "is at its limits", Some(1_000))
                });
                match self.decide(&f, 0, false) {
                    NextStep::Fallback { group } => {
                        self.fall_back(group);
                        (tried, held_back) = (0, 0);
                        continue;
                    }
                    _ => return self.fail(w, &f).await,
                }
            }
            tried |= bit;
            // A prompt that cannot fit this deployment's context window is not sent: another
            // deployment of the group, or the context-window fallbacks, get it.
            if let Some(f) = preflight::check(self, dep).await {
                tracing::debug!(
                    request_id = %self.req.request_id,
                    trace_id = %self.trace.trace_id_hex(),
                    deployment = %dep.id,
                    "prompt longer than the deployment's context window: not sent"
                );
                // Held back like a deployment at its limits: the group's others are tried,
                // and when none is left, the router decides on this failure (the
                // context-window fallbacks).
                held_back |= bit;
                last = Some(f);
                continue;
            }
            // admit
            let admitted = match admit::admit(self, dep, w).await {
                Ok(a) => a,
                Err(f) if f.class == FailureClass::Cancelled => return self.cancelled(w),
                Err(f) => {
                    held_back |= bit;
                    last = Some(f);
                    continue;
                }
            };
            // prepare, exchange, answer
            let state = view.states[index].clone();
            let in_flight = InFlight::begin(self, dep, &state, admitted.estimated_tokens, probe);
            let headers = RouteHeaders::new(self, dep);
            self.attempt_started = Instant::now();
            let end = call::attempt(self, dep, &headers, &mut prepared, w).await;
            drop(in_flight);
            let estimated_tokens = admitted.estimated_tokens;
            drop(admitted);
            // record
            let ended = self.attempt_ended.take().unwrap_or_else(Instant::now);
            let elapsed = ended.saturating_duration_since(self.attempt_started);
            let class = match &end {
                AttemptEnd::Answered => self.out.failure,
                AttemptEnd::Failed(f) => Some(f.class),
            };
            let status = match &end {
                AttemptEnd::Answered => self.out.status.max(w.status().map_or(0, |s| s.as_u16())),
                AttemptEnd::Failed(f) => f.status,
            };
            self.record(
                dep,
                &state,
                group.deployments.len(),
                &Outcome {
                    class,
                    probe,
                    elapsed,
                    estimated_tokens,
                },
            );
            self.attempts.push(Attempt {
                deployment: dep,
                status,
                class,
                ms: elapsed.as_millis() as u64,
            });
            let f = match end {
                // The answering attempt's span ends with the request (`finish`), once its
                // usage is known.
                AttemptEnd::Answered => {
                    self.answered_at = Some(ended);
                    return;
                }
                AttemptEnd::Failed(f) => f,
            };
            if let Some(spans) = self.spans.as_deref_mut() {
                spans.attempt_ended(
                    &self.gw.spans,
                    &AttemptReport {
                        deployment: trace_attributes(self.snap, dep),
                        upstream_model: &dep.upstream_model,
                        status,
                        error_type: Some(f.class.as_str()),
                        answer: None,
                        ended,
                    },
                );
            }
            if f.class == FailureClass::Cancelled {
                return self.cancelled(w);
            }
            // next step
            self.in_group += 1;
            let retries = dep.spec.max_retries.unwrap_or(settings.retry.num_retries);
            let same = !strategy::others_available(settings, &*view, index, router.now());
            match self.decide(&f, retries, same) {
                NextStep::Retry { delay_ms } => {
                    self.retries += 1;
                    self.gw.metrics.retry(&group.name);
                    if delay_ms > 0 && !self.wait(w, delay_ms).await {
                        return self.cancelled(w);
                    }
                    last = Some(f);
                }
                NextStep::Fallback { group } => {
                    self.fall_back(group);
                    (tried, held_back) = (0, 0);
                    last = Some(f);
                }
                NextStep::Fail => return self.fail(w, &f).await,
            }
        }
    }

    /// The router's next step after `f`. `retries` are those allowed in the group (0: only a
    /// fallback may follow).
    fn decide(&self, f: &Failure, retries: u32, same_deployment: bool) -> NextStep {
        let mut progress = self.progress();
        if retries == 0 {
            progress.in_group = progress.in_group.max(1);
        }
        let mut rand = self.gw.router.rand.borrow_mut();
        next_step(
            &self.snap.router,
            f,
            &progress,
            retries,
            same_deployment,
            &mut *rand,
        )
    }

    fn fall_back(&mut self, group: String) {
        let from = self.progress().current();
        self.gw.metrics.fallback(from, &group);
        tracing::debug!(
            request_id = %self.req.request_id,
            trace_id = %self.trace.trace_id_hex(),
            from,
            to = %group,
            "falling back to another model group"
        );
        self.fallbacks.push(group);
        self.in_group = 0;
    }

    /// Waits `ms` before a retry; false when the client went away meanwhile.
    async fn wait<IO: ServerIo>(&self, w: &mut ResponseWriter<'_, IO>, ms: u64) -> bool {
        let sleep = monoio::time::sleep(std::time::Duration::from_millis(ms));
        match w.disconnect_watch() {
            Some(watch) => monoio::select! {
                _ = sleep => true,
                _ = watch.closed() => false,
            },
            None => {
                sleep.await;
                true
            }
        }
    }

    /// Counts the prompt and the completion text relayed so far, for an answer whose provider
    /// reported no usage, so that spend is never silently zero. Marked as estimated.
    pub(super) async fn estimate_usage(&mut self, dep: &Deployment) {
        use crate::usage::tokens::{self, Encoding};
        let (encoding, _) = Encoding::for_model(&dep.tokenizer_model);
        let prompt = tokens::prompt_tokens(self.body(), encoding).await;
        let collected = std::mem::take(&mut self.out.completion);
        let completion = if collected.is_empty() {
            // The text was not kept (usage was asked for and did not come: the stream was
            // cut): a streamed chunk carries about one token.
            self.out.events
        } else {
            let (text, overflow) = collected.into_parts();
            tokens::count(text, encoding).await.tokens + tokens::Count::estimate(overflow).tokens
        };
        self.out.usage = crate::usage::Usage {
            prompt: prompt.tokens,
            completion,
            estimated: true,
            ..Default::default()
        };
    }

    /// Records an attempt's outcome in the shard's view of the deployment and in the metrics.
    fn record(
        &self,
        dep: &Arc<Deployment>,
        state: &DeploymentState,
        group_size: usize,
        o: &Outcome,
    ) {
        let Outcome {
            class,
            probe,
            elapsed,
            estimated_tokens,
        } = *o;
        let router = &self.gw.router;
        let now = router.now();
        let changes = router.record(self.snap, state, group_size, class, probe);
        if class.is_none() {
            let ttft = self.out.ttft_secs.map(|t| t * 1000.0);
            state.observe_latency(elapsed.as_secs_f64() * 1000.0, ttft);
        }
        let actual = self.out.usage.prompt + self.out.usage.completion;
        if (dep.spec.rpm.is_some() || dep.spec.tpm.is_some()) && self.snap.keys.redis.is_some() {
            let tokens = if class.is_none() { actual } else { 0 };
            let began = now.saturating_sub(elapsed.as_millis() as u64);
            self.gw.keys.record_deployment(&dep.id, began, tokens);
        }
        if class.is_none() && actual > 0 {
            state.correct_tokens(now, estimated_tokens, actual);
            if dep.spec.tpm.is_some() {
                router
                    .limiter
                    .correct(&dep.key, estimated_tokens, actual, now);
            }
        }
        self.gw.metrics.routing(dep, |h| {
            if let Some(c) = class {
                h.failure(c);
            }
            h.state
                .set(i64::from(crate::router::health::state_code(state, now)));
            for c in &changes {
                match c {
                    HealthChange::CooledDown { .. } => h.cooldowns.inc(),
                    HealthChange::BreakerOpened { .. } => h.breaker(0),
                    HealthChange::BreakerHalfOpen => h.breaker(1),
                    HealthChange::BreakerClosed => h.breaker(2),
                }
            }
        });
        for c in changes {
            if let (HealthChange::CooledDown { until }, Some(class)) = (&c, class) {
                share_cooldown(self.snap, dep, until.saturating_sub(now), class);
            }
            log_change(dep, c, now, &self.req.request_id, &self.trace);
        }
    }

    /// Answers with a failure: the one place an error leaves for the client.
    async fn fail<IO: ServerIo>(&mut self, w: &mut ResponseWriter<'_, IO>, f: &Failure) {
        let (status, body, retry_after) = failure::render(f, &self.snap.secrets);
        self.out.status = status.as_u16();
        self.out.error = Some(format!(
            "{}: {}",
            f.class.as_str(),
            crate::util::clip(&f.message)
        ));
        let mut headers = RouteHeaders::for_failure(self);
        if let Some(ra) = retry_after {
            headers.push("retry-after", ra);
        }
        let _ = w
            .send(status, "application/json", &headers.pairs(), &body)
            .await;
    }

    fn cancelled<IO: ServerIo>(&mut self, w: &mut ResponseWriter<'_, IO>) {
        self.out.status = 499;
        self.out.error = Some("client disconnected".into());
        w.abort();
    }

    /// Metrics and the access log for the whole request.
    /// Notes the end of the current attempt's upstream exchange, begun at `started`.
    pub(super) fn upstream_ended(&mut self, started: Instant) {
        let now = Instant::now();
        self.upstream_secs = Some(now.saturating_duration_since(started).as_secs_f64());
        self.attempt_ended = Some(now);
    }

    fn finish<IO: ServerIo>(mut self, w: &ResponseWriter<'_, IO>) {
        let out = &mut self.out;
        if out.large_buffers || self.req.body.len() > LARGE_BUFFER {
            crate::util::release_memory();
        }
        if out.status == 0 {
            out.status = w.status().map(|s| s.as_u16()).unwrap_or(500);
        }
        let ended = self.answered_at.unwrap_or_else(Instant::now);
        let duration = ended.saturating_duration_since(self.started).as_secs_f64();
        let answered_by = self.attempts.last().map(|a| &a.deployment);
        let price = answered_by.and_then(|d| d.price.as_ref());
        // A cached answer costs nothing.
        let cost = if self.cache_hit {
            Some(0.0)
        } else {
            price.map(|p| crate::usage::cost_usd(p, &out.usage))
        };
        if let (Some(plan), Some(bytes)) = (&self.cache, out.capture.take()) {
            if out.status == 200 && out.failure.is_none() && out.error.is_none() {
                plan.put(bytes);
            }
        }
        if let Some(dep) = answered_by {
            self.gw.metrics.record_request(&RequestRecord {
                deployment: dep,
                status: out.status,
                duration,
                upstream_duration: self.upstream_secs,
                ttft: out.ttft_secs,
                usage: out.usage,
                cost,
                failure: out.failure.or_else(|| {
                    (out.status >= 400)
                        .then(|| self.attempts.last().and_then(|a| a.class))
                        .flatten()
                }),
            });
        }
        if let Some(spans) = self.spans.take() {
            self.end_spans(*spans, cost, ended);
        }
        self.record_spend(cost, duration);
        let out = &self.out;
        // Upstream text may carry secrets (an upstream that echoes the request head).
        let error = out
            .error
            .as_deref()
            .map(|e| redact_str(e, &self.snap.secrets));
        let attempts = headers::AttemptsLog(&self.attempts);
        tracing::info!(
            target: "llmux::access",
            request_id = %self.req.request_id,
            trace_id = %self.trace.trace_id_hex(),
            model_group = %self.view.model,
            deployment = answered_by.map(|d| d.id.as_str()),
            provider = answered_by.map(|d| d.provider.as_str()),
            stream = self.view.stream,
            status = out.status,
            duration_ms = (duration * 1000.0) as u64,
            ttft_ms = out.ttft_secs.map(|t| (t * 1000.0) as u64),
            prompt_tokens = out.usage.prompt,
            completion_tokens = out.usage.completion,
            cached_tokens = (out.usage.cached > 0).then_some(out.usage.cached),
            cache_write_tokens = (out.usage.cache_write > 0).then_some(out.usage.cache_write),
            usage_estimated = out.usage.estimated.then_some(true),
            cost_usd = cost,
            cache_hit = self.cache_hit.then_some(true),
            // Never a silent 0: a deployment without a known price says so.
            cost = (answered_by.is_some() && cost.is_none()).then_some("unknown"),
            attempts = %attempts,
            fallback_group = self.fallbacks.last().map(String::as_str),
            error = error.as_deref(),
            "request"
        );
    }
}

impl Call<'_> {
    /// Ends a sampled request's spans: the answering attempt's (now that its usage is known),
    /// then the request's.
    fn end_spans(&self, mut spans: RequestSpans, cost: Option<f64>, ended: Instant) {
        static NO_META: std::sync::LazyLock<otel::ResponseMeta> =
            std::sync::LazyLock::new(Default::default);
        let out = &self.out;
        let answered = out.meta.is_some();
        let meta = out.meta.as_ref().unwrap_or(&NO_META);
        let answer = || AnswerReport {
            meta,
            usage: &out.usage,
            time_to_first_chunk: out.ttft_secs,
        };
        let last = self.attempts.last();
        if let Some(a) = last {
            spans.attempt_ended(
                &self.gw.spans,
                &AttemptReport {
                    deployment: trace_attributes(self.snap, a.deployment),
                    upstream_model: &a.deployment.upstream_model,
                    status: a.status,
                    error_type: a.class.map(|c| c.as_str()),
                    answer: answered.then(answer),
                    ended,
                },
            );
        }
        let status_text;
        let error_type = match out.failure.or_else(|| last.and_then(|a| a.class)) {
            Some(c) if out.status >= 400 || out.failure.is_some() => Some(c.as_str()),
            _ if out.status >= 400 => {
                status_text = out.status.to_string();
                Some(status_text.as_str())
            }
            _ => None,
        };
        let capture = self.snap.tracing.capture_content;
        let secrets = &self.snap.secrets;
        spans.finish(
            &self.gw.spans,
            RequestReport {
                model_group: &self.view.model,
                request_id: &self.req.request_id,
                status: out.status,
                error_type,
                cost_usd: cost,
                retries: self.retries,
                fallback_group: self.fallbacks.last().map(String::as_str),
                input_messages: capture
                    .then(|| otel::content::input_messages(self.body(), secrets))
                    .flatten(),
                output_messages: meta.output.as_deref().filter(|_| capture).map(|text| {
                    otel::content::output_messages(text, meta.reasons().next(), secrets)
                }),
                ended,
            },
        )
    }
}

impl Call<'_> {
    /// Where the request stands, for the router.
    pub fn progress(&self) -> Progress<'_> {
        Progress {
            in_group: self.in_group,
            requested: &self.view.model,
            fallbacks: &self.fallbacks,
        }
    }

    /// The client's body bytes as they go upstream (without the gateway's own members).
    pub fn raw(&self) -> &[u8] {
        self.raw_override.as_deref().unwrap_or(&self.req.body)
    }

    /// The client's body as it goes upstream: its bytes, and its tree on first use.
    pub fn doc(&self) -> crate::json::LazyDoc<'_> {
        crate::json::LazyDoc::new(self.raw(), &self.tree, self.snap.server.max_json_depth)
            .with_members(self.body_members.as_ref())
    }

    /// The client's body's tree (without the gateway's own members), parsed now if nothing
    /// has read it yet.
    pub fn body(&self) -> &serde_json::Value {
        self.doc().tree()
    }

    /// Answers from the response cache: the answer as it was sent the first time.
    async fn serve_cached<IO: ServerIo>(&mut self, body: &[u8], w: &mut ResponseWriter<'_, IO>) {
        self.cache_hit = true;
        let key = self
            .cache
            .as_ref()
            .map_or("", |c| c.key.as_str())
            .to_owned();
        let content_type = if self.view.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let headers = [
            ("x-llmux-cache-hit", "true"),
            ("x-litellm-cache-key", key.as_str()),
        ];
        let sent = w
            .send(http::StatusCode::OK, content_type, &headers, body)
            .await;
        self.out.status = if sent.is_ok() { 200 } else { 499 };
        if !self.view.stream {
            if let Some(u) = crate::usage::extract(body) {
                self.out.usage = u;
            }
        }
    }

    /// The request's spend: against the caller's key (its budget), and as a
    /// `LiteLLM_SpendLogs` row when a key database is configured.
    fn record_spend(&self, cost: Option<f64>, duration_secs: f64) {
        let keys = &self.snap.keys;
        let key = match self.caller {
            Caller::Key(k) => Some(&**k),
            _ => None,
        };
        let usd = cost.unwrap_or(0.0);
        let wants_row = keys.database_url.is_some() && keys.spend_logs;
        if key.is_none() && !wants_row {
            return;
        }
        let row = wants_row.then(|| {
            let out = &self.out;
            let dep = self.attempts.last().map(|a| &**a.deployment);
            let end_ms = crate::util::unix_ms() as i64;
            let start_ms = end_ms - (duration_secs * 1000.0) as i64;
            let failed = out.status >= 400;
            SpendRow {
                request_id: self.req.request_id.clone(),
                api_key: match self.caller {
                    Caller::Key(k) => k.record.token.clone(),
                    // LiteLLM 1.100+ writes this alias for the master key, never its hash.
                    Caller::Master => "litellm_proxy_master_key".into(),
                    Caller::Open => String::new(),
                },
                spend: if failed { 0.0 } else { usd },
                prompt_tokens: out.usage.prompt as i64,
                completion_tokens: out.usage.completion as i64,
                start_ms,
                end_ms,
                completion_start_ms: out
                    .ttft_secs
                    .map_or(end_ms, |t| start_ms + (t * 1000.0) as i64),
                model: dep.map(|d| d.upstream_model.clone()).unwrap_or_default(),
                model_id: dep.map(|d| d.id.clone()).unwrap_or_default(),
                model_group: self.view.model.clone(),
                custom_llm_provider: dep.map(|d| d.provider.clone()).unwrap_or_default(),
                api_base: dep.and_then(|d| d.api_base.clone()).unwrap_or_default(),
                user: key.and_then(|k| k.record.user_id.clone()),
                team_id: key.and_then(|k| k.record.team.as_ref().map(|t| t.team_id.clone())),
                key_alias: key.and_then(|k| k.record.key_alias.clone()),
                session_id: self.trace.trace_id_hex(),
                cache_hit: self.cache_hit,
                cache_key: self.cache.as_ref().map(|c| c.key.clone()),
                status: if failed { "failure" } else { "success" },
                error: out
                    .error
                    .as_deref()
                    .map(|e| redact_str(e, &self.snap.secrets).into_owned()),
            }
        });
        let tokens = self.out.usage.prompt + self.out.usage.completion;
        self.gw.keys.record(key, usd, tokens, row);
    }
}

/// `gen_ai.provider.name` for a deployment: its provider file's name for it.
fn genai_provider<'s>(snap: &'s Snapshot, dep: &'s Deployment) -> &'s str {
    snap.providers
        .get(&dep.provider)
        .map_or(dep.provider.as_str(), |p| p.genai_name())
}

/// The deployment's own client-span attributes, written when it is first traced.
fn trace_attributes<'s>(snap: &Snapshot, dep: &'s Deployment) -> &'s otel::Attributes {
    dep.trace_attributes.get_or_init(|| {
        otel::record::deployment_attributes(&dep.id, genai_provider(snap, dep), &dep.upstream_model)
    })
}

/// How one attempt went, for the record phase.
#[derive(Clone, Copy)]
struct Outcome {
    /// `None`: a success.
    class: Option<FailureClass>,
    /// It was one of a half-open breaker's probes.
    probe: bool,
    elapsed: std::time::Duration,
    /// The tokens charged to `tpm` up front.
    estimated_tokens: u64,
}

/// An attempt in flight on a deployment, counted in the shard's view and the metrics until it
/// ends (also when the request's future is dropped).
struct InFlight {
    state: Rc<DeploymentState>,
    gauge: crate::telemetry::shard_series::IntGauge,
}

impl InFlight {
    fn begin(
        call: &Call<'_>,
        dep: &Arc<Deployment>,
        state: &Rc<DeploymentState>,
        estimated_tokens: u64,
        probe: bool,
    ) -> Self {
        let router = &call.gw.router;
        let state = state.clone();
        state.begin(router.now(), estimated_tokens);
        if probe {
            state.probe_started();
        }
        // The shard's gauge follows the shard's own count of the deployment's calls: stores,
        // not locked increments.
        let gauge = call.gw.metrics.routing(dep, |h| {
            h.attempts.inc();
            h.in_flight.set(i64::from(state.in_flight()));
            h.in_flight.clone()
        });
        Self { state, gauge }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.end();
        self.gauge.set(i64::from(self.state.in_flight()));
    }
}

/// A cooldown goes to the other gateways through Redis (LiteLLM's `deployment:<id>:cooldown`),
/// when there is one.
fn share_cooldown(snap: &Snapshot, dep: &Deployment, ms: u64, class: FailureClass) {
    if snap.keys.redis.is_none() {
        return;
    }
    let Some(tx) = crate::keys::control::sender() else {
        return;
    };
    let status = match class {
        FailureClass::RateLimit => 429,
        FailureClass::Timeout => 408,
        FailureClass::Authentication => 401,
        FailureClass::PermissionDenied => 403,
        FailureClass::NotFound => 404,
        FailureClass::BadGateway => 502,
        FailureClass::ServiceUnavailable => 503,
        _ => 500,
    };
    let _ = tx.send(crate::keys::control::KeyMsg::Cooldown {
        deployment: dep.id.clone(),
        secs: ms as f64 / 1000.0,
        status,
        reason: class.as_str().to_owned(),
    });
}

/// A deployment's health changed during a request: logged with the request that saw it.
fn log_change(dep: &Deployment, c: HealthChange, now: u64, request_id: &str, trace: &TraceContext) {
    let trace_id = trace.trace_id_hex();
    match c {
        HealthChange::CooledDown { until } => tracing::warn!(
            request_id = %request_id,
            trace_id = %trace_id,
            model_group = %dep.group,
            deployment = %dep.id,
            cooldown_ms = until.saturating_sub(now),
            "deployment cooling down"
        ),
        HealthChange::BreakerOpened { until } => tracing::warn!(
            request_id = %request_id,
            trace_id = %trace_id,
            model_group = %dep.group,
            deployment = %dep.id,
            open_ms = until.saturating_sub(now),
            "circuit breaker opened"
        ),
        HealthChange::BreakerHalfOpen => tracing::info!(
            request_id = %request_id,
            trace_id = %trace_id,
            model_group = %dep.group,
            deployment = %dep.id,
            "circuit breaker half-open: probing"
        ),
        HealthChange::BreakerClosed => tracing::info!(
            request_id = %request_id,
            trace_id = %trace_id,
            model_group = %dep.group,
            deployment = %dep.id,
            "circuit breaker closed"
        ),
    }
}
