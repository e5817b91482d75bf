//! The router's settings for one config snapshot, read from LiteLLM's `router_settings` (names
//! and defaults as LiteLLM uses them) and LLMux's `llmux.router` section.

use std::collections::HashMap;

use super::Millis;

/// How a deployment is chosen among the healthy ones of a group (`routing_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Weighted random (`weight`, else `rpm`, else `tpm`, else equal): LiteLLM's default.
    SimpleShuffle,
    RoundRobin,
    /// Fewest requests in flight on this shard.
    LeastBusy,
    /// Lowest recent latency (time to first token for streams), within a tolerance.
    LatencyBased,
    /// Lowest share of the deployment's `rpm`/`tpm` used this minute.
    UsageBased,
    /// Cheapest per token where the price is known.
    CostBased,
}

impl Strategy {
    pub const NAMES: &'static [&'static str] = &[
        "simple-shuffle",
        "round-robin",
        "least-busy",
        "latency-based-routing",
        "usage-based-routing",
        "usage-based-routing-v2",
        "cost-based-routing",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "simple-shuffle" | "shuffle" => Self::SimpleShuffle,
            "round-robin" | "round_robin" => Self::RoundRobin,
            "least-busy" => Self::LeastBusy,
            "latency-based-routing" => Self::LatencyBased,
            "usage-based-routing" | "usage-based-routing-v2" => Self::UsageBased,
            "cost-based-routing" => Self::CostBased,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::RoundRobin => "round-robin",
            Self::LeastBusy => "least-busy",
            Self::LatencyBased => "latency-based-routing",
            Self::UsageBased => "usage-based-routing",
            Self::CostBased => "cost-based-routing",
        }
    }
}

/// When a failing deployment is taken out of rotation for a while (LiteLLM's cooldown).
#[derive(Debug, Clone, PartialEq)]
pub struct CooldownPolicy {
    pub disabled: bool,
    /// Failures in the current minute after which the deployment cools down
    /// (`allowed_fails`, default 3).
    pub allowed_fails: u32,
    /// How long a cooldown lasts (`cooldown_time`, default 5 s).
    pub cooldown_ms: Millis,
    /// Also cool down when more than this share of the minute's requests failed (LiteLLM's 50 %),
    /// once at least `min_requests` were made.
    pub failure_rate: f64,
    pub min_requests: u32,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        Self {
            disabled: false,
            allowed_fails: 3,
            cooldown_ms: 5_000,
            failure_rate: 0.5,
            min_requests: 5,
        }
    }
}

/// The circuit breaker of each deployment (`llmux.router.breaker`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub enabled: bool,
    /// Opens after this many failures in a row ...
    pub consecutive_failures: u32,
    /// ... or when this share of the requests in `window_ms` failed, once `min_requests` were made.
    pub failure_rate: f64,
    pub window_ms: Millis,
    pub min_requests: u32,
    /// How long it stays open before probes are let through (half-open).
    pub open_ms: Millis,
    /// Requests let through at once while half-open; as many successes close it again.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_ms: 30_000,
            min_requests: 20,
            open_ms: 30_000,
            half_open_probes: 1,
        }
    }
}

/// Retries within a group.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Further attempts after the first (`num_retries`, default 2 as in LiteLLM and the OpenAI
    /// SDK).
    pub num_retries: u32,
    /// Backoff before retrying the same deployment: base × 2^(n−1), with full jitter, capped.
    pub backoff_base_ms: Millis,
    pub backoff_max_ms: Millis,
    /// A `Retry-After` from the upstream is honoured up to this long.
    pub retry_after_max_ms: Millis,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            num_retries: 2,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            retry_after_max_ms: 10_000,
        }
    }
}

/// Groups to try when a group's attempts are used up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fallbacks {
    /// Any retryable failure (`fallbacks`).
    pub general: HashMap<String, Vec<String>>,
    /// The prompt did not fit (`context_window_fallbacks`).
    pub context_window: HashMap<String, Vec<String>>,
    /// The content was refused (`content_policy_fallbacks`).
    pub content_policy: HashMap<String, Vec<String>>,
    /// For every group without its own `fallbacks` (`default_fallbacks`).
    pub default: Vec<String>,
    /// At most this many fallback groups per request (`max_fallbacks`, default 5).
    pub max: usize,
}

/// Waiting for a free slot of a deployment at its `max_parallel_requests`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    /// Requests that may wait per deployment and shard; beyond, 429 at once.
    pub max_waiting: usize,
    /// How long one may wait before a 429.
    pub timeout_ms: Millis,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            max_waiting: 100,
            timeout_ms: 10_000,
        }
    }
}

/// `latency-based-routing` arguments (`routing_strategy_args`).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyArgs {
    /// Deployments within this fraction of the fastest are chosen among at random
    /// (`lowest_latency_buffer`, LiteLLM's name; default 0).
    pub buffer: f64,
    /// A deployment not chosen for this long is tried once to refresh its latency, so that
    /// one that recovered is seen again.
    pub explore_after_ms: Millis,
}

impl Default for LatencyArgs {
    fn default() -> Self {
        Self {
            buffer: 0.0,
            explore_after_ms: 10_000,
        }
    }
}

/// Everything the router reads from one config snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouterSettings {
    pub strategy: Option<Strategy>,
    pub retry: RetryPolicy,
    pub cooldown: CooldownPolicy,
    pub breaker: BreakerPolicy,
    pub fallbacks: Fallbacks,
    pub queue: QueuePolicy,
    pub latency: LatencyArgs,
}

impl RouterSettings {
    pub fn strategy(&self) -> Strategy {
        self.strategy.unwrap_or(Strategy::SimpleShuffle)
    }
}
