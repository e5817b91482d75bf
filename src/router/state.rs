//! The shard's view of each deployment: plain `Cell`s, written only by this shard.

use std::cell::Cell;

use super::health::Breaker;
use super::Millis;

/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;
const MINUTE_MS: Millis = 60_000;

/// One deployment as this shard has seen it.
#[derive(Debug, Default)]
pub struct DeploymentState {
    pub(super) in_flight: Cell<u32>,
    /// Moving averages of the whole request and of the time to the first token, in ms
    /// (0: no sample yet).
    pub(super) latency_ms: Cell<f64>,
    pub(super) ttft_ms: Cell<f64>,
    /// When this deployment was last chosen.
    pub(super) last_picked: Cell<Option<Millis>>,
    /// The current minute (its start) and what it has seen: for usage-based routing and the
    /// cooldown's per-minute counts.
    pub(super) minute: Cell<Millis>,
    pub(super) minute_requests: Cell<u32>,
    pub(super) minute_tokens: Cell<u64>,
    pub(super) minute_fails: Cell<u32>,
    /// Out of rotation until then (cooldown).
    pub(super) cooldown_until: Cell<Millis>,
    pub(super) breaker: Breaker,
    /// Lifetime counts on this shard, for the admin view.
    pub(super) total_requests: Cell<u64>,
    pub(super) total_failures: Cell<u64>,
    pub(super) cooldowns: Cell<u64>,
}

impl DeploymentState {
    /// Rolls the per-minute counters over when a new minute has begun.
    pub(super) fn roll_minute(&self, now: Millis) {
        let start = now - now % MINUTE_MS;
        if self.minute.get() != start {
            self.minute.set(start);
            self.minute_requests.set(0);
            self.minute_tokens.set(0);
            self.minute_fails.set(0);
        }
    }

    /// A request to this deployment begins.
    pub fn begin(&self, now: Millis, estimated_tokens: u64) {
        self.roll_minute(now);
        self.in_flight.set(self.in_flight.get() + 1);
        self.last_picked.set(Some(now));
        self.minute_requests.set(self.minute_requests.get() + 1);
        self.minute_tokens
            .set(self.minute_tokens.get() + estimated_tokens);
        self.total_requests.set(self.total_requests.get() + 1);
    }

    /// A request ends (whatever its outcome; the outcome goes to `health::record`).
    pub fn end(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }

    /// Replaces an up-front token estimate by the real count once usage is known.
    pub fn correct_tokens(&self, now: Millis, estimated: u64, actual: u64) {
        self.roll_minute(now);
        let t = self.minute_tokens.get().saturating_sub(estimated) + actual;
        self.minute_tokens.set(t);
    }

    /// A latency sample: the whole exchange, and the time to the first token for streams.
    pub fn observe_latency(&self, total_ms: f64, ttft_ms: Option<f64>) {
        ewma(&self.latency_ms, total_ms);
        if let Some(t) = ttft_ms {
            ewma(&self.ttft_ms, t);
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// Latency for routing: time to first token where known (streams), else the whole exchange.
    pub fn latency(&self, stream: bool) -> Option<f64> {
        let t = if stream && self.ttft_ms.get() > 0.0 {
            self.ttft_ms.get()
        } else {
            self.latency_ms.get()
        };
        (t > 0.0).then_some(t)
    }

    pub fn latency_ms(&self) -> f64 {
        self.latency_ms.get()
    }

    /// A cooldown another gateway set (shared through Redis): extends this shard's, never
    /// shortens it.
    pub fn cool_until(&self, until: Millis) {
        if until > self.cooldown_until.get() {
            self.cooldown_until.set(until);
        }
    }

    pub fn cooling_until(&self, now: Millis) -> Option<Millis> {
        let until = self.cooldown_until.get();
        (until > now).then_some(until)
    }

    /// This minute's requests and tokens.
    pub fn minute_usage(&self, now: Millis) -> (u32, u64) {
        self.roll_minute(now);
        (self.minute_requests.get(), self.minute_tokens.get())
    }

    pub fn breaker_phase(&self) -> super::BreakerPhase {
        self.breaker.phase()
    }

    /// The request just begun is one of the half-open breaker's probes.
    pub fn probe_started(&self) {
        self.breaker.probe_started();
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.total_requests.get(),
            self.total_failures.get(),
            self.cooldowns.get(),
        )
    }
}

fn ewma(cell: &Cell<f64>, sample: f64) {
    let old = cell.get();
    cell.set(if old <= 0.0 {
        sample
    } else {
        old + EWMA_ALPHA * (sample - old)
    });
}

/// Per group and shard: the round-robin position.
#[derive(Debug, Default)]
pub struct GroupState {
    pub(super) next: Cell<usize>,
}

/// The start of the minute `now` is in, and the ms left in it.
pub fn minute_left(now: Millis) -> Millis {
    MINUTE_MS - now % MINUTE_MS
}
