//! Prometheus metrics. Each shard owns a registry and caches its labelled handles, so recording
//! a request touches only that shard's series and takes no lock; the series have the shard as
//! their one writer (`shard_series`: plain stores, no locked increments). `/metrics` gathers
//! every shard's registry plus the global one and merges series with equal labels.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::sync::Arc;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::shard_series::{Counter, Histogram, IntCounter, IntGauge, SeriesVec};

use crate::config::Deployment;
use crate::router::FailureClass;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Time per output token: 1 ms to 10 s.
const TPOT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.0,
];

/// OpenTelemetry's advice for `gen_ai.client.operation.duration` (seconds).
const GENAI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// OpenTelemetry's advice for `gen_ai.client.token.usage` (tokens).
const GENAI_TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Handles for one deployment, resolved once per shard.
struct DeploymentHandles {
    /// Keeps the deployment alive so its address (the cache key) cannot be reused.
    _deployment: Arc<Deployment>,
    requests: [IntCounter; 5],
    request_duration: Histogram,
    upstream_duration: Histogram,
    ttft: Histogram,
    /// By [`TOKEN_TYPES`], then reported (0) or estimated (1).
    tokens: [[IntCounter; 2]; TOKEN_TYPES.len()],
    spend: Counter,
    tpot: Histogram,
    /// `gen_ai.client.token.usage`: input, output.
    genai_tokens: [Histogram; 2],
    /// `gen_ai.client.operation.duration`: success, then one per failure class, then any
    /// other error (`_OTHER`); the error series are made when first used (most never are).
    genai_duration: [std::cell::OnceCell<Histogram>; FailureClass::ALL.len() + 2],
    routing: RoutingHandles,
}

/// `type` of `llmux_tokens_total`: prompt (cached included), completion, and the prompt's
/// cache reads and writes.
const TOKEN_TYPES: [&str; 4] = ["prompt", "completion", "cached", "cache_write"];

/// A deployment's routing series.
pub struct RoutingHandles {
    pub attempts: IntCounter,
    failures: [IntCounter; FailureClass::ALL.len()],
    pub in_flight: IntGauge,
    /// LiteLLM's encoding: 0 healthy, 1 partial outage, 2 complete outage (merged over shards
    /// by the worst).
    pub state: IntGauge,
    pub cooldowns: IntCounter,
    breaker: [IntCounter; 3],
    rejections: [IntCounter; 3],
}

impl RoutingHandles {
    pub fn failure(&self, class: FailureClass) {
        self.failures[class.index()].inc();
    }

    /// A breaker transition: 0 opened, 1 half-open, 2 closed.
    pub fn breaker(&self, to: usize) {
        self.breaker[to.min(2)].inc();
    }

    pub fn rejection(&self, why: Rejection) {
        self.rejections[why as usize].inc();
    }
}

/// Why the gateway itself did not send a request to a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No slot came free within `llmux.router.queue.timeout` (`max_parallel_requests`).
    MaxParallel = 0,
    /// The wait queue was full.
    QueueFull = 1,
    /// Over the deployment's `rpm` or `tpm`.
    RateLimit = 2,
}

const REJECTIONS: [&str; 3] = ["max_parallel", "queue_full", "rate_limit"];
const BREAKER: [&str; 3] = ["open", "half_open", "closed"];

/// Gauges merged over shards by their maximum instead of their sum.
const MAX_MERGED: &[&str] = &["llmux_deployment_state"];

/// What one routed request contributes to the metrics.
pub struct RequestRecord<'a> {
    pub deployment: &'a Arc<Deployment>,
    pub status: u16,
    pub duration: f64,
    pub upstream_duration: Option<f64>,
    pub ttft: Option<f64>,
    pub usage: crate::usage::Usage,
    /// USD, when the deployment's price is known.
    pub cost: Option<f64>,
    /// Why the request failed, if it did (`error.type` of the GenAI duration metric); a
    /// failure status without a class is `_OTHER`.
    pub failure: Option<FailureClass>,
}

