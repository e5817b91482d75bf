//! The process: shards (one OS thread + one monoio runtime each, SO_REUSEPORT listeners), the
//! control plane (signals, config reload), readiness and graceful shutdown.

mod listener;
mod routes;
mod runtime;
mod shard;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::{self, ConfigSource, Snapshot};
use crate::telemetry::logging::{self, LogFormat};
use crate::telemetry::metrics::{GlobalMetrics, ShardMetrics};
pub use runtime::IoDriver;

/// Options of `llmux serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub listen: String,
    pub workers: Option<usize>,
    pub uds: Option<PathBuf>,
    pub io_driver: IoDriver,
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Start {
        what: String,
        source: std::io::Error,
    },
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A shard's stack. Recursion on the request path is bounded (JSON nesting by
/// `max_json_depth`, provider-file expressions by the parser, `fn` calls by the interpreter's
/// level budget); this leaves room for the default bounds in a debug build, whose frames are
/// several times larger (a request nested 1024 deep, the largest `max_json_depth`, needs a
/// release build). It is address space: only the pages a shard touches are resident.
pub(crate) const SHARD_STACK_BYTES: usize = 8 * 1024 * 1024;

/// State shared by all shards: read-mostly, written by the control plane.
pub struct Shared {
    pub config: ArcSwap<Snapshot>,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    pub global_metrics: GlobalMetrics,
    pub registries: Vec<prometheus::Registry>,
    /// Each shard's control channel (the admin view asks every shard for its part).
    pub shard_control: Vec<flume::Sender<crate::gateway::route::ShardControl>>,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Picks the config source: the given file, else `config/llmux.yaml` if present, else the
/// config embedded in the binary.
pub fn config_source(explicit: Option<PathBuf>) -> ConfigSource {
    match explicit {
        Some(p) => ConfigSource::File(p),
        None => {
            let default = PathBuf::from("config/llmux.yaml");
            if default.exists() {
                ConfigSource::File(default)
            } else {
                ConfigSource::Embedded
            }
        }
    }
}

/// Runs the gateway until SIGTERM/SIGINT and a graceful drain.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let process_start = Instant::now();
    // Signal handlers before anything else: a SIGTERM that arrives while the gateway starts
    // (or in the moment after it reports ready) must start a drain, not kill the process with
    // the default disposition.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]);
    raise_nofile_limit();
    let source = config_source(opts.config.clone());
    let loaded = config::load(&source)?;
    let snap = loaded.snapshot;
    let format = opts
        .log_format
        .or_else(|| snap.log_format.as_deref().and_then(|f| f.parse().ok()))
        .unwrap_or(LogFormat::Text);
    // LLMUX_LOG through the config's environment resolver (nothing reads the environment itself).
    let filter = logging::filter_spec(
        snap.env.get("LLMUX_LOG"),
        snap.log_level.as_deref().unwrap_or("info"),
    );
    let _log_guard = logging::init(format, &filter);
    logging::set_secrets(&snap.secrets);
    logging::set_redact_pii(snap.log_redact_pii);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %source.name(), model_groups = snap.group_names.len(), "config loaded");

    let workers = opts.workers.filter(|n| *n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });

    if let Some(addr) = snap.mock_listen.clone() {
        crate::mock::spawn_background(&addr, opts.io_driver).map_err(|source| {
            ServeError::Start {
                what: format!("built-in mock on {addr}"),
                source,
            }
        })?;
        tracing::info!(addr = %addr, "built-in mock upstream started");
    }

    let tcp =
        listener::bind_tcp_group(&opts.listen, workers).map_err(|source| ServeError::Bind {
            addr: opts.listen.clone(),
            source,
        })?;
    let local = tcp[0]
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| opts.listen.clone());
    let uds = match &opts.uds {
        Some(p) => Some(listener::bind_uds(p).map_err(|source| ServeError::Bind {
            addr: p.display().to_string(),
            source,
        })?),
        None => None,
    };

    let global_metrics = GlobalMetrics::new()?;
    global_metrics.shards.set(workers as i64);
    configure_control_plane(&snap, &global_metrics);
    let mut shard_metrics = Vec::with_capacity(workers);
    let mut registries = vec![global_metrics.registry.clone()];
    for _ in 0..workers {
        let m = ShardMetrics::new()?;
        registries.push(m.registry());
        shard_metrics.push(m);
    }
    let (control_tx, control_rx): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| flume::unbounded()).unzip();
    let shared = Arc::new(Shared {
        config: ArcSwap::from_pointee(snap),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        global_metrics,
        registries,
        shard_control: control_tx,
    });
    // Process-wide deployment limits (max_parallel_requests, rpm, tpm) have one owner.
    let limits = crate::router::limits::LimitsHandle::start(workers).map_err(|source| {
        ServeError::Start {
            what: "deployment limits thread".into(),
            source,
        }
    })?;

    let resolver = crate::upstream::dns::service().map_err(|source| ServeError::Start {
        what: "DNS resolver thread".into(),
        source,
    })?;
    let (driver_tx, driver_rx) = std::sync::mpsc::channel();
    let mut shards = Vec::with_capacity(workers);
    let shard_inputs = tcp.into_iter().zip(shard_metrics).zip(control_rx);
    for (id, ((listener, metrics), control)) in shard_inputs.enumerate() {
        let uds = match &uds {
            Some(u) => Some(u.try_clone().map_err(|source| ServeError::Start {
                what: "unix socket listener".into(),
                source,
            })?),
            None => None,
        };
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let spec = shard::ShardSpec {
            id,
            shared: shared.clone(),
            tcp: listener,
            uds,
            metrics,
            resolver,
            driver: opts.io_driver,
            driver_report: driver_tx.clone(),
            stop: stop_rx,
            limits: limits.clone(),
            control,
        };
        let handle = std::thread::Builder::new()
            .name(format!("llmux-shard-{id}"))
            .stack_size(SHARD_STACK_BYTES)
            .spawn(move || shard::run(spec))
            .map_err(|source| ServeError::Start {
                what: format!("shard {id}"),
                source,
            })?;
        shards.push((handle, stop_tx));
    }
    drop(driver_tx);
    let mut drivers = Vec::new();
    for _ in 0..workers {
        match driver_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => {
                return Err(ServeError::Start {
                    what: "shard runtime".into(),
                    source: e,
                })
            }
            Err(_) => break,
        }
    }
    for d in &drivers {
        shared
            .global_metrics
            .io_driver
            .with_label_values(&[d.as_str()])
            .inc();
    }
    // Reload (and its file watchers) is in place before the process reports ready.
    let reload_tx = {
        let shared = shared.clone();
        let providers = shared.config.load().providers_source.clone();
        config::reload::spawn_reloader(source.clone(), providers, move |res| {
            apply_reload(&shared, res)
        })
    };
    let driver_name = drivers.first().map(|d| d.as_str()).unwrap_or("unknown");
    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        addr = %local,
        uds = opts.uds.as_ref().map(|p| p.display().to_string()),
        workers,
        io_driver = driver_name,
        startup_ms = process_start.elapsed().as_millis() as u64,
        "llmux listening"
    );

    let mut signals = match signals {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers; running until killed");
            None
        }
    };
    wait_for_shutdown(signals.as_mut(), &reload_tx);
    let snap = shared.config.load_full();
    shared.ready.store(false, Ordering::SeqCst);
    shared.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        delay_s = snap.server.shutdown_delay.as_secs_f64(),
        timeout_s = snap.server.shutdown_timeout.as_secs_f64(),
        "shutdown requested: draining"
    );
    if !snap.server.shutdown_delay.is_zero() {
        wait_out_delay(signals.as_mut(), snap.server.shutdown_delay);
    }
    for (_, stop) in &shards {
        let _ = stop.send(());
    }
    for (handle, _) in shards {
        let _ = handle.join();
    }
    // The shards handed over their last spans and spend as they stopped.
    // Bounded apart from the drain: a stuck collector or database delays the exit by at most
    // this much each, not by another whole shutdown timeout.
    let flush_for = snap.server.shutdown_timeout.min(FLUSH_ON_EXIT);
    crate::keys::control::flush(flush_for);
    crate::telemetry::otel::export::flush(flush_for);
    if let Some(p) = &opts.uds {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Applies a snapshot to the control-plane threads it configures: span export and keys.
/// The longest the exit waits for spend rows, then for spans, to be written.
const FLUSH_ON_EXIT: std::time::Duration = std::time::Duration::from_secs(10);

fn configure_control_plane(snap: &config::Snapshot, metrics: &GlobalMetrics) {
    // Credential fetches use the upstream TLS settings (CA file); deployments' credentials
    // are opened now, so the first requests find them fetched.
    crate::upstream::credentials::set_tls(snap.upstream.tls.clone());
    for dep in snap.deployments() {
        if let Some(c) = &dep.credentials {
            c.handle();
        }
    }
    if let Err(e) =
        crate::telemetry::otel::export::configure(&snap.tracing, &snap.upstream.tls, &metrics.otel)
    {
        tracing::error!(error = %e, "tracing: cannot start the span exporter thread");
    }
    if let Err(e) = crate::keys::control::configure(&snap.keys, &metrics.keys) {
        tracing::error!(error = %e, "keys: cannot start the key control-plane thread");
    }
}

fn apply_reload(shared: &Shared, res: Result<config::Loaded, config::ConfigError>) {
    match res {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            logging::set_secrets(&loaded.snapshot.secrets);
            logging::set_redact_pii(loaded.snapshot.log_redact_pii);
            let snap = &loaded.snapshot;
            let filter = logging::filter_spec(
                snap.env.get("LLMUX_LOG"),
                snap.log_level.as_deref().unwrap_or("info"),
            );
            if let Err(e) = logging::set_filter(&filter) {
                tracing::warn!("log filter `{filter}` not applied: {e}");
            }
            configure_control_plane(snap, &shared.global_metrics);
            let groups = loaded.snapshot.group_names.len();
            shared.config.store(Arc::new(loaded.snapshot));
            shared
                .global_metrics
                .config_reloads
                .with_label_values(&["success"])
                .inc();
            tracing::info!(model_groups = groups, "config reloaded");
        }
        Err(e) => {
            shared
                .global_metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            match &e {
                // One line per error, each `file:line:col: key: message`.
                config::ConfigError::Invalid { errors, .. } => {
                    for line in errors {
                        tracing::error!("{line}");
                    }
                    tracing::error!(
                        errors = errors.len(),
                        "config reload failed; the previous config keeps serving"
                    );
                }
                _ => tracing::error!(
                    error = %e,
                    "config reload failed; the previous config keeps serving"
                ),
            }
        }
    }
}

