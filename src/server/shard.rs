//! One shard: its thread, runtime, accept loops and shard-local state.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::{TcpListener, UnixListener};

use super::routes::GatewayService;
use super::runtime::{self, ActiveDriver, IoDriver};
use super::Shared;
use crate::config::Snapshot;
use crate::gateway::route::{ShardControl, ShardRouter};
use crate::gateway::GatewayShard;
use crate::http1::{conn, ConnLimits};
use crate::telemetry::metrics::ShardMetrics;
use crate::telemetry::request_id::RequestIds;
use crate::upstream::{DnsService, UpstreamClient};
use crate::util::LocalEvent;

pub struct ShardSpec {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub tcp: std::net::TcpListener,
    pub uds: Option<std::os::unix::net::UnixListener>,
    pub metrics: ShardMetrics,
    pub resolver: &'static DnsService,
    pub driver: IoDriver,
    pub driver_report: std::sync::mpsc::Sender<std::io::Result<ActiveDriver>>,
    pub stop: flume::Receiver<()>,
    pub limits: crate::router::limits::LimitsHandle,
    pub control: flume::Receiver<ShardControl>,
}

/// Everything a request on this shard touches.
pub struct ShardCtx {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub gateway: GatewayShard,
    pub ids: RequestIds,
    pub inflight: Cell<usize>,
    #[allow(
        clippy::redundant_allocation,
        reason = "the Rc is the point: cloning it writes only shard-local memory"
    )]
    snapshot: RefCell<Rc<Arc<Snapshot>>>,
}

impl ShardCtx {
    /// The current config snapshot for a request. Holding the shard's own `Rc` to it, a
    /// request writes no reference count shared with the other shards (`load_full` would
    /// bump the `Arc`'s, a cache line every shard writes); the shared `Arc` is re-read only
    /// when a reload swapped it.
    #[allow(
        clippy::redundant_allocation,
        reason = "the Rc is the point: cloning it writes only shard-local memory"
    )]
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let current = self.shared.config.load();
        let mut cached = self.snapshot.borrow_mut();
        if !Arc::ptr_eq(&cached, &current) {
            *cached = Rc::new(arc_swap::Guard::into_inner(current));
        }
        cached.clone()
    }
}

pub fn run(spec: ShardSpec) {
    let (mut rt, driver) = match runtime::build(spec.driver) {
        Ok(r) => r,
        Err(e) => {
            let _ = spec.driver_report.send(Err(e));
            return;
        }
    };
    let _ = spec.driver_report.send(Ok(driver));
    let ShardSpec {
        id,
        shared,
        tcp,
        uds,
        metrics,
        resolver,
        stop,
        limits,
        control,
        ..
    } = spec;
    rt.block_on(async move {
        let dns_ttl = shared.config.load().upstream.dns_ttl;
        let ctx = Rc::new(ShardCtx {
            id,
            shared: shared.clone(),
            gateway: GatewayShard {
                upstream: UpstreamClient::new(resolver.shard_resolver(dns_ttl)),
                metrics,
                router: ShardRouter::new(&limits, fastrand::u64(..) ^ id as u64),
                spans: Default::default(),
                keys: Default::default(),
            },
            ids: RequestIds::new(id),
            inflight: Cell::new(0),
            snapshot: RefCell::new(Rc::new(shared.config.load_full())),
        });
        ctx.gateway.upstream.spawn_maintenance();
        monoio::spawn(control_loop(ctx.clone(), control));
        let spans_ctx = ctx.clone();
        monoio::spawn(async move { spans_ctx.gateway.spans.flush_loop().await });
        let keys_ctx = ctx.clone();
        monoio::spawn(async move { keys_ctx.gateway.keys.flush_loop().await });
        monoio::spawn(apply_shared_cooldowns(ctx.clone()));
        let stopping = Rc::new(LocalEvent::default());
        match TcpListener::from_std(tcp) {
            Ok(l) => {
                monoio::spawn(accept_loop(ctx.clone(), l, stopping.clone()));
            }
            Err(e) => tracing::error!(shard = id, error = %e, "cannot register TCP listener"),
        }
        if let Some(u) = uds {
            match UnixListener::from_std(u) {
                Ok(l) => {
                    monoio::spawn(accept_loop(ctx.clone(), l, stopping.clone()));
                }
                Err(e) => tracing::error!(shard = id, error = %e, "cannot register unix listener"),
            }
        }
        let _ = stop.recv_async().await;
        stopping.set();
        let deadline = monoio::time::Instant::now() + shared.config.load().server.shutdown_timeout;
        while ctx.inflight.get() > 0 && monoio::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        if ctx.inflight.get() > 0 {
            tracing::warn!(
                shard = id,
                inflight = ctx.inflight.get(),
                "shutdown deadline reached; closing in-flight requests"
            );
        }
        ctx.gateway.spans.flush();
        ctx.gateway.keys.flush();
    });
}

