//! Deployment limits that hold for the whole process: `max_parallel_requests` (requests in
//! flight), `rpm` and `tpm` (per calendar minute, as LiteLLM counts them).
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
//! - `rpm` and `tpm` count per calendar minute. The owner keeps each deployment's count for the
//!   current minute and hands shards leases on it: a shard that runs out asks for what one
//!   request needs plus a lease (a quarter of a shard's share; nothing extra for limits up to
//!   four per shard), and spends it locally. A lease is good for the minute it was granted in
//!   only. `tpm` is charged up front with an estimate of the prompt; the difference to the real
//!   usage is settled against the shard's lease (a debt is paid from its next lease).
//!
//! Worst-case error: never more in flight than `max_parallel_requests`; never more than `rpm`
//! requests in a calendar minute (every request spends a token of that minute's count, taken
//! before it is sent). Leases only make a limit stricter: permits or tokens idle in one shard
//! are unavailable to the others — at most a lease per shard, none for limits up to four per
//! shard. `tpm` may overshoot a minute by the usage above the estimates that shards had not yet
//! paid back when the minute ended (at most the debts of the requests of that minute's end).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use hashbrown::HashMap;
use std::rc::Rc;
use std::time::Duration;

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
    /// Rate tokens of `minute`: at least `requests` and `tokens` (both or none), and, with
    /// `extra`, up to a lease more of each. The answer is what was granted.
    Lease {
        id: Rc2,
        minute: u64,
        limits: Limits,
        requests: u64,
        tokens: u64,
        extra: bool,
        reply: flume::Sender<Option<(u64, u64)>>,
    },
}

/// Deployment ids cross threads as `Arc<str>`.
type Rc2 = std::sync::Arc<str>;

/// The owner's side: runs on its own control-plane thread.
#[derive(Default)]
struct Owner {
    sems: HashMap<Rc2, Semaphore>,
    windows: HashMap<Rc2, Window>,
    shards: u32,
}

#[derive(Default)]
struct Semaphore {
    in_use: u32,
    waiting: VecDeque<(u32, flume::Sender<u32>)>,
    limit: u32,
}

/// A deployment's rate count for one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Window {
    minute: u64,
    requests: u64,
    tokens: u64,
}

impl Owner {
    fn handle(&mut self, msg: Msg) {
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
            Msg::Lease {
                id,
                minute,
                limits,
                requests,
                tokens,
                extra,
                reply,
            } => {
                let w = self.windows.entry(id).or_default();
                let shards = if extra { self.shards } else { 0 };
                let granted = lease_rate(w, minute, limits, requests, tokens, shards);
                let _ = reply.send(granted);
            }
        }
    }
}

/// Grants `requests` and `tokens` of `minute` (both or none) and up to a lease more of each
/// (none when `shards` is 0: an ask for exactly what one request needs).
fn lease_rate(
    w: &mut Window,
    minute: u64,
    limits: Limits,
    requests: u64,
    tokens: u64,
    shards: u32,
) -> Option<(u64, u64)> {
    if minute > w.minute {
        *w = Window {
            minute,
            ..Window::default()
        };
    } else if minute < w.minute {
        // An ask from a minute that is over (it raced the boundary): the caller asks again.
        return None;
    }
    let fits = |used: u64, want: u64, limit: Option<u64>| match limit {
        None => true,
        // One request larger than a whole minute's tpm still passes in an unused minute:
        // refusing it forever would be worse than one full minute.
        Some(l) => used + want <= l || (used == 0 && want > l),
    };
    if !fits(w.requests, requests, limits.rpm) || !fits(w.tokens, tokens, limits.tpm) {
        return None;
    }
    let extra = |used: u64, limit: Option<u64>| {
        limit.map_or(0, |l| rate_lease(l, shards).min(l.saturating_sub(used)))
    };
    let r = requests + extra(w.requests + requests, limits.rpm);
    let t = tokens + extra(w.tokens + tokens, limits.tpm);
    w.requests += r;
    w.tokens += t;
    Some((r, t))
}

/// Extra rate tokens leased at once: a quarter of a shard's share of the minute; none for
/// limits up to four per shard, which stay exact, and none when `shards` is 0.
fn rate_lease(limit: u64, shards: u32) -> u64 {
    let per = 4 * u64::from(shards);
    if shards == 0 || limit <= per {
        0
    } else {
        limit / per
    }
}

/// The calendar minute of `unix_ms` (minutes since the UNIX epoch) and the time left in it.
pub fn minute_of(unix_ms: u64) -> (u64, Duration) {
    let minute = unix_ms / 60_000;
    let left = (minute + 1) * 60_000 - unix_ms;
    (minute, Duration::from_millis(left.max(1)))
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
                let mut owner = Owner {
                    shards: shards.max(1) as u32,
                    ..Owner::default()
                };
                while let Ok(msg) = rx.recv() {
                    owner.handle(msg);
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
            rates: RefCell::new(HashMap::new()),
        }
    }
}