/// Blocks until SIGTERM or SIGINT; SIGHUP triggers a config reload meanwhile.
fn wait_for_shutdown(
    signals: Option<&mut signal_hook::iterator::Signals>,
    reload: &std::sync::mpsc::Sender<config::reload::Trigger>,
) {
    let Some(signals) = signals else {
        loop {
            std::thread::park();
        }
    };
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                tracing::info!("SIGHUP: reloading config");
                let _ = reload.send(config::reload::Trigger::Signal);
            }
            _ => return,
        }
    }
}

/// Keeps listening (readiness 503) for `delay` so that load balancers see the instance leave
/// before its listener closes. A second SIGTERM or SIGINT ends the delay early; in-flight
/// requests still get `shutdown_timeout` after it.
fn wait_out_delay(signals: Option<&mut signal_hook::iterator::Signals>, delay: Duration) {
    let deadline = Instant::now() + delay;
    let Some(signals) = signals else {
        std::thread::sleep(delay);
        return;
    };
    while Instant::now() < deadline {
        if signals.pending().any(|s| s == SIGTERM || s == SIGINT) {
            tracing::info!("second shutdown signal: ending the drain delay early");
            return;
        }
        std::thread::sleep(
            Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

/// Many idle client connections need many descriptors: raise the soft limit to the hard one.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub use listener::bind_tcp_group;
pub use runtime::build as build_runtime;
