//! The `llmux-credentials` thread and the handles shards read credentials through.
//!
//! One thread, started by the first [`handle`] whose credential needs fetching (a gateway with
//! only static keys, or none, starts nothing), runs a current-thread tokio runtime and the
//! HTTP client, fetches credential sets on demand, and refreshes each one in the background
//! before it expires. Shards talk to it only by message (flume, so any runtime can wait on the
//! answer) and read what it fetched through an `ArcSwap`: a request never waits for a refresh
//! while a valid credential is cached.
//!
//! Credential sets are keyed by a SHA-256 of their spec: deployments that give the same
//! parameters share one set, one fetch and one refresh. The key is never logged (it is derived
//! from secrets); the spec's label is.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::client::Http;
use super::{Credential, CredentialError, CredentialSpec};

type Key = [u8; 32];
type Answer = Result<Arc<Credential>, CredentialError>;

/// When to refresh and retry. Only tests change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Timing {
    /// The wait before the first retry after a failure, doubled per failure up to
    /// `max_backoff`. Meanwhile a request that needs a fetch gets the failure at once.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Refresh this long after each fetch, whatever the lifetime (tests).
    pub refresh_after: Option<Duration>,
}

pub(crate) const DEFAULT_TIMING: Timing = Timing {
    first_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(60),
    refresh_after: None,
};

/// One credential set, shared by every handle on the same spec.
struct Slot {
    key: Key,
    spec: CredentialSpec,
    label: String,
    timing: Timing,
    current: ArcSwapOption<Credential>,
}

impl Slot {
    fn usable(&self, now: SystemTime) -> Option<Arc<Credential>> {
        self.current.load_full().filter(|c| c.is_usable_at(now))
    }
}

/// A deployment's way to its credentials. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct CredentialHandle {
    slot: Arc<Slot>,
}

impl std::fmt::Debug for CredentialHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialHandle")
            .field("credentials", &self.slot.label)
            .finish()
    }
}

impl CredentialHandle {
    pub fn spec(&self) -> &CredentialSpec {
        &self.slot.spec
    }

    /// What the credentials are and where they come from (no secret).
    pub fn label(&self) -> &str {
        &self.slot.label
    }

    /// The cached credential if it is still usable: one lock-free load, no waiting.
    pub fn current(&self) -> Option<Arc<Credential>> {
        self.slot.usable(SystemTime::now())
    }

    /// The credential: the cached one at once while it is usable, else the result of the
    /// fetch the credential thread runs for it (every request waiting meanwhile shares that
    /// fetch). The request to the thread is sent before this returns, so a caller may start
    /// several and await them later. Works on any runtime.
    pub fn get(&self) -> impl Future<Output = Answer> + Send + 'static {
        let ready = self.current();
        let asked = if ready.is_some() {
            None
        } else {
            Some(ask(&self.slot))
        };
        async move {
            if let Some(c) = ready {
                return Ok(c);
            }
            match asked {
                Some(Ok(rx)) => rx
                    .recv_async()
                    .await
                    .unwrap_or(Err(CredentialError::Stopped)),
                Some(Err(e)) => Err(e),
                None => Err(CredentialError::Stopped),
            }
        }
    }
}

fn ask(slot: &Arc<Slot>) -> Result<flume::Receiver<Answer>, CredentialError> {
    let (reply, rx) = flume::bounded(1);
    service()?.send(Fetch {
        slot: slot.clone(),
        reply: Some(reply),
    })?;
    Ok(rx)
}

/// The handle for `spec`: the same credential set as every other handle on an equal spec.
/// A credential that needs fetching is fetched now (starting the credential thread if it is
/// not running), so it is usually ready before the first request.
pub fn handle(spec: CredentialSpec) -> CredentialHandle {
    handle_with(spec, DEFAULT_TIMING)
}

