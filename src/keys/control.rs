//! The `llmux-keys` thread: the control plane of virtual keys. It answers shards' lookups
//! (the config's keys, then the database), keeps the spend shards report, and writes it to
//! the database in batches (every `proxy_batch_write_at` seconds plus up to 5 s of jitter, as
//! LiteLLM does, and at once when 8 MiB of rows wait) on a connection of their own, so a write
//! never holds up a lookup. Database I/O runs here on a current-thread tokio runtime, never on
//! a shard; shards talk to it only by message.
//!
//! Spend a key or team has is what the database says plus what this process recorded and has
//! not written yet (for the config's keys: everything recorded since start). When the
//! database is down, rows and increments wait in memory up to [`MAX_PENDING_BYTES`] and are
//! written when it is back; past the bound, rows are dropped and counted (increments are
//! never dropped: they are one number per key).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::IntCounter;

use super::db::{self, EncodedRows};
use super::record::KeyRecord;
use crate::config::keys::KeySettings;

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Box<KeyRecord>),
    NotFound,
    /// The database could not be asked.
    Unavailable,
}

/// A shard's spend since its last report.
#[derive(Debug, Default)]
pub struct SpendBatch {
    pub deltas: Vec<SpendDelta>,
    /// Requests and tokens per rate-limited deployment (when a Redis shares the limits).
    pub deployments: Vec<DeploymentUse>,
    pub rows: EncodedRows,
}

/// A shard's attempts on one rate-limited deployment in one calendar minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentUse {
    pub id: String,
    /// UNIX time / 60 s: the minute the attempts began in.
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpendDelta {
    pub token: String,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub usd: f64,
    /// Requests and tokens since the last report, for the key's rate limits across gateways
    /// (counted only when the key has an rpm or tpm limit).
    pub requests: u64,
    pub tokens: u64,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
}

pub enum KeyMsg {
    Lookup {
        token: String,
        reply: flume::Sender<Lookup>,
    },
    Spend(SpendBatch),
    Configure(Arc<KeySettings>),
    /// A key management call.
    Admin {
        op: Box<super::admin::AdminOp>,
        reply: flume::Sender<Result<super::admin::AdminAnswer, super::admin::AdminError>>,
    },
    /// A cached response, if Redis has one (`None` also when Redis cannot be asked).
    CacheGet {
        key: String,
        reply: flume::Sender<Option<Vec<u8>>>,
    },
    CacheSet {
        key: String,
        value: Vec<u8>,
        ttl_secs: u64,
    },
    /// A shard cooled a deployment down: shared with the other gateways (and LiteLLM) as
    /// LiteLLM's `deployment:<id>:cooldown`.
    Cooldown {
        deployment: String,
        secs: f64,
        status: u16,
        reason: String,
    },
    /// Write everything now, then answer (shutdown, tests).
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Counters of the key control plane.
#[derive(Clone)]
pub struct KeyMetrics {
    pub lookups: IntCounter,
    pub db_errors: IntCounter,
    pub rows_written: IntCounter,
    pub rows_dropped: IntCounter,
    pub redis_errors: IntCounter,
}

/// Bytes of spend rows kept while the database is unreachable or slower than the traffic, at
/// most (about 250,000 rows).
pub const MAX_PENDING_BYTES: usize = 128 << 20;
/// Bytes of rows that start a write without waiting for the tick (about 16,000 rows).
const WRITE_AT_BYTES: usize = 8 << 20;

/// A batch on its way to the database, on the writer connection (given back when done).
struct Batch {
    rows: EncodedRows,
    keys: HashMap<String, f64>,
    teams: HashMap<String, f64>,
    users: HashMap<String, f64>,
}

type WriteDone = (Option<tokio_postgres::Client>, Batch, Result<(), String>);
/// How often the cooldowns other gateways set are read from Redis.
const COOLDOWN_POLL: Duration = Duration::from_secs(1);

/// Cooldowns read from Redis (set by any gateway, LiteLLM's included): deployment id → until
/// (unix ms), with a version that changes when the map does. Shards read it once a second.
pub static SHARED_COOLDOWNS: std::sync::LazyLock<arc_swap::ArcSwap<(u64, HashMap<String, u64>)>> =
    std::sync::LazyLock::new(|| arc_swap::ArcSwap::from_pointee((0, HashMap::new())));

/// Virtual keys over their rpm/tpm limit across every gateway sharing the Redis (LiteLLM's
/// included): key hash → until (unix ms, the end of the key's window).
pub static SHARED_KEY_LIMITS: std::sync::LazyLock<arc_swap::ArcSwap<HashMap<String, u64>>> =
    std::sync::LazyLock::new(|| arc_swap::ArcSwap::from_pointee(HashMap::new()));

/// Deployments at their rpm/tpm for the current minute across every gateway sharing the
/// Redis: deployment id → until (unix ms, the minute's end).
pub static SHARED_DEPLOYMENT_LIMITS: std::sync::LazyLock<arc_swap::ArcSwap<HashMap<String, u64>>> =
    std::sync::LazyLock::new(|| arc_swap::ArcSwap::from_pointee(HashMap::new()));

/// A rate-limited key's requests and tokens since the last sync, and its limits.
#[derive(Debug, Default)]
struct RateDelta {
    requests: u64,
    tokens: u64,
    rpm: Option<u64>,
    tpm: Option<u64>,
}

/// LiteLLM's v3 limiter window (`parallel_request_limiter_v3.py`), with a batch of requests
/// at once: the window starts at the first request and lasts 60 s; a new one resets the
/// counters. KEYS: window, requests, tokens; ARGV: now (s), window (s), requests, tokens.
/// Returns the window's start and its counts.
const RATE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local ws = redis.call('GET', KEYS[1])
local fresh = (not ws) or (now - tonumber(ws) >= tonumber(ARGV[2]))
if fresh and tonumber(ARGV[3]) == 0 and tonumber(ARGV[4]) == 0 then
  -- Only reading: no window is started without a request.
  return {ARGV[1], '0', '0'}
end
if fresh then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[2])
  ws = ARGV[1]
