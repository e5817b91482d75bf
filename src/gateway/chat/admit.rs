//! The pick and admit phases: which deployment of the group (the router's choice from this
//! shard's view), and whether it may take the request now — a slot under its
//! `max_parallel_requests` (waiting in a bounded queue) and its `rpm`/`tpm` tokens, both held
//! for the whole process by the limiter's owner.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::Call;
use crate::config::{Deployment, ModelGroup};
use crate::gateway::failure;
use crate::gateway::route::GroupView;
use crate::http1::{ResponseWriter, ServerIo};
use crate::router::limits::{Limits, Permit, Refused};
use crate::router::strategy::{self, Deployments};
use crate::router::{BreakerPhase, Failure, Unavailable};
use crate::telemetry::metrics::Rejection;

/// The pick phase's answer.
pub enum Picked<'s> {
    Deployment {
        group: &'s ModelGroup,
        /// The group as this shard sees it.
        view: Rc<GroupView>,
        index: usize,
        /// One of a half-open breaker's probes.
        probe: bool,
    },
    /// No deployment of the group can be tried now.
    Unavailable(Failure),
}

/// Chooses the next deployment of `group`; those in `tried` (bit per index) are avoided while
/// another can be used.
pub fn pick<'s>(call: &Call<'s>, group: &'s ModelGroup, tried: u64) -> Picked<'s> {
    let router = &call.gw.router;
    let now = router.now();
    let view = router.group(group);
    let was_open = (0..view.len())
        .filter(|&i| matches!(view.state(i).breaker_phase(), BreakerPhase::Open { .. }))
        .fold(0u64, |m, i| m | 1 << i.min(63));
    let picked = strategy::pick(
        &call.snap.router,
        &*view,
        &view.rr,
        tried,
        call.view.stream,
        now,
        &mut *router.rand.borrow_mut(),
    );
    if was_open != 0 {
        // Choosing may have moved an open breaker whose time is up to half-open.
        for i in 0..view.len() {
            if was_open & (1 << i.min(63)) != 0
                && matches!(view.state(i).breaker_phase(), BreakerPhase::HalfOpen { .. })
            {
                let d = &group.deployments[i];
                call.gw.metrics.routing(d, |h| h.breaker(1));
                tracing::info!(
                    request_id = %call.req.request_id,
                    trace_id = %call.trace.trace_id_hex(),
                    model_group = %d.group,
                    deployment = %d.id,
                    "circuit breaker half-open: probing"
                );
            }
        }
    }
    match picked {
        Ok(p) => Picked::Deployment {
            group,
            view,
            index: p.index,
            probe: p.probe,
        },
        // Every deployment is at its `max_parallel_requests` here: queue for the least busy.
        Err(Unavailable::Busy { index }) => Picked::Deployment {
            group,
            view,
            index,
            probe: false,
        },
        Err(Unavailable::Down { retry_after_ms }) => Picked::Unavailable(failure::unavailable(
            &group.name,
            "every deployment is cooling down or its circuit breaker is open",
            retry_after_ms,
            429,
        )),
        Err(Unavailable::Limited { retry_after_ms }) => {
            // Held back at their limits by this shard's own count: a rejection of each
            // deployment at its rpm/tpm, as when the limits owner refuses.
            for (i, d) in group.deployments.iter().enumerate() {
                let (requests, tokens) = view.states[i].minute_usage(now);
                let over = d.spec.rpm.is_some_and(|r| u64::from(requests) >= r)
                    || d.spec.tpm.is_some_and(|t| tokens >= t);
                if over {
                    reject(call, d, Rejection::RateLimit);
                }
            }
            Picked::Unavailable(failure::unavailable(
                &group.name,
                "every deployment is at its rpm/tpm limit for this minute",
                retry_after_ms,
                429,
            ))
        }
    }
}

/// What admission took; given back when the attempt ends.
pub struct Admitted<'a> {
    /// The slot under `max_parallel_requests`, if the deployment has one.
    pub permit: Option<Permit<'a>>,
    /// The tokens charged to `tpm` up front (corrected once usage is known).
    pub estimated_tokens: u64,
}

/// Below this body size the `tpm` charge is the byte estimate: counting costs about a
/// microsecond even for a one-word prompt, more than the gap it closes (at most a few hundred
/// tokens, settled when the answer's usage comes).
const TPM_COUNT_MIN_BYTES: usize = 1024;

