//! One attempt on one deployment: prepare the upstream request (once per deployment), exchange
//! it, and answer — a whole body, or the stream relay. A failure before the answer began comes
//! back as a [`Failure`] for the router to decide on.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::headers::RouteHeaders;
use super::Call;
use crate::api::{ApiError, ErrorKind};
use crate::config::Deployment;
use crate::dsl::{FetchImages, Framing, Provider};
use crate::gateway::adapter::{prepare, PreparedRequest};
use crate::gateway::failure;
use crate::gateway::media;
use crate::gateway::relay::{relay_identity_stream, relay_mapped_stream, RelayCtx, LARGE_BUFFER};
use crate::http1::{ResponseWriter, ServerIo};
use crate::router::Failure;
use crate::upstream::{Timeouts, UpstreamRequest, UpstreamResponse};
use crate::usage;
use crate::util::{boxed_in_place, clip};

/// How an attempt ended.
pub enum AttemptEnd {
    /// The answer went to the client (what followed, a cut stream say, is in `Call::out`).
    Answered,
    /// Nothing went to the client.
    Failed(Failure),
}

/// Upstream requests built during this request, by deployment: a retry on the same
/// deployment sends the same bytes without translating again. The client's body with remote
/// images inlined is kept too, per fetch policy (fetched once).
pub struct PreparedCache<'r> {
    built: Vec<(&'r Arc<Deployment>, PreparedRequest<'r>)>,
    inlined: Option<(FetchImages, std::cell::OnceCell<serde_json::Value>, Vec<u8>)>,
}

impl Default for PreparedCache<'_> {
    fn default() -> Self {
        Self {
            // Most requests build one: allocated at its size, not grown from nothing.
            built: Vec::with_capacity(1),
            inlined: None,
        }
    }
}

/// The prepare phase: the upstream request for `dep`, from the cache or built now.
async fn prepared<'c, 'r>(
    call: &Call<'r>,
    provider: &Provider,
    dep: &'r Arc<Deployment>,
    cache: &'c mut PreparedCache<'r>,
) -> Result<&'c PreparedRequest<'r>, Failure> {
    if let Some(i) = cache.built.iter().position(|(d, _)| Arc::ptr_eq(d, dep)) {
        return Ok(&cache.built[i].1);
    }
    let policy = provider.fetch_images();
    // Image URLs the provider cannot take by reference are fetched here, before translation.
    // Boxed: a rarely-taken path should not grow every request's future.
    if policy != FetchImages::None && cache.inlined.as_ref().is_none_or(|(p, ..)| *p != policy) {
        let mut body = call.body().clone();
        let fetched = Box::pin(media::inline_images(
            &mut body,
            policy,
            &call.gw.upstream,
            &call.snap.upstream,
            &call.snap.media,
        ))
        .await
        .map_err(Failure::from)?;
        let raw = if fetched {
            serde_json::to_vec(&body).unwrap_or_default()
        } else {
            call.raw().to_vec()
        };
        cache.inlined = Some((policy, std::cell::OnceCell::from(body), raw));
    }
    let doc = match &cache.inlined {
        Some((p, body, raw)) if *p == policy && policy != FetchImages::None => {
            crate::json::LazyDoc::new(raw, body, call.snap.server.max_json_depth)
        }
        _ => call.doc(),
    };
    let built = prepare(
        provider,
        dep,
        &call.view,
        &doc,
        call.body_fields,
        &call.req.request_id,
    )?;
    cache.built.push((dep, built));
    Ok(&cache.built[cache.built.len() - 1].1)
}

