//! The exact-match response cache (`litellm_settings.cache: true` with a Redis): an answer
//! is kept under the hash of who asked (their team, or their key when it has none, unless
//! `llmux.cache_global`), the model group and the request body's exact bytes, in LLMux's own
//! namespace (`llmux:cache:<sha256>`; LiteLLM's keys are Python-specific and not shared). A hit
//! is answered without an upstream call, costs nothing and is logged as a hit; a streamed
//! answer is kept as the events it was and replayed as them. `Cache-Control: no-cache` skips
//! the lookup, `no-store` the storing, `max-age=N` sets the entry's lifetime.

use std::time::Duration;

use crate::config::keys::CacheSettings;
use crate::http1::Request;
use crate::keys::control::{self, KeyMsg};
use crate::keys::shard::Caller;

/// Largest answer kept (a longer stream is relayed and not kept).
pub const MAX_CACHED_BYTES: usize = 1 << 20;
/// How long a request waits for the cache's answer before it goes upstream.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// What the cache does for one request.
#[derive(Debug, Clone)]
pub struct CachePlan {
    pub key: String,
    pub lookup: bool,
    pub store: bool,
    pub ttl: Duration,
}

impl CachePlan {
    pub fn new(
        settings: Option<&CacheSettings>,
        caller: &Caller,
        req: &Request,
        group: &str,
    ) -> Option<CachePlan> {
        let settings = settings?;
        let directives = req
            .header("cache-control")
            .unwrap_or("")
            .to_ascii_lowercase();
        let has = |d: &str| directives.split(',').any(|x| x.trim() == d);
        let ttl = directives
            .split(',')
            .find_map(|x| x.trim().strip_prefix("max-age="))
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(settings.ttl, Duration::from_secs);
        let scope = if settings.global {
            "global".to_owned()
        } else {
            match caller {
                Caller::Key(k) => match &k.record.team {
                    Some(t) => format!("team:{}", t.team_id),
                    None => format!("key:{}", k.record.token),
                },
                Caller::Master => "master".into(),
                Caller::Open => "open".into(),
            }
        };
        let mut material = Vec::with_capacity(scope.len() + group.len() + req.body.len() + 2);
        material.extend_from_slice(scope.as_bytes());
        material.push(0);
        material.extend_from_slice(group.as_bytes());
        material.push(0);
        material.extend_from_slice(&req.body);
        let digest = ring::digest::digest(&ring::digest::SHA256, &material);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(CachePlan {
            key: format!("llmux:cache:{hex}"),
            lookup: !has("no-cache"),
            store: !has("no-store"),
            ttl,
        })
    }

    /// The cached answer, if there is one (a miss when the cache cannot answer in time).
    pub async fn get(&self) -> Option<Vec<u8>> {
        if !self.lookup {
            return None;
        }
        let tx = control::sender()?;
        let (reply, rx) = flume::bounded(1);
        tx.send(KeyMsg::CacheGet {
            key: self.key.clone(),
            reply,
        })
        .ok()?;
        monoio::time::timeout(LOOKUP_WAIT, rx.recv_async())
            .await
            .ok()?
            .ok()
            .flatten()
    }

    /// Keeps an answer (never waits).
    pub fn put(&self, value: Vec<u8>) {
        if !self.store || value.is_empty() || value.len() > MAX_CACHED_BYTES {
            return;
        }
        if let Some(tx) = control::sender() {
            let _ = tx.send(KeyMsg::CacheSet {
                key: self.key.clone(),
                value,
                ttl_secs: self.ttl.as_secs(),
            });
        }
    }
}