/// A prompt's tokens, charged to `tpm` up front: counted with the model's tokenizer (an
/// estimate until it is loaded, for short bodies, and for prompts too long to count in place).
/// The charge is corrected by the real usage when the answer reports it.
fn prompt_tokens(call: &Call<'_>, dep: &Deployment) -> u64 {
    use crate::usage::tokens::{prompt_tokens_now, Count, Encoding};
    if call.req.body.len() < TPM_COUNT_MIN_BYTES {
        return Count::estimate(call.req.body.len()).tokens;
    }
    prompt_tokens_now(call.body(), Encoding::for_model(&dep.tokenizer_model).0).tokens
}

/// Takes a slot and the rate tokens of `dep` for one attempt. A client that goes away while it
/// waits for a slot gives its place in the queue back at once.
pub async fn admit<'r, IO: ServerIo>(
    call: &Call<'r>,
    dep: &'r Arc<Deployment>,
    w: &mut ResponseWriter<'_, IO>,
) -> Result<Admitted<'r>, Failure> {
    let router = &call.gw.router;
    let mut admitted = Admitted {
        permit: None,
        estimated_tokens: 0,
    };
    if let Some(max) = dep.spec.max_parallel {
        admitted.permit = match router.limiter.try_permit(&dep.key, max) {
            Some(p) => Some(p),
            None => Some(wait_for_slot(call, dep, max, w).await?),
        };
    }
    if dep.spec.rpm.is_some() || dep.spec.tpm.is_some() {
        // At its limit across the gateways sharing the Redis (read about every second).
        let shared = crate::keys::control::SHARED_DEPLOYMENT_LIMITS.load();
        let now = router.now();
        if let Some(until) = shared.get(&dep.id).filter(|u| **u > now) {
            reject(call, dep, Rejection::RateLimit);
            return Err(failure::held_back(
                &dep.id,
                "is at its rpm/tpm limit for this minute across the gateways",
                Some((until - now).max(1)),
            ));
        }
        if dep.spec.tpm.is_some() {
            admitted.estimated_tokens = prompt_tokens(call, dep);
        }
        let limits = Limits {
            max_parallel: None,
            rpm: dep.spec.rpm,
            tpm: dep.spec.tpm,
        };
        let taken = router
            .limiter
            .take(&dep.key, limits, admitted.estimated_tokens, router.now())
            .await;
        if let Err(refused) = taken {
            reject(call, dep, Rejection::RateLimit);
            let wait_ms = match refused {
                Refused::Limited(d) => d.as_millis() as u64,
                Refused::Busy => 1_000,
            };
            return Err(failure::held_back(
                &dep.id,
                "is over its rpm/tpm limit for now",
                Some(wait_ms.max(1)),
            ));
        }
    }
    Ok(admitted)
}

/// Waits in the deployment's queue for a slot under its `max_parallel_requests`.
async fn wait_for_slot<'r, IO: ServerIo>(
    call: &Call<'r>,
    dep: &'r Arc<Deployment>,
    max: u32,
    w: &mut ResponseWriter<'_, IO>,
) -> Result<Permit<'r>, Failure> {
    let router = &call.gw.router;
    let q = &call.snap.router.queue;
    let Some(_place) = router.enqueue(dep, q.max_waiting) else {
        reject(call, dep, Rejection::QueueFull);
        return Err(failure::held_back(
            &dep.id,
            &format!(
                "has {} requests waiting for a free slot already (llmux.router.queue.max_waiting)",
                q.max_waiting
            ),
            Some(1_000),
        ));
    };
    let wait = Duration::from_millis(q.timeout_ms);
    let permit = router.limiter.permit(&dep.key, max, wait);
    let got = match w.disconnect_watch() {
        Some(watch) => monoio::select! {
            p = permit => p,
            _ = watch.closed() => return Err(failure::cancelled()),
        },
        None => permit.await,
    };
    got.map_err(|_| {
        reject(call, dep, Rejection::MaxParallel);
        failure::held_back(
            &dep.id,
            &format!(
                "has no free slot: {max} requests in flight (max_parallel_requests), none ended within {:.1}s",
                wait.as_secs_f64()
            ),
            Some(1_000),
        )
    })
}

fn reject(call: &Call<'_>, dep: &Arc<Deployment>, why: Rejection) {
    call.gw.metrics.routing(dep, |h| h.rejection(why));
}