/// Cooldowns other gateways set (read from Redis by the key control plane) applied to this
/// shard's view of the deployments, once a second and only when they changed.
async fn apply_shared_cooldowns(ctx: Rc<ShardCtx>) {
    let mut seen = 0;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let shared = crate::keys::control::SHARED_COOLDOWNS.load();
        if shared.0 == seen {
            continue;
        }
        seen = shared.0;
        let snap = ctx.snapshot();
        for name in &snap.group_names {
            let Some(group) = snap.group(name) else {
                continue;
            };
            for d in &group.deployments {
                if let Some(until) = shared.1.get(&d.id) {
                    ctx.gateway.router.state(d).cool_until(*until);
                }
            }
        }
    }
}

/// Answers the control plane's questions about this shard's state.
async fn control_loop(ctx: Rc<ShardCtx>, rx: flume::Receiver<ShardControl>) {
    while let Ok(msg) = rx.recv_async().await {
        match msg {
            ShardControl::DeploymentViews { snap, reply } => {
                let _ = reply.send(ctx.gateway.router.views(&snap));
            }
            ShardControl::InvalidateKeys { tokens, done } => {
                ctx.gateway.keys.invalidate(&tokens);
                let _ = done.send(());
            }
        }
    }
}

fn limits(ctx: &ShardCtx) -> ConnLimits {
    let snap = ctx.shared.config.load();
    let s = &snap.server;
    ConnLimits {
        max_header_bytes: s.max_header_bytes,
        max_body_bytes: s.max_request_body_bytes,
        header_timeout: s.header_timeout,
        body_timeout: s.body_timeout,
        idle_timeout: s.idle_timeout,
    }
}

/// A listener a shard accepts from.
trait Acceptor {
    type Stream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream>;
    /// Serves one accepted connection on this shard.
    fn spawn_conn(ctx: Rc<ShardCtx>, stream: Self::Stream);
}

impl Acceptor for TcpListener {
    type Stream = monoio::net::TcpStream;

    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn spawn_conn(ctx: Rc<ShardCtx>, stream: Self::Stream) {
        let tls = ctx.shared.config.load().server.tls.clone();
        match tls {
            None => {
                monoio::spawn(serve_plain(ctx, stream));
            }
            // Boxed: the TLS session is large, and plain connections should not carry its
            // size in their task.
            Some(cfg) => {
                monoio::spawn(Box::pin(serve_tls(ctx, stream, cfg)));
            }
        }
    }
}

impl Acceptor for UnixListener {
    type Stream = monoio::net::UnixStream;

    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }

    fn spawn_conn(ctx: Rc<ShardCtx>, stream: Self::Stream) {
        monoio::spawn(async move {
            let svc = GatewayService::new(ctx.clone());
            conn::serve(&svc, stream, || limits(&ctx)).await;
        });
    }
}

/// Accepts until the shard starts draining.
async fn accept_loop<A: Acceptor>(ctx: Rc<ShardCtx>, listener: A, stopping: Rc<LocalEvent>) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept_one() => Some(r),
            _ = stopping.wait() => None,
        };
        match accepted {
            None => return,
            Some(Ok(stream)) => A::spawn_conn(ctx.clone(), stream),
            Some(Err(e)) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_plain(ctx: Rc<ShardCtx>, stream: monoio::net::TcpStream) {
    let svc = GatewayService::new(ctx.clone());
    conn::serve(&svc, stream, || limits(&ctx)).await
}

async fn serve_tls(
    ctx: Rc<ShardCtx>,
    stream: monoio::net::TcpStream,
    cfg: Arc<rustls::ServerConfig>,
) {
    let acceptor = monoio_rustls::TlsAcceptor::from(cfg);
    let timeout = limits(&ctx).header_timeout;
    match monoio::time::timeout(
        timeout,
        crate::http1::io::TlsConn::accept(&acceptor, stream),
    )
    .await
    {
        Ok(Ok(tls)) => {
            let svc = GatewayService::new(ctx.clone());
            conn::serve(&svc, tls, || limits(&ctx)).await
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}
