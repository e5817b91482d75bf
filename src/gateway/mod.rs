//! The request pipeline: resolve the model group, pick a deployment, let the provider adapter
//! build the upstream request, forward it (streamed or not), relay or map the answer, retry or
//! fall back where the router says so, and record metrics and the access log.

pub mod adapter;
mod chat;
mod cloud_auth;
pub mod failure;
mod media;
mod relay;
mod replay;
mod response_model;
pub mod route;
pub mod sse;
pub mod ssrf;

use std::sync::Arc;

pub use chat::chat_completions;

use crate::config::Snapshot;
use crate::telemetry::metrics::ShardMetrics;
use crate::upstream::UpstreamClient;

/// The gateway's per-shard state. Everything here is shard-local.
pub struct GatewayShard {
    pub upstream: UpstreamClient,
    pub metrics: ShardMetrics,
    pub router: route::ShardRouter,
    /// Ended spans of sampled requests, waiting to be handed to the exporter.
    pub spans: crate::telemetry::otel::ShardSpans,
    /// Virtual keys this shard has seen, and the spend it has not handed over yet.
    pub keys: crate::keys::shard::ShardKeys,
}

/// `GET /v1/models`: the configured model groups a caller may use, in the OpenAI list shape.
pub fn models_list(snap: &Arc<Snapshot>, caller: &crate::keys::shard::Caller) -> Vec<u8> {
    let allowed = |name: &str| match caller {
        crate::keys::shard::Caller::Key(k) => {
            let providers: Vec<&str> = snap
                .group(name)
                .map(|g| g.deployments.iter().map(|d| d.provider.as_str()).collect())
                .unwrap_or_default();
            k.record.may_use(name, &providers)
        }
        _ => true,
    };
    let data: Vec<serde_json::Value> = snap
        .group_names
        .iter()
        .filter(|name| allowed(name))
        .map(|name| {
            serde_json::json!({
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "llmux",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data })).unwrap_or_default()
}