else
  if tonumber(ARGV[3]) > 0 then redis.call('INCRBY', KEYS[2], ARGV[3]) end
  if tonumber(ARGV[4]) > 0 then redis.call('INCRBYFLOAT', KEYS[3], ARGV[4]) end
  if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
  if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[2]) end
end
return {tostring(ws), redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3]) or '0'}
"#;
/// LiteLLM's `LITELLM_RATE_LIMIT_WINDOW_SIZE`.
const RATE_WINDOW_SECS: u64 = 60;

/// `HH-MM` (UTC) of a UNIX minute: the suffix of LiteLLM's router usage keys.
fn hh_mm(minute: u64) -> String {
    let day_minute = minute % (24 * 60);
    format!("{:02}-{:02}", day_minute / 60, day_minute % 60)
}

/// A cache lookup or store waits this long for Redis.
const CACHE_TIMEOUT: Duration = Duration::from_millis(500);
/// Counter deltas kept while Redis is being connected to, at most.
const MAX_PENDING_COUNTERS: usize = 100_000;
/// LiteLLM's default TTL for keys written without one (`BaseCache(default_ttl=60)`).
const REDIS_TTL_SECS: u64 = 60;
/// A lookup waits this long for the database.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

static SENDER: OnceLock<flume::Sender<KeyMsg>> = OnceLock::new();

/// The control plane's inbox, once started.
pub fn sender() -> Option<&'static flume::Sender<KeyMsg>> {
    SENDER.get()
}

/// Starts the thread when keys are first enabled; later calls hand it new settings.
pub fn configure(settings: &Arc<KeySettings>, metrics: &KeyMetrics) -> std::io::Result<()> {
    if SENDER.get().is_none() {
        if !settings.needs_control_plane() {
            return Ok(());
        }
        let (tx, rx) = flume::unbounded();
        let m = metrics.clone();
        let first = settings.clone();
        std::thread::Builder::new()
            .name("llmux-keys".into())
            .spawn(move || run(rx, first, m))?;
        let _ = SENDER.set(tx);
        return Ok(());
    }
    if let Some(tx) = SENDER.get() {
        let _ = tx.send(KeyMsg::Configure(settings.clone()));
    }
    Ok(())
}

/// Writes what waits, waiting at most `timeout` (shutdown).
pub fn flush(timeout: Duration) {
    let Some(tx) = SENDER.get() else {
        return;
    };
    let (reply, done) = std::sync::mpsc::sync_channel(1);
    if tx.send(KeyMsg::Flush(reply)).is_ok() {
        let _ = done.recv_timeout(timeout);
    }
}

