//! The YAML schema: LiteLLM proxy's keys plus LLMux's own under `llmux:`.
//!
//! Every struct keeps unknown keys out of the type (they are reported as warnings by the loader,
//! because LiteLLM configs carry many keys LLMux does not use).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::number::Num;

#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub model_list: Vec<ModelEntry>,
    #[serde(default)]
    pub router_settings: RouterSettings,
    #[serde(default)]
    pub litellm_settings: LitellmSettings,
    #[serde(default)]
    pub general_settings: GeneralSettings,
    #[serde(default)]
    pub llmux: LlmuxSettings,
    /// LiteLLM's `environment_variables:` block: looked up before the process environment
    /// (`config::env::Env`); never exported into the process.
    #[serde(default)]
    pub environment_variables: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct ModelEntry {
    pub model_name: String,
    pub litellm_params: LitellmParams,
    #[serde(default)]
    pub model_info: ModelInfo,
}

#[derive(Debug, Deserialize)]
pub struct LitellmParams {
    /// `provider/upstream-model`, e.g. `openai/gpt-4o-mini`.
    pub model: String,
    #[serde(default)]
    pub api_base: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub rpm: Option<Num>,
    #[serde(default)]
    pub tpm: Option<Num>,
    /// Seconds for the whole request (LiteLLM's `timeout`).
    #[serde(default)]
    pub timeout: Option<Num>,
    /// Seconds to the first byte, and between events, of a streamed response.
    #[serde(default)]
    pub stream_timeout: Option<Num>,
    /// Seconds to open a connection to this deployment (LLMux's; default
    /// `llmux.upstream.connect_timeout`).
    #[serde(default)]
    pub connect_timeout: Option<Num>,
    #[serde(default)]
    pub weight: Option<Num>,
    #[serde(default)]
    pub drop_params: Option<bool>,
    #[serde(default)]
    pub max_retries: Option<Num>,
    /// Priority within the group: lower orders are used while any of them is healthy.
    #[serde(default)]
    pub order: Option<Num>,
    /// Requests in flight at once on this deployment, for the whole process.
    #[serde(default)]
    pub max_parallel_requests: Option<Num>,
    /// USD per token: the deployment's price, over the price table's (also read from
    /// `model_info`); cost, spend and cost-based routing use it.
    #[serde(default)]
    pub input_cost_per_token: Option<Num>,
    #[serde(default)]
    pub output_cost_per_token: Option<Num>,
    #[serde(default)]
    pub cache_read_input_token_cost: Option<Num>,
    #[serde(default)]
    pub cache_creation_input_token_cost: Option<Num>,
    /// Every other key: provider parameters (`vertex_project`, `aws_region_name`, ...), passed
    /// to the provider file when it declares them (`param NAME ...`).
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ModelInfo {
    #[serde(default)]
    pub id: Option<String>,
    /// The price table's name for what the deployment runs (an Azure deployment is named by
    /// its owner: `base_model: azure/gpt-4o` prices it as that model).
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub input_cost_per_token: Option<Num>,
    #[serde(default)]
    pub output_cost_per_token: Option<Num>,
    #[serde(default)]
    pub cache_read_input_token_cost: Option<Num>,
    #[serde(default)]
    pub cache_creation_input_token_cost: Option<Num>,
    /// The context window, over the price table's (the pre-flight check reads it).
    #[serde(default)]
    pub max_input_tokens: Option<Num>,
    #[serde(default)]
    pub max_output_tokens: Option<Num>,
}

/// LiteLLM's fallback lists: `[{"group": ["fallback", ...]}, ...]`.
pub type FallbackList = Vec<std::collections::BTreeMap<String, Vec<String>>>;

#[derive(Debug, Default, Deserialize)]
pub struct RouterSettings {
    #[serde(default)]
    pub routing_strategy: Option<String>,
    #[serde(default)]
    pub routing_strategy_args: RoutingStrategyArgs,
    #[serde(default)]
    pub num_retries: Option<Num>,
    #[serde(default)]
    pub timeout: Option<Num>,
    #[serde(default)]
    pub fallbacks: Option<FallbackList>,
    #[serde(default)]
    pub context_window_fallbacks: Option<FallbackList>,
    #[serde(default)]
    pub content_policy_fallbacks: Option<FallbackList>,
    #[serde(default)]
    pub default_fallbacks: Option<Vec<String>>,
    #[serde(default)]
    pub max_fallbacks: Option<Num>,
    /// Failures in a minute before a deployment cools down.
    #[serde(default)]
    pub allowed_fails: Option<Num>,
    /// Seconds a deployment cools down.
    #[serde(default)]
    pub cooldown_time: Option<Num>,
    #[serde(default)]
    pub disable_cooldowns: Option<bool>,
    #[serde(default)]
    pub redis_host: Option<String>,
    #[serde(default)]
    pub redis_port: Option<Num>,
    #[serde(default)]
    pub redis_password: Option<String>,
    #[serde(default)]
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoutingStrategyArgs {
    /// latency-based-routing: deployments within this fraction of the fastest are equal.
    #[serde(default)]
    pub lowest_latency_buffer: Option<Num>,
}

/// `llmux.router`: what LiteLLM's `router_settings` has no names for.
#[derive(Debug, Default, Deserialize)]
pub struct RouterSection {
    #[serde(default)]
    pub breaker: BreakerSection,
    #[serde(default)]
    pub retry: RetrySection,
    #[serde(default)]
    pub queue: QueueSection,
    /// Cool a deployment down when more than this share of its requests in a minute failed.
    #[serde(default)]
    pub cooldown_failure_rate: Option<Num>,
    /// Seconds after which latency-based routing tries a deployment it has not used.
    #[serde(default)]
    pub latency_explore_after: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct BreakerSection {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub consecutive_failures: Option<Num>,
    #[serde(default)]
    pub failure_rate: Option<Num>,
    /// Seconds over which the failure rate is counted.
    #[serde(default)]
    pub window: Option<Num>,
    #[serde(default)]
    pub min_requests: Option<Num>,
    /// Seconds the breaker stays open.
    #[serde(default)]
    pub open_for: Option<Num>,
    #[serde(default)]
    pub half_open_probes: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RetrySection {
    /// Seconds: the first backoff before retrying the same deployment (then doubled).
    #[serde(default)]
    pub backoff_base: Option<Num>,
    #[serde(default)]
    pub backoff_max: Option<Num>,
    /// Seconds: the longest `Retry-After` honoured.
    #[serde(default)]
    pub retry_after_max: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct QueueSection {
    /// Requests that may wait for a deployment at its `max_parallel_requests`, per shard.
    #[serde(default)]
    pub max_waiting: Option<Num>,
    /// Seconds one may wait.
    #[serde(default)]
    pub timeout: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LitellmSettings {
    #[serde(default)]
    pub drop_params: Option<bool>,
    #[serde(default)]
    pub request_timeout: Option<Num>,
    #[serde(default)]
    pub num_retries: Option<Num>,
    #[serde(default)]
    pub fallbacks: Option<FallbackList>,
    #[serde(default)]
    pub context_window_fallbacks: Option<FallbackList>,
    #[serde(default)]
    pub content_policy_fallbacks: Option<FallbackList>,
    #[serde(default)]
    pub default_fallbacks: Option<Vec<String>>,
    /// LiteLLM's callbacks; `otel` turns tracing on (see `llmux.tracing`), the others are
    /// LiteLLM integrations LLMux does not have (warned about).
    #[serde(default)]
    pub callbacks: Option<Vec<String>>,
    /// The status of a `budget_exceeded` answer (LiteLLM 1.104+: 422).
    #[serde(default)]
    pub budget_exceeded_status_code: Option<Num>,
    /// LiteLLM's cache switch; with a Redis `cache_params`, that Redis is the one LLMux shares
    /// with LiteLLM (spend counters).
    #[serde(default)]
    pub cache: Option<bool>,
    #[serde(default)]
    pub cache_params: Option<CacheParams>,
}

/// `litellm_settings.cache_params`: the fields that say where Redis is.
#[derive(Debug, Default, Deserialize)]
pub struct CacheParams {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<Num>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of the keys LiteLLM writes through its cache helpers (`<namespace>:<key>`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Seconds a cached response is kept (LiteLLM's default 60).
    #[serde(default)]
    pub ttl: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GeneralSettings {
    #[serde(default)]
    pub master_key: Option<String>,
    #[serde(default)]
    pub database_url: Option<String>,
    /// Seconds a key read from the database is cached (LiteLLM's default 60).
    #[serde(default)]
    pub user_api_key_cache_ttl: Option<Num>,
    /// Let requests with keys that are not cached through while the database is unreachable.
    #[serde(default)]
    pub allow_requests_on_db_unavailable: Option<bool>,
    /// Seconds between spend writes (LiteLLM's default 10, plus up to 5 of jitter).
    #[serde(default)]
    pub proxy_batch_write_at: Option<Num>,
    /// Write no `LiteLLM_SpendLogs` rows (spend columns are still incremented).
    #[serde(default)]
    pub disable_spend_logs: Option<bool>,
    /// Seconds between budget resets, at least and at most (LiteLLM's 597 and 605); used when
    /// `llmux.budget_reset` is on.
    #[serde(default)]
    pub proxy_budget_rescheduler_min_time: Option<Num>,
    #[serde(default)]
    pub proxy_budget_rescheduler_max_time: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LlmuxSettings {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default)]
    pub mock: Option<MockSection>,
    #[serde(default)]
    pub providers_dir: Option<String>,
    /// The `model` answers carry: `requested` (the model group the client asked for, as
    /// LiteLLM answers; the default) or `provider` (the provider's own model name).
    #[serde(default)]
    pub response_model: Option<String>,
    /// Answers carry the routing headers (`x-llmux-*`, `x-litellm-model-id`,
    /// `x-litellm-attempted-*`; default true). Off keeps deployment ids away from clients.
    #[serde(default)]
    pub routing_headers: Option<bool>,
    #[serde(default)]
    pub media: MediaSection,
    #[serde(default)]
    pub router: RouterSection,
    #[serde(default)]
    pub pricing: PricingSection,
    #[serde(default)]
    pub tracing: TracingSection,
    /// Virtual keys kept in the config file (no database needed).
    #[serde(default)]
    pub virtual_keys: Vec<VirtualKeyEntry>,
    /// Run LiteLLM's budget reset job on the key database. Off by default: beside LiteLLM,
    /// LiteLLM runs it (leader-locked); turn it on when LLMux serves the database alone.
    #[serde(default)]
    pub budget_reset: Option<bool>,
    /// The response cache serves every caller alike (default: each team, or key without a
    /// team, has its own entries).
    #[serde(default)]
    pub cache_global: Option<bool>,
}

/// A virtual key of the config file: what a `LiteLLM_VerificationToken` row holds, for
/// deployments without a database. Spend is tracked in memory (lost on restart).
#[derive(Debug, Deserialize)]
pub struct VirtualKeyEntry {
    /// The key itself (`sk-...`; may be `os.environ/NAME` or `file:PATH`).
    pub key: String,
    #[serde(default)]
    pub key_alias: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub max_budget: Option<Num>,
    #[serde(default)]
    pub rpm_limit: Option<Num>,
    #[serde(default)]
    pub tpm_limit: Option<Num>,
    #[serde(default)]
    pub max_parallel_requests: Option<Num>,
    #[serde(default)]
    pub blocked: Option<bool>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[Z]` (UTC).
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    /// The budget starts over this often (`30s`, `30m`, `30h`, `30d`, `1mo`), counted from
    /// the gateway's start.
    #[serde(default)]
    pub budget_duration: Option<String>,
}

/// `llmux.tracing`: OpenTelemetry spans exported over OTLP. Every key falls back to the
/// standard `OTEL_*` environment variable (see docs/observability.md).
#[derive(Debug, Default, Deserialize)]
pub struct TracingSection {
    /// Export spans (also turned on by LiteLLM's `litellm_settings.callbacks: ["otel"]`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The collector's URL: for `http/protobuf` the traces URL (`/v1/traces` is added to a
    /// bare host), for `grpc` the server.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Headers sent with every export (values may be `os.environ/NAME` or `file:PATH`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds one export may take.
    #[serde(default)]
    pub timeout: Option<Num>,
    /// Share of new traces recorded (0 to 1); a client's `traceparent` decides for its trace.
    #[serde(default)]
    pub sampling_ratio: Option<Num>,
    #[serde(default)]
    pub service_name: Option<String>,
    /// Record the messages and the answer in the spans (redacted). Off by default.
    #[serde(default)]
    pub capture_content: Option<bool>,
    /// Spans waiting for export, at most; beyond it new spans are dropped and counted.
    #[serde(default)]
    pub max_queue_spans: Option<Num>,
    /// Spans sent in one export request, at most.
    #[serde(default)]
    pub max_export_batch: Option<Num>,
}

/// `llmux.pricing`: prices beyond the table shipped in the binary.
#[derive(Debug, Default, Deserialize)]
pub struct PricingSection {
    /// A price file: LiteLLM's `model_prices_and_context_window.json` (`*.json`) or the
    /// project's own format; its entries replace the shipped table's of the same name.
    #[serde(default)]
    pub file: Option<String>,
}

/// Remote media the gateway fetches for providers that need image bytes (declared by
/// `fetch_images` in their provider file).
#[derive(Debug, Default, Deserialize)]
pub struct MediaSection {
    /// Also fetch plain `http://` URLs (default: https only).
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// Hosts (names or IP addresses) exempt from the private-address check.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub max_bytes: Option<Num>,
    /// Seconds for one fetch, redirects included.
    #[serde(default)]
    pub timeout: Option<Num>,
    #[serde(default)]
    pub max_redirects: Option<Num>,
    /// Most images fetched for one request.
    #[serde(default)]
    pub max_images: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerSection {
    #[serde(default)]
    pub max_request_body_bytes: Option<Num>,
    #[serde(default)]
    pub max_header_bytes: Option<Num>,
    /// Deepest nesting of arrays and objects accepted in any JSON document, from a client or
    /// from an upstream.
    #[serde(default)]
    pub max_json_depth: Option<Num>,
    /// Seconds a client may take to send a request body once its head has arrived.
    #[serde(default)]
    pub body_timeout: Option<Num>,
    /// Seconds a client may take to send a complete request head.
    #[serde(default)]
    pub header_timeout: Option<Num>,
    /// Seconds an idle keep-alive connection is kept open.
    #[serde(default)]
    pub idle_timeout: Option<Num>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[serde(default)]
    pub shutdown_timeout: Option<Num>,
    /// Seconds to keep accepting (answering readiness with 503) after SIGTERM, so load
    /// balancers see the pod leave before its listener closes.
    #[serde(default)]
    pub shutdown_delay: Option<Num>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Enables the routes tests drive the process with: `POST /debug/panic` (a request that
    /// panics on purpose) and `POST /debug/clock` (moves the wall clock of rate windows and
    /// budgets). Never in production.
    #[serde(default)]
    pub debug_routes: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct TlsSection {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct UpstreamSection {
    /// Extra PEM CA bundle trusted for upstream https, beside the webpki roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub max_connections_per_host: Option<Num>,
    #[serde(default)]
    pub max_idle_per_host: Option<Num>,
    /// Seconds an idle pooled upstream connection is kept.
    #[serde(default)]
    pub pool_idle_timeout: Option<Num>,
    /// Seconds to wait for a TCP (and TLS) connection.
    #[serde(default)]
    pub connect_timeout: Option<Num>,
    /// Seconds a resolved address is cached.
    #[serde(default)]
    pub dns_ttl: Option<Num>,
    /// Largest non-streamed upstream response body accepted.
    #[serde(default)]
    pub max_response_body_bytes: Option<Num>,
    /// Largest single stream event (an SSE event, a JSON line) accepted from an upstream.
    #[serde(default)]
    pub max_stream_event_bytes: Option<Num>,
    /// Check that what passthrough providers relay unparsed (bodies, stream events) is
    /// valid JSON within the nesting bound. On by default; off only for measuring its cost.
    #[serde(default)]
    pub check_relayed_json: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoggingSection {
    #[serde(default)]
    pub format: Option<String>,
    /// A level or per-module filter directives (`info,llmux::access=warn`); applied again on
    /// reload.
    #[serde(default)]
    pub level: Option<String>,
    /// Mask e-mail addresses, phone numbers, card numbers and US SSNs in every log line.
    #[serde(default)]
    pub redact_pii: Option<bool>,
}

/// Starts the built-in mock upstream beside the gateway (used by the shipped default config so
/// that a newcomer can try the gateway without any API key).
#[derive(Debug, Deserialize)]
pub struct MockSection {
    pub listen: String,
}
