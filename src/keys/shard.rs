//! A shard's side of virtual keys: a cache of the keys it has seen (for the key cache TTL,
//! `general_settings.user_api_key_cache_ttl`), and a buffer of the spend its requests
//! recorded, handed to the control plane about once a second. A request waits on the control
//! plane only for a key this shard has not cached (or whose entry is older than the TTL); when
//! the database cannot be asked, an entry past its TTL keeps serving.
//!
//! Budgets: a key's spend is what the control plane reported when the entry was fetched plus
//! what this shard recorded since, so a budget holds exactly on one shard and, across shards
//! and gateways, within what the others spent during one TTL (as with LiteLLM's per-pod cache).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::control::{self, DeploymentUse, KeyMsg, Lookup, SpendBatch, SpendDelta};
use super::credential::{abbreviate, hash_key};
use super::db::{EncodedRows, SpendRow};
use super::record::{KeyRecord, Refusal};
use crate::config::keys::KeySettings;

/// Who made a request.
#[derive(Clone)]
pub enum Caller {
    /// Authentication is off (no master key).
    Open,
    Master,
    Key(Rc<CachedKey>),
}

/// A key as this shard knows it.
#[derive(Debug)]
pub struct CachedKey {
    pub record: KeyRecord,
    /// The limits owner's id of this key (`key:<hash>`).
    pub limiter_id: std::sync::Arc<str>,
    fetched: Instant,
    /// Spend this shard recorded for the key, and for its team, since the record was fetched.
    spent_key: Cell<f64>,
    spent_team: Cell<f64>,
}

impl CachedKey {
    /// The checks before calling `model`.
    pub fn check(&self, model: &str, providers: &[&str], now_ms: i64) -> Result<(), Refusal> {
        self.record.check(
            model,
            providers,
            now_ms,
            (self.spent_key.get(), self.spent_team.get()),
        )
    }

    /// Spend as this shard sees it.
    pub fn spend(&self) -> f64 {
        self.record.spend + self.spent_key.get()
    }
}

/// Rows buffered before a hand-off is forced.
const FLUSH_ROWS: usize = 256;
/// How long spend waits on the shard at most.
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ShardKeys {
    /// By the raw key (a hit needs no hashing).
    cache: RefCell<HashMap<String, Rc<CachedKey>>>,
    pending: RefCell<Pending>,
    /// Wakes the hand-off task at the first spend buffered.
    signal: crate::util::FlushSignal,
}

#[derive(Default)]
struct Pending {
    deltas: HashMap<String, SpendDelta>,
    rows: EncodedRows,
    /// Requests and tokens per (deployment, UNIX minute the attempt began in).
    deployments: HashMap<(String, u64), (u64, u64)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.rows.is_empty() && self.deployments.is_empty()
    }
}

impl ShardKeys {
    /// The key `raw`, from the cache or the control plane.
    pub async fn authenticate(
        &self,
        settings: &KeySettings,
        raw: &str,
    ) -> Result<Rc<CachedKey>, Refusal> {
        // LiteLLM looks up only `sk-` keys (a caller must not present a hash as a key).
        if !raw.starts_with("sk-") {
            return Err(Refusal::NotAVirtualKey { shown: shown(raw) });
        }
        let cached = self.cache.borrow().get(raw).cloned();
        if let Some(c) = &cached {
            if c.fetched.elapsed() < settings.cache_ttl {
                return Ok(c.clone());
            }
        }
        let token = hash_key(raw);
        let answer = match control::sender() {
            None => Lookup::NotFound,
            Some(tx) => {
                // What this shard spent goes first, so that the answer counts it.
                self.flush();
                let (reply, rx) = flume::bounded(1);
                let sent = tx.send(KeyMsg::Lookup {
                    token: token.clone(),
                    reply,
                });
                match sent {
                    Ok(()) => rx.recv_async().await.unwrap_or(Lookup::Unavailable),
                    Err(_) => Lookup::Unavailable,
                }
            }
        };
        match answer {
            Lookup::Found(record) => {
                let entry = Rc::new(CachedKey {
                    limiter_id: record.limiter_id(),
                    record: *record,
                    fetched: Instant::now(),
                    spent_key: Cell::new(0.0),
                    spent_team: Cell::new(0.0),
                });
                // Spend recorded while the lookup was out is not in its answer.
                if let Some(d) = self.pending.borrow().deltas.get(&token) {
                    entry.spent_key.set(d.usd);
                    entry.spent_team.set(d.usd);
                }
                let mut cache = self.cache.borrow_mut();
                if cache.len() >= MAX_CACHED {
                    cache.retain(|_, c| c.fetched.elapsed() < settings.cache_ttl);
                }
                cache.insert(raw.to_owned(), entry.clone());
                Ok(entry)
            }
            Lookup::NotFound => {
                self.cache.borrow_mut().remove(raw);
                Err(Refusal::NotFound {
                    shown: abbreviate(raw),
                    token,
                })
            }
            // The database is down: a key seen before keeps working.
            Lookup::Unavailable => match cached {
                Some(c) => Ok(c),
                None if settings.allow_on_db_unavailable => Ok(Rc::new(CachedKey {
                    limiter_id: std::sync::Arc::from("key:unverified"),
                    record: KeyRecord {
                        token,
                        ..Default::default()
                    },
                    fetched: Instant::now(),
                    spent_key: Cell::new(0.0),
                    spent_team: Cell::new(0.0),
                })),
                None => Err(Refusal::Unavailable),
            },
        }
    }

