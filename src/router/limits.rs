//! Deployment limits that hold for the whole process: `max_parallel_requests` (requests in
//! flight), `rpm` and `tpm` (per minute, as token buckets).
//!
//! SO_REUSEPORT pins a keep-alive client to one shard, so a limit split into equal shard shares
//! would break small limits (`max_parallel_requests: 1` must mean one). Instead an owner thread
//! on the control plane holds every limit, and shards lease from it by message passing: no lock
//! and no shared atomic on the request path.
//!
//! - Requests in flight are permits. A shard asks for one when it has none idle; the owner
//!   grants it at once or queues the shard's request until a permit comes back. Where the limit
//!   is large, a shard keeps the permits it has freed (up to its lease size) for its next
//!   requests instead of handing each one back; where it is small (at most four per shard) every
//!   permit goes back at once, so another shard can use it.
//! - `rpm` and `tpm` are token buckets (capacity one minute's worth, refilled continuously).
//!   Requests take one rpm token; `tpm` is charged up front with an estimate of the prompt and
//!   corrected by the real usage (the correction may put the bucket in debt). A request takes
//!   its tokens from the owner itself (one message and its answer, only for deployments that
//!   set `rpm` or `tpm`), so the buckets are exact across shards.
//!
//! Worst-case error: never more in flight than `max_parallel_requests`, never more than `rpm`
//! requests in any minute (a bucket holds at most a minute's tokens, taken before use). Leases
//! only make a concurrency limit stricter: permits idle in one shard are unavailable to the
//! others — at most `lease` per shard, with `lease` = limit / (4 × shards), and none for limits
//! up to 4 × shards. `tpm` is charged by estimate: a minute may overshoot by the difference
//! between the estimates and the real counts of the requests admitted before their usage came
//! back.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a deployment is limited to (from its `DeploymentSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub max_parallel: Option<u32>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.max_parallel.is_some() || self.rpm.is_some() || self.tpm.is_some()
    }
}

enum Msg {
    /// A permit for a request in flight: granted (now or when one comes back).
    Acquire {
        id: Rc2,
        limit: u32,
        want: u32,
        reply: flume::Sender<u32>,
    },
    /// Permits given back.
    Release { id: Rc2, count: u32 },
    /// Rate tokens: `requests` rpm tokens and `tokens` tpm tokens, taken together or not at all.
    Take {
        id: Rc2,
        limits: Limits,
        requests: u32,
        tokens: u64,
        reply: flume::Sender<Result<(), Duration>>,
    },
    /// A correction of a tpm charge (positive: more was used; negative: less).
    Correct { id: Rc2, tokens: i64 },
}

/// Deployment ids cross threads as `Arc<str>`.
type Rc2 = std::sync::Arc<str>;

/// The owner's side: runs on its own control-plane thread.
#[derive(Default)]
struct Owner {
    sems: HashMap<Rc2, Semaphore>,
    buckets: HashMap<Rc2, (Option<Bucket>, Option<Bucket>)>,
}

#[derive(Default)]
struct Semaphore {
    in_use: u32,
    waiting: VecDeque<(u32, flume::Sender<u32>)>,
    limit: u32,
}

struct Bucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Self {
        let capacity = per_minute as f64;
        Self {
            capacity,
            tokens: capacity,
            per_sec: capacity / 60.0,
            at: now,
        }
    }

    fn refill(&mut self, per_minute: u64, now: Instant) {
        // A reload may change the limit.
        if (per_minute as f64 - self.capacity).abs() > f64::EPSILON {
            self.capacity = per_minute as f64;
            self.per_sec = self.capacity / 60.0;
            self.tokens = self.tokens.min(self.capacity);
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.at = now;
    }

    /// Time until `n` tokens are there.
    fn wait_for(&self, n: f64) -> Duration {
        if self.per_sec <= 0.0 {
            return Duration::from_secs(60);
        }
        Duration::from_secs_f64(((n - self.tokens) / self.per_sec).max(0.0))
    }
}

impl Owner {
    fn handle(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::Acquire {
                id,
                limit,
                want,
                reply,
            } => {
                let s = self.sems.entry(id).or_default();
                s.limit = limit;
                s.waiting.push_back((want, reply));
                s.grant();
            }
            Msg::Release { id, count } => {
                if let Some(s) = self.sems.get_mut(&id) {
                    s.in_use = s.in_use.saturating_sub(count);
                    s.grant();
                }
            }
            Msg::Take {
                id,
                limits,
                requests,
                tokens,
                reply,
            } => {
                let (rpm, tpm) = self.buckets.entry(id).or_insert((None, None));
                let ok = take(
                    rpm,
                    limits.rpm,
                    requests as f64,
                    tpm,
                    limits.tpm,
                    tokens as f64,
                    now,
                );
                let _ = reply.send(ok);
            }
            Msg::Correct { id, tokens } => {
                if let Some((_, Some(t))) = self.buckets.get_mut(&id) {
                    t.tokens -= tokens as f64;
                }
            }
        }
    }
}

