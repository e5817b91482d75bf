//! Whether a deployment is fit to be tried: LiteLLM's cooldown (out of rotation for a while
//! after too many failures in a minute) and a circuit breaker (closed → open → half-open →
//! closed), both updated from each attempt's outcome.

use std::cell::Cell;

use super::policy::FailureClass;
use super::settings::{BreakerPolicy, CooldownPolicy};
use super::state::DeploymentState;
use super::Millis;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerPhase {
    #[default]
    Closed,
    /// No requests until then.
    Open { until: Millis },
    /// Probes decide: `in_flight` of them out, `successes` came back fine.
    HalfOpen { in_flight: u32, successes: u32 },
}

/// A deployment's breaker (shard-local).
#[derive(Debug, Default)]
pub struct Breaker {
    phase: Cell<BreakerPhase>,
    consecutive_failures: Cell<u32>,
    window_start: Cell<Millis>,
    window_requests: Cell<u32>,
    window_failures: Cell<u32>,
}

/// Whether a request may go to a deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Yes,
    /// Yes, as one of the half-open breaker's probes.
    Probe,
    /// Not before then.
    No {
        until: Millis,
    },
}

/// A change of a deployment's state worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    CooledDown { until: Millis },
    BreakerOpened { until: Millis },
    BreakerHalfOpen,
    BreakerClosed,
}

impl Breaker {
    pub fn phase(&self) -> BreakerPhase {
        self.phase.get()
    }

    /// Whether the breaker lets a request through now; an open breaker whose time is up turns
    /// half-open here.
    pub fn admit(&self, policy: &BreakerPolicy, now: Millis) -> (Admission, Option<HealthChange>) {
        if !policy.enabled {
            return (Admission::Yes, None);
        }
        match self.phase.get() {
            BreakerPhase::Closed => (Admission::Yes, None),
            BreakerPhase::Open { until } if now < until => (Admission::No { until }, None),
            BreakerPhase::Open { .. } => {
                self.phase.set(BreakerPhase::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                });
                (Admission::Probe, Some(HealthChange::BreakerHalfOpen))
            }
            BreakerPhase::HalfOpen { in_flight, .. } if in_flight < policy.half_open_probes => {
                (Admission::Probe, None)
            }
            // Probes are out: ask again shortly.
            BreakerPhase::HalfOpen { .. } => (
                Admission::No {
                    until: now + policy.open_ms.min(1_000),
                },
                None,
            ),
        }
    }

    /// A probe was sent.
    pub fn probe_started(&self) {
        if let BreakerPhase::HalfOpen {
            in_flight,
            successes,
        } = self.phase.get()
        {
            self.phase.set(BreakerPhase::HalfOpen {
                in_flight: in_flight + 1,
                successes,
            });
        }
    }

    /// An outcome that says something about the deployment's health (`failed`) or a success.
    pub fn record(
        &self,
        policy: &BreakerPolicy,
        now: Millis,
        failed: bool,
        probe: bool,
    ) -> Option<HealthChange> {
        if !policy.enabled {
            return None;
        }
        if now.saturating_sub(self.window_start.get()) >= policy.window_ms {
            self.window_start.set(now);
            self.window_requests.set(0);
            self.window_failures.set(0);
        }
        self.window_requests.set(self.window_requests.get() + 1);
        if failed {
            self.window_failures.set(self.window_failures.get() + 1);
            self.consecutive_failures
                .set(self.consecutive_failures.get() + 1);
        } else {
            self.consecutive_failures.set(0);
        }
        match self.phase.get() {
            BreakerPhase::HalfOpen {
                in_flight,
                successes,
            } if probe => {
                if failed {
                    return Some(self.open(policy, now));
                }
                let successes = successes + 1;
                if successes >= policy.half_open_probes {
                    self.phase.set(BreakerPhase::Closed);
                    self.window_start.set(now);
                    self.window_requests.set(0);
                    self.window_failures.set(0);
                    return Some(HealthChange::BreakerClosed);
                }
                self.phase.set(BreakerPhase::HalfOpen {
                    in_flight: in_flight.saturating_sub(1),
                    successes,
                });
                None
            }
            BreakerPhase::Closed if failed => {
                let requests = self.window_requests.get();
                let rate = f64::from(self.window_failures.get()) / f64::from(requests.max(1));
                let trips = self.consecutive_failures.get() >= policy.consecutive_failures
                    || (requests >= policy.min_requests && rate >= policy.failure_rate);
                trips.then(|| self.open(policy, now))
            }
            _ => None,
        }
    }

    fn open(&self, policy: &BreakerPolicy, now: Millis) -> HealthChange {
        let until = now + policy.open_ms;
        self.phase.set(BreakerPhase::Open { until });
        self.consecutive_failures.set(0);
        HealthChange::BreakerOpened { until }
    }
}

/// Whether a failure of this class says the deployment is unwell (it counts towards cooldowns
/// and the breaker): yes for rate limits, timeouts, server and connection errors, and for
/// credentials or a model the deployment does not have (a misconfigured deployment); no for
/// what the client's request caused (a bad request, a prompt too long, refused content).
pub fn counts_against(class: FailureClass) -> bool {
    !matches!(
        class,
        FailureClass::BadRequest
            | FailureClass::ContextWindowExceeded
            | FailureClass::ContentPolicyViolation
            | FailureClass::Cancelled
    )
}

