//! Choosing a deployment of a group: the healthy ones first (not cooling down, breaker not open,
//! under their limits as this shard sees them), then the lowest `order`, then the strategy.

use super::health::Admission;
use super::settings::{RouterSettings, Strategy};
use super::state::{minute_left, DeploymentState, GroupState};
use super::{DeploymentSpec, Millis, Rand};

/// The chosen deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index into the group's deployments.
    pub index: usize,
    /// The request is one of a half-open breaker's probes (report it as such).
    pub probe: bool,
}

/// Why no deployment can be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every deployment is cooling down or its breaker is open: none before `retry_after_ms`.
    Down { retry_after_ms: Millis },
    /// Every available deployment is at its rpm/tpm for this minute.
    Limited { retry_after_ms: Millis },
    /// Every available deployment is at its `max_parallel_requests`: wait for `index`.
    Busy { index: usize },
}

#[derive(Clone, Copy)]
enum Fit {
    Ok { probe: bool },
    Down(Millis),
    Limited(Millis),
    Busy,
}

fn fitness(
    settings: &RouterSettings,
    spec: &DeploymentSpec,
    state: &DeploymentState,
    now: Millis,
) -> Fit {
    if let Some(until) = state.cooling_until(now) {
        return Fit::Down(until - now);
    }
    let probe = match state.breaker.admit(&settings.breaker, now).0 {
        Admission::Yes => false,
        Admission::Probe => true,
        Admission::No { until } => return Fit::Down(until.saturating_sub(now)),
    };
    let (requests, tokens) = state.minute_usage(now);
    let over =
        spec.rpm.is_some_and(|r| u64::from(requests) >= r) || spec.tpm.is_some_and(|t| tokens >= t);
    if over {
        return Fit::Limited(minute_left(now));
    }
    if spec
        .max_parallel
        .is_some_and(|m| state.in_flight.get() >= m)
    {
        return Fit::Busy;
    }
    Fit::Ok { probe }
}

/// A group's deployments as the router reads them: each one's spec and this shard's state, by
/// index. Implemented by the gateway's cached view of a group, so choosing builds no list.
pub trait Deployments {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn spec(&self, i: usize) -> &DeploymentSpec;
    fn state(&self, i: usize) -> &DeploymentState;
}

impl Deployments for (&[&DeploymentSpec], &[&DeploymentState]) {
    fn len(&self) -> usize {
        self.0.len().min(self.1.len())
    }
    fn spec(&self, i: usize) -> &DeploymentSpec {
        self.0[i]
    }
    fn state(&self, i: usize) -> &DeploymentState {
        self.1[i]
    }
}

/// The indices of the set bits of `mask`, lowest first.
fn bits(mask: u64) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            i
        })
    })
}

/// One of the set bits of `mask` (not empty), uniformly at random.
fn any_bit(mask: u64, rand: &mut impl Rand) -> usize {
    let n = mask.count_ones() as usize;
    let k = ((rand.next_f64() * n as f64) as usize).min(n - 1);
    bits(mask).nth(k).unwrap_or(0)
}

/// Chooses a deployment for the next attempt. Deployments in `tried` (bit per index) are
/// avoided while another can be used, so that a retry moves elsewhere. A group has at most 64
/// deployments (the config refuses more); bit sets stand in for lists, so choosing allocates
/// nothing.
pub fn pick(
    settings: &RouterSettings,
    deps: &impl Deployments,
    group: &GroupState,
    tried: u64,
    stream: bool,
    now: Millis,
    rand: &mut impl Rand,
) -> Result<Pick, Unavailable> {
    let n = deps.len().min(64);
    let mut fits = [Fit::Busy; 64];
    let mut usable = 0u64;
    for (i, fit) in fits.iter_mut().enumerate().take(n) {
        *fit = fitness(settings, deps.spec(i), deps.state(i), now);
        if matches!(fit, Fit::Ok { .. }) {
            usable |= 1 << i;
        }
    }
    if usable == 0 {
        return Err(unavailable(&fits[..n], deps));
    }
    let untried = usable & !tried;
    let mut candidates = if untried != 0 { untried } else { usable };
    // Priority: the lowest order among those that can take the request.
    let top = bits(candidates)
        .map(|i| deps.spec(i).order)
        .min()
        .unwrap_or(0);
    for i in bits(candidates) {
        if deps.spec(i).order != top {
            candidates &= !(1 << i);
        }
    }
    let index = choose(settings, deps, group, candidates, stream, now, rand);
    let probe = matches!(fits[index], Fit::Ok { probe: true });
    Ok(Pick { index, probe })
}

