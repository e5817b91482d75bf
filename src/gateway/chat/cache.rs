//! The exact-match response cache (`litellm_settings.cache: true` with a Redis): an answer
//! is kept under the hash of who asked (their team, or their key when it has none, unless
//! `llmux.cache_global`), the model group and the request body's exact bytes, in LLMux's own
//! namespace (`llmux:cache:<sha256>`; LiteLLM's keys are Python-specific and not shared). A hit
//! is answered without an upstream call, costs nothing and is logged as a hit; a streamed
//! answer is kept as the events it was and replayed as them. `Cache-Control: no-cache` skips
//! the lookup, `no-store` the storing, `max-age=N` sets the entry's lifetime; LiteLLM's body
//! member `cache: {...}` does the same (and more: `s-maxage`, `namespace`), and never goes
//! upstream.

use std::time::Duration;

use serde_json::Value;

use crate::api::error::ApiError;
use crate::config::keys::CacheSettings;
use crate::http1::Request;
use crate::keys::control::{self, KeyMsg};
use crate::keys::shard::Caller;

/// An entry: this tag, the UNIX ms it was kept at (8 bytes, big-endian), the answer. The time
/// answers `s-maxage`; an entry without the tag (an older format) is a miss.
const ENTRY_TAG: &[u8; 4] = b"LXC1";
/// The longest `cache.namespace` taken.
const MAX_NAMESPACE: usize = 128;

/// LiteLLM's per-request cache controls, the body's top-level `cache` member
/// (docs.litellm.ai/docs/proxy/caching_controls): `no-cache` (do not answer from the cache),
/// `no-store` (do not keep the answer), `ttl` (seconds to keep it), `s-maxage` (only take an
/// entry at most this many seconds old), `namespace` (entries apart from everyone else's).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BodyControls {
    pub no_cache: bool,
    pub no_store: bool,
    pub ttl: Option<u64>,
    pub s_maxage: Option<u64>,
    pub namespace: Option<String>,
}