/// A shard's view: the permits it holds idle, and its leases of this minute's rate tokens,
/// per deployment.
pub struct ShardLimiter {
    owner: LimitsHandle,
    idle: RefCell<HashMap<Rc2, Rc<Cell<u32>>>>,
    rates: RefCell<HashMap<Rc2, RateLease>>,
}

/// Rate tokens of one minute held by a shard; `tokens` below zero is a debt (usage above the
/// estimates), paid from the next lease.
#[derive(Debug, Default, Clone, Copy)]
struct RateLease {
    minute: u64,
    requests: u64,
    tokens: i64,
    /// An ask with a lease extra is on its way to the owner: requests that run short meanwhile
    /// ask for exactly what they need. Without this, a burst of requests finding the lease
    /// empty at once would each lease a quarter of the shard's share, and the first shard to
    /// ask would hold the whole minute while the others are refused.
    asking: bool,
}

impl RateLease {
    /// Spends one request's tokens if the lease has them.
    fn spend(&mut self, minute: u64, requests: u64, tokens: u64) -> bool {
        if self.minute != minute {
            // Last minute's lease (and debt) is over.
            *self = RateLease {
                minute,
                asking: self.asking,
                ..RateLease::default()
            };
        }
        if self.requests >= requests && self.tokens >= tokens as i64 {
            self.requests -= requests;
            self.tokens -= tokens as i64;
            true
        } else {
            false
        }
    }
}

/// Clears a lease's `asking` flag when the ask with the extra is answered or abandoned.
struct AskingGuard<'a> {
    rates: &'a RefCell<HashMap<Rc2, RateLease>>,
    id: &'a Rc2,
}

impl Drop for AskingGuard<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.rates.borrow_mut().get_mut(self.id) {
            lease.asking = false;
        }
    }
}

/// Why a request may not go to a deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No permit came within the wait.
    Busy,
    /// Over `rpm`/`tpm`: tokens are back after this long.
    Limited(Duration),
}