fn run(rx: flume::Receiver<KeyMsg>, settings: Arc<KeySettings>, metrics: KeyMetrics) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "keys: cannot start the control-plane runtime");
            return;
        }
    };
    rt.block_on(async move {
        let mut c = Control::new(settings, metrics);
        // Redis is connected to from the start, so that the first spend finds it up.
        if let Some(url) = c.settings.redis.as_ref().map(|r| r.url.clone()) {
            let _ = c.redis_conn(&url).await;
        }
        let mut next_write = tokio::time::Instant::now() + c.write_interval();
        let mut next_reset = tokio::time::Instant::now() + c.reset_interval();
        let mut cooldown_poll = tokio::time::interval(COOLDOWN_POLL);
        cooldown_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv_async() => match msg {
                    Ok(KeyMsg::Lookup { token, reply }) => {
                        let answer = c.lookup(&token).await;
                        let _ = reply.send(answer);
                    }
                    Ok(KeyMsg::Spend(batch)) => {
                        c.add(batch);
                        c.push_counters().await;
                        // A heavy load does not wait for the tick: a full batch goes at once.
                        if c.rows.bytes() >= WRITE_AT_BYTES {
                            c.start_write().await;
                        }
                    }
                    Ok(KeyMsg::Configure(s)) => c.configure(s),
                    Ok(KeyMsg::CacheGet { key, reply }) => c.cache_get(key, reply).await,
                    Ok(KeyMsg::Cooldown { deployment, secs, status, reason }) => {
                        c.share_cooldown(deployment, secs, status, reason).await;
                    }
                    Ok(KeyMsg::CacheSet { key, value, ttl_secs }) => {
                        c.cache_set(key, value, ttl_secs).await;
                    }
                    Ok(KeyMsg::Admin { op, reply }) => {
                        let answer = c.admin(*op).await;
                        let _ = reply.send(answer);
                    }
                    Ok(KeyMsg::Flush(reply)) => {
                        c.write_all().await;
                        let _ = reply.send(());
                    }
                    Err(_) => break,
                },
                done = async { c.writing.as_mut().expect("guarded").await }, if c.writing.is_some() => {
                    c.writing = None;
                    c.written(done);
                }
                _ = tokio::time::sleep_until(next_write) => {
                    // Redis: what waits goes, and a connection that is down is tried again.
                    if let Some(url) = c.settings.redis.as_ref().map(|r| r.url.clone()) {
                        let _ = c.redis_conn(&url).await;
                        c.push_counters().await;
                    }
                    c.start_write().await;
                    next_write = tokio::time::Instant::now() + c.write_interval();
                }
                _ = cooldown_poll.tick(), if c.settings.redis.is_some() => {
                    c.poll_cooldowns().await;
                    c.sync_rates().await;
                    c.sync_deployment_rates().await;
                }
                _ = tokio::time::sleep_until(next_reset) => {
                    c.reset_budgets().await;
                    next_reset = tokio::time::Instant::now() + c.reset_interval();
                }
            }
        }
    });
}

struct Control {
    settings: Arc<KeySettings>,
    metrics: KeyMetrics,
    client: Option<tokio_postgres::Client>,
    /// The connection spend is written on (a write never holds up lookups).
    writer: Option<tokio_postgres::Client>,
    writing: Option<tokio::task::JoinHandle<WriteDone>>,
    /// Requests and tokens of rate-limited keys not yet added to LiteLLM's v3 rate-limit
    /// windows in Redis.
    rates: HashMap<String, RateDelta>,
    /// Requests and tokens of rate-limited deployments not yet added to LiteLLM's router
    /// usage keys in Redis.
    dep_rates: HashMap<(String, u64), (u64, u64)>,
    /// Rate-limited keys seen lately (looked up or used): their windows are read every sync,
    /// so that what other gateways used is seen here before this one uses the key again.
    limited: HashMap<String, (Option<u64>, Option<u64>, std::time::Instant)>,
    /// Spend not yet added to LiteLLM's Redis counters (`spend:key:<hash>` & co.).
    counters: Vec<(String, f64)>,
    redis: Option<(String, redis::aio::ConnectionManager)>,
    redis_connecting:
        Option<tokio::task::JoinHandle<Result<redis::aio::ConnectionManager, String>>>,
    redis_retry_at: Option<std::time::Instant>,
    /// The key and team amounts of the write under way (still spent until it lands).
    writing_keys: HashMap<String, f64>,
    writing_teams: HashMap<String, f64>,
    /// When each config key's budget starts over next (keys with a `budget_duration`).
    static_resets: HashMap<String, i64>,
    /// Spend of the config's keys and their teams since start.
    static_keys: HashMap<String, f64>,
    static_teams: HashMap<String, f64>,
    /// Spend recorded and not yet written to the database.
    keys: HashMap<String, f64>,
    teams: HashMap<String, f64>,
    users: HashMap<String, f64>,
    rows: EncodedRows,
    /// Database and Redis failures are logged at most once a minute each.
    db_log: crate::util::LogEvery,
    redis_log: crate::util::LogEvery,
}

impl Control {
    fn new(settings: Arc<KeySettings>, metrics: KeyMetrics) -> Self {
        Self {
            settings,
            metrics,
            client: None,
            writer: None,
            writing: None,
            counters: Vec::new(),
            rates: HashMap::new(),
            dep_rates: HashMap::new(),
            limited: HashMap::new(),
            redis: None,
            redis_connecting: None,
            redis_retry_at: None,
            writing_keys: HashMap::new(),
            writing_teams: HashMap::new(),
            static_resets: HashMap::new(),
            static_keys: HashMap::new(),
            static_teams: HashMap::new(),
            keys: HashMap::new(),
            teams: HashMap::new(),
            users: HashMap::new(),
            rows: EncodedRows::default(),
            db_log: crate::util::LogEvery::new(Duration::from_secs(60)),
            redis_log: crate::util::LogEvery::new(Duration::from_secs(60)),
        }
    }

    fn write_interval(&self) -> Duration {
        self.settings.batch_write + Duration::from_millis(fastrand::u64(0..5_000))
    }

    fn reset_interval(&self) -> Duration {
        let (min, max) = self.settings.budget_reset_every;
        let spread = max.saturating_sub(min).as_millis() as u64;
        min + Duration::from_millis(fastrand::u64(0..=spread))
    }