fn take(
    rpm: &mut Option<Bucket>,
    rpm_limit: Option<u64>,
    requests: f64,
    tpm: &mut Option<Bucket>,
    tpm_limit: Option<u64>,
    tokens: f64,
    now: Instant,
) -> Result<(), Duration> {
    let ready = |b: &mut Option<Bucket>, limit: Option<u64>, n: f64| -> Result<(), Duration> {
        let Some(limit) = limit else {
            *b = None;
            return Ok(());
        };
        let bucket = b.get_or_insert_with(|| Bucket::new(limit, now));
        bucket.refill(limit, now);
        // A request larger than the whole minute's tpm still passes when the bucket is full:
        // refusing it forever would be worse than one full minute.
        if bucket.tokens >= n.min(bucket.capacity) {
            Ok(())
        } else {
            Err(bucket.wait_for(n.min(bucket.capacity)))
        }
    };
    let r = ready(rpm, rpm_limit, requests);
    let t = ready(tpm, tpm_limit, tokens);
    match (r, t) {
        (Ok(()), Ok(())) => {
            if let Some(b) = rpm {
                b.tokens -= requests;
            }
            if let Some(b) = tpm {
                b.tokens -= tokens;
            }
            Ok(())
        }
        (Err(a), Err(b)) => Err(a.max(b)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

impl Semaphore {
    fn grant(&mut self) {
        while let Some((want, _)) = self.waiting.front() {
            let free = self.limit.saturating_sub(self.in_use);
            if free == 0 {
                return;
            }
            let n = (*want).min(free).max(1);
            let Some((_, reply)) = self.waiting.pop_front() else {
                return;
            };
            // A shard that gave up waiting has dropped its receiver: the permits stay free.
            if reply.send(n).is_ok() {
                self.in_use += n;
            }
        }
    }
}

/// The handle shards use; cloned into each shard.
#[derive(Clone)]
pub struct LimitsHandle {
    tx: flume::Sender<Msg>,
    shards: u32,
}

impl LimitsHandle {
    /// Starts the owner thread.
    pub fn start(shards: usize) -> std::io::Result<Self> {
        let (tx, rx) = flume::unbounded::<Msg>();
        std::thread::Builder::new()
            .name("llmux-limits".into())
            .spawn(move || {
                let mut owner = Owner::default();
                while let Ok(msg) = rx.recv() {
                    owner.handle(msg, Instant::now());
                }
            })?;
        Ok(Self {
            tx,
            shards: shards.max(1) as u32,
        })
    }

    /// A shard's limiter over this owner.
    pub fn shard(&self) -> ShardLimiter {
        ShardLimiter {
            owner: self.clone(),
            idle: RefCell::new(HashMap::new()),
        }
    }
}

/// A shard's view: the permits it holds idle, per deployment.
pub struct ShardLimiter {
    owner: LimitsHandle,
    idle: RefCell<HashMap<Rc2, Rc<Cell<u32>>>>,
}

/// Why a request may not go to a deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No permit came within the wait.
    Busy,
    /// Over `rpm`/`tpm`: tokens are back after this long.
    Limited(Duration),
}

/// A permit for one request in flight; given back on drop.
pub struct Permit {
    idle: Rc<Cell<u32>>,
    owner: LimitsHandle,
    id: Rc2,
    limit: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let keep = lease(self.limit, self.owner.shards);
        if self.limit > 4 * self.owner.shards && self.idle.get() < keep {
            // Kept for this shard's next request.
            self.idle.set(self.idle.get() + 1);
        } else {
            let _ = self.owner.tx.send(Msg::Release {
                id: self.id.clone(),
                count: 1,
            });
        }
    }
}

/// Permits leased at once for a limit: a quarter of a shard's share, at least one.
fn lease(limit: u32, shards: u32) -> u32 {
    (limit / (4 * shards)).max(1)
}

impl ShardLimiter {
    /// A permit for one request in flight on deployment `id`, limited to `limit` for the whole
    /// process; waits up to `wait` for one to come back.
    pub async fn permit(&self, id: &Rc2, limit: u32, wait: Duration) -> Result<Permit, Refused> {
        let idle = self
            .idle
            .borrow_mut()
            .entry(id.clone())
            .or_default()
            .clone();
        let make = |idle: Rc<Cell<u32>>| Permit {
            idle,
            owner: self.owner.clone(),
            id: id.clone(),
            limit,
        };
        if idle.get() > 0 {
            idle.set(idle.get() - 1);
            return Ok(make(idle));
        }
        let want = if limit > 4 * self.owner.shards {
            lease(limit, self.owner.shards)
        } else {
            1
        };
        let (reply, rx) = flume::bounded(1);
        self.owner
            .tx
            .send(Msg::Acquire {
                id: id.clone(),
                limit,
                want,
                reply,
            })
            .map_err(|_| Refused::Busy)?;
        match monoio::time::timeout(wait, rx.recv_async()).await {
            Ok(Ok(n)) => {
                // One for this request, the rest idle here.
                idle.set(idle.get() + n.saturating_sub(1));
                Ok(make(idle))
            }
            // Gave up: the owner finds the receiver gone and keeps the permit free.
            _ => Err(Refused::Busy),
        }
    }

    /// One request's rpm token and its estimated tpm charge on deployment `id`.
    pub async fn take(&self, id: &Rc2, limits: Limits, tokens: u64) -> Result<(), Refused> {
        if limits.rpm.is_none() && limits.tpm.is_none() {
            return Ok(());
        }
        let (reply, rx) = flume::bounded(1);
        self.owner
            .tx
            .send(Msg::Take {
                id: id.clone(),
                limits,
                requests: 1,
                tokens: if limits.tpm.is_some() { tokens } else { 0 },
                reply,
            })
            .map_err(|_| Refused::Busy)?;
        match rx.recv_async().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => Err(Refused::Limited(wait)),
            Err(_) => Err(Refused::Busy),
        }
    }

    /// Corrects a tpm charge once the real usage is known.
    pub fn correct(&self, id: &Rc2, estimated: u64, actual: u64) {
        if estimated != actual {
            let _ = self.owner.tx.send(Msg::Correct {
                id: id.clone(),
                tokens: actual as i64 - estimated as i64,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Rc2 {
        std::sync::Arc::from(s)
    }

    #[test]
    fn buckets_admit_exactly_the_limit_then_refill() {
        let t0 = Instant::now();
        let (mut rpm, mut tpm) = (None, None);
        for _ in 0..3 {
            assert!(take(&mut rpm, Some(3), 1.0, &mut tpm, None, 0.0, t0).is_ok());
        }
        let wait = take(&mut rpm, Some(3), 1.0, &mut tpm, None, 0.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20), "one token every 20 s");
        assert!(take(
            &mut rpm,
            Some(3),
            1.0,
            &mut tpm,
            None,
            0.0,
            t0 + Duration::from_secs(20)
        )
        .is_ok());
        // tpm: the estimate is charged; a request needs its tokens free.
        let (mut rpm, mut tpm) = (None, None);
        assert!(take(&mut rpm, None, 1.0, &mut tpm, Some(1_000), 800.0, t0).is_ok());
        assert!(take(&mut rpm, None, 1.0, &mut tpm, Some(1_000), 300.0, t0).is_err());
        assert!(take(&mut rpm, None, 1.0, &mut tpm, Some(1_000), 200.0, t0).is_ok());
        // Both or neither: an rpm refusal takes no tpm.
        let (mut rpm, mut tpm) = (None, None);
        assert!(take(&mut rpm, Some(1), 1.0, &mut tpm, Some(100), 10.0, t0).is_ok());
        assert!(take(&mut rpm, Some(1), 1.0, &mut tpm, Some(100), 10.0, t0).is_err());
        assert_eq!(tpm.as_ref().map(|b| b.tokens), Some(90.0));
    }

    #[test]
    fn permits_are_granted_queued_and_handed_on() {
        let mut owner = Owner::default();
        let now = Instant::now();
        let (a_tx, a_rx) = flume::bounded(1);
        let (b_tx, b_rx) = flume::bounded(1);
        owner.handle(
            Msg::Acquire {
                id: id("d"),
                limit: 1,
                want: 1,
                reply: a_tx,
            },
            now,
        );
        assert_eq!(a_rx.try_recv(), Ok(1));
        owner.handle(
            Msg::Acquire {
                id: id("d"),
                limit: 1,
                want: 1,
                reply: b_tx,
            },
            now,
        );
        assert!(b_rx.try_recv().is_err(), "the second waits");
        owner.handle(
            Msg::Release {
                id: id("d"),
                count: 1,
            },
            now,
        );
        assert_eq!(
            b_rx.try_recv(),
            Ok(1),
            "handed on when the first comes back"
        );
        // A waiter that gave up does not keep the permit.
        let (c_tx, c_rx) = flume::bounded(1);
        owner.handle(
            Msg::Acquire {
                id: id("d"),
                limit: 1,
                want: 1,
                reply: c_tx,
            },
            now,
        );
        drop(c_rx);
        owner.handle(
            Msg::Release {
                id: id("d"),
                count: 1,
            },
            now,
        );
        assert_eq!(owner.sems[&id("d")].in_use, 0);
    }

    #[test]
    fn lease_sizes_shrink_with_the_limit() {
        assert_eq!(lease(1, 2), 1);
        assert_eq!(lease(8, 2), 1);
        assert_eq!(lease(1_000, 2), 125);
    }
}