pub struct ShardMetrics {
    registry: Registry,
    requests: SeriesVec<IntCounter>,
    request_duration: SeriesVec<Histogram>,
    upstream_duration: SeriesVec<Histogram>,
    ttft: SeriesVec<Histogram>,
    tokens: SeriesVec<IntCounter>,
    spend: SeriesVec<Counter>,
    tpot: SeriesVec<Histogram>,
    genai_tokens: SeriesVec<Histogram>,
    genai_duration: SeriesVec<Histogram>,
    http_requests: SeriesVec<IntCounter>,
    http_by_route: RefCell<HashMap<(&'static str, usize), IntCounter>>,
    pub inflight: IntGauge,
    handles: RefCell<HashMap<usize, DeploymentHandles>>,
    attempts: SeriesVec<IntCounter>,
    failures: SeriesVec<IntCounter>,
    dep_in_flight: SeriesVec<IntGauge>,
    dep_state: SeriesVec<IntGauge>,
    cooldowns: SeriesVec<IntCounter>,
    breaker: SeriesVec<IntCounter>,
    rejections: SeriesVec<IntCounter>,
    retries: SeriesVec<IntCounter>,
    fallbacks: SeriesVec<IntCounter>,
    by_group: RefCell<HashMap<String, IntCounter>>,
    by_fallback: RefCell<HashMap<(String, String), IntCounter>>,
}

impl ShardMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let requests = SeriesVec::new(
            "llmux_requests_total",
            "Routed requests by model group, deployment, provider and status class.",
            &["model_group", "deployment", "provider", "status_class"],
        )?;
        let request_duration = SeriesVec::with_bounds(
            "llmux_request_duration_seconds",
            "Time from request received to response complete.",
            &["model_group", "provider"],
            LATENCY_BUCKETS,
        )?;
        let upstream_duration = SeriesVec::with_bounds(
            "llmux_upstream_duration_seconds",
            "Time spent on the upstream call.",
            &["provider", "deployment"],
            LATENCY_BUCKETS,
        )?;
        let ttft = SeriesVec::with_bounds(
            "llmux_time_to_first_token_seconds",
            "Time to the first streamed event.",
            &["model_group"],
            LATENCY_BUCKETS,
        )?;
        let tokens = SeriesVec::new(
            "llmux_tokens_total",
            "Tokens by type (prompt, completion, cached, cache_write), as the upstream reported them or, when it reported none, estimated by the gateway (estimated=\"true\").",
            &["model_group", "type", "estimated"],
        )?;
        let spend = SeriesVec::new(
            "llmux_spend_usd_total",
            "Spend in USD: tokens times the deployment's prices (requests of models without a known price add nothing).",
            &["model_group", "deployment"],
        )?;
        let tpot = SeriesVec::with_bounds(
            "llmux_time_per_output_token_seconds",
            "Streams: time from the first streamed event to the last, per output token after the first.",
            &["model_group"],
            TPOT_BUCKETS,
        )?;
        // OpenTelemetry's GenAI client metrics under their Prometheus names (dots become
        // underscores, the unit a suffix), with their attributes as labels.
        let genai_tokens = SeriesVec::with_bounds(
            "gen_ai_client_token_usage",
            "OpenTelemetry gen_ai.client.token.usage: tokens per operation, by token type.",
            &[
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
            ],
            GENAI_TOKEN_BUCKETS,
        )?;
        let genai_duration = SeriesVec::with_bounds(
            "gen_ai_client_operation_duration_seconds",
            "OpenTelemetry gen_ai.client.operation.duration: the whole operation, as the client saw it.",
            &[
                "gen_ai_operation_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "error_type",
            ],
            GENAI_DURATION_BUCKETS,
        )?;
        let http_requests = SeriesVec::new(
            "llmux_http_requests_total",
            "All HTTP requests by route and status class.",
            &["route", "status_class"],
        )?;
        let inflight_family: SeriesVec<IntGauge> =
            SeriesVec::new("llmux_inflight_requests", "Requests being served.", &[])?;
        let inflight = inflight_family.with_label_values(&[]);
        let dep = &["model_group", "deployment"];
        let attempts = SeriesVec::new(
            "llmux_deployment_attempts_total",
            "Attempts sent to each deployment (a retried request makes several).",
            dep,
        )?;
        let failures = SeriesVec::new(
            "llmux_deployment_failures_total",
            "Failed attempts by deployment and failure class.",
            &["model_group", "deployment", "class"],
        )?;
        let dep_in_flight = SeriesVec::new(
            "llmux_deployment_in_flight",
            "Attempts in flight on each deployment.",
            dep,
        )?;
        let dep_state = SeriesVec::new(
            "llmux_deployment_state",
            "Deployment health: 0 healthy, 1 partial outage, 2 complete outage (worst shard).",
            dep,
        )?;
        let cooldowns = SeriesVec::new(
            "llmux_deployment_cooldowns_total",
            "Times a deployment was taken out of rotation for its cooldown.",
            dep,
        )?;
        let breaker = SeriesVec::new(
            "llmux_deployment_breaker_transitions_total",
            "Circuit breaker transitions by the state entered.",
            &["model_group", "deployment", "to"],
        )?;
        let rejections = SeriesVec::new(
            "llmux_deployment_rejections_total",
            "Requests the gateway held back from a deployment at its limits.",
            &["model_group", "deployment", "limit"],
        )?;
        let retries = SeriesVec::new(
            "llmux_retries_total",
            "Retries within a model group.",
            &["model_group"],
        )?;
        let fallbacks = SeriesVec::new(
            "llmux_fallbacks_total",
            "Requests that fell back from a model group to another.",
            &["model_group", "fallback_group"],
        )?;
        let registry = Registry::new();
        for c in [
            attempts.collector(),
            failures.collector(),
            cooldowns.collector(),
            breaker.collector(),
            rejections.collector(),
            retries.collector(),
            fallbacks.collector(),
            dep_in_flight.collector(),
            dep_state.collector(),
            requests.collector(),
            request_duration.collector(),
            upstream_duration.collector(),
            ttft.collector(),
            tokens.collector(),
            spend.collector(),
            tpot.collector(),
            genai_tokens.collector(),
            genai_duration.collector(),
            http_requests.collector(),
            inflight_family.collector(),
        ] {
            registry.register(c)?;
        }
        Ok(Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            ttft,
            tokens,
            spend,
            tpot,
            genai_tokens,
            genai_duration,
            http_requests,
            http_by_route: RefCell::new(HashMap::new()),
            inflight,
            handles: RefCell::new(HashMap::new()),
            attempts,
            failures,
            dep_in_flight,
            dep_state,
            cooldowns,
            breaker,
            rejections,
            retries,
            fallbacks,
            by_group: RefCell::default(),
            by_fallback: RefCell::default(),
        })
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn record_http(&self, route: &'static str, status: u16) {
        let class = status_class(status);
        let mut map = self.http_by_route.borrow_mut();
        map.entry((route, class))
            .or_insert_with(|| {
                self.http_requests
                    .with_label_values(&[route, CLASSES[class]])
            })
            .inc();
    }

    /// Runs `f` on a deployment's cached handles.
    fn with_handles<T>(&self, d: &Arc<Deployment>, f: impl FnOnce(&DeploymentHandles) -> T) -> T {
        let key = Arc::as_ptr(d) as usize;
        let mut handles = self.handles.borrow_mut();
        if handles.len() > 10_000 {
            handles.clear();
        }
        f(handles.entry(key).or_insert_with(|| self.resolve(d)))
    }

    /// Runs `f` on a deployment's routing series.
    pub fn routing<T>(&self, d: &Arc<Deployment>, f: impl FnOnce(&RoutingHandles) -> T) -> T {
        self.with_handles(d, |h| f(&h.routing))
    }

    pub fn retry(&self, group: &str) {
        let mut m = self.by_group.borrow_mut();
        if let Some(c) = m.get(group) {
            c.inc();
            return;
        }
        let c = self.retries.with_label_values(&[group]);
        c.inc();
        m.insert(group.to_owned(), c);
    }

    pub fn fallback(&self, from: &str, to: &str) {
        let mut m = self.by_fallback.borrow_mut();
        let key = (from.to_owned(), to.to_owned());
        m.entry(key)
            .or_insert_with(|| self.fallbacks.with_label_values(&[from, to]))
            .inc();
    }

    pub fn record_request(&self, r: &RequestRecord<'_>) {
        self.with_handles(r.deployment, |h| self.record_into(h, r));
    }

    fn record_into(&self, h: &DeploymentHandles, r: &RequestRecord<'_>) {
        h.requests[status_class(r.status)].inc();
        h.request_duration.observe(r.duration);
        if let Some(u) = r.upstream_duration {
            h.upstream_duration.observe(u);
        }
        if let Some(t) = r.ttft {
            h.ttft.observe(t);
        }
        let u = &r.usage;
        let estimated = usize::from(u.estimated);
        for (i, n) in [u.prompt, u.completion, u.cached, u.cache_write]
            .into_iter()
            .enumerate()
        {
            if n > 0 {
                h.tokens[i][estimated].inc_by(n);
            }
        }
        if let Some(c) = r.cost.filter(|c| *c > 0.0 && c.is_finite()) {
            h.spend.inc_by(c);
        }
        if let Some(ttft) = r.ttft {
            if u.completion > 1 && r.duration > ttft {
                h.tpot
                    .observe((r.duration - ttft) / (u.completion - 1) as f64);
            }
        }
        if !u.is_empty() {
            h.genai_tokens[0].observe(u.prompt as f64);
            h.genai_tokens[1].observe(u.completion as f64);
        }
        let outcome = match (r.failure, r.status) {
            (Some(c), _) => 1 + c.index(),
            (None, s) if s >= 400 => FailureClass::ALL.len() + 1,
            _ => 0,
        };
        h.genai_duration[outcome]
            .get_or_init(|| {
                let d = r.deployment;
                let error = match outcome {
                    0 => "",
                    i if i <= FailureClass::ALL.len() => FailureClass::ALL[i - 1].as_str(),
                    _ => "_OTHER",
                };
                self.genai_duration
                    .with_label_values(&["chat", &d.provider, &d.group, error])
            })
            .observe(r.duration);
    }

    fn resolve(&self, d: &Arc<Deployment>) -> DeploymentHandles {
        let (g, id, p) = (d.group.as_str(), d.id.as_str(), d.provider.as_str());
        DeploymentHandles {
            _deployment: d.clone(),
            requests: CLASSES.map(|c| self.requests.with_label_values(&[g, id, p, c])),
            request_duration: self.request_duration.with_label_values(&[g, p]),
            upstream_duration: self.upstream_duration.with_label_values(&[p, id]),
            ttft: self.ttft.with_label_values(&[g]),
            tokens: TOKEN_TYPES
                .map(|t| ["false", "true"].map(|e| self.tokens.with_label_values(&[g, t, e]))),
            spend: self.spend.with_label_values(&[g, id]),
            tpot: self.tpot.with_label_values(&[g]),
            genai_tokens: ["input", "output"]
                .map(|t| self.genai_tokens.with_label_values(&["chat", p, g, t])),
            genai_duration: std::array::from_fn(|_| std::cell::OnceCell::new()),
            routing: RoutingHandles {
                attempts: self.attempts.with_label_values(&[g, id]),
                failures: FailureClass::ALL
                    .map(|c| self.failures.with_label_values(&[g, id, c.as_str()])),
                in_flight: self.dep_in_flight.with_label_values(&[g, id]),
                state: self.dep_state.with_label_values(&[g, id]),
                cooldowns: self.cooldowns.with_label_values(&[g, id]),
                breaker: BREAKER.map(|b| self.breaker.with_label_values(&[g, id, b])),
                rejections: REJECTIONS.map(|r| self.rejections.with_label_values(&[g, id, r])),
            },
        }
    }
}