    /// LiteLLM's budget reset, when this gateway runs it (`llmux.budget_reset`).
    async fn reset_budgets(&mut self) {
        if !self.settings.budget_reset || self.settings.database_url.is_none() {
            return;
        }
        if self.client().await.is_none() {
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match db::reset_budgets(client, crate::util::unix_ms() as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reset = n, "keys: budgets reset"),
            Err(e) => self.db_failed(&e.to_string()),
        }
    }

    fn configure(&mut self, s: Arc<KeySettings>) {
        if s.database_url != self.settings.database_url {
            self.client = None;
        }
        self.settings = s;
    }

    async fn lookup(&mut self, token: &str) -> Lookup {
        self.metrics.lookups.inc();
        if let Some(k) = self.settings.static_keys.get(token) {
            let mut k = k.clone();
            // A config key's budget starts over every budget_duration (from the gateway's
            // start): its spend is zeroed and the shards learn when the next reset is.
            if let Some(every) = k.budget_duration_ms {
                let now = crate::util::unix_ms() as i64;
                let at = self
                    .static_resets
                    .entry(token.to_owned())
                    .or_insert(now + every);
                if now >= *at {
                    while *at <= now {
                        *at += every;
                    }
                    self.static_keys.remove(token);
                }
                k.budget_reset_at_ms = Some(*at);
            }
            k.spend += self.static_keys.get(token).copied().unwrap_or(0.0);
            if let Some(t) = k.team.as_mut() {
                t.spend += self.static_teams.get(&t.team_id).copied().unwrap_or(0.0);
            }
            self.read_window(&k).await;
            return Lookup::Found(Box::new(k));
        }
        if self.settings.database_url.is_none() {
            return Lookup::NotFound;
        }
        let Some(client) = self.client().await else {
            return Lookup::Unavailable;
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, db::lookup(client, token)).await {
            Ok(Ok(Some(k))) => {
                let mut k = Box::new(k);
                // What this process spent and has not written yet counts too.
                let pending =
                    |m: &HashMap<String, f64>, id: &str| m.get(id).copied().unwrap_or(0.0);
                k.spend += pending(&self.keys, token) + pending(&self.writing_keys, token);
                if let Some(t) = k.team.as_mut() {
                    t.spend +=
                        pending(&self.teams, &t.team_id) + pending(&self.writing_teams, &t.team_id);
                }
                self.read_window(&k).await;
                Lookup::Found(k)
            }
            Ok(Ok(None)) => Lookup::NotFound,
            Ok(Err(e)) => {
                self.db_failed(&e.to_string());
                Lookup::Unavailable
            }
            Err(_) => {
                self.db_failed("lookup timed out");
                Lookup::Unavailable
            }
        }
    }

    async fn admin(
        &mut self,
        op: super::admin::AdminOp,
    ) -> Result<super::admin::AdminAnswer, super::admin::AdminError> {
        use super::admin::AdminError;
        if self.settings.database_url.is_none() {
            return Err(AdminError {
                status: 400,
                message: "the key management API needs a database (general_settings.database_url); keys of the config file are changed in the config".into(),
            });
        }
        let Some(client) = self.client().await else {
            return Err(AdminError {
                status: 503,
                message: "the key database is unavailable".into(),
            });
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, super::admin::run(client, op)).await {
            Ok(r) => r,
            Err(_) => Err(AdminError {
                status: 503,
                message: "the key database did not answer in time".into(),
            }),
        }
    }

    fn add(&mut self, batch: SpendBatch) {
        if self.settings.redis.is_some() {
            for u in batch.deployments {
                let e = self.dep_rates.entry((u.id, u.minute)).or_default();
                e.0 += u.requests;
                e.1 += u.tokens;
            }
        }
        for d in batch.deltas {
            if self.settings.redis.is_some()
                && d.requests > 0
                && (d.rpm_limit.is_some() || d.tpm_limit.is_some())
            {
                let r = self.rates.entry(d.token.clone()).or_default();
                r.requests += d.requests;
                r.tokens += d.tokens;
                r.rpm = d.rpm_limit;
                r.tpm = d.tpm_limit;
                self.limited.insert(
                    d.token.clone(),
                    (d.rpm_limit, d.tpm_limit, std::time::Instant::now()),
                );
            }
            if d.usd <= 0.0 {
                continue;
            }
            if self.settings.static_keys.contains_key(&d.token) {
                *self.static_keys.entry(d.token).or_default() += d.usd;
                if let Some(t) = d.team_id {
                    *self.static_teams.entry(t).or_default() += d.usd;
                }
                continue;
            }
            if self.settings.database_url.is_none() {
                continue;
            }
            if self.settings.redis.is_some() {
                self.counters
                    .push((format!("spend:key:{}", d.token), d.usd));
                if let Some(t) = &d.team_id {
                    self.counters.push((format!("spend:team:{t}"), d.usd));
                }
                if let Some(u) = &d.user_id {
                    self.counters.push((format!("spend:user:{u}"), d.usd));
                }
            }
            *self.keys.entry(d.token).or_default() += d.usd;
            if let Some(t) = d.team_id {
                *self.teams.entry(t).or_default() += d.usd;
            }
            if let Some(u) = d.user_id {
                *self.users.entry(u).or_default() += d.usd;
            }
        }
        if self.settings.database_url.is_none() || !self.settings.spend_logs {
            return;
        }
        if self.rows.bytes() + batch.rows.bytes() > MAX_PENDING_BYTES {
            self.metrics.rows_dropped.inc_by(batch.rows.count as u64);
        } else {
            self.rows.append(batch.rows);
        }
    }