/// Runs one attempt on `dep`.
pub async fn attempt<'r, IO: ServerIo>(
    call: &mut Call<'r>,
    dep: &'r Arc<Deployment>,
    headers: &RouteHeaders<'_>,
    cache: &mut PreparedCache<'r>,
    w: &mut ResponseWriter<'_, IO>,
) -> AttemptEnd {
    let snap = call.snap;
    let Some(provider) = snap.providers.get(&dep.provider) else {
        // The config loader only accepts deployments whose provider file exists.
        return AttemptEnd::Failed(Failure::from(ApiError::new(
            ErrorKind::Internal,
            format!("Provider `{}` is not loaded.", dep.provider),
        )));
    };
    let prepared = match prepared(call, provider, dep, cache).await {
        Ok(p) => p,
        Err(f) => return AttemptEnd::Failed(f),
    };
    // Cloud credentials go on per attempt: a signature is dated, and a token may be renewed.
    let cloud_auth = match crate::gateway::cloud_auth::headers(dep, provider, prepared).await {
        Ok(h) => h,
        Err(f) => return AttemptEnd::Failed(f),
    };
    // exchange
    // Room for the request id, the trace context and its state too: pushed onto a vector
    // collected to size, each grew it (a reallocation and a copy apiece).
    let mut up_headers: Vec<(&str, &str)> =
        Vec::with_capacity(prepared.headers.len() + cloud_auth.len() + 3);
    up_headers.extend(prepared.headers.iter().map(|(k, v)| (&**k, &**v)));
    up_headers.extend(cloud_auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    up_headers.push(("x-request-id", call.req.request_id.as_str()));
    // The trace goes on to the provider, in this attempt's own span.
    let span_id = crate::telemetry::trace_context::new_span_id();
    if let Some(spans) = call.spans.as_deref_mut() {
        spans.attempt_started(
            span_id,
            prepared.url.host(),
            prepared.url.port(),
            call.attempt_started,
        );
    }
    let traceparent = call.trace.traceparent_for(span_id);
    up_headers.push(("traceparent", traceparent.as_str()));
    // `tracestate` belongs to the client's trace: only with a `traceparent` that was valid.
    if let Some(state) = call
        .req
        .header("tracestate")
        .filter(|_| call.trace.parent_span_id.is_some())
        .and_then(|v| crate::telemetry::trace_context::forwardable_tracestate(v.as_bytes()))
    {
        up_headers.push(("tracestate", state));
    }
    let up_req = UpstreamRequest {
        tls: prepared.url.tls(),
        host: prepared.url.host(),
        port: prepared.url.port(),
        method: &prepared.method,
        path: prepared.url.target(),
        headers: &up_headers,
        body: &prepared.body,
        addrs: None,
    };
    // A `fake_stream` provider answers a stream request with one whole body.
    let upstream_streams = call.view.stream && !provider.fake_stream();
    let timeouts = if upstream_streams {
        Timeouts {
            first_byte: dep.stream_timeout,
            idle: dep.stream_timeout,
            total: None,
            connect: dep.connect_timeout,
            from: None,
        }
    } else {
        Timeouts {
            first_byte: dep.timeout,
            idle: dep.timeout,
            total: Some(dep.timeout),
            connect: dep.connect_timeout,
            from: None,
        }
    };
    let up_started = Instant::now();
    // The upstream client's clock starts with this read.
    let timeouts = Timeouts {
        from: Some(monoio::time::Instant::from_std(up_started)),
        ..timeouts
    };
    // Boxed: the exchange's state is needed only until the response head, and a stream lives on
    // for minutes in the request's future (thousands of them at once).
    let mut sent =
        boxed_in_place(|| call.gw.upstream.send(&up_req, &snap.upstream, timeouts)).await;
    // Borrowed where it lies: the response (a few hundred bytes) is not copied out of the
    // result and into each answer phase's future.
    let resp = match &mut sent {
        Ok(r) => r,
        Err(e) => {
            call.upstream_ended(up_started);
            return AttemptEnd::Failed(failure::from_upstream(e, &dep.id));
        }
    };
    let pairs = headers.pairs();
    let end = if resp.status.is_success() && upstream_streams {
        stream(call, dep, provider, prepared, resp, &pairs, w).await
    } else {
        whole(call, dep, provider, prepared, resp, &pairs, w).await
    };
    call.upstream_ended(up_started);
    end
}

/// The answer phase for a stream.
async fn stream<IO: ServerIo>(
    call: &mut Call<'_>,
    dep: &Deployment,
    provider: &Provider,
    prepared: &PreparedRequest<'_>,
    resp: &mut UpstreamResponse,
    headers: &[(&str, &str)],
    w: &mut ResponseWriter<'_, IO>,
) -> AttemptEnd {
    let content_type = resp.headers.get("content-type").unwrap_or_default();
    // An SSE provider that answers a stream request with anything else (a JSON completion, an
    // HTML page) has not streamed: say so instead of sending an empty stream that looks
    // complete.
    if !content_type.starts_with(b"text/event-stream")
        && (provider.stream_is_identity() || provider.framing() == Framing::Sse)
    {
        return AttemptEnd::Failed(Failure::from(ApiError::new(
            ErrorKind::BadGateway,
            format!(
                "Upstream deployment `{}` answered a stream request with `{}` instead of an event stream.",
                dep.id,
                clip(&String::from_utf8_lossy(content_type))
            ),
        )));
    }
    let snap = call.snap;
    let cx = RelayCtx {
        deployment: &dep.id,
        secrets: &snap.secrets,
        max_event_bytes: snap.upstream.max_stream_event_bytes,
        max_json_depth: snap.server.max_json_depth,
        check_json: snap.upstream.check_relayed_json,
        started: call.started,
        headers,
        drop_usage_chunk: !call.view.include_usage,
        collect_text: !provider.stream_is_identity()
            || memchr::memmem::find(&prepared.body, b"\"include_usage\":true").is_none()
            || (call.spans.is_some() && snap.tracing.capture_content),
        response_model: call.response_model.as_ref(),
    };
    if call.spans.is_some() {
        call.out.meta = Some(Default::default());
    }
    if call.cache.as_ref().is_some_and(|c| c.store) {
        call.out.capture = Some(Vec::new());
    }
    let relayed = if provider.stream_is_identity() {
        boxed_in_place(|| relay_identity_stream(w, &mut resp.body, &cx, &mut call.out)).await
    } else {
        let mut state = provider.stream_state(&prepared.ctx);
        if provider.reads_headers() {
            state.set_headers(resp.headers.to_lowercase_pairs());
        }
        boxed_in_place(|| {
            relay_mapped_stream(w, &mut resp.body, provider, &mut state, &cx, &mut call.out)
        })
        .await
    };
    match relayed {
        Ok(()) => AttemptEnd::Answered,
        Err(f) => {
            // Whatever the relay noted belongs to this attempt only (but the memory it held
            // is still to be given back at the end).
            let large_buffers = call.out.large_buffers;
            call.out = Default::default();
            call.out.large_buffers = large_buffers;
            AttemptEnd::Failed(f)
        }
    }
}

/// The answer phase for a whole body (and for any answer that is not a success).
async fn whole<IO: ServerIo>(
    call: &mut Call<'_>,
    dep: &Deployment,
    provider: &Provider,
    prepared: &PreparedRequest<'_>,
    resp: &mut UpstreamResponse,
    headers: &[(&str, &str)],
    w: &mut ResponseWriter<'_, IO>,
) -> AttemptEnd {
    let snap = call.snap;
    let status = resp.status;
    let retry_after = if status.is_success() {
        None
    } else {
        failure::retry_after_ms(&resp.headers)
    };
    let body =
        match boxed_in_place(|| resp.body.collect(snap.upstream.max_response_body_bytes)).await {
            Ok(b) => b,
            Err(e) => return AttemptEnd::Failed(failure::from_upstream(&e, &dep.id)),
        };
    call.out.large_buffers |= body.len() > LARGE_BUFFER;
    if status.is_success() && provider.response_is_identity() {
        // Relayed as it came, once it is known to be one JSON value within the bounds; the
        // check finds the members read here in the same pass.
        let checked = if snap.upstream.check_relayed_json {
            crate::json::check_structure_of::<AnswerMembers<'_>, 3>(
                &body,
                snap.server.max_json_depth,
            )
            .map(|at| AnswerMembers::at(&body, at, call.spans.is_some()))
        } else {
            Ok(AnswerMembers::find(&body))
        };
        let top = match checked {
            Ok(top) => top,
            Err(e) => {
                return AttemptEnd::Failed(Failure::from(ApiError::new(
                    ErrorKind::BadGateway,
                    format!(
                        "Upstream deployment `{}` returned an unreadable body: {}",
                        dep.id,
                        clip(&e.to_string())
                    ),
                )))
            }
        };
        read_usage(call, &body, top.usage, dep).await;
        read_meta(call, &body, &top);
        return send_answer(call, w, headers, &body, top.model, dep).await;
    }
    let upstream_headers = if provider.reads_headers() {
        resp.headers.to_lowercase_pairs()
    } else {
        Vec::new()
    };
    match provider.parse_response_with_headers(
        status.as_u16(),
        &upstream_headers,
        &body,
        &prepared.ctx,
    ) {
        Ok(completion) => {
            let body = &completion.body;
            let top = AnswerMembers::find(body);
            read_usage(call, body, top.usage, dep).await;
            read_meta(call, body, &top);
            if call.view.stream {
                send_replayed_stream(call, w, headers, body, top.model, dep).await
            } else {
                send_answer(call, w, headers, body, top.model, dep).await
            }
        }
        Err(mapped) => AttemptEnd::Failed(failure::from_mapped(&mapped, retry_after)),
    }
}

