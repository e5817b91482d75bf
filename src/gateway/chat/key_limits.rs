//! A virtual key's own limits — `max_parallel_requests`, `rpm_limit`, `tpm_limit` — held for
//! the whole process by the same limits owner as deployments' (docs/routing.md: leases,
//! worst-case error), keyed by the key's hash. Over a limit the request is refused with
//! LiteLLM's 429 (its message, `retry-after`), before any deployment is tried.

use std::time::Duration;

use http::StatusCode;

use crate::api::{ApiError, ErrorKind};
use crate::gateway::GatewayShard;
use crate::keys::shard::CachedKey;
use crate::router::limits::{minute_of, Limits, Permit, Refused};
use crate::usage::tokens::Count;

/// How long a request waits for a key's parallel-request slot before it is refused.
const PARALLEL_WAIT: Duration = Duration::from_millis(100);

/// What a key's admission took: the slot (given back when the request ends) and the `tpm`
/// tokens charged up front (settled against the real usage).
pub struct KeyAdmission<'a> {
    _permit: Option<Permit<'a>>,
    pub estimated_tokens: u64,
}

/// A refusal: the error and its `retry-after` seconds.
pub struct KeyLimited {
    pub error: ApiError,
    pub retry_after_secs: u64,
}

pub async fn admit<'a>(
    gw: &'a GatewayShard,
    key: &'a CachedKey,
    body_len: usize,
) -> Result<KeyAdmission<'a>, KeyLimited> {
    let r = &key.record;
    let mut admission = KeyAdmission {
        _permit: None,
        estimated_tokens: 0,
    };
    // Full across the gateways sharing the Redis (this one's counts reach it about every
    // second; LiteLLM's go there on every call).
    if r.rpm_limit.is_some() || r.tpm_limit.is_some() {
        let shared = crate::keys::control::SHARED_KEY_LIMITS.load();
        let now = crate::util::unix_ms();
        if let Some(until) = shared.get(&r.token).filter(|u| **u > now) {
            let (kind, limit) = match (r.rpm_limit, r.tpm_limit) {
                (Some(rpm), _) => ("requests", rpm),
                (None, Some(tpm)) => ("tokens", tpm),
                (None, None) => ("requests", 0),
            };
            return Err(limited(
                key,
                kind,
                limit,
                (until - now).div_ceil(1000).max(1),
            ));
        }
    }
    let limiter = &gw.router.limiter;
    if let Some(max) = r.max_parallel_requests {
        match limiter.permit(&key.limiter_id, max, PARALLEL_WAIT).await {
            Ok(p) => admission._permit = Some(p),
            Err(_) => return Err(limited(key, "max_parallel_requests", u64::from(max), 1)),
        }
    }
    if r.rpm_limit.is_some() || r.tpm_limit.is_some() {
        if r.tpm_limit.is_some() {
            admission.estimated_tokens = Count::estimate(body_len).tokens;
        }
        let now = gw.router.now();
        let limits = Limits {
            max_parallel: None,
            rpm: r.rpm_limit,
            tpm: r.tpm_limit,
        };
        if let Err(refused) = limiter
            .take(&key.limiter_id, limits, admission.estimated_tokens, now)
            .await
        {
            let secs = match refused {
                Refused::Limited(d) => d.as_secs().max(1),
                Refused::Busy => 1,
            };
            // The owner does not say which count ran out: requests when the key has an rpm.
            let (kind, limit) = match (r.rpm_limit, r.tpm_limit) {
                (Some(rpm), _) => ("requests", rpm),
                (None, Some(tpm)) => ("tokens", tpm),
                (None, None) => ("requests", 0),
            };
            return Err(limited(key, kind, limit, secs));
        }
    }
    Ok(admission)
}

/// LiteLLM's parallel-request limiter's 429.
fn limited(key: &CachedKey, kind: &str, limit: u64, retry_after_secs: u64) -> KeyLimited {
    let now = crate::util::unix_ms();
    let (_, left) = minute_of(now);
    let resets = crate::keys::record::iso8601((now + left.as_millis() as u64) as i64);
    KeyLimited {
        error: ApiError::new(
            ErrorKind::RateLimit,
            format!(
                "Rate limit exceeded for api_key: {}. Limit type: {kind}. Current limit: {limit}, Remaining: 0. Limit resets at: {resets} UTC",
                key.record.token
            ),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS),
        retry_after_secs,
    }
}
