//! The shard's side of routing: the router's state for every deployment this shard has seen,
//! its clock and random source, and its limiter. Everything here is shard-local.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::config::{Deployment, ModelGroup, Snapshot};
use crate::router::limits::{LimitsHandle, ShardLimiter};
use crate::router::strategy::Deployments;
use crate::router::{
    health, DeploymentSpec, DeploymentState, FastRand, GroupState, HealthChange, Millis,
};
use crate::telemetry::redact::redact_str;
use crate::util::clock::CoarseInstant;

/// What one deployment looks like from this shard, for the admin view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentView {
    pub model_group: String,
    pub deployment: String,
    /// LiteLLM's deployment state: 0 healthy, 1 partial outage, 2 complete outage.
    pub state: u8,
    /// The same, in words.
    pub health: &'static str,
    pub breaker: &'static str,
    pub cooldown_remaining_ms: u64,
    /// At its rpm/tpm for the rest of this minute across the gateways sharing a Redis.
    pub limited_across_gateways_ms: u64,
    pub in_flight: u32,
    /// Requests waiting for a slot under `max_parallel_requests`.
    pub waiting: usize,
    pub latency_ms: f64,
    pub requests: u64,
    pub failures: u64,
    pub cooldowns: u64,
}

pub struct ShardRouter {
    /// Read coarsely: the router counts milliseconds for cooldowns and minute windows, and
    /// reads its clock several times a request (`util::clock`).
    origin: CoarseInstant,
    /// The wall clock at the origin (ms since the UNIX epoch): the router's clock is monotonic
    /// but reads as wall-clock time, so that its minutes (usage-based routing, cooldown counts)
    /// are the calendar minutes the limits owner counts `rpm` and `tpm` in.
    origin_unix_ms: Millis,
    states: RefCell<HashMap<String, Rc<DeploymentState>>>,
    /// Each group's deployments with their states, looked up once per config snapshot.
    groups: RefCell<HashMap<String, Rc<GroupView>>>,
    pub rand: RefCell<FastRand>,
    pub limiter: ShardLimiter,
    /// Requests waiting for a permit, per deployment (bounded by `llmux.router.queue`).
    waiting: RefCell<HashMap<String, usize>>,
}

impl ShardRouter {
    pub fn new(limits: &LimitsHandle, seed: u64) -> Self {
        let unix_ms = crate::util::system_unix_ms();
        Self {
            origin: CoarseInstant::now(),
            origin_unix_ms: unix_ms,
            states: RefCell::default(),
            groups: RefCell::default(),
            rand: RefCell::new(FastRand(fastrand::Rng::with_seed(seed))),
            limiter: limits.shard(),
            waiting: RefCell::default(),
        }
    }

    /// Milliseconds on this shard's monotonic clock, as wall-clock time (since the UNIX epoch;
    /// with the test skew of `util::unix_ms`).
    pub fn now(&self) -> Millis {
        (self.origin_unix_ms + self.origin.elapsed().as_millis() as Millis)
            .saturating_add_signed(crate::util::clock_skew_ms())
    }

    /// This shard's state of a deployment (made on first sight; kept across reloads by id).
    pub fn state(&self, d: &Deployment) -> Rc<DeploymentState> {
        if let Some(s) = self.states.borrow().get(&d.id) {
            return s.clone();
        }
        let s = Rc::new(DeploymentState::default());
        self.states.borrow_mut().insert(d.id.clone(), s.clone());
        s
    }

    /// A group's deployments and their states on this shard. Cached by name; the cache holds
    /// the deployments it was made for (so their addresses cannot be reused), and is made again
    /// when a reload replaced them.
    pub fn group(&self, group: &ModelGroup) -> Rc<GroupView> {
        if let Some(v) = self.groups.borrow().get(&group.name) {
            let same = v.deployments.len() == group.deployments.len()
                && v.deployments
                    .iter()
                    .zip(&group.deployments)
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if same {
                return v.clone();
            }
        }
        let rr = self
            .groups
            .borrow()
            .get(&group.name)
            .map(|v| v.rr.clone())
            .unwrap_or_default();
        let v = Rc::new(GroupView {
            deployments: group.deployments.clone(),
            states: group.deployments.iter().map(|d| self.state(d)).collect(),
            rr,
        });
        self.groups
            .borrow_mut()
            .insert(group.name.clone(), v.clone());
        v
    }

    /// Takes a place in a deployment's wait queue; `None` when it is full.
    pub fn enqueue<'a>(&'a self, d: &'a Deployment, max: usize) -> Option<QueuePlace<'a>> {
        let mut w = self.waiting.borrow_mut();
        if !w.contains_key(&d.id) {
            w.insert(d.id.clone(), 0);
        }
        let n = w.get_mut(&d.id)?;
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(QueuePlace {
            router: self,
            id: &d.id,
        })
    }

    /// Records an attempt's outcome; returns the changes of the deployment's health.
    pub fn record(
        &self,
        snap: &Snapshot,
        state: &DeploymentState,
        group_size: usize,
        outcome: Option<crate::router::FailureClass>,
        probe: bool,
    ) -> Vec<HealthChange> {
        let now = self.now();
        health::record(
            state,
            &snap.router.cooldown,
            &snap.router.breaker,
            now,
            outcome,
            probe,
            group_size,
        )
    }