pub(crate) fn handle_with(spec: CredentialSpec, timing: Timing) -> CredentialHandle {
    let key = key_of(&spec, &timing);
    let (slot, created) = registered(key, move || Slot {
        key,
        label: spec.label(),
        current: ArcSwapOption::new(spec.ready().map(Arc::new)),
        spec,
        timing,
    });
    if created && slot.current.load().is_none() {
        let prefetch = service().and_then(|s| {
            s.send(Fetch {
                slot: slot.clone(),
                reply: None,
            })
        });
        if let Err(e) = prefetch {
            tracing::error!(credentials = %slot.label, error = %e, "credentials: cannot start fetching");
        }
    }
    CredentialHandle { slot }
}

/// Sets the TLS configuration of credential calls (the upstream client's: webpki roots plus
/// `llmux.upstream.ca_file`). Until it is called, the webpki roots alone.
pub fn set_tls(tls: Arc<rustls::ClientConfig>) {
    tls_setting().store(Some(tls));
}

fn tls_setting() -> &'static ArcSwapOption<rustls::ClientConfig> {
    static TLS: OnceLock<ArcSwapOption<rustls::ClientConfig>> = OnceLock::new();
    TLS.get_or_init(ArcSwapOption::empty)
}

fn default_tls() -> Option<Arc<rustls::ClientConfig>> {
    static DEFAULT: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            super::client::webpki_tls()
                .map(Arc::new)
                .map_err(|e| tracing::error!(error = %e, "credentials: no TLS configuration"))
                .ok()
        })
        .clone()
}

/// The SHA-256 of a spec's `Hash` stream: equal specs, equal keys; different specs collide
/// only as SHA-256 does (a 64-bit hash could hand one deployment another's credentials).
fn key_of(spec: &CredentialSpec, timing: &Timing) -> Key {
    struct Digest(ring::digest::Context);
    impl Hasher for Digest {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut h = Digest(ring::digest::Context::new(&ring::digest::SHA256));
    spec.hash(&mut h);
    timing.hash(&mut h);
    let mut key = [0; 32];
    key.copy_from_slice(h.0.finish().as_ref());
    key
}

/// The live slot for `key`, or a new one from `make` (and true). Lock-free: a copy-on-write
/// map of weak references, so slots no handle holds any more go away.
fn registered(key: Key, make: impl FnOnce() -> Slot) -> (Arc<Slot>, bool) {
    static REGISTRY: OnceLock<ArcSwap<HashMap<Key, Weak<Slot>>>> = OnceLock::new();
    let registry = REGISTRY.get_or_init(ArcSwap::default);
    if let Some(slot) = registry.load().get(&key).and_then(Weak::upgrade) {
        return (slot, false);
    }
    let fresh = Arc::new(make());
    let mut chosen = None;
    registry.rcu(|map| {
        if let Some(slot) = map.get(&key).and_then(Weak::upgrade) {
            chosen = Some((slot, false));
            return Arc::clone(map);
        }
        let mut next: HashMap<Key, Weak<Slot>> = map
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(k, w)| (*k, w.clone()))
            .collect();
        next.insert(key, Arc::downgrade(&fresh));
        chosen = Some((fresh.clone(), true));
        Arc::new(next)
    });
    chosen.unwrap_or((fresh, true))
}

/// Fetch unless a usable credential is cached; answer `reply` (none: a prefetch).
struct Fetch {
    slot: Arc<Slot>,
    reply: Option<flume::Sender<Answer>>,
}

/// Messages of the thread's own tasks.
enum Inner {
    Done {
        key: Key,
        result: Result<Credential, CredentialError>,
    },
    Refresh {
        key: Key,
        generation: u64,
    },
}

struct Service {
    tx: flume::Sender<Fetch>,
}

impl Service {
    fn send(&self, msg: Fetch) -> Result<(), CredentialError> {
        self.tx.send(msg).map_err(|_| CredentialError::Stopped)
    }
}

fn service() -> Result<&'static Service, CredentialError> {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    if let Some(s) = SERVICE.get() {
        return Ok(s);
    }
    let started = start().map_err(|e| {
        tracing::error!(error = %e, "credentials: cannot start the credential thread");
        CredentialError::Stopped
    })?;
    // Two first uses at once: one thread is kept, the other's channel closes and it ends.
    Ok(SERVICE.get_or_init(|| started))
}

fn start() -> std::io::Result<Service> {
    let (tx, rx) = flume::unbounded();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("llmux-credentials".into())
        .spawn(move || runtime.block_on(run(rx)))?;
    Ok(Service { tx })
}

