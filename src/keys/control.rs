//! The `llmux-keys` thread: the control plane of virtual keys. It answers shards' lookups
//! (the config's keys, then the database), keeps the spend shards report, and writes it to
//! the database in batches (every `proxy_batch_write_at` seconds plus up to 5 s of jitter, as
//! LiteLLM does). Database I/O runs here on a current-thread tokio runtime, never on a shard;
//! shards talk to it only by message.
//!
//! Spend a key or team has is what the database says plus what this process recorded and has
//! not written yet (for the config's keys: everything recorded since start). When the
//! database is down, rows and increments wait in memory up to [`MAX_PENDING_ROWS`] and are
//! written when it is back; past the bound, rows are dropped and counted (increments are
//! never dropped: they are one number per key).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::IntCounter;

use super::db::{self, SpendRow};
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
    pub rows: Vec<SpendRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpendDelta {
    pub token: String,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub usd: f64,
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
}

/// Spend rows kept while the database is unreachable, at most.
pub const MAX_PENDING_ROWS: usize = 100_000;
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
        if !settings.enabled() {
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
        let mut next_write = tokio::time::Instant::now() + c.write_interval();
        loop {
            tokio::select! {
                msg = rx.recv_async() => match msg {
                    Ok(KeyMsg::Lookup { token, reply }) => {
                        let answer = c.lookup(&token).await;
                        let _ = reply.send(answer);
                    }
                    Ok(KeyMsg::Spend(batch)) => c.add(batch),
                    Ok(KeyMsg::Configure(s)) => c.configure(s),
                    Ok(KeyMsg::Admin { op, reply }) => {
                        let answer = c.admin(*op).await;
                        let _ = reply.send(answer);
                    }
                    Ok(KeyMsg::Flush(reply)) => {
                        c.write().await;
                        let _ = reply.send(());
                    }
                    Err(_) => break,
                },
                _ = tokio::time::sleep_until(next_write) => {
                    c.write().await;
                    next_write = tokio::time::Instant::now() + c.write_interval();
                }
            }
        }
    });
}

struct Control {
    settings: Arc<KeySettings>,
    metrics: KeyMetrics,
    client: Option<tokio_postgres::Client>,
    /// Spend of the config's keys and their teams since start.
    static_keys: HashMap<String, f64>,
    static_teams: HashMap<String, f64>,
    /// Spend recorded and not yet written to the database.
    keys: HashMap<String, f64>,
    teams: HashMap<String, f64>,
    users: HashMap<String, f64>,
    rows: Vec<SpendRow>,
    /// The last database error was logged at (at most one line a minute).
    last_logged: Option<std::time::Instant>,
}

impl Control {
    fn new(settings: Arc<KeySettings>, metrics: KeyMetrics) -> Self {
        Self {
            settings,
            metrics,
            client: None,
            static_keys: HashMap::new(),
            static_teams: HashMap::new(),
            keys: HashMap::new(),
            teams: HashMap::new(),
            users: HashMap::new(),
            rows: Vec::new(),
            last_logged: None,
        }
    }

    fn write_interval(&self) -> Duration {
        self.settings.batch_write + Duration::from_millis(fastrand::u64(0..5_000))
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
            k.spend += self.static_keys.get(token).copied().unwrap_or(0.0);
            if let Some(t) = k.team.as_mut() {
                t.spend += self.static_teams.get(&t.team_id).copied().unwrap_or(0.0);
            }
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
                k.spend += self.keys.get(token).copied().unwrap_or(0.0);
                if let Some(t) = k.team.as_mut() {
                    t.spend += self.teams.get(&t.team_id).copied().unwrap_or(0.0);
                }
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
        for d in batch.deltas {
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
        let room = MAX_PENDING_ROWS.saturating_sub(self.rows.len());
        let n = batch.rows.len();
        self.rows.extend(batch.rows.into_iter().take(room));
        if n > room {
            self.metrics.rows_dropped.inc_by((n - room) as u64);
        }
    }

    /// Writes what waits; keeps it for the next try if the database fails.
    async fn write(&mut self) {
        if self.settings.database_url.is_none()
            || (self.rows.is_empty()
                && self.keys.is_empty()
                && self.teams.is_empty()
                && self.users.is_empty())
        {
            return;
        }
        if self.client().await.is_none() {
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let res = db::write_spend(client, &self.rows, &self.keys, &self.teams, &self.users).await;
        match res {
            Ok(()) => {
                self.metrics.rows_written.inc_by(self.rows.len() as u64);
                self.rows.clear();
                self.keys.clear();
                self.teams.clear();
                self.users.clear();
            }
            Err(e) => self.db_failed(&e.to_string()),
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
        let now = std::time::Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_logged = Some(now);
            tracing::warn!(
                error = %crate::util::clip(why),
                pending_rows = self.rows.len(),
                "keys: the database is unavailable; cached keys keep working, spend waits in memory"
            );
        }
    }
}