/// The top-level members of a whole answer that the gateway reads, found in one walk.
struct AnswerMembers<'a> {
    usage: Option<&'a [u8]>,
    model: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
}

impl crate::json::MemberNames<3> for AnswerMembers<'_> {
    const NAMES: [&'static [u8]; 3] = AnswerMembers::NAMES;
}

impl<'a> AnswerMembers<'a> {
    /// The members' names, in the order of the fields.
    const NAMES: [&'static [u8]; 3] = [b"usage", b"model", b"id"];

    /// Found by a walk of the members (for a body not checked, or mapped).
    fn find(body: &'a [u8]) -> Self {
        let [usage, model, id] = crate::json::members::top_level_members(body, Self::NAMES);
        Self { usage, model, id }
    }

    /// Read where a structure check found their names (`check_structure_of` with
    /// [`Self::NAMES`]). Of a repeated name the last member counts, as JSON parsers read
    /// one (the walk of [`Self::find`] takes the first of the leading scalars). `id` is read
    /// only `with_id` (only spans say it).
    fn at(body: &'a [u8], quotes: [Option<usize>; 3], with_id: bool) -> Self {
        let value = |i: usize| {
            let start =
                crate::json::members::member_value_start(body, quotes[i]?, Self::NAMES[i].len())?;
            Some(&body[start..crate::json::members::value_end(body, start)?])
        };
        Self {
            usage: value(0),
            model: value(1),
            id: if with_id { value(2) } else { None },
        }
    }
}

/// The usage of a whole answer (`usage`: its `usage` member): as reported, or counted when
/// the provider reported none.
async fn read_usage(call: &mut Call<'_>, body: &[u8], usage: Option<&[u8]>, dep: &Deployment) {
    match usage.and_then(usage::extract::from_value) {
        Some(u) if !u.is_empty() => call.out.usage = u,
        _ => {
            call.out.completion.take_from(body);
            call.estimate_usage(dep).await;
        }
    }
}

/// What a sampled request's spans say about a whole answer.
fn read_meta(call: &mut Call<'_>, body: &[u8], top: &AnswerMembers<'_>) {
    if call.spans.is_none() {
        return;
    }
    let mut meta =
        crate::telemetry::otel::ResponseMeta::from_members(body, top.id, top.model, top.usage);
    if call.snap.tracing.capture_content {
        let mut text = usage::completion::CompletionText::default();
        text.take_from(body);
        meta.output = Some(text.text().to_owned());
    }
    call.out.meta = Some(meta);
}

/// The answer naming the model group the client asked for (`llmux.response_model`), when
/// it must change (`model`: the answer's `model` member).
fn renamed(call: &Call<'_>, body: &[u8], model: Option<&[u8]>) -> Option<Vec<u8>> {
    call.response_model
        .as_ref()
        .and_then(|m| m.apply_to_member(body, model?))
}

/// A whole answer sent as the stream the client asked for (`fake_stream` providers).
async fn send_replayed_stream<IO: ServerIo>(
    call: &mut Call<'_>,
    w: &mut ResponseWriter<'_, IO>,
    headers: &[(&str, &str)],
    body: &[u8],
    model: Option<&[u8]>,
    dep: &Deployment,
) -> AttemptEnd {
    let named = renamed(call, body, model);
    let body = named.as_deref().unwrap_or(body);
    let text = match crate::gateway::replay::chunks(
        body,
        call.view.include_usage,
        call.snap.server.max_json_depth,
    ) {
        Ok(t) => t,
        Err(e) => {
            return AttemptEnd::Failed(Failure::from(ApiError::new(
                ErrorKind::Internal,
                format!(
                    "Deployment `{}`: the mapped answer could not be replayed as a stream: {}",
                    dep.id,
                    clip(&e)
                ),
            )))
        }
    };
    call.out.status = 200;
    let sent = async {
        w.start_stream(StatusCode::OK, "text/event-stream", headers)
            .await?;
        w.send_chunk(&text).await?;
        w.finish_stream().await
    };
    if sent.await.is_err() {
        call.out.status = 499;
    }
    AttemptEnd::Answered
}

/// Most headers an answer carries: the routing ones, a `retry-after`, and the two cost ones.
const MAX_ANSWER_HEADERS: usize = 12;

async fn send_answer<IO: ServerIo>(
    call: &mut Call<'_>,
    w: &mut ResponseWriter<'_, IO>,
    headers: &[(&str, &str)],
    body: &[u8],
    model: Option<&[u8]>,
    dep: &Deployment,
) -> AttemptEnd {
    call.out.status = 200;
    // The answer with the group's name spliced in, written piece by piece.
    let spliced = call
        .response_model
        .as_ref()
        .zip(model)
        .and_then(|(m, model)| m.splice_member(body, model));
    let pieces: &[&[u8]] = match &spliced {
        Some(pieces) => pieces,
        None => &[body],
    };
    if call.cache.as_ref().is_some_and(|c| c.store) {
        call.out.capture = Some(pieces.concat());
    }
    // The cost, in LLMux's header and LiteLLM's; none when the model's price is unknown.
    let cost = dep
        .price
        .as_ref()
        .map(|p| usage::cost_usd(p, &call.out.usage).to_string());
    let mut all = [("", ""); MAX_ANSWER_HEADERS];
    let n = headers.len().min(MAX_ANSWER_HEADERS - 2);
    all[..n].copy_from_slice(&headers[..n]);
    let headers = match &cost {
        Some(c) => {
            all[n] = ("x-llmux-response-cost", c);
            all[n + 1] = ("x-litellm-response-cost", c);
            &all[..n + 2]
        }
        None => &all[..n],
    };
    if w.send_pieces(StatusCode::OK, "application/json", headers, pieces)
        .await
        .is_err()
    {
        call.out.status = 499;
    }
    AttemptEnd::Answered
}

#[cfg(test)]
mod tests {
    use super::AnswerMembers;

