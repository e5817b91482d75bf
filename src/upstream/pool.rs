//! Keep-alive connection pool per (scheme, host, port), one per shard, with a per-host limit on
//! open connections. Shard-local: plain `RefCell`, no locks.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use hashbrown::{Equivalent, HashMap};

use super::conn::UpstreamConn;
use crate::config::UpstreamSettings;
use crate::util::clock::CoarseInstant;

/// Idle time after which a pooled connection is checked (one non-blocking peek) before reuse.
const LIVENESS_CHECK_AFTER: Duration = Duration::from_millis(500);

/// A pool's key as stored: owned once, when a host is first seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    tls: bool,
    host: String,
    port: u16,
}

/// A pool key borrowed from the request, so that finding a host allocates nothing. Its derived
/// `Hash` equals `PoolKey`'s (same fields in the same order; `&str` and `String` hash alike).
#[derive(Debug, Clone, Copy, Hash)]
pub struct PoolKeyRef<'a> {
    pub tls: bool,
    pub host: &'a str,
    pub port: u16,
}

impl Equivalent<PoolKey> for PoolKeyRef<'_> {
    fn equivalent(&self, key: &PoolKey) -> bool {
        self.tls == key.tls && self.port == key.port && self.host == key.host
    }
}

impl PoolKeyRef<'_> {
    fn to_owned(self) -> PoolKey {
        PoolKey {
            tls: self.tls,
            host: self.host.to_owned(),
            port: self.port,
        }
    }
}

struct Idle {
    conn: UpstreamConn,
    /// Coarse (`util::clock`): idle times are compared with timeouts of seconds.
    since: CoarseInstant,
    timeout: Duration,
}

#[derive(Default)]
struct Host {
    idle: Vec<Idle>,
    open: usize,
    max_idle: usize,
    waiters: VecDeque<Waker>,
}

/// A host's state, shared by the pool's map and the slots taken from it, so that returning a
/// connection does not look the host up again. The map keeps a host while any slot is open.
type HostRef = Rc<RefCell<Host>>;

#[derive(Default)]
pub struct Pool {
    hosts: RefCell<HashMap<PoolKey, HostRef>>,
}

/// A connection slot: `conn` is `None` until the caller connects. Dropping it closes the
/// connection and frees the slot; [`PooledConn::recycle`] returns it to the idle list.
pub struct PooledConn {
    pub conn: Option<UpstreamConn>,
    pub reused: bool,
    /// The host was at its connection limit: the slot came after a wait.
    pub waited: bool,
    host: HostRef,
    idle_timeout: Duration,
}

impl PooledConn {
    pub fn recycle(mut self) {
        if let Some(conn) = self.conn.take() {
            let mut host = self.host.borrow_mut();
            if host.idle.len() < host.max_idle && !self.idle_timeout.is_zero() {
                host.idle.push(Idle {
                    conn,
                    since: CoarseInstant::now(),
                    timeout: self.idle_timeout,
                });
            }
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        self.conn = None;
        let mut host = self.host.borrow_mut();
        host.open = host.open.saturating_sub(1);
        // Wake every waiter: some may have been dropped (a cancelled request), and a waiter
        // that finds the host full again simply re-registers.
        for w in host.waiters.drain(..) {
            w.wake();
        }
    }
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes an idle connection (unless `fresh`) or a slot for a new one, waiting while the host
    /// is at its connection limit.
    pub async fn acquire(
        &self,
        key: PoolKeyRef<'_>,
        s: &UpstreamSettings,
        fresh: bool,
    ) -> PooledConn {
        let mut waited = false;
        std::future::poll_fn(|cx| {
            // Looked up on every poll: a sweep may drop the host's state while this waits.
            let host_ref = self.host(key);
            let mut host = host_ref.borrow_mut();
            host.max_idle = s.max_idle_per_host;
            if !fresh {
                let now = CoarseInstant::now();
                while let Some(idle) = host.idle.pop() {
                    let idle_for = now.saturating_duration_since(idle.since);
                    // Servers close idle keep-alive connections after seconds, not
                    // milliseconds: only a connection idle for a while is worth a peek.
                    if idle_for < idle.timeout
                        && (idle_for < LIVENESS_CHECK_AFTER || idle.conn.is_alive())
                    {
                        host.open += 1;
                        return Poll::Ready(PooledConn {
                            conn: Some(idle.conn),
                            reused: true,
                            waited,
                            host: host_ref.clone(),
                            idle_timeout: s.pool_idle_timeout,
                        });
                    }
                }
            }
            if host.open + host.idle.len() >= s.max_connections_per_host && !host.idle.is_empty() {
                // Make room by closing the oldest idle connection.
                host.idle.remove(0);
            }
            if host.open + host.idle.len() < s.max_connections_per_host {
                host.open += 1;
                return Poll::Ready(PooledConn {
                    conn: None,
                    reused: false,
                    waited,
                    host: host_ref.clone(),
                    idle_timeout: s.pool_idle_timeout,
                });
            }
            host.waiters.push_back(cx.waker().clone());
            waited = true;
            Poll::Pending
        })
        .await
    }

    /// The state of a host, created when it is first seen.
    fn host(&self, key: PoolKeyRef<'_>) -> HostRef {
        let mut hosts = self.hosts.borrow_mut();
        if let Some(h) = hosts.get(&key) {
            return h.clone();
        }
        let h = HostRef::default();
        hosts.insert(key.to_owned(), h.clone());
        h
    }

    /// Closes idle connections past their idle timeout.
    pub fn sweep(&self) {
        let now = CoarseInstant::now();
        let mut hosts = self.hosts.borrow_mut();
        for host in hosts.values() {
            host.borrow_mut()
                .idle
                .retain(|i| now.saturating_duration_since(i.since) < i.timeout);
        }
        // A host with a slot out (open > 0) is also referenced by that slot: keep it, or a
        // later request would create a second state for the same host.
        hosts.retain(|_, h| {
            let h = h.borrow();
            h.open > 0 || !h.idle.is_empty() || !h.waiters.is_empty()
        });
    }
}