    /// An attempt on a deployment with an rpm/tpm limit, begun at `began_ms` (UNIX ms), for
    /// the limit across gateways (only called when a Redis shares it). It counts in the
    /// minute it began in, as the shard's own limiter counted it: one finished just after a
    /// minute's end must not fill the next minute.
    pub fn record_deployment(&self, id: &str, began_ms: u64, tokens: u64) {
        let mut p = self.pending.borrow_mut();
        let was_empty = p.is_empty();
        let e = p
            .deployments
            .entry((id.to_owned(), began_ms / 60_000))
            .or_default();
        e.0 += 1;
        e.1 += tokens;
        drop(p);
        if was_empty {
            self.signal.wake();
        }
    }

    /// Drops the cached entries of these keys (by hash).
    pub fn invalidate(&self, tokens: &[String]) {
        self.cache
            .borrow_mut()
            .retain(|_, c| !tokens.contains(&c.record.token));
    }

    /// Records a request's spend (and its spend row, when rows are written).
    pub fn record(&self, key: Option<&CachedKey>, usd: f64, tokens: u64, row: Option<SpendRow>) {
        let mut p = self.pending.borrow_mut();
        let was_empty = p.is_empty();
        let limited = |k: &CachedKey| k.record.rpm_limit.is_some() || k.record.tpm_limit.is_some();
        if let Some(k) = key.filter(|k| usd > 0.0 || limited(k)) {
            k.spent_key.set(k.spent_key.get() + usd);
            k.spent_team.set(k.spent_team.get() + usd);
            let d = p
                .deltas
                .entry(k.record.token.clone())
                .or_insert_with(|| SpendDelta {
                    token: k.record.token.clone(),
                    team_id: k.record.team.as_ref().map(|t| t.team_id.clone()),
                    user_id: k.record.user_id.clone(),
                    usd: 0.0,
                    requests: 0,
                    tokens: 0,
                    rpm_limit: k.record.rpm_limit,
                    tpm_limit: k.record.tpm_limit,
                });
            d.usd += usd;
            if limited(k) {
                d.requests += 1;
                d.tokens += tokens;
            }
        }
        if let Some(r) = row {
            p.rows.push(&r);
        }
        let full = p.rows.count >= FLUSH_ROWS;
        drop(p);
        if was_empty {
            self.signal.wake();
        }
        if full {
            self.flush();
        }
    }

    /// Hands the buffered spend to the control plane.
    pub fn flush(&self) {
        let p = std::mem::take(&mut *self.pending.borrow_mut());
        if p.is_empty() {
            return;
        }
        if let Some(tx) = control::sender() {
            let _ = tx.send(KeyMsg::Spend(SpendBatch {
                deltas: p.deltas.into_values().collect(),
                rows: p.rows,
                deployments: p
                    .deployments
                    .into_iter()
                    .map(|((id, minute), (r, t))| DeploymentUse {
                        id,
                        minute,
                        requests: r,
                        tokens: t,
                    })
                    .collect(),
            }));
        }
    }

    /// The shard's spend hand-off task: sleeps on no timer while nothing is buffered.
    pub async fn flush_loop(&self) {
        crate::util::flush_periodically(
            &self.signal,
            || self.pending.borrow().is_empty(),
            FLUSH_AFTER,
            || self.flush(),
        )
        .await
    }
}

/// Keys cached per shard before expired entries are swept.
const MAX_CACHED: usize = 100_000;

/// How LiteLLM shows a key that is not a virtual key: its first and last four characters.
fn shown(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() <= 8 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}