    fn both(body: &str) -> [[Option<String>; 3]; 2] {
        let b = body.as_bytes();
        let text = |m: AnswerMembers<'_>| {
            [m.usage, m.model, m.id].map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
        };
        let quotes =
            crate::json::check_structure_of::<AnswerMembers<'_>, 3>(b, 64).expect("valid body");
        assert_eq!(AnswerMembers::at(b, quotes, false).id, None, "{body}");
        [
            text(AnswerMembers::find(b)),
            text(AnswerMembers::at(b, quotes, true)),
        ]
    }

    #[test]
    fn members_found_by_the_check_are_the_walks() {
        for body in [
            r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"message":{"content":"{\"model\":\"x\",\"id\":2}","role":"assistant"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            r#"{ "usage" : { "total_tokens" : 3 } , "choices" : [ ] , "model" : "m" , "id" : 7 }"#,
            r#"{"choices":[{"usage":{"x":1},"model":"inner","id":"inner"}]}"#,
            r#"{"model":null,"id":"a\"b","usage":null}"#,
            r#"{}"#,
            r#"[{"model":"m"}]"#,
        ] {
            let [walked, checked] = both(body);
            assert_eq!(walked, checked, "{body}");
        }
        let [_, checked] = both(r#"{"model":"first","usage":{},"model":"last"}"#);
        assert_eq!(checked[1].as_deref(), Some(r#""last""#));
    }
}