    /// Adds spend to LiteLLM's Redis spend counters (LiteLLM 1.83+ reads them before it admits
    /// a call), so that LiteLLM sees what LLMux spent. A counter is only incremented where it
    /// exists: LiteLLM seeds a missing one from the database (`SET NX`), and a counter made
    /// here from a delta alone would hide the key's earlier spend. This runs before the same
    /// spend is written to the database, so a seed taken after that write cannot count it
    /// twice. Redis unreachable: the deltas are dropped (the counters expire in a minute and
    /// LiteLLM reseeds them from the database), counted and logged.
    async fn push_counters(&mut self) {
        if self.counters.is_empty() {
            return;
        }
        let Some(settings) = self.settings.redis.clone() else {
            self.counters.clear();
            return;
        };
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            // Connecting: the deltas wait (a bounded while). Down: they are dropped.
            if self.redis_connecting.is_none() || self.counters.len() > MAX_PENDING_COUNTERS {
                self.metrics.redis_errors.inc();
                self.counters.clear();
            }
            return;
        };
        let deltas = std::mem::take(&mut self.counters);
        let errors = self.metrics.redis_errors.clone();
        tokio::spawn(async move {
            static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
                redis::Script::new(
                    "if redis.call('EXISTS', KEYS[1]) == 1 then \
                       local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]) \
                       redis.call('EXPIRE', KEYS[1], ARGV[2]) \
                       return v \
                     end \
                     return false",
                )
            });
            for (key, usd) in deltas {
                let res: redis::RedisResult<Option<String>> = SCRIPT
                    .key(settings.key(&key))
                    .arg(usd)
                    .arg(REDIS_TTL_SECS)
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = res {
                    errors.inc();
                    tracing::debug!(error = %e, "keys: a Redis spend counter was not updated");
                }
            }
        });
    }

    /// Looks a cached response up, beside the loop (a slow Redis holds up no lookup): a miss
    /// when Redis is down or slower than [`CACHE_TIMEOUT`].
    async fn cache_get(&mut self, key: String, reply: flume::Sender<Option<Vec<u8>>>) {
        let Some(settings) = self.settings.redis.clone() else {
            let _ = reply.send(None);
            return;
        };
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            let _ = reply.send(None);
            return;
        };
        let errors = self.metrics.redis_errors.clone();
        tokio::spawn(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(settings.key(&key));
            let get = cmd.query_async::<Option<Vec<u8>>>(&mut conn);
            let got = match tokio::time::timeout(CACHE_TIMEOUT, get).await {
                Ok(Ok(v)) => v,
                _ => {
                    errors.inc();
                    None
                }
            };
            let _ = reply.send(got);
        });
    }

    /// Writes a cooldown as LiteLLM does (`cooldown_cache.py`): JSON with the first 50
    /// characters of the (masked) reason, the status as a string, the time and the length, for
    /// as long as it lasts.
    async fn share_cooldown(&mut self, deployment: String, secs: f64, status: u16, reason: String) {
        let Some(settings) = self.settings.redis.clone() else {
            return;
        };
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            return;
        };
        let value = serde_json::json!({
            "exception_received": reason.chars().take(50).collect::<String>(),
            "status_code": status.to_string(),
            "timestamp": crate::util::unix_ms() as f64 / 1000.0,
            "cooldown_time": secs,
        })
        .to_string();
        let errors = self.metrics.redis_errors.clone();
        tokio::spawn(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(settings.key(&format!("deployment:{deployment}:cooldown")))
                .arg(value)
                .arg("PX")
                .arg(((secs * 1000.0) as u64).max(1));
            if !matches!(
                tokio::time::timeout(CACHE_TIMEOUT, cmd.query_async::<()>(&mut conn)).await,
                Ok(Ok(()))
            ) {
                errors.inc();
            }
        });
    }

    /// Reads every deployment's shared cooldown (its remaining time) and publishes them to
    /// the shards.
    async fn poll_cooldowns(&mut self) {
        let ids = self.settings.deployment_ids.clone();
        let Some(settings) = self.settings.redis.clone() else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            return;
        };
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("PTTL")
                .arg(settings.key(&format!("deployment:{id}:cooldown")));
        }
        let left: Vec<i64> =
            match tokio::time::timeout(CACHE_TIMEOUT, pipe.query_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                _ => {
                    self.metrics.redis_errors.inc();
                    return;
                }
            };
        let now = crate::util::unix_ms();
        let map: HashMap<String, u64> = ids
            .into_iter()
            .zip(left)
            .filter(|(_, ms)| *ms > 0)
            .map(|(id, ms)| (id, now + ms as u64))
            .collect();
        let current = SHARED_COOLDOWNS.load();
        let same = current.1.len() == map.len()
            && map.iter().all(|(k, until)| {
                current
                    .1
                    .get(k)
                    .is_some_and(|u| u.abs_diff(*until) < COOLDOWN_POLL.as_millis() as u64)
            });
        if !same {
            SHARED_COOLDOWNS.store(std::sync::Arc::new((current.0 + 1, map)));
        }
    }

    /// Adds this gateway's requests and tokens of rate-limited keys to LiteLLM's v3 windows
    /// (`{api_key:<hash>}:window|requests|tokens`; keys of Lua scripts carry no namespace, as
    /// in LiteLLM) and marks the keys whose window is full, for every shard to refuse until
    /// the window ends.
    async fn sync_rates(&mut self) {
        // Keys seen within a window are read even without requests of this gateway's.
        let window = Duration::from_secs(RATE_WINDOW_SECS);
        self.limited
            .retain(|_, (_, _, seen)| seen.elapsed() < window);
        for (token, (rpm, tpm, _)) in &self.limited {
            let r = self.rates.entry(token.clone()).or_default();
            r.rpm = *rpm;
            r.tpm = *tpm;
        }
        if self.rates.is_empty() {
            return;
        }
        let Some(settings) = self.settings.redis.clone() else {
            self.rates.clear();
            return;
        };
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            // Redis down: each gateway holds the keys to their limits on its own.
            self.rates.clear();
            return;
        };
        let rates = std::mem::take(&mut self.rates);
        let errors = self.metrics.redis_errors.clone();
        tokio::spawn(async move { apply_rates(&mut conn, rates, &errors).await });
    }

    /// Adds this gateway's attempts on rate-limited deployments to LiteLLM's router usage
    /// keys (`global_router:<id>:<model>:rpm|tpm:<HH-MM UTC>`, a calendar minute, as this
    /// gateway's own limiter counts) and reads every limited deployment's minute back: those
    /// at their limit are held back by every shard until the minute ends.
    async fn sync_deployment_rates(&mut self) {
        let limits = self.settings.deployment_limits.clone();
        let Some(settings) = self.settings.redis.clone() else {
            self.dep_rates.clear();
            return;
        };
        if limits.is_empty() {
            self.dep_rates.clear();
            return;
        }
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            self.dep_rates.clear();
            return;
        };
        let deltas = std::mem::take(&mut self.dep_rates);
        let errors = self.metrics.redis_errors.clone();
        tokio::spawn(async move {
            let now = crate::util::unix_ms();
            let minute = now / 60_000;
            let end = (minute + 1) * 60_000;
            let key = |id: &str, model: &str, kind: &str, minute: u64| {
                settings.key(&format!(
                    "global_router:{id}:{model}:{kind}:{}",
                    hh_mm(minute)
                ))
            };
            let mut pipe = redis::pipe();
            // Attempts of a minute that has ended go to that minute's keys (while they live).
            for ((id, m), (requests, tokens)) in &deltas {
                let Some(l) = limits.iter().find(|l| &l.id == id) else {
                    continue;
                };
                if *m >= minute || minute - m > RATE_WINDOW_SECS / 60 {
                    continue;
                }
                for (kind, add) in [("rpm", requests), ("tpm", tokens)] {
                    let key = key(id, &l.model, kind, *m);
                    pipe.cmd("INCRBYFLOAT").arg(&key).arg(add).ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(RATE_WINDOW_SECS).ignore();
                }
            }
            // This minute's: added and read back.
            for l in &limits {
                let (requests, tokens) = deltas
                    .get(&(l.id.clone(), minute))
                    .copied()
                    .unwrap_or((0, 0));
                for (kind, add) in [("rpm", requests), ("tpm", tokens)] {
                    let key = key(&l.id, &l.model, kind, minute);
                    pipe.cmd("INCRBYFLOAT").arg(&key).arg(add);
                    pipe.cmd("EXPIRE").arg(&key).arg(RATE_WINDOW_SECS).ignore();
                }
            }
            let counts: Vec<f64> =
                match tokio::time::timeout(CACHE_TIMEOUT, pipe.query_async(&mut conn)).await {
                    Ok(Ok(v)) => v,
                    _ => {
                        errors.inc();
                        return;
                    }
                };
            let mut over = HashMap::new();
            for (l, pair) in limits.iter().zip(counts.chunks(2)) {
                let (rpm, tpm) = (
                    pair.first().copied().unwrap_or(0.0),
                    pair.get(1).copied().unwrap_or(0.0),
                );
                if l.rpm.is_some_and(|r| rpm >= r as f64) || l.tpm.is_some_and(|t| tpm >= t as f64)
                {
                    over.insert(l.id.clone(), end);
                }
            }
            SHARED_DEPLOYMENT_LIMITS.store(std::sync::Arc::new(over));
        });
    }

    /// A rate-limited key just looked up: its window is read before the shard gets the key,
    /// so that a gateway that has not served it yet still sees what the others used.
    async fn read_window(&mut self, k: &KeyRecord) {
        if k.rpm_limit.is_none() && k.tpm_limit.is_none() {
            return;
        }
        let Some(settings) = self.settings.redis.clone() else {
            return;
        };
        self.limited.insert(
            k.token.clone(),
            (k.rpm_limit, k.tpm_limit, std::time::Instant::now()),
        );
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            return;
        };
        let one = HashMap::from([(
            k.token.clone(),
            RateDelta {
                rpm: k.rpm_limit,
                tpm: k.tpm_limit,
                ..Default::default()
            },
        )]);
        let errors = self.metrics.redis_errors.clone();
        if tokio::time::timeout(CACHE_TIMEOUT, apply_rates(&mut conn, one, &errors))
            .await
            .is_err()
        {
            errors.inc();
        }
    }

    async fn cache_set(&mut self, key: String, value: Vec<u8>, ttl_secs: u64) {
        let Some(settings) = self.settings.redis.clone() else {
            return;
        };
        let Some(mut conn) = self.redis_conn(&settings.url).await else {
            return;
        };
        let errors = self.metrics.redis_errors.clone();
        tokio::spawn(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(settings.key(&key))
                .arg(value)
                .arg("EX")
                .arg(ttl_secs.max(1));
            let set = cmd.query_async::<()>(&mut conn);
            if !matches!(tokio::time::timeout(CACHE_TIMEOUT, set).await, Ok(Ok(()))) {
                errors.inc();
            }
        });
    }

    /// The Redis connection, if one is up. Connecting runs as a task of its own (never in the
    /// way of lookups); until it is up, and for 10 s after a failed try, there is none.
    async fn redis_conn(&mut self, url: &str) -> Option<redis::aio::ConnectionManager> {
        if let Some((u, c)) = &self.redis {
            if u == url {
                return Some(c.clone());
            }
            self.redis = None;
        }
        if let Some(h) = self.redis_connecting.take_if(|h| h.is_finished()) {
            match h.await {
                Ok(Ok(c)) => {
                    self.redis = Some((url.to_owned(), c.clone()));
                    return Some(c);
                }
                Ok(Err(e)) => self.redis_failed(&e),
                Err(e) => self.redis_failed(&e.to_string()),
            }
            self.metrics.redis_errors.inc();
            self.redis_retry_at = Some(std::time::Instant::now() + Duration::from_secs(10));
        }
        let may_try = self
            .redis_retry_at
            .is_none_or(|t| std::time::Instant::now() >= t);
        if self.redis_connecting.is_none() && may_try {
            let url = url.to_owned();
            self.redis_connecting = Some(tokio::spawn(async move {
                let client = redis_client(&url).await?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(2)
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(Duration::from_secs(2));
                match tokio::time::timeout(
                    LOOKUP_TIMEOUT,
                    redis::aio::ConnectionManager::new_with_config(client, config),
                )
                .await
                {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("connecting timed out".to_owned()),
                }
            }));
        }
        None
    }

    fn redis_failed(&mut self, why: &str) {
        if self.redis_log.due() {
            tracing::warn!(
                error = %crate::util::clip(why),
                "keys: Redis is unavailable; spend counters shared with LiteLLM are not updated"
            );
        }
    }

    fn nothing_to_write(&self) -> bool {
        self.rows.is_empty()
            && self.keys.is_empty()
            && self.teams.is_empty()
            && self.users.is_empty()
    }

    /// Starts writing what waits, unless a write is under way (what comes meanwhile waits for
    /// the next).
    async fn start_write(&mut self) {
        if self.settings.database_url.is_none() || self.writing.is_some() || self.nothing_to_write()
        {
            return;
        }
        let writer = match self.writer.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                let Some(url) = self.settings.database_url.clone() else {
                    return;
                };
                match tokio::time::timeout(LOOKUP_TIMEOUT, db::connect(&url)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return self.db_failed(&e.to_string()),
                    Err(_) => return self.db_failed("connecting timed out"),
                }
            }
        };
        self.writing_keys = self.keys.clone();
        self.writing_teams = self.teams.clone();
        let batch = Batch {
            rows: std::mem::take(&mut self.rows),
            keys: std::mem::take(&mut self.keys),
            teams: std::mem::take(&mut self.teams),
            users: std::mem::take(&mut self.users),
        };
        self.writing = Some(tokio::spawn(async move {
            let mut writer = writer;
            let res = db::write_spend(
                &mut writer,
                &batch.rows,
                &batch.keys,
                &batch.teams,
                &batch.users,
            )
            .await
            .map_err(|e| e.to_string());
            let writer = (!writer.is_closed()).then_some(writer);
            (writer, batch, res)
        }));
    }

    /// A write ended: counted, or its batch put back in front of what came meanwhile.
    fn written(&mut self, done: Result<WriteDone, tokio::task::JoinError>) {
        self.writing_keys.clear();
        self.writing_teams.clear();
        let (writer, batch, res) = match done {
            Ok(d) => d,
            Err(e) => return self.db_failed(&e.to_string()),
        };
        self.writer = writer;
        match res {
            Ok(()) => self.metrics.rows_written.inc_by(batch.rows.count as u64),
            Err(e) => {
                self.writer = None;
                for (map, back) in [
                    (&mut self.keys, batch.keys),
                    (&mut self.teams, batch.teams),
                    (&mut self.users, batch.users),
                ] {
                    for (id, usd) in back {
                        *map.entry(id).or_default() += usd;
                    }
                }
                let mut rows = batch.rows;
                let newer = std::mem::take(&mut self.rows);
                if rows.bytes() + newer.bytes() > MAX_PENDING_BYTES {
                    self.metrics.rows_dropped.inc_by(newer.count as u64);
                } else {
                    rows.append(newer);
                }
                self.rows = rows;
                self.db_failed(&e);
            }
        }
    }

    /// Writes everything (shutdown, tests): the write under way, then the rest.
    async fn write_all(&mut self) {
        loop {
            if let Some(h) = self.writing.take() {
                let done = h.await;
                let failed = matches!(&done, Ok((_, _, Err(_))) | Err(_));
                self.written(done);
                if failed {
                    return;
                }
            }
            if self.nothing_to_write() {
                return;
            }
            self.start_write().await;
            if self.writing.is_none() {
                return;
            }
        }
    }

    /// The database client, connected now if it is not (or its connection closed).
    async fn client(&mut self) -> Option<&tokio_postgres::Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let url = self.settings.database_url.clone()?;
            match tokio::time::timeout(LOOKUP_TIMEOUT, db::connect(&url)).await {
                Ok(Ok(c)) => {
                    match db::missing_columns(&c).await {
                        Ok(missing) if !missing.is_empty() => tracing::error!(
                            missing = %missing.join(", "),
                            "keys: the database lacks columns LLMux needs (is it LiteLLM's schema? `llmux db migrate` creates it on an empty database)"
                        ),
                        Ok(_) => {}
                        Err(e) => self.db_failed(&e.to_string()),
                    }
                    self.client = Some(c);
                }
                Ok(Err(e)) => {
                    self.db_failed(&e.to_string());
                    return None;
                }
                Err(_) => {
                    self.db_failed("connecting timed out");
                    return None;
                }
            }
        }
        self.client.as_ref()
    }

    fn db_failed(&mut self, why: &str) {
        self.metrics.db_errors.inc();
        if self.db_log.due() {
            tracing::warn!(
                error = %crate::util::clip(why),
                pending_rows = self.rows.count,
                "keys: the database is unavailable; cached keys keep working, spend waits in memory"
            );
        }
    }
}