/// A permit for one request in flight; given back on drop. It borrows the shard's limiter and
/// the deployment's id: cloning either would write a reference count shared by every shard.
pub struct Permit<'a> {
    idle: Rc<Cell<u32>>,
    limiter: &'a ShardLimiter,
    id: &'a Rc2,
    limit: u32,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let shards = self.limiter.owner.shards;
        let keep = lease(self.limit, shards);
        if self.limit > 4 * shards && self.idle.get() < keep {
            // Kept for this shard's next request.
            self.idle.set(self.idle.get() + 1);
        } else {
            let _ = self.limiter.owner.tx.send(Msg::Release {
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
    /// A permit this shard holds idle, if it has one: no message, no wait.
    pub fn try_permit<'a>(&'a self, id: &'a Rc2, limit: u32) -> Option<Permit<'a>> {
        let idle = self.idle.borrow().get(id).cloned()?;
        if idle.get() == 0 {
            return None;
        }
        idle.set(idle.get() - 1);
        Some(Permit {
            idle,
            limiter: self,
            id,
            limit,
        })
    }

    /// A permit for one request in flight on deployment `id`, limited to `limit` for the whole
    /// process; waits up to `wait` for one to come back.
    pub async fn permit<'a>(
        &'a self,
        id: &'a Rc2,
        limit: u32,
        wait: Duration,
    ) -> Result<Permit<'a>, Refused> {
        let known = self.idle.borrow().get(id).cloned();
        let idle = match known {
            Some(idle) => idle,
            None => self
                .idle
                .borrow_mut()
                .entry(id.clone())
                .or_default()
                .clone(),
        };
        let make = |idle: Rc<Cell<u32>>| Permit {
            idle,
            limiter: self,
            id,
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
                // One for this request, the rest idle here up to a lease; beyond that (several
                // requests of this shard asked at once) they go back at once, so that no shard
                // hoards what the others wait for.
                let spare = n.saturating_sub(1);
                let room = if limit > 4 * self.owner.shards {
                    lease(limit, self.owner.shards).saturating_sub(idle.get())
                } else {
                    0
                };
                let kept = spare.min(room);
                idle.set(idle.get() + kept);
                if spare > kept {
                    let _ = self.owner.tx.send(Msg::Release {
                        id: id.clone(),
                        count: spare - kept,
                    });
                }
                Ok(make(idle))
            }
            // Gave up: the owner finds the receiver gone and keeps the permit free.
            _ => Err(Refused::Busy),
        }
    }

    /// One request's rpm token and its estimated tpm charge on deployment `id`, from this
    /// shard's lease, or from the owner when the lease is short. `now` is the wall clock in ms
    /// since the UNIX epoch (the shard router's clock).
    pub async fn take(
        &self,
        id: &Rc2,
        limits: Limits,
        tokens: u64,
        now: u64,
    ) -> Result<(), Refused> {
        if limits.rpm.is_none() && limits.tpm.is_none() {
            return Ok(());
        }
        let requests = u64::from(limits.rpm.is_some());
        let tokens = if limits.tpm.is_some() { tokens } else { 0 };
        let (minute, left) = minute_of(now);
        let (ask_requests, ask_tokens, extra) = {
            let mut rates = self.rates.borrow_mut();
            if !rates.contains_key(id) {
                rates.insert(id.clone(), RateLease::default());
            }
            let Some(lease) = rates.get_mut(id) else {
                return Err(Refused::Busy);
            };
            if lease.spend(minute, requests, tokens) {
                return Ok(());
            }
            let extra = !lease.asking;
            lease.asking = true;
            (
                requests.saturating_sub(lease.requests),
                (tokens as i64 - lease.tokens).max(0) as u64,
                extra,
            )
        };
        // Clears `asking` however this ends (the request's future may be dropped while it
        // waits).
        let _asking = extra.then(|| AskingGuard {
            rates: &self.rates,
            id,
        });
        let (reply, rx) = flume::bounded(1);
        self.owner
            .tx
            .send(Msg::Lease {
                id: id.clone(),
                minute,
                limits,
                requests: ask_requests,
                tokens: ask_tokens,
                extra,
                reply,
            })
            .map_err(|_| Refused::Busy)?;
        match rx.recv_async().await {
            Ok(Some((r, t))) => {
                let mut rates = self.rates.borrow_mut();
                let lease = rates.entry(id.clone()).or_default();
                if lease.minute == minute {
                    lease.requests += r;
                    lease.tokens += t as i64;
                    if lease.spend(minute, requests, tokens) {
                        return Ok(());
                    }
                }
                // The minute turned meanwhile: what was granted is gone with it.
                Err(Refused::Limited(Duration::from_secs(1)))
            }
            Ok(None) => Err(Refused::Limited(left)),
            Err(_) => Err(Refused::Busy),
        }
    }

    /// Settles a tpm charge once the real usage is known: the difference goes against this
    /// shard's lease of the minute (a debt when more was used).
    pub fn correct(&self, id: &Rc2, estimated: u64, actual: u64, now: u64) {
        if estimated == actual {
            return;
        }
        let (minute, _) = minute_of(now);
        if let Some(lease) = self.rates.borrow_mut().get_mut(id) {
            if lease.minute == minute {
                lease.tokens += estimated as i64 - actual as i64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Rc2 {
        std::sync::Arc::from(s)
    }

    fn rate(rpm: Option<u64>, tpm: Option<u64>) -> Limits {
        Limits {
            max_parallel: None,
            rpm,
            tpm,
        }
    }

    #[test]
    fn minute_windows_grant_exactly_the_limit_then_the_next_minute() {
        // Small limits (up to four per shard) lease nothing extra: every request asks.
        let mut w = Window::default();
        for _ in 0..3 {
            assert_eq!(
                lease_rate(&mut w, 10, rate(Some(3), None), 1, 0, 2),
                Some((1, 0))
            );
        }
        assert_eq!(lease_rate(&mut w, 10, rate(Some(3), None), 1, 0, 2), None);
        // A late ask from the minute before is refused; the next minute starts over.
        assert_eq!(lease_rate(&mut w, 9, rate(Some(3), None), 1, 0, 2), None);
        assert_eq!(
            lease_rate(&mut w, 11, rate(Some(3), None), 1, 0, 2),
            Some((1, 0))
        );
        // Large limits lease a quarter of a shard's share at once, never past the limit.
        let mut w = Window::default();
        assert_eq!(
            lease_rate(&mut w, 1, rate(Some(1_000), None), 1, 0, 2),
            Some((126, 0))
        );
        let mut granted = 126;
        while let Some((r, _)) = lease_rate(&mut w, 1, rate(Some(1_000), None), 1, 0, 2) {
            granted += r;
        }
        assert_eq!(granted, 1_000);
        // tpm: the estimate must fit; both or neither.
        let mut w = Window::default();
        assert!(lease_rate(&mut w, 1, rate(Some(1), Some(100)), 1, 80, 2).is_some());
        assert_eq!(
            lease_rate(&mut w, 1, rate(Some(5), Some(100)), 1, 30, 2),
            None
        );
        assert_eq!(w.requests, 1, "an rpm token is not taken when tpm refuses");
        // One request larger than a whole minute passes in an unused minute.
        let mut w = Window::default();
        assert!(lease_rate(&mut w, 1, rate(None, Some(100)), 0, 500, 2).is_some());
    }

    #[test]
    fn a_shard_lease_spends_locally_and_carries_its_debt_within_the_minute() {
        let mut l = RateLease {
            minute: 5,
            requests: 2,
            tokens: 100,
            asking: false,
        };
        assert!(l.spend(5, 1, 60));
        assert!(!l.spend(5, 1, 60), "40 tokens left");
        // A debt (usage above the estimate) is paid before anything else.
        l.tokens -= 50;
        assert!(!l.spend(5, 0, 0), "a debt is paid first");
        assert_eq!(l.tokens, -10);
        // A new minute: the lease and its debt are gone.
        assert!(!l.spend(6, 1, 0));
        assert_eq!((l.minute, l.requests, l.tokens), (6, 0, 0));
    }

    #[test]
    fn permits_are_granted_queued_and_handed_on() {
        let mut owner = Owner::default();
        let (a_tx, a_rx) = flume::bounded(1);
        let (b_tx, b_rx) = flume::bounded(1);
        owner.handle(Msg::Acquire {
            id: id("d"),
            limit: 1,
            want: 1,
            reply: a_tx,
        });
        assert_eq!(a_rx.try_recv(), Ok(1));
        owner.handle(Msg::Acquire {
            id: id("d"),
            limit: 1,
            want: 1,
            reply: b_tx,
        });
        assert!(b_rx.try_recv().is_err(), "the second waits");
        owner.handle(Msg::Release {
            id: id("d"),
            count: 1,
        });
        assert_eq!(
            b_rx.try_recv(),
            Ok(1),
            "handed on when the first comes back"
        );
        // A waiter that gave up does not keep the permit.
        let (c_tx, c_rx) = flume::bounded(1);
        owner.handle(Msg::Acquire {
            id: id("d"),
            limit: 1,
            want: 1,
            reply: c_tx,
        });
        drop(c_rx);
        owner.handle(Msg::Release {
            id: id("d"),
            count: 1,
        });
        assert_eq!(owner.sems[&id("d")].in_use, 0);
    }

    #[test]
    fn lease_sizes_shrink_with_the_limit() {
        assert_eq!(lease(1, 2), 1);
        assert_eq!(lease(8, 2), 1);
        assert_eq!(lease(1_000, 2), 125);
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
    }

    /// A burst on one shard (every request finding the lease empty at once) must not lease the
    /// whole minute to that shard: the other shard still gets tokens.
    #[test]
    fn a_burst_on_one_shard_does_not_starve_the_others() {
        let handle = LimitsHandle::start(2).expect("owner thread");
        let (a, b) = (Rc::new(handle.shard()), handle.shard());
        let dep = id("burst");
        let limits = rate(Some(1_000_000), Some(1_000_000_000));
        let now = 120_000 * 60_000 + 5_000; // early in a minute: no boundary within the test
        let mut rt = runtime();
        rt.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (a, dep) = (a.clone(), dep.clone());
                    monoio::spawn(async move { a.take(&dep, limits, 10, now).await })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await, Ok(()));
            }
            for _ in 0..100 {
                assert_eq!(
                    b.take(&dep, limits, 10, now).await,
                    Ok(()),
                    "shard b starved"
                );
            }
        });
    }

    /// Permits granted beyond a shard's lease (several of its requests asked at once) go back
    /// to the owner, so another shard's request gets one.
    #[test]
    fn permits_beyond_a_lease_go_back() {
        let handle = LimitsHandle::start(2).expect("owner thread");
        let (a, b) = (Rc::new(handle.shard()), handle.shard());
        let dep = id("parallel");
        let limit = 80; // a lease is 10 per shard
        let mut rt = runtime();
        rt.block_on(async {
            let wait = Duration::from_secs(30);
            let mut held = Vec::new();
            // Eight at once on shard a: each asks for a lease of 10.
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (a, dep) = (a.clone(), dep.clone());
                    monoio::spawn(async move { a.permit(&dep, limit, wait).await.is_ok() })
                })
                .collect();
            for t in tasks {
                held.push(t.await);
            }
            assert!(held.iter().all(|ok| *ok));
            // Shard a keeps at most a lease (10) idle; shard b can take all the rest (70), which
            // it could not if a hoarded more.
            let mut got = Vec::new();
            for _ in 0..(limit as usize - 10) {
                got.push(
                    b.permit(&dep, limit, wait)
                        .await
                        .expect("a permit for shard b"),
                );
            }
        });
    }
}