impl BodyControls {
    /// Reads the `cache` member; a member of the wrong shape is a 400 naming it.
    pub fn parse(v: &Value) -> Result<Self, ApiError> {
        let bad = |m: String| Err(ApiError::bad_request(m).with_param("cache"));
        let Some(obj) = v.as_object() else {
            return bad("'cache' must be an object, e.g. {\"no-cache\": true}.".into());
        };
        let mut c = BodyControls::default();
        for (k, v) in obj {
            let secs = || {
                v.as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            };
            match (k.as_str(), v) {
                ("no-cache", Value::Bool(b)) => c.no_cache = *b,
                ("no-store", Value::Bool(b)) => c.no_store = *b,
                ("ttl", Value::Number(_)) if secs().is_some() => c.ttl = secs(),
                ("s-maxage", Value::Number(_)) if secs().is_some() => c.s_maxage = secs(),
                ("namespace", Value::String(n))
                    if !n.is_empty()
                        && n.len() <= MAX_NAMESPACE
                        && !n.chars().any(char::is_control) =>
                {
                    c.namespace = Some(n.clone())
                }
                ("no-cache" | "no-store", _) => return bad(format!("'cache.{k}' must be a boolean.")),
                ("ttl" | "s-maxage", _) => {
                    return bad(format!("'cache.{k}' must be a number of seconds."))
                }
                ("namespace", _) => {
                    return bad(format!(
                        "'cache.namespace' must be a string of 1 to {MAX_NAMESPACE} printable characters."
                    ))
                }
                _ => {
                    return bad(format!(
                        "'cache.{}' is not a cache control this gateway knows (no-cache, no-store, ttl, s-maxage, namespace).",
                        crate::util::clip(k)
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// Takes the `cache` member out of the client's body (it is the gateway's, never the
/// provider's): the controls, and the body's bytes without it. `None` when there is none.
pub fn take_body_controls(
    body: &mut Value,
    raw: &[u8],
) -> Result<Option<(BodyControls, Vec<u8>)>, ApiError> {
    let Some(member) = body.as_object_mut().and_then(|o| o.remove("cache")) else {
        return Ok(None);
    };
    let controls = BodyControls::parse(&member)?;
    let without = crate::dsl::passthrough::patch_top_level(raw, None, &[], &["cache".to_owned()])
        .unwrap_or_else(|| serde_json::to_vec(body).unwrap_or_default());
    Ok(Some((controls, without)))
}

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
    /// Only an entry at most this old answers (`cache.s-maxage`).
    pub max_age: Option<Duration>,
}

impl CachePlan {
    /// `body`: the request's bytes without the `cache` member, whose controls are `controls`.
    pub fn new(
        settings: Option<&CacheSettings>,
        caller: &Caller,
        req: &Request,
        body: &[u8],
        controls: Option<&BodyControls>,
        group: &str,
    ) -> Option<CachePlan> {
        let settings = settings?;
        let controls_default = BodyControls::default();
        let controls = controls.unwrap_or(&controls_default);
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
        let ttl = controls
            .ttl
            .filter(|s| *s > 0)
            .map_or(ttl, Duration::from_secs);
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
        let mut material = Vec::with_capacity(scope.len() + group.len() + body.len() + 2);
        material.extend_from_slice(scope.as_bytes());
        material.push(0);
        material.extend_from_slice(group.as_bytes());
        material.push(0);
        material.extend_from_slice(body);
        let digest = ring::digest::digest(&ring::digest::SHA256, &material);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let key = match &controls.namespace {
            Some(ns) => format!("llmux:cache:{ns}:{hex}"),
            None => format!("llmux:cache:{hex}"),
        };
        Some(CachePlan {
            key,
            lookup: !has("no-cache") && !controls.no_cache,
            store: !has("no-store") && !controls.no_store,
            ttl,
            max_age: controls.s_maxage.map(Duration::from_secs),
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
        let entry = monoio::time::timeout(LOOKUP_WAIT, rx.recv_async())
            .await
            .ok()?
            .ok()
            .flatten()?;
        let (kept_ms, answer) = decode_entry(&entry)?;
        let age_ms = crate::util::unix_ms().saturating_sub(kept_ms);
        if self
            .max_age
            .is_some_and(|m| u128::from(age_ms) > m.as_millis())
        {
            return None;
        }
        Some(answer.to_vec())
    }

    /// Keeps an answer (never waits).
    pub fn put(&self, value: Vec<u8>) {
        if !self.store || value.is_empty() || value.len() > MAX_CACHED_BYTES {
            return;
        }
        if let Some(tx) = control::sender() {
            let _ = tx.send(KeyMsg::CacheSet {
                key: self.key.clone(),
                value: encode_entry(crate::util::unix_ms(), &value),
                ttl_secs: self.ttl.as_secs(),
            });
        }
    }
}

fn encode_entry(kept_ms: u64, answer: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(ENTRY_TAG.len() + 8 + answer.len());
    e.extend_from_slice(ENTRY_TAG);
    e.extend_from_slice(&kept_ms.to_be_bytes());
    e.extend_from_slice(answer);
    e
}

fn decode_entry(entry: &[u8]) -> Option<(u64, &[u8])> {
    let rest = entry.strip_prefix(ENTRY_TAG)?;
    let (time, answer) = rest.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*time), answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_carry_the_time_they_were_kept() {
        let e = encode_entry(1_234, b"{}");
        assert_eq!(decode_entry(&e), Some((1_234, &b"{}"[..])));
        assert_eq!(decode_entry(b"{\"id\":1}"), None);
        assert_eq!(decode_entry(b"LXC1abc"), None);
    }

    #[test]
    fn litellm_s_body_controls_are_read_and_bad_ones_named() {
        let c = BodyControls::parse(
            &json!({"no-cache": true, "no-store": false, "ttl": 300, "s-maxage": 10.0, "namespace": "team-a"}),
        )
        .unwrap();
        assert!(c.no_cache && !c.no_store);
        assert_eq!((c.ttl, c.s_maxage), (Some(300), Some(10)));
        assert_eq!(c.namespace.as_deref(), Some("team-a"));
        for (bad, named) in [
            (json!(true), "'cache' must be an object"),
            (json!({"no-cache": "yes"}), "cache.no-cache"),
            (json!({"ttl": -1}), "cache.ttl"),
            (json!({"namespace": "a\nb"}), "cache.namespace"),
            (
                json!({"namespace": "n".repeat(MAX_NAMESPACE + 1)}),
                "cache.namespace",
            ),
            (json!({"namespace": ""}), "cache.namespace"),
            (json!({"use-cache": true}), "cache.use-cache"),
        ] {
            let e = BodyControls::parse(&bad).unwrap_err();
            assert!(e.message.contains(named), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn the_cache_member_is_taken_out_of_the_body_bytes() {
        let raw = br#"{"model":"m","cache":{"no-cache":true},"messages":[]}"#;
        let mut body: Value = serde_json::from_slice(raw).unwrap();
        let (c, without) = take_body_controls(&mut body, raw).unwrap().unwrap();
        assert!(c.no_cache);
        assert_eq!(without, br#"{"model":"m","messages":[]}"#);
        assert!(body.get("cache").is_none());
        let mut plain = json!({"model": "m"});
        assert!(take_body_controls(&mut plain, b"{}").unwrap().is_none());
    }
}