/// What the thread knows of one credential set.
struct State {
    slot: Weak<Slot>,
    waiters: Vec<flume::Sender<Answer>>,
    fetching: bool,
    /// Failures in a row.
    failures: u32,
    /// The last failure, answered to requests without a new fetch until the instant.
    failed: Option<(CredentialError, Instant)>,
    /// Bumped on every schedule: a timer of an older generation does nothing.
    generation: u64,
    /// A credential was fetched before (the first one is logged louder).
    fetched_once: bool,
}

impl State {
    fn new(slot: &Arc<Slot>) -> Self {
        Self {
            slot: Arc::downgrade(slot),
            waiters: vec![],
            fetching: false,
            failures: 0,
            failed: None,
            generation: 0,
            fetched_once: false,
        }
    }

    /// The failure still answered without a new fetch, if any.
    fn recent_failure(&self) -> Option<&CredentialError> {
        self.failed
            .as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(e, _)| e)
    }
}

async fn run(rx: flume::Receiver<Fetch>) {
    let (inner_tx, mut inner_rx) = tokio::sync::mpsc::unbounded_channel::<Inner>();
    let mut worker = Worker {
        states: HashMap::new(),
        client: None,
        inner: inner_tx,
    };
    loop {
        tokio::select! {
            asked = rx.recv_async() => match asked {
                Ok(asked) => worker.asked(asked),
                Err(_) => break,
            },
            Some(inner) = inner_rx.recv() => match inner {
                Inner::Done { key, result } => worker.fetched(key, result),
                Inner::Refresh { key, generation } => worker.refresh_due(key, generation),
            },
        }
    }
}

/// The credential thread's state: one [`State`] per set it was asked about.
struct Worker {
    states: HashMap<Key, State>,
    /// The HTTP client, and the TLS settings it was built on.
    client: Option<(Arc<rustls::ClientConfig>, Http)>,
    inner: tokio::sync::mpsc::UnboundedSender<Inner>,
}

impl Worker {
    fn asked(&mut self, Fetch { slot, reply }: Fetch) {
        // Sets no handle holds any more, with nothing under way, are forgotten.
        self.states
            .retain(|_, st| st.fetching || st.slot.strong_count() > 0);
        let st = self
            .states
            .entry(slot.key)
            .or_insert_with(|| State::new(&slot));
        st.slot = Arc::downgrade(&slot);
        let answered = if let Some(c) = slot.usable(SystemTime::now()) {
            Some(Ok(c))
        } else {
            st.recent_failure().map(|e| Err(e.clone()))
        };
        if let Some(answer) = answered {
            if let Some(r) = reply {
                let _ = r.send(answer);
            }
            return;
        }
        st.waiters.extend(reply);
        if !st.fetching {
            self.start(slot);
        }
    }

    fn refresh_due(&mut self, key: Key, generation: u64) {
        let Some(st) = self.states.get(&key) else {
            return;
        };
        if st.generation != generation || st.fetching {
            return;
        }
        match st.slot.upgrade() {
            Some(slot) => self.start(slot),
            None => {
                self.states.remove(&key);
            }
        }
    }

    fn start(&mut self, slot: Arc<Slot>) {
        if let Some(st) = self.states.get_mut(&slot.key) {
            st.fetching = true;
        }
        let http = self.http();
        let done = self.inner.clone();
        tokio::spawn(async move {
            let result = match http {
                Some(http) => slot.spec.fetch(&http).await,
                None => Err(CredentialError::unavailable(
                    "credentials",
                    &slot.label,
                    "no TLS configuration",
                )),
            }
            // Whatever an endpoint echoed, the spec's secrets do not leave.
            .map_err(|e| e.masked(&slot.spec.secrets()));
            let _ = done.send(Inner::Done {
                key: slot.key,
                result,
            });
        });
    }

    /// The client on the TLS settings in force (rebuilt when they change).
    fn http(&mut self) -> Option<Http> {
        let tls = tls_setting().load_full().or_else(default_tls)?;
        match &self.client {
            Some((t, h)) if Arc::ptr_eq(t, &tls) => Some(h.clone()),
            _ => {
                let h = Http::new(&tls);
                self.client = Some((tls, h.clone()));
                Some(h)
            }
        }
    }

