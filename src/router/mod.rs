//! Routing and resilience: which deployment of a model group to try next, whether a failure is
//! retried, falls back to another group or ends the request, and how long to wait first.
//!
//! The router decides and never sends. Its decisions are pure functions of the group's
//! deployments ([`DeploymentSpec`], from the config), the shard's view of each one
//! ([`DeploymentState`]: in-flight count, latency, this minute's usage, cooldown, breaker), the
//! clock and a random source — both injected ([`Millis`], [`Rand`]), so every decision is tested
//! without sleeps or sockets. The gateway executes the attempts and reports each outcome back.
//!
//! All state is shard-local (`Cell`s): no lock and no shared atomic on the request path. A
//! shard's view converges from its own traffic, so cooldowns and breakers are per shard:
//! `allowed_fails: 3` means three failures on that shard. Limits that must hold for the whole
//! process (`max_parallel_requests`, `rpm`, `tpm`) are leased from an owner on the control
//! plane (`limits`).

pub mod health;
pub mod limits;

pub mod policy;
pub mod settings;
pub mod state;
pub mod strategy;

pub use health::{BreakerPhase, HealthChange};
pub use policy::{Failure, FailureClass, FailureSource, NextStep};
pub use settings::{RouterSettings, Strategy};
pub use state::{DeploymentState, GroupState};
pub use strategy::{pick, Pick, Unavailable};

/// Milliseconds on a monotonic clock (the origin is arbitrary: only differences matter).
pub type Millis = u64;

/// The static facts about one deployment that routing reads (from `model_list`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentSpec {
    /// Share of traffic for `simple-shuffle` (`weight`, else `rpm`, else `tpm`, else equal).
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Priority: lower orders are used while any of them is healthy (`litellm_params.order`).
    pub order: u32,
    /// Most requests in flight at once for the whole process (`max_parallel_requests`).
    pub max_parallel: Option<u32>,
    /// USD per input and per output token, where known (cost-based routing).
    pub input_cost: Option<f64>,
    pub output_cost: Option<f64>,
    /// Retries on this deployment's failures (`litellm_params.max_retries`), overriding the
    /// router's `num_retries` for attempts that fail here.
    pub max_retries: Option<u32>,
}

/// A source of uniform random numbers in `[0, 1)`, injected so that tests are deterministic.
pub trait Rand {
    fn next_f64(&mut self) -> f64;
}

/// The shard's random source.
pub struct FastRand(pub fastrand::Rng);

impl Rand for FastRand {
    fn next_f64(&mut self) -> f64 {
        self.0.f64()
    }
}

/// A fixed sequence, for tests.
#[cfg(test)]
pub struct SeqRand(pub Vec<f64>, pub usize);

#[cfg(test)]
impl Rand for SeqRand {
    fn next_f64(&mut self) -> f64 {
        let v = self
            .0
            .get(self.1 % self.0.len().max(1))
            .copied()
            .unwrap_or(0.0);
        self.1 += 1;
        v
    }
}