/// Process-wide metrics, written by the control plane.
pub struct GlobalMetrics {
    pub registry: Registry,
    pub config_reloads: IntCounterVec,
    pub io_driver: IntGaugeVec,
    pub shards: prometheus::IntGauge,
    /// The span exporter's counters (`llmux_otel_spans_*`).
    pub otel: crate::telemetry::otel::ExportMetrics,
    /// The key control plane's counters (`llmux_keys_*`).
    pub keys: crate::keys::control::KeyMetrics,
}

impl GlobalMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let config_reloads = IntCounterVec::new(
            Opts::new("llmux_config_reloads_total", "Config reloads by result."),
            &["result"],
        )?;
        let io_driver = IntGaugeVec::new(
            Opts::new(
                "llmux_io_driver",
                "Shards running each I/O driver (io_uring or epoll).",
            ),
            &["driver"],
        )?;
        let shards =
            prometheus::IntGauge::new("llmux_shards", "Number of shards (worker threads).")?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(io_driver.clone()))?;
        registry.register(Box::new(shards.clone()))?;
        let otel = crate::telemetry::otel::ExportMetrics {
            exported: prometheus::IntCounter::new(
                "llmux_otel_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )?,
            dropped: prometheus::IntCounter::new(
                "llmux_otel_spans_dropped_total",
                "Spans dropped: the export queue was full, or their export failed.",
            )?,
            failed: prometheus::IntCounter::new(
                "llmux_otel_export_failures_total",
                "OTLP export requests that failed or timed out.",
            )?,
        };
        registry.register(Box::new(otel.exported.clone()))?;
        registry.register(Box::new(otel.dropped.clone()))?;
        registry.register(Box::new(otel.failed.clone()))?;
        let keys = crate::keys::control::KeyMetrics {
            lookups: prometheus::IntCounter::new(
                "llmux_keys_lookups_total",
                "Virtual-key lookups by the control plane (shard cache misses).",
            )?,
            db_errors: prometheus::IntCounter::new(
                "llmux_keys_db_errors_total",
                "Key database operations that failed (connect, lookup, spend write).",
            )?,
            rows_written: prometheus::IntCounter::new(
                "llmux_spend_logs_written_total",
                "LiteLLM_SpendLogs rows written.",
            )?,
            rows_dropped: prometheus::IntCounter::new(
                "llmux_spend_logs_dropped_total",
                "Spend rows dropped because too many waited for an unavailable database.",
            )?,
            redis_errors: prometheus::IntCounter::new(
                "llmux_redis_errors_total",
                "Redis operations that failed (connecting, spend counters).",
            )?,
        };
        registry.register(Box::new(keys.lookups.clone()))?;
        registry.register(Box::new(keys.db_errors.clone()))?;
        registry.register(Box::new(keys.rows_written.clone()))?;
        registry.register(Box::new(keys.rows_dropped.clone()))?;
        registry.register(Box::new(keys.redis_errors.clone()))?;
        // Make both results visible from the start, so alerts can use rate() right away.
        config_reloads.with_label_values(&["success"]);
        config_reloads.with_label_values(&["error"]);
        Ok(Self {
            registry,
            config_reloads,
            io_driver,
            shards,
            otel,
            keys,
        })
    }
}