    /// The deployments of a snapshot as this shard sees them.
    pub fn views(&self, snap: &Snapshot) -> Vec<DeploymentView> {
        let now = self.now();
        let mut out = Vec::new();
        for name in &snap.group_names {
            let Some(group) = snap.group(name) else {
                continue;
            };
            for d in &group.deployments {
                let s = self.state(d);
                let (requests, failures, cooldowns) = s.totals();
                let state = health::state_code(&s, now);
                out.push(DeploymentView {
                    model_group: name.clone(),
                    deployment: d.id.clone(),
                    state,
                    health: health_name(state),
                    breaker: match s.breaker_phase() {
                        crate::router::BreakerPhase::Closed => "closed",
                        // Its time is up: the next request is a probe.
                        crate::router::BreakerPhase::Open { until } if until <= now => "half_open",
                        crate::router::BreakerPhase::Open { .. } => "open",
                        crate::router::BreakerPhase::HalfOpen { .. } => "half_open",
                    },
                    cooldown_remaining_ms: s.cooling_until(now).map_or(0, |u| u - now),
                    limited_across_gateways_ms: crate::keys::control::SHARED_DEPLOYMENT_LIMITS
                        .load()
                        .get(&d.id)
                        .map_or(0, |u| u.saturating_sub(now)),
                    in_flight: s.in_flight(),
                    waiting: self.waiting.borrow().get(&d.id).copied().unwrap_or(0),
                    latency_ms: s.latency_ms(),
                    requests,
                    failures,
                    cooldowns,
                });
            }
        }
        out
    }
}

/// A group as the router reads it on this shard.
pub struct GroupView {
    pub deployments: Vec<Arc<Deployment>>,
    pub states: Vec<Rc<DeploymentState>>,
    /// The round-robin position (kept across reloads).
    pub rr: Rc<GroupState>,
}

impl Deployments for GroupView {
    fn len(&self) -> usize {
        self.deployments.len().min(self.states.len())
    }
    fn spec(&self, i: usize) -> &DeploymentSpec {
        &self.deployments[i].spec
    }
    fn state(&self, i: usize) -> &DeploymentState {
        &self.states[i]
    }
}

/// A place in a deployment's wait queue, given back on drop (also when the waiting client
/// disconnects and its request is dropped).
pub struct QueuePlace<'a> {
    router: &'a ShardRouter,
    id: &'a str,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.router.waiting.borrow_mut().get_mut(self.id) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The admin view summed over shards: counts add up, the state is the worst one seen, and the
/// latency is the average of the shards that have one.
pub fn merge(views: Vec<Vec<DeploymentView>>) -> Vec<DeploymentView> {
    let mut merged: Vec<DeploymentView> = Vec::new();
    let mut latency_n: Vec<u32> = Vec::new();
    for shard in views {
        for v in shard {
            match merged
                .iter_mut()
                .position(|m| m.deployment == v.deployment && m.model_group == v.model_group)
            {
                Some(i) => {
                    let m = &mut merged[i];
                    m.state = m.state.max(v.state);
                    m.health = health_name(m.state);
                    // The worst: open, then half-open, then closed.
                    let rank = |b: &str| match b {
                        "open" => 2,
                        "half_open" => 1,
                        _ => 0,
                    };
                    if rank(v.breaker) > rank(m.breaker) {
                        m.breaker = v.breaker;
                    }
                    m.cooldown_remaining_ms = m.cooldown_remaining_ms.max(v.cooldown_remaining_ms);
                    m.limited_across_gateways_ms = m
                        .limited_across_gateways_ms
                        .max(v.limited_across_gateways_ms);
                    m.in_flight += v.in_flight;
                    m.waiting += v.waiting;
                    m.requests += v.requests;
                    m.failures += v.failures;
                    m.cooldowns += v.cooldowns;
                    if v.latency_ms > 0.0 {
                        m.latency_ms += v.latency_ms;
                        latency_n[i] += 1;
                    }
                }
                None => {
                    latency_n.push(u32::from(v.latency_ms > 0.0));
                    merged.push(v);
                }
            }
        }
    }
    for (m, n) in merged.iter_mut().zip(latency_n) {
        if n > 1 {
            m.latency_ms /= f64::from(n);
        }
    }
    merged
}

fn health_name(state: u8) -> &'static str {
    match state {
        0 => "healthy",
        1 => "partial_outage",
        _ => "complete_outage",
    }
}

/// LiteLLM's `GET /health` answer, from the router's view: a deployment in complete outage
/// (cooling down, or its breaker open) is unhealthy. Unlike LiteLLM, no upstream is called:
/// the view is what the gateway's own traffic showed.
pub fn litellm_health(snap: &Snapshot, views: &[DeploymentView]) -> serde_json::Value {
    let mut healthy = Vec::new();
    let mut unhealthy = Vec::new();
    for v in views {
        let Some(d) = snap
            .group(&v.model_group)
            .and_then(|g| g.deployments.iter().find(|d| d.id == v.deployment))
        else {
            continue;
        };
        let entry = serde_json::json!({
            "model": format!("{}/{}", d.provider, d.upstream_model),
            "model_name": d.group,
            "model_id": d.id,
            "api_base": d.api_base.as_deref().map(|b| redact_str(b, &snap.secrets)),
        });
        if v.state >= 2 {
            unhealthy.push(entry);
        } else {
            healthy.push(entry);
        }
    }
    serde_json::json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    })
}

/// A question to a shard about its state, answered by its control task.
pub enum ShardControl {
    /// Its view of every deployment of `snap`.
    DeploymentViews {
        snap: Arc<Snapshot>,
        reply: flume::Sender<Vec<DeploymentView>>,
    },
    /// Virtual keys (by hash) changed through the management API: drop their cached entries.
    InvalidateKeys {
        tokens: Arc<Vec<String>>,
        done: flume::Sender<()>,
    },
}