/// Whether a deployment of the group other than `except` could take a request now, as far as
/// its health goes (not cooling down, breaker not open). Reads only: unlike [`pick`], it moves
/// no breaker to half-open.
pub fn others_available(
    settings: &RouterSettings,
    deps: &impl Deployments,
    except: usize,
    now: Millis,
) -> bool {
    (0..deps.len()).any(|i| {
        let s = deps.state(i);
        i != except
            && s.cooling_until(now).is_none()
            && match s.breaker.phase() {
                super::BreakerPhase::Open { until } => !settings.breaker.enabled || until <= now,
                _ => true,
            }
    })
}

fn unavailable(fits: &[Fit], deps: &impl Deployments) -> Unavailable {
    let busy = fits
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Fit::Busy))
        .min_by_key(|(i, _)| deps.state(*i).in_flight.get());
    if let Some((index, _)) = busy {
        return Unavailable::Busy { index };
    }
    let limited = fits
        .iter()
        .filter_map(|f| match f {
            Fit::Limited(ms) => Some(*ms),
            _ => None,
        })
        .min();
    if let Some(retry_after_ms) = limited {
        return Unavailable::Limited { retry_after_ms };
    }
    let retry_after_ms = fits
        .iter()
        .filter_map(|f| match f {
            Fit::Down(ms) => Some(*ms),
            _ => None,
        })
        .min()
        .unwrap_or(1_000);
    Unavailable::Down { retry_after_ms }
}

fn choose(
    settings: &RouterSettings,
    deps: &impl Deployments,
    group: &GroupState,
    candidates: u64,
    stream: bool,
    now: Millis,
    rand: &mut impl Rand,
) -> usize {
    if candidates.count_ones() == 1 {
        return candidates.trailing_zeros() as usize;
    }
    match settings.strategy() {
        Strategy::SimpleShuffle => weighted(deps, candidates, rand),
        Strategy::RoundRobin => {
            let i = group.next.get();
            group.next.set(i.wrapping_add(1));
            let n = candidates.count_ones() as usize;
            bits(candidates).nth(i % n).unwrap_or(0)
        }
        Strategy::LeastBusy => lowest(candidates, rand, |i| {
            f64::from(deps.state(i).in_flight.get())
        }),
        Strategy::LatencyBased => {
            // A deployment not tried for a while (or never) is tried, so a recovered one is
            // seen again and a new one gets a first sample.
            let mut explore = 0u64;
            for i in bits(candidates) {
                let st = deps.state(i);
                let stale = st.latency(stream).is_none()
                    || st
                        .last_picked
                        .get()
                        .is_none_or(|t| now.saturating_sub(t) >= settings.latency.explore_after_ms);
                if stale {
                    explore |= 1 << i;
                }
            }
            if explore != 0 {
                return any_bit(explore, rand);
            }
            let lat = |i: usize| deps.state(i).latency(stream).unwrap_or(f64::MAX);
            let best = bits(candidates).map(lat).fold(f64::MAX, f64::min);
            let limit = best * (1.0 + settings.latency.buffer.max(0.0));
            let near = bits(candidates)
                .filter(|&i| lat(i) <= limit)
                .fold(0u64, |m, i| m | 1 << i);
            any_bit(near, rand)
        }
        Strategy::UsageBased => lowest(candidates, rand, |i| {
            let (requests, tokens) = deps.state(i).minute_usage(now);
            let spec = deps.spec(i);
            match (spec.tpm, spec.rpm) {
                (Some(t), _) if t > 0 => tokens as f64 / t as f64,
                (_, Some(r)) if r > 0 => f64::from(requests) / r as f64,
                _ => tokens as f64,
            }
        }),
        Strategy::CostBased => lowest(candidates, rand, |i| {
            let spec = deps.spec(i);
            match (spec.input_cost, spec.output_cost) {
                (None, None) => f64::MAX,
                (a, b) => a.unwrap_or(0.0) + b.unwrap_or(0.0),
            }
        }),
    }
}

