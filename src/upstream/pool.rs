//! Keep-alive connection pool per (scheme, host, port), one per shard, with a per-host limit on
//! open connections. Shard-local: plain `RefCell`, no locks.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use monoio::time::Instant;

use super::conn::UpstreamConn;
use crate::config::UpstreamSettings;

/// Idle time after which a pooled connection is checked (one non-blocking peek) before reuse.
const LIVENESS_CHECK_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
    timeout: Duration,
}

#[derive(Default)]
struct Host {
    idle: Vec<Idle>,
    open: usize,
    max_idle: usize,
    waiters: VecDeque<Waker>,
}

#[derive(Default)]
pub struct Pool {
    hosts: RefCell<HashMap<PoolKey, Host>>,
}

/// A connection slot: `conn` is `None` until the caller connects. Dropping it closes the
/// connection and frees the slot; [`PooledConn::recycle`] returns it to the idle list.
pub struct PooledConn {
    pub conn: Option<UpstreamConn>,
    pub reused: bool,
    key: PoolKey,
    pool: Rc<Pool>,
    idle_timeout: Duration,
}

impl PooledConn {
    pub fn recycle(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_idle(&self.key, conn, self.idle_timeout);
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        self.conn = None;
        self.pool.free_slot(&self.key);
    }
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes an idle connection (unless `fresh`) or a slot for a new one, waiting while the host
    /// is at its connection limit.
    pub async fn acquire(
        self: &Rc<Self>,
        key: &PoolKey,
        s: &UpstreamSettings,
        fresh: bool,
    ) -> PooledConn {
        std::future::poll_fn(|cx| {
            let mut hosts = self.hosts.borrow_mut();
            let host = hosts.entry(key.clone()).or_default();
            host.max_idle = s.max_idle_per_host;
            if !fresh {
                let now = Instant::now();
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
                            key: key.clone(),
                            pool: self.clone(),
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
                    key: key.clone(),
                    pool: self.clone(),
                    idle_timeout: s.pool_idle_timeout,
                });
            }
            host.waiters.push_back(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn put_idle(&self, key: &PoolKey, conn: UpstreamConn, timeout: Duration) {
        let mut hosts = self.hosts.borrow_mut();
        if let Some(host) = hosts.get_mut(key) {
            if host.idle.len() < host.max_idle && !timeout.is_zero() {
                host.idle.push(Idle {
                    conn,
                    since: Instant::now(),
                    timeout,
                });
            }
        }
    }

    fn free_slot(&self, key: &PoolKey) {
        let mut hosts = self.hosts.borrow_mut();
        if let Some(host) = hosts.get_mut(key) {
            host.open = host.open.saturating_sub(1);
            // Wake every waiter: some may have been dropped (a cancelled request), and a
            // waiter that finds the host full again simply re-registers.
            for w in host.waiters.drain(..) {
                w.wake();
            }
        }
    }

    /// Closes idle connections past their idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut hosts = self.hosts.borrow_mut();
        for host in hosts.values_mut() {
            host.idle
                .retain(|i| now.saturating_duration_since(i.since) < i.timeout);
        }
        hosts.retain(|_, h| h.open > 0 || !h.idle.is_empty() || !h.waiters.is_empty());
    }
}