    fn fetched(&mut self, key: Key, result: Result<Credential, CredentialError>) {
        let Some(st) = self.states.get_mut(&key) else {
            return;
        };
        st.fetching = false;
        let slot = st.slot.upgrade();
        let label = slot.as_ref().map_or("", |s| s.label.as_str());
        let retry = match result {
            Ok(cred) => {
                let fetched_at = SystemTime::now();
                let cred = Arc::new(cred);
                if let Some(slot) = &slot {
                    slot.current.store(Some(cred.clone()));
                }
                for w in st.waiters.drain(..) {
                    let _ = w.send(Ok(cred.clone()));
                }
                st.failures = 0;
                st.failed = None;
                let expires_in = cred
                    .expires_at()
                    .map(|e| e.duration_since(fetched_at).unwrap_or_default());
                if st.fetched_once {
                    tracing::debug!(credentials = %label, expires_in = ?expires_in, "credentials: refreshed");
                } else {
                    tracing::info!(credentials = %label, expires_in = ?expires_in, "credentials: fetched");
                }
                st.fetched_once = true;
                slot.as_ref().zip(expires_in).map(|(slot, lifetime)| {
                    slot.timing
                        .refresh_after
                        .unwrap_or_else(|| refresh_delay(lifetime))
                })
            }
            Err(e) => {
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
                st.failures = st.failures.saturating_add(1);
                let timing = slot.as_ref().map_or(DEFAULT_TIMING, |s| s.timing);
                let wait = backoff(&timing, st.failures);
                tracing::warn!(
                    credentials = %label,
                    error = %e,
                    failures = st.failures,
                    retry_in = ?wait,
                    "credentials: fetch failed"
                );
                st.failed = Some((e, Instant::now() + wait));
                // While the credential in hand is still good, keep trying in the background;
                // once it is not, the next request asks again.
                slot.as_ref()
                    .filter(|s| s.usable(SystemTime::now()).is_some())
                    .map(|_| wait)
            }
        };
        match (slot, retry) {
            (None, _) => {
                self.states.remove(&key);
            }
            (Some(_), Some(delay)) => {
                st.generation += 1;
                let (generation, inner) = (st.generation, self.inner.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = inner.send(Inner::Refresh { key, generation });
                });
            }
            (Some(_), None) => {}
        }
    }
}

/// When to refresh a credential that lives `lifetime`: at the earlier of 80 % of it and five
/// minutes before expiry, but not before half of it (a token of a few minutes is not
/// refreshed in a loop).
fn refresh_delay(lifetime: Duration) -> Duration {
    let eighty = lifetime * 4 / 5;
    let five_before = lifetime.saturating_sub(Duration::from_secs(300));
    eighty.min(five_before).max(lifetime / 2)
}