/// Records an attempt's outcome on a deployment: the cooldown's minute counters and the
/// breaker. `group_size` is the number of deployments in the group (a rate limit cools a
/// deployment down only when another can take over, as in LiteLLM).
pub fn record(
    state: &DeploymentState,
    cooldown: &CooldownPolicy,
    breaker: &BreakerPolicy,
    now: Millis,
    outcome: Option<FailureClass>,
    probe: bool,
    group_size: usize,
) -> Vec<HealthChange> {
    let mut changes = Vec::new();
    let failed = outcome.is_some_and(counts_against);
    if outcome == Some(FailureClass::Cancelled) {
        return changes;
    }
    state.roll_minute(now);
    if failed {
        state.minute_fails.set(state.minute_fails.get() + 1);
        state.total_failures.set(state.total_failures.get() + 1);
        if !cooldown.disabled && state.cooling_until(now).is_none() {
            let fails = state.minute_fails.get();
            let requests = state.minute_requests.get().max(fails);
            let rate = f64::from(fails) / f64::from(requests.max(1));
            let cool = fails > cooldown.allowed_fails
                || (requests >= cooldown.min_requests && rate > cooldown.failure_rate)
                || (outcome == Some(FailureClass::RateLimit) && group_size > 1);
            if cool {
                let until = now + cooldown.cooldown_ms;
                state.cooldown_until.set(until);
                state.cooldowns.set(state.cooldowns.get() + 1);
                // The minute starts over once the deployment is back.
                state.minute_fails.set(0);
                changes.push(HealthChange::CooledDown { until });
            }
        }
    }
    if let Some(c) = state.breaker.record(breaker, now, failed, probe) {
        changes.push(c);
    }
    changes
}

/// LiteLLM's `deployment_state`: 0 healthy, 1 partial outage, 2 complete outage.
pub fn state_code(state: &DeploymentState, now: Millis) -> u8 {
    if state.cooling_until(now).is_some() {
        return 2;
    }
    match state.breaker.phase() {
        BreakerPhase::Open { until } if until > now => 2,
        BreakerPhase::Open { .. } | BreakerPhase::HalfOpen { .. } => 1,
        BreakerPhase::Closed if state.minute_fails.get() > 0 => 1,
        BreakerPhase::Closed => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 3,
            failure_rate: 0.5,
            window_ms: 10_000,
            min_requests: 10,
            open_ms: 5_000,
            half_open_probes: 2,
        }
    }

    #[test]
    fn breaker_opens_half_opens_and_closes_or_reopens() {
        let p = policy();
        let b = Breaker::default();
        assert_eq!(b.admit(&p, 0).0, Admission::Yes);
        assert_eq!(b.record(&p, 1, true, false), None);
        assert_eq!(b.record(&p, 2, true, false), None);
        assert_eq!(
            b.record(&p, 3, true, false),
            Some(HealthChange::BreakerOpened { until: 5_003 })
        );
        assert_eq!(b.admit(&p, 4_000).0, Admission::No { until: 5_003 });
        // Time is up: half-open, two probes at most.
        assert_eq!(
            b.admit(&p, 5_003),
            (Admission::Probe, Some(HealthChange::BreakerHalfOpen))
        );
        b.probe_started();
        assert_eq!(b.admit(&p, 5_004).0, Admission::Probe);
        b.probe_started();
        assert!(matches!(b.admit(&p, 5_005).0, Admission::No { .. }));
        assert_eq!(b.record(&p, 5_010, false, true), None);
        assert_eq!(
            b.record(&p, 5_011, false, true),
            Some(HealthChange::BreakerClosed)
        );
        assert_eq!(b.phase(), BreakerPhase::Closed);
        // And open again: a failed probe reopens at once.
        for t in 0..3 {
            b.record(&p, 6_000 + t, true, false);
        }
        assert!(matches!(b.phase(), BreakerPhase::Open { .. }));
        b.admit(&p, 20_000);
        b.probe_started();
        assert_eq!(
            b.record(&p, 20_001, true, true),
            Some(HealthChange::BreakerOpened { until: 25_001 })
        );
    }

    #[test]
    fn breaker_opens_on_failure_rate() {
        let p = BreakerPolicy {
            consecutive_failures: 100,
            ..policy()
        };
        let b = Breaker::default();
        let mut opened = None;
        for i in 0..11 {
            // Alternating: never three in a row, half of them failures; the eleventh (a
            // failure) makes the window large enough to judge.
            opened = opened.or(b.record(&p, i, i % 2 == 0, false));
        }
        assert!(matches!(opened, Some(HealthChange::BreakerOpened { .. })));
    }

    #[test]
    fn cooldown_after_allowed_fails_and_not_for_client_errors() {
        let c = CooldownPolicy {
            allowed_fails: 2,
            cooldown_ms: 1_000,
            min_requests: 100,
            ..CooldownPolicy::default()
        };
        let b = BreakerPolicy {
            enabled: false,
            ..policy()
        };
        let s = DeploymentState::default();
        for _ in 0..5 {
            s.begin(0, 0);
            assert!(record(&s, &c, &b, 0, Some(FailureClass::BadRequest), false, 2).is_empty());
        }
        assert_eq!(s.cooling_until(0), None);
        for t in 1..=2 {
            assert!(record(&s, &c, &b, t, Some(FailureClass::Internal), false, 1).is_empty());
        }
        assert_eq!(
            record(&s, &c, &b, 3, Some(FailureClass::Internal), false, 1),
            vec![HealthChange::CooledDown { until: 1_003 }]
        );
        assert_eq!(s.cooling_until(500), Some(1_003));
        assert_eq!(state_code(&s, 500), 2);
        assert_eq!(s.cooling_until(1_003), None);
        // A rate limit cools down at once when another deployment can take over.
        let s = DeploymentState::default();
        assert!(!record(&s, &c, &b, 0, Some(FailureClass::RateLimit), false, 2).is_empty());
        let s = DeploymentState::default();
        assert!(record(&s, &c, &b, 0, Some(FailureClass::RateLimit), false, 1).is_empty());
    }
}
