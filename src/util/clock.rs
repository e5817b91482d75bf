//! Coarse clocks, for times that are counted in seconds or milliseconds.
//!
//! A precise clock read (`Instant::now`, `SystemTime::now`) costs 20–28 ns on the machines the
//! gateway is measured on (a vDSO call that reads the TSC), and a request used to make 18 of
//! them. The kernel's coarse clocks (`CLOCK_MONOTONIC_COARSE`, `CLOCK_REALTIME_COARSE`) return
//! the time of the last timer tick from the same vDSO page for about 4 ns: they lag by at most
//! one tick (1–4 ms, `clock_getres`). They serve what is measured in seconds or minutes — the
//! router's millisecond clock (cooldowns, rate windows), idle pool connections, the `now()` of
//! provider files — never a latency or a duration that is reported.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point on the monotonic clock, read coarsely. Comparable only with other coarse instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoarseInstant(Duration);

impl CoarseInstant {
    pub fn now() -> Self {
        Self(read(Clock::Monotonic))
    }

    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn elapsed(self) -> Duration {
        Self::now().saturating_duration_since(self)
    }
}

/// Seconds since the Unix epoch, read coarsely (0 before 1970).
pub fn coarse_unix_secs() -> u64 {
    read(Clock::Realtime).as_secs()
}

/// How long a thread's pairing of the two clocks serves before it is read again.
const REANCHOR: Duration = Duration::from_secs(1);

/// Nanoseconds since the Unix epoch at `at`, a monotonic instant the caller already read: a
/// span's start and end are instants the request path reads anyway, so they cost no clock
/// read of their own. Each thread pairs the monotonic clock with the wall clock once a second
/// (two precise reads) and counts from there, so the wall time is as exact as that pairing:
/// a wall clock that NTP slews (at most 500 ppm) drifts from it by at most 0.5 ms within the
/// second, and a step of the wall clock shows within a second. Durations between instants are
/// exact.
pub fn unix_nanos_at(at: Instant) -> u64 {
    thread_local! {
        static ANCHOR: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
    }
    ANCHOR.with(|anchor| {
        if let Some((mono, wall)) = anchor.get() {
            // One subtraction of instants per call: each is a normalising `timespec` one.
            match at.checked_duration_since(mono) {
                Some(ahead) if ahead < REANCHOR => return wall.saturating_add(nanos(ahead)),
                Some(_) => {}
                None => return wall.saturating_sub(nanos(mono.duration_since(at))),
            }
        }
        let (mono, wall) = (Instant::now(), unix_nanos(SystemTime::now()));
        anchor.set(Some((mono, wall)));
        match at.checked_duration_since(mono) {
            Some(ahead) => wall.saturating_add(nanos(ahead)),
            None => wall.saturating_sub(nanos(mono.duration_since(at))),
        }
    })
}

fn nanos(d: Duration) -> u64 {
    // Without `as_nanos`'s 128-bit product: 584 years of nanoseconds fit in 64 bits.
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, nanos)
}

#[derive(Clone, Copy)]
enum Clock {
    Monotonic,
    Realtime,
}

#[cfg(target_os = "linux")]
fn read(clock: Clock) -> Duration {
    let id = match clock {
        Clock::Monotonic => libc::CLOCK_MONOTONIC_COARSE,
        Clock::Realtime => libc::CLOCK_REALTIME_COARSE,
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return precise(clock);
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
fn read(clock: Clock) -> Duration {
    precise(clock)
}

/// The precise clocks, where there is no coarse one.
fn precise(clock: Clock) -> Duration {
    match clock {
        Clock::Monotonic => {
            static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            ORIGIN.get_or_init(Instant::now).elapsed()
        }
        Clock::Realtime => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_follow_the_precise_ones_within_a_tick() {
        let a = CoarseInstant::now();
        std::thread::sleep(Duration::from_millis(30));
        let b = CoarseInstant::now();
        let d = b.saturating_duration_since(a);
        // One tick is at most 10 ms (HZ=100) on either end.
        assert!(d >= Duration::from_millis(10), "{d:?}");
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(wall.abs_diff(coarse_unix_secs()) <= 1);
    }

    #[test]
    fn instants_convert_to_wall_time() {
        let before = unix_nanos(SystemTime::now());
        let at = Instant::now();
        let after = unix_nanos(SystemTime::now());
        let converted = unix_nanos_at(at);
        // The pairing's own two reads may straddle a few microseconds.
        let slack = 5_000_000;
        assert!(
            converted + slack >= before && converted <= after + slack,
            "{before} {converted} {after}"
        );
        // Differences between instants are kept exactly, forwards and backwards from the pairing.
        let later = at + Duration::from_millis(1500);
        let earlier = at - Duration::from_millis(700);
        let converted_later = unix_nanos_at(later);
        assert_eq!(unix_nanos_at(earlier) + 2_200_000_000, converted_later);
        assert_eq!(unix_nanos(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
