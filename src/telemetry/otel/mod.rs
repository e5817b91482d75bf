//! OpenTelemetry traces: one server span per request and one client span per upstream
//! attempt, with the GenAI semantic conventions, exported over OTLP off the shards.
//!
//! - [`sampler`]: the parent-based ratio decision, made once per request;
//! - [`record`]: a request's spans and their attributes, built on the shard for sampled
//!   requests only;
//! - [`proto`]: spans written as OTLP protobuf as they end;
//! - [`response`]: the answer's id, model and finish reasons, read for those spans;
//! - [`content`]: messages and answers, recorded only when asked for, redacted;
//! - [`shard`]: the shard's buffer, handing spans over in batches;
//! - [`export`]: the exporter thread (its own tokio runtime), OTLP over HTTP/protobuf or gRPC.

pub mod content;
pub mod export;
pub mod proto;
pub mod record;
pub mod response;
pub mod sampler;
pub mod shard;

pub use export::ExportMetrics;
pub use proto::{Attributes, EncodedSpans};
pub use record::{AnswerReport, AttemptReport, RequestReport, RequestSpans};
pub use response::ResponseMeta;
pub use sampler::sampled;
pub use shard::ShardSpans;
