//! Coarse clocks, for times that are counted in seconds or milliseconds.
//!
//! A precise clock read (`Instant::now`, `SystemTime::now`) costs 20–28 ns on the machines the
//! gateway is measured on (a vDSO call that reads the TSC), and a request used to make 18 of
//! them. The kernel's coarse clocks (`CLOCK_MONOTONIC_COARSE`, `CLOCK_REALTIME_COARSE`) return
//! the time of the last timer tick from the same vDSO page for about 4 ns: they lag by at most
//! one tick (1–4 ms, `clock_getres`). They serve what is measured in seconds or minutes — the
//! router's millisecond clock (cooldowns, rate windows), idle pool connections, the `now()` of
//! provider files — never a latency or a duration that is reported.

use std::time::Duration;

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
            ORIGIN.get_or_init(std::time::Instant::now).elapsed()
        }
        Clock::Realtime => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
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
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(wall.abs_diff(coarse_unix_secs()) <= 1);
    }
}