/// Adds requests and tokens to LiteLLM's v3 windows and marks the keys whose window is full.
async fn apply_rates(
    conn: &mut redis::aio::ConnectionManager,
    rates: HashMap<String, RateDelta>,
    errors: &IntCounter,
) {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(RATE_SCRIPT));
    let now_ms = crate::util::unix_ms();
    let mut over: Vec<(String, u64)> = Vec::new();
    for (token, r) in rates {
        let d = format!("{{api_key:{token}}}");
        let res: redis::RedisResult<(String, String, String)> = SCRIPT
            .key(format!("{d}:window"))
            .key(format!("{d}:requests"))
            .key(format!("{d}:tokens"))
            .arg(now_ms / 1000)
            .arg(RATE_WINDOW_SECS)
            .arg(r.requests)
            .arg(r.tokens)
            .invoke_async(conn)
            .await;
        let Ok((start, requests, tokens)) = res else {
            errors.inc();
            continue;
        };
        let start: u64 = start.parse().unwrap_or(now_ms / 1000);
        let requests: f64 = requests.parse().unwrap_or(0.0);
        let tokens: f64 = tokens.parse().unwrap_or(0.0);
        let full = r.rpm.is_some_and(|l| requests >= l as f64)
            || r.tpm.is_some_and(|l| tokens >= l as f64);
        if full {
            over.push((token, (start + RATE_WINDOW_SECS) * 1000));
        }
    }
    SHARED_KEY_LIMITS.rcu(|m| {
        let mut m: HashMap<String, u64> = m
            .iter()
            .filter(|(_, until)| **until > now_ms)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        m.extend(over.iter().cloned());
        m
    });
}

/// A Redis client for `url`, its host name resolved by LLMux's resolver (redis-rs would ask
/// the C library, which a static binary cannot). A reconnect after a failure resolves again.
async fn redis_client(url: &str) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let mut info = url.into_connection_info().map_err(|e| e.to_string())?;
    if let redis::ConnectionAddr::Tcp(host, port) = &info.addr {
        let addrs = crate::upstream::dns::lookup(host, *port)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(a) = addrs.first() {
            info.addr = redis::ConnectionAddr::Tcp(a.ip().to_string(), a.port());
        }
    }
    redis::Client::open(info).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::hh_mm;

    #[test]
    fn router_usage_keys_name_the_utc_hour_and_minute() {
        // 2026-12-06 00:09 UTC and 23:59 the day before.
        let m = 1_796_515_740 / 60;
        assert_eq!(hh_mm(m), "00-09");
        assert_eq!(hh_mm(m - 10), "23-59");
    }
}
