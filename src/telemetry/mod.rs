//! Metrics (per-shard Prometheus series with one writer each, merged at scrape time), structured logs with secret
//! redaction (and, when enabled, personal data: `pii`), and request ids.

pub mod logging;
pub mod metrics;
pub mod otel;
pub mod pii;
pub mod redact;
pub mod request_id;
pub mod shard_series;
pub mod trace_context;