fn backoff(timing: &Timing, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    timing
        .first_backoff
        .saturating_mul(1 << doublings)
        .min(timing.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{
        closed_port_url, env as vars, params, rfc3339_after, signature_checks, sts_answer, Fake,
        Reply, PATIENCE,
    };
    use crate::upstream::credentials::{
        exchange, google, AwsCredentials, AwsSpec, ExchangeSpec, GoogleSpec,
    };

    fn block_on<F: Future>(f: F) -> F::Output {
        crate::upstream::credentials::testutil::block_on(f)
    }

    fn exchange_spec(url: &str, key: &str) -> CredentialSpec {
        CredentialSpec::TokenExchange(
            ExchangeSpec::from_params(
                &params(&[("api_key", key)]),
                &exchange::tests::config(url),
                &vars(&[]),
            )
            .unwrap(),
        )
    }

    /// Calls `get()` until `done` says the credential is the one awaited, failing the test
    /// on any error; bounded by [`PATIENCE`] (a hung test, not a window).
    fn get_until(h: &CredentialHandle, done: impl Fn(&Credential) -> bool) -> Arc<Credential> {
        let start = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            let c = rt
                .block_on(h.get())
                .unwrap_or_else(|e| panic!("a caller saw a failure: {e}"));
            if done(&c) {
                return c;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the awaited credential never came"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn refresh_schedule() {
        let min = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(refresh_delay(min(60)), min(48));
        assert_eq!(refresh_delay(min(15)), min(10));
        assert_eq!(refresh_delay(min(5)), Duration::from_secs(150));
        assert_eq!(
            refresh_delay(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        let t = DEFAULT_TIMING;
        assert_eq!(backoff(&t, 1), Duration::from_secs(1));
        assert_eq!(backoff(&t, 3), Duration::from_secs(4));
        assert_eq!(backoff(&t, 7), Duration::from_secs(60));
        assert_eq!(backoff(&t, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn static_keys_are_ready_at_once_and_never_expire() {
        let spec = CredentialSpec::Aws(
            AwsSpec::from_params(
                &params(&[
                    ("aws_access_key_id", "AKIASTATIC"),
                    ("aws_secret_access_key", "static-secret"),
                ]),
                &vars(&[]),
            )
            .unwrap(),
        );
        let h = handle(spec);
        let c = h.current().expect("ready without a fetch");
        assert_eq!(c.aws().unwrap().access_key_id(), "AKIASTATIC");
        assert!(c.expires_at().is_none());
        let got = block_on(h.get()).unwrap();
        assert!(Arc::ptr_eq(&c, &got));
        assert!(!format!("{h:?}").contains("static-secret"));
    }

    #[test]
    fn a_set_no_handle_holds_goes_away() {
        let spec = || {
            CredentialSpec::Aws(
                AwsSpec::from_params(
                    &params(&[
                        ("aws_access_key_id", "AKIAGONE"),
                        ("aws_secret_access_key", "gone-secret"),
                    ]),
                    &vars(&[]),
                )
                .unwrap(),
            )
        };
        let h = handle(spec());
        let weak = Arc::downgrade(&h.slot);
        let clone = h.clone();
        drop(h);
        assert!(weak.upgrade().is_some());
        drop(clone);
        assert!(weak.upgrade().is_none());
        assert!(handle(spec()).current().is_some());
    }

    #[test]
    fn equal_specs_share_one_set_and_one_fetch() {
        let fake = exchange::tests::fake_iam("shared-key-1", 3600);
        let url = fake.url("/token");
        let a = handle(exchange_spec(&url, "shared-key-1"));
        let b = handle(exchange_spec(&url, "shared-key-1"));
        assert!(Arc::ptr_eq(&a.slot, &b.slot));
        let other = handle(exchange_spec(&url, "another-key"));
        assert!(!Arc::ptr_eq(&a.slot, &other.slot));
        let ca = block_on(a.get()).unwrap();
        let cb = block_on(b.get()).unwrap();
        assert!(Arc::ptr_eq(&ca, &cb));
        let _ = block_on(other.get());
        assert_eq!(fake.hits(), 2, "one fetch per distinct set");
    }

    /// Requests that arrive while the first fetch is under way wait for it and share it; on a
    /// monoio runtime, as on a shard.
    #[test]
    fn concurrent_gets_share_one_fetch() {
        let (release_tx, release_rx) = flume::bounded::<()>(1);
        let fake = Fake::start(move |n, _| {
            if n == 1 {
                // Held until every request below is waiting.
                let _ = release_rx.recv_timeout(PATIENCE);
            }
            Reply::ok(format!(
                r#"{{"access_token":"held-{n}","expires_in":3600}}"#
            ))
        });
        let h = handle(exchange_spec(&fake.url("/token"), "concurrent-key"));
        // The prefetch is under way (held by the fake); every get() below finds nothing
        // cached and sends its request before returning.
        let first = fake.next_seen();
        assert_eq!(first.method, "POST");
        let waiting: Vec<_> = (0..16).map(|_| h.get()).collect();
        release_tx.send(()).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("a monoio runtime");
        let results = rt.block_on(futures_util::future::join_all(waiting));
        for r in &results {
            assert_eq!(r.as_ref().unwrap().bearer(), Some("held-1"));
        }
        assert_eq!(fake.hits(), 1);
    }

    /// A token of two seconds is refreshed in the background; callers never see a failure.
    #[test]
    fn a_short_lived_token_is_refreshed_before_it_expires() {
        let fake = google::tests::fake_token_endpoint(vec![2, 3600]);
        let json = google::tests::sa_json(&fake.url("/token"));
        let spec = GoogleSpec::from_params(
            &params(&[("google_credentials", &json)]),
            "google_credentials",
            &vars(&[]),
        )
        .unwrap();
        let h = handle(CredentialSpec::GoogleOAuth(spec));
        let first = get_until(&h, |_| true);
        assert_eq!(first.bearer(), Some("ya29.token-1"));
        // The event: the endpoint's second hit, the background refresh.
        fake.next_seen();
        fake.next_seen();
        let second = get_until(&h, |c| c.bearer() == Some("ya29.token-2"));
        assert!(second.expires_at() > first.expires_at());
        assert_eq!(h.current().unwrap().bearer(), Some("ya29.token-2"));
    }

    /// A refresh that fails is retried while the credential in hand is still good, and the
    /// callers go on with that one.
    #[test]
    fn a_failed_refresh_is_retried_and_the_old_token_served_meanwhile() {
        let fake = Fake::start(|n, _| match n {
            2 => Reply::status(503, "maintenance"),
            _ => Reply::ok(format!(r#"{{"access_token":"r-{n}","expires_in":3600}}"#)),
        });
        let timing = Timing {
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(20),
            refresh_after: Some(Duration::from_millis(20)),
        };
        let h = handle_with(exchange_spec(&fake.url("/t"), "retry-key"), timing);
        assert_eq!(get_until(&h, |_| true).bearer(), Some("r-1"));
        // Hit 2 fails; until hit 3 succeeds, r-1 is what callers get.
        fake.next_seen();
        fake.next_seen();
        let seen_after_failure = h.current().expect("the old token is still served");
        assert!(matches!(seen_after_failure.bearer(), Some("r-1" | "r-3")));
        fake.next_seen();
        let later = get_until(&h, |c| c.bearer() != Some("r-1"));
        let n: u32 = later.bearer().unwrap()[2..].parse().unwrap();
        assert!(n >= 3, "{:?}", later.bearer());
    }

    #[test]
    fn failures_are_classified_and_never_hold_the_secret() {
        // The endpoint echoes the key it was sent in its error message.
        let fake = exchange::tests::fake_iam("right-key", 3600);
        let slow_retry = Timing {
            first_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            refresh_after: None,
        };
        let h = handle_with(exchange_spec(&fake.url("/t"), "wrong-key-zzz"), slow_retry);
        let e = block_on(h.get()).unwrap_err();
        assert_eq!(e.status(), 401, "{e}");
        let text = e.for_deployment("granite");
        assert!(text.contains("deployment `granite`"), "{text}");
        assert!(text.contains("BXNIM0415E"), "{text}");
        assert!(!text.contains("wrong-key-zzz"), "{text}");
        assert!(!format!("{e:?}").contains("wrong-key-zzz"));
        // Within the backoff the failure is answered again without another call.
        let again = block_on(h.get()).unwrap_err();
        assert_eq!(again, e);
        assert_eq!(fake.hits(), 1);

        let down = handle(exchange_spec(&closed_port_url(), "k-unreachable"));
        let e = block_on(down.get()).unwrap_err();
        assert_eq!(e.status(), 502, "{e}");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");

        let junk = Fake::start(|_, _| Reply::ok("<html>not json</html>"));
        let e = block_on(handle(exchange_spec(&junk.url("/t"), "k-junk")).get()).unwrap_err();
        assert_eq!(e.status(), 502, "{e}");
    }

    /// The whole chain through a handle: instance metadata gives the base keys, STS AssumeRole
    /// is signed with them, and the assumed role's keys come back.
    #[test]
    fn assume_role_on_instance_metadata_end_to_end() {
        let base = AwsCredentials::new("ASIABASE", "imds-secret", Some("imds-token".into()));
        let (seen_tx, seen_rx) = flume::unbounded();
        let imds_creds = format!(
            r#"{{"Code":"Success","AccessKeyId":"ASIABASE","SecretAccessKey":"imds-secret","Token":"imds-token","Expiration":"{}"}}"#,
            rfc3339_after(6 * 3600)
        );
        let role_answer = sts_answer(
            "AssumeRole",
            "ASIAROLE",
            "role-secret",
            "role-token",
            &rfc3339_after(3600),
        );
        let fake = Fake::start(
            move |_, seen| match (seen.method.as_str(), seen.target.as_str()) {
                ("PUT", "/latest/api/token") => Reply::ok("s-1"),
                ("GET", "/latest/meta-data/iam/security-credentials/") => Reply::ok("node-role"),
                ("GET", "/latest/meta-data/iam/security-credentials/node-role") => {
                    Reply::ok(imds_creds.clone())
                }
                ("POST", "/sts/") => {
                    let _ = seen_tx.send(seen.clone());
                    Reply::ok(role_answer.clone())
                }
                _ => Reply::status(404, ""),
            },
        );
        let sts_url = fake.url("/sts/");
        let spec = AwsSpec::from_params(
            &params(&[
                ("aws_role_name", "arn:aws:iam::123456789012:role/llm"),
                ("aws_session_name", "gateway"),
                ("aws_sts_endpoint", &sts_url),
                ("aws_imds_endpoint", &fake.url("")),
                ("aws_region_name", "eu-central-1"),
            ]),
            &vars(&[]),
        )
        .unwrap();
        assert_eq!(spec.region.as_deref(), Some("eu-central-1"));
        let h = handle(CredentialSpec::Aws(spec));
        let c = block_on(h.get()).unwrap();
        let k = c.aws().unwrap();
        assert_eq!(
            (k.access_key_id(), k.secret_access_key(), k.session_token()),
            ("ASIAROLE", "role-secret", Some("role-token"))
        );
        let sts_call = seen_rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(sts_call.form()["RoleSessionName"], "gateway");
        assert!(signature_checks(&sts_call, &sts_url, &base, "eu-central-1"));
    }

    #[test]
    fn container_credentials_through_a_handle() {
        let answer = format!(
            r#"{{"AccessKeyId":"ASIAECS","SecretAccessKey":"ecs-secret","Token":"ecs-token","Expiration":"{}"}}"#,
            rfc3339_after(3600)
        );
        let fake = Fake::start(move |_, seen| {
            if seen.header("authorization") == Some("ecs-auth-1") {
                Reply::ok(answer.clone())
            } else {
                Reply::status(403, "no")
            }
        });
        let full_uri = fake.url("/v2/credentials/task");
        let spec = AwsSpec::from_params(
            &params(&[]),
            &vars(&[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-auth-1"),
            ]),
        )
        .unwrap();
        let c = block_on(handle(CredentialSpec::Aws(spec)).get()).unwrap();
        assert_eq!(c.aws().unwrap().access_key_id(), "ASIAECS");
    }

    #[test]
    fn web_identity_token_file_is_read_at_each_fetch() {
        let dir = crate::upstream::credentials::testutil::temp_dir("wif");
        let token_file = dir.join("token");
        std::fs::write(&token_file, "jwt-one\n").unwrap();
        let answer = sts_answer(
            "AssumeRoleWithWebIdentity",
            "ASIAWIF",
            "w",
            "t",
            &rfc3339_after(3600),
        );
        let fake = Fake::start(move |_, _| Reply::ok(answer.clone()));
        let spec = AwsSpec::from_params(
            &params(&[("aws_sts_endpoint", &fake.url("/"))]),
            &vars(&[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/irsa"),
            ]),
        )
        .unwrap();
        let http = Http::new(&crate::upstream::credentials::testutil::test_tls());
        block_on(spec.fetch(&http)).unwrap();
        std::fs::write(&token_file, "jwt-two").unwrap();
        block_on(spec.fetch(&http)).unwrap();
        assert_eq!(fake.next_seen().form()["WebIdentityToken"], "jwt-one");
        assert_eq!(fake.next_seen().form()["WebIdentityToken"], "jwt-two");
        std::fs::remove_dir_all(&dir).ok();
    }
}