/// Renders every registry as one Prometheus text exposition, summing series with equal labels.
pub fn render(registries: &[Registry]) -> Vec<u8> {
    let mut merged: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for reg in registries {
        for fam in reg.gather() {
            match merged.get_mut(fam.get_name()) {
                None => {
                    merged.insert(fam.get_name().to_owned(), fam);
                }
                Some(into) => merge_family(into, fam),
            }
        }
    }
    let families: Vec<MetricFamily> = merged.into_values().collect();
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

fn label_key(m: &prometheus::proto::Metric) -> Vec<(String, String)> {
    let mut v: Vec<_> = m
        .get_label()
        .iter()
        .map(|l| (l.get_name().to_owned(), l.get_value().to_owned()))
        .collect();
    v.sort();
    v
}

fn merge_family(into: &mut MetricFamily, from: MetricFamily) {
    let kind = into.get_field_type();
    let by_max = MAX_MERGED.contains(&into.get_name());
    for m in from.get_metric() {
        let key = label_key(m);
        let existing = into.mut_metric().iter_mut().find(|x| label_key(x) == key);
        let Some(x) = existing else {
            into.mut_metric().push(m.clone());
            continue;
        };
        match kind {
            MetricType::COUNTER => {
                let mut c = x.get_counter().clone();
                c.set_value(c.get_value() + m.get_counter().get_value());
                x.set_counter(c);
            }
            MetricType::GAUGE => {
                let mut g = x.get_gauge().clone();
                let v = m.get_gauge().get_value();
                g.set_value(if by_max {
                    g.get_value().max(v)
                } else {
                    g.get_value() + v
                });
                x.set_gauge(g);
            }
            MetricType::HISTOGRAM => {
                let mut h = x.get_histogram().clone();
                let o = m.get_histogram();
                h.set_sample_count(h.get_sample_count() + o.get_sample_count());
                h.set_sample_sum(h.get_sample_sum() + o.get_sample_sum());
                let buckets = h
                    .get_bucket()
                    .iter()
                    .zip(o.get_bucket())
                    .map(|(b, ob)| {
                        let mut nb = b.clone();
                        nb.set_cumulative_count(
                            b.get_cumulative_count() + ob.get_cumulative_count(),
                        );
                        nb
                    })
                    .collect();
                h.set_bucket(buckets);
                x.set_histogram(h);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_shards() {
        let a = ShardMetrics::new().unwrap();
        let b = ShardMetrics::new().unwrap();
        a.record_http("chat", 200);
        b.record_http("chat", 200);
        b.record_http("chat", 404);
        a.inflight.set(2);
        b.inflight.set(1);
        let text = String::from_utf8(render(&[a.registry(), b.registry()])).unwrap();
        assert!(
            text.contains(r#"llmux_http_requests_total{route="chat",status_class="2xx"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"llmux_http_requests_total{route="chat",status_class="4xx"} 1"#));
        assert!(text.contains("llmux_inflight_requests 3"));
    }
}