/// Weighted random: `weight`, else `rpm`, else `tpm` (LiteLLM's order), else equal.
fn weighted(deps: &impl Deployments, candidates: u64, rand: &mut impl Rand) -> usize {
    type WeightOf = fn(&DeploymentSpec) -> Option<f64>;
    let sources: [WeightOf; 3] = [
        |s| s.weight,
        |s| s.rpm.map(|r| r as f64),
        |s| s.tpm.map(|t| t as f64),
    ];
    for f in sources {
        if !bits(candidates).any(|i| f(deps.spec(i)).is_some()) {
            continue;
        }
        let w = |i: usize| f(deps.spec(i)).unwrap_or(0.0).max(0.0);
        let total: f64 = bits(candidates).map(w).sum();
        if total <= 0.0 {
            continue;
        }
        let mut x = rand.next_f64() * total;
        let mut last = 0;
        for i in bits(candidates) {
            let wi = w(i);
            if x < wi {
                return i;
            }
            x -= wi;
            last = i;
        }
        return last;
    }
    any_bit(candidates, rand)
}

/// The candidate with the lowest score; ties are broken at random.
fn lowest(candidates: u64, rand: &mut impl Rand, score: impl Fn(usize) -> f64) -> usize {
    let best = bits(candidates).map(&score).fold(f64::MAX, f64::min);
    let ties = bits(candidates)
        .filter(|&i| score(i) <= best)
        .fold(0u64, |m, i| m | 1 << i);
    any_bit(ties, rand)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::settings::{BreakerPolicy, CooldownPolicy, LatencyArgs};
    use crate::router::{health, FailureClass, SeqRand};

    fn settings(strategy: Strategy) -> RouterSettings {
        RouterSettings {
            strategy: Some(strategy),
            latency: LatencyArgs {
                buffer: 0.1,
                explore_after_ms: 10_000,
            },
            ..RouterSettings::default()
        }
    }

    struct Group {
        specs: Vec<DeploymentSpec>,
        states: Vec<DeploymentState>,
        group: GroupState,
    }

    impl Group {
        fn new(specs: Vec<DeploymentSpec>) -> Self {
            let states = specs.iter().map(|_| DeploymentState::default()).collect();
            Self {
                specs,
                states,
                group: GroupState::default(),
            }
        }
        fn pick(
            &self,
            s: &RouterSettings,
            tried: u64,
            now: Millis,
            r: &mut SeqRand,
        ) -> Result<Pick, Unavailable> {
            let specs: Vec<&DeploymentSpec> = self.specs.iter().collect();
            let states: Vec<&DeploymentState> = self.states.iter().collect();
            pick(
                s,
                &(&specs[..], &states[..]),
                &self.group,
                tried,
                false,
                now,
                r,
            )
        }
        fn idx(&self, s: &RouterSettings, now: Millis, r: &mut SeqRand) -> usize {
            self.pick(s, 0, now, r).expect("a pick").index
        }
    }

    fn equal(n: usize) -> Vec<DeploymentSpec> {
        vec![DeploymentSpec::default(); n]
    }

    #[test]
    fn simple_shuffle_follows_weights_then_rpm() {
        let s = settings(Strategy::SimpleShuffle);
        let g = Group::new(vec![
            DeploymentSpec {
                weight: Some(1.0),
                ..Default::default()
            },
            DeploymentSpec {
                weight: Some(3.0),
                ..Default::default()
            },
        ]);
        // x = r × 4: below 1 → first, else second.
        assert_eq!(g.idx(&s, 0, &mut SeqRand(vec![0.2], 0)), 0);
        assert_eq!(g.idx(&s, 0, &mut SeqRand(vec![0.3], 0)), 1);
        let g = Group::new(vec![
            DeploymentSpec {
                rpm: Some(900),
                ..Default::default()
            },
            DeploymentSpec {
                rpm: Some(100),
                ..Default::default()
            },
        ]);
        assert_eq!(g.idx(&s, 0, &mut SeqRand(vec![0.85], 0)), 0);
        assert_eq!(g.idx(&s, 0, &mut SeqRand(vec![0.95], 0)), 1);
    }

    #[test]
    fn round_robin_and_least_busy() {
        let g = Group::new(equal(3));
        let s = settings(Strategy::RoundRobin);
        let mut r = SeqRand(vec![0.0], 0);
        let seq: Vec<usize> = (0..4).map(|_| g.idx(&s, 0, &mut r)).collect();
        assert_eq!(seq, vec![0, 1, 2, 0]);
        let s = settings(Strategy::LeastBusy);
        g.states[0].begin(0, 0);
        g.states[0].begin(0, 0);
        g.states[1].begin(0, 0);
        assert_eq!(g.idx(&s, 0, &mut r), 2);
        g.states[2].begin(0, 0);
        g.states[2].begin(0, 0);
        assert_eq!(g.idx(&s, 0, &mut r), 1);
    }

    #[test]
    fn latency_prefers_the_fastest_within_the_buffer_and_explores() {
        let s = settings(Strategy::LatencyBased);
        let g = Group::new(equal(3));
        let mut r = SeqRand(vec![0.0, 0.99], 0);
        // No samples yet: everything is explored first.
        for (i, ms) in [(0, 100.0), (1, 105.0), (2, 300.0)] {
            g.states[i].begin(1_000, 0);
            g.states[i].observe_latency(ms, None);
            g.states[i].end();
        }
        // 100 and 105 are within 10 %; 300 is not.
        assert_eq!(g.idx(&s, 2_000, &mut r), 0);
        assert_eq!(g.idx(&s, 2_000, &mut r), 1);
        for _ in 0..10 {
            assert_ne!(g.idx(&s, 2_000, &mut r), 2);
        }
        // The slow one, not chosen for 10 s, is tried once to see whether it recovered.
        g.states[0].last_picked.set(Some(12_000));
        g.states[1].last_picked.set(Some(12_000));
        assert_eq!(g.idx(&s, 12_000, &mut r), 2);
    }

    #[test]
    fn usage_and_cost() {
        let s = settings(Strategy::UsageBased);
        let g = Group::new(vec![
            DeploymentSpec {
                tpm: Some(1_000),
                ..Default::default()
            },
            DeploymentSpec {
                tpm: Some(10_000),
                ..Default::default()
            },
        ]);
        let mut r = SeqRand(vec![0.0], 0);
        g.states[0].begin(0, 100); // 10 % used
        g.states[1].begin(0, 500); // 5 % used
        assert_eq!(g.idx(&s, 0, &mut r), 1);
        // At its tpm, a deployment is not used at all.
        g.states[1].begin(0, 9_500);
        assert_eq!(g.idx(&s, 0, &mut r), 0);
        let s = settings(Strategy::CostBased);
        let g = Group::new(vec![
            DeploymentSpec {
                input_cost: Some(3e-6),
                output_cost: Some(15e-6),
                ..Default::default()
            },
            DeploymentSpec {
                input_cost: Some(1e-6),
                output_cost: Some(2e-6),
                ..Default::default()
            },
            DeploymentSpec::default(),
        ]);
        assert_eq!(g.idx(&s, 0, &mut r), 1);
    }

    #[test]
    fn order_tried_and_unavailable() {
        let s = RouterSettings {
            cooldown: CooldownPolicy {
                allowed_fails: 0,
                cooldown_ms: 5_000,
                ..Default::default()
            },
            breaker: BreakerPolicy {
                enabled: false,
                ..Default::default()
            },
            ..settings(Strategy::SimpleShuffle)
        };
        let g = Group::new(vec![
            DeploymentSpec {
                order: 1,
                ..Default::default()
            },
            DeploymentSpec {
                order: 2,
                ..Default::default()
            },
        ]);
        let mut r = SeqRand(vec![0.9], 0);
        assert_eq!(g.idx(&s, 0, &mut r), 0, "the lower order first");
        // A retry avoids the deployment already tried.
        assert_eq!(g.pick(&s, 0b01, 0, &mut r).map(|p| p.index), Ok(1));
        // Order 1 cooling down: order 2 serves.
        health::record(
            &g.states[0],
            &s.cooldown,
            &s.breaker,
            0,
            Some(FailureClass::Internal),
            false,
            2,
        );
        assert_eq!(g.idx(&s, 10, &mut r), 1);
        health::record(
            &g.states[1],
            &s.cooldown,
            &s.breaker,
            20,
            Some(FailureClass::Internal),
            false,
            2,
        );
        assert_eq!(
            g.pick(&s, 0, 1_000, &mut r),
            Err(Unavailable::Down {
                retry_after_ms: 4_000
            })
        );
        assert_eq!(g.idx(&s, 5_000, &mut r), 0, "back after the cooldown");
        // At max_parallel_requests: wait for the least busy.
        let g = Group::new(vec![DeploymentSpec {
            max_parallel: Some(1),
            ..Default::default()
        }]);
        g.states[0].begin(0, 0);
        assert_eq!(
            g.pick(&s, 0, 0, &mut r),
            Err(Unavailable::Busy { index: 0 })
        );
        // At the rpm for this minute: limited until the minute ends.
        let g = Group::new(vec![DeploymentSpec {
            rpm: Some(1),
            ..Default::default()
        }]);
        g.states[0].begin(59_000, 0);
        assert_eq!(
            g.pick(&s, 0, 59_500, &mut r),
            Err(Unavailable::Limited {
                retry_after_ms: 500
            })
        );
    }
}
