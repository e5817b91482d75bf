//! The span exporter: a thread of its own (`llmux-otel`) running a current-thread tokio
//! runtime, never a shard. Shards hand it batches of ended spans, already OTLP protobuf
//! ([`super::proto`]), through a shared queue ([`submit`] never waits); it keeps at most
//! `llmux.tracing.max_queue_spans` waiting and exports them one request at a time, over
//! OTLP/HTTP (protobuf; hyper, TLS by rustls) or OTLP/gRPC (tonic), counting what it exported,
//! what it dropped and what failed. A dead or slow collector only fills the queue: requests
//! never wait on it.
//!
//! Waking a sleeping thread costs both sides a context switch (measured under load: a quarter
//! of the exporter's CPU when every hand-off woke it), so a hand-off wakes the exporter only
//! when it completes a full export batch while the exporter is idle; while an export is in
//! flight, its answer wakes the exporter and it takes what has queued meanwhile.
//!
//! The thread starts when tracing is first enabled (a gateway that never traces starts
//! nothing); a reload that changes the settings rebuilds the transport.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut};
use http_body_util::{BodyExt, Full, Limited};
use prometheus::IntCounter;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::proto::{EncodedSpans, ExportBody, ExportHead};
use crate::config::{OtlpProtocol, TracingSettings};

/// The exporter's counters (process-wide: only the exporter and a full queue write them).
#[derive(Clone)]
pub struct ExportMetrics {
    pub exported: IntCounter,
    pub dropped: IntCounter,
    pub failed: IntCounter,
}

enum Control {
    Configure {
        settings: Arc<TracingSettings>,
        tls: Arc<rustls::ClientConfig>,
    },
    /// Export everything waiting, then answer (shutdown).
    Flush(std::sync::mpsc::SyncSender<()>),
}

#[allow(clippy::disallowed_types)]
// Not a shard's state: a shard takes this lock once per hand-off (64 spans, not per request),
// the exporter once per export; neither ever waits long (no I/O under it).
struct Handle {
    queue: std::sync::Mutex<Queue>,
    /// Wakes the exporter when a full batch waits (see [`Queue::add`]).
    wake: tokio::sync::Notify,
    control: flume::Sender<Control>,
    metrics: ExportMetrics,
}

impl Handle {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue's state stays consistent whatever panicked holding it.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// How often waiting spans are exported when fewer than a full batch wait.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// Spans waiting for export: the shards add their hand-offs, the exporter takes them.
#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<EncodedSpans>,
    /// Spans in `batches`.
    spans: usize,
    /// Spans held at most (`max_queue_spans`); 0 while there is no transport: spans that
    /// come then are dropped and counted.
    capacity: usize,
    /// Spans that make an export due at once: a full export batch (a queue smaller than two
    /// batches is sent when half full, so that what comes while it is sent fits).
    export_at: usize,
    /// Spans in one export request, at most (`max_export_batch`).
    max_export: usize,
    /// The exporter waits for a full batch: the hand-off that completes one wakes it.
    idle: bool,
}

impl Queue {
    fn configure(&mut self, s: Option<&TracingSettings>) -> usize {
        match s {
            Some(s) => {
                self.capacity = s.max_queue_spans;
                self.max_export = s.max_export_batch.max(1);
                self.export_at = s.max_export_batch.min(s.max_queue_spans / 2).max(1);
                0
            }
            None => {
                self.capacity = 0;
                let dropped = self.spans;
                self.batches.clear();
                self.spans = 0;
                dropped
            }
        }
    }

    /// Adds a hand-off: the spans it dropped (no room), and whether the exporter is to be
    /// woken (it was idle and a full batch now waits).
    fn add(&mut self, mut batch: EncodedSpans) -> (usize, bool) {
        let room = self.capacity.saturating_sub(self.spans);
        let mut dropped = 0;
        if batch.len() > room {
            dropped = batch.len() - room;
            batch.truncate(room);
        }
        if !batch.is_empty() {
            self.spans += batch.len();
            self.batches.push_back(batch);
        }
        let wake = self.idle && self.spans >= self.export_at;
        if wake {
            self.idle = false;
        }
        (dropped, wake)
    }

    /// Whole hand-offs up to an export batch (at least one), if any wait and `due` or a full
    /// batch waits; otherwise the exporter goes idle until one does.
    fn take(&mut self, due: bool) -> Option<(Vec<EncodedSpans>, usize)> {
        if self.spans == 0 || (!due && self.spans < self.export_at) {
            self.idle = true;
            return None;
        }
        let mut taken = Vec::new();
        let mut n = 0;
        while let Some(b) = self.batches.front() {
            if !taken.is_empty() && n + b.len() > self.max_export {
                break;
            }
            n += b.len();
            taken.extend(self.batches.pop_front());
        }
        self.spans -= n;
        Some((taken, n))
    }
}

/// Applies a snapshot's tracing settings: starts the exporter thread when tracing is first
/// enabled, and reconfigures it on every later call (the thread ignores settings that did
/// not change).
pub fn configure(
    settings: &Arc<TracingSettings>,
    tls: &Arc<rustls::ClientConfig>,
    metrics: &ExportMetrics,
) -> std::io::Result<()> {
    if HANDLE.get().is_none() {
        if !settings.enabled {
            return Ok(());
        }
        let (control_tx, control_rx) = flume::unbounded();
        let _ = HANDLE.set(Handle {
            queue: Default::default(),
            wake: tokio::sync::Notify::new(),
            control: control_tx,
            metrics: metrics.clone(),
        });
        std::thread::Builder::new()
            .name("llmux-otel".into())
            .spawn(move || {
                if let Some(h) = HANDLE.get() {
                    run(h, control_rx)
                }
            })?;
    }
    if let Some(h) = HANDLE.get() {
        let _ = h.control.send(Control::Configure {
            settings: settings.clone(),
            tls: tls.clone(),
        });
    }
    Ok(())
}

/// Hands ended spans to the exporter; never waits. When its queue is full (a slow or dead
/// collector), what does not fit is dropped and counted.
pub fn submit(batch: EncodedSpans) {
    let Some(h) = HANDLE.get() else {
        return;
    };
    let (dropped, wake) = h.queue().add(batch);
    if dropped > 0 {
        h.metrics.dropped.inc_by(dropped as u64);
    }
    if wake {
        h.wake.notify_one();
    }
}

/// Exports what is waiting, waiting at most `timeout` (graceful shutdown).
pub fn flush(timeout: Duration) {
    let Some(h) = HANDLE.get() else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if h.control.send(Control::Flush(tx)).is_ok() {
        let _ = rx.recv_timeout(timeout);
    }
}

/// The exporter's scheduling priority (`nice`): below the shards', so that on a busy machine
/// the kernel does not preempt a shard for it (it needs a few percent of a core and can wait:
/// its queue is bounded and a batch waits at most [`EXPORT_EVERY`] anyway). Measured under
/// load: a shard's kernel time per request fell by about 0.2 µs.
#[cfg(target_os = "linux")]
const EXPORTER_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority (Linux: `setpriority` on a thread id concerns that
/// thread alone). Lowering needs no privilege; failing to is harmless and logged.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` has no preconditions; `setpriority` only reads its arguments.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, EXPORTER_NICE)
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "tracing: the exporter keeps its priority");
        }
    }
}

fn run(h: &'static Handle, control: flume::Receiver<Control>) {
    lower_priority();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "tracing: cannot start the exporter runtime; spans are dropped");
            return;
        }
    };
    rt.block_on(async move {
        let mut ex = Exporter::new(h);
        let mut tick = tokio::time::interval(EXPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                done = async { ex.in_flight.as_mut().expect("guarded").await }, if ex.in_flight.is_some() => {
                    ex.in_flight = None;
                    ex.account(done);
                }
                msg = control.recv_async() => match msg {
                    Ok(Control::Configure { settings, tls }) => ex.configure(settings, &tls),
                    Ok(Control::Flush(reply)) => {
                        ex.drain().await;
                        let _ = reply.send(());
                    }
                    Err(_) => break,
                },
                () = h.wake.notified(), if ex.in_flight.is_none() => {}
                _ = tick.tick() => ex.due = true,
            }
            ex.next();
        }
    });
}

type ExportResult = (
    usize,
    Result<Result<(), String>, tokio::time::error::Elapsed>,
);

struct Exporter {
    handle: &'static Handle,
    settings: Option<Arc<TracingSettings>>,
    transport: Option<Arc<Transport>>,
    head: Option<Arc<ExportHead>>,
    in_flight: Option<tokio::task::JoinHandle<ExportResult>>,
    /// A tick passed since the last export: send what waits, full batch or not.
    due: bool,
    /// Export failures since the last one logged (logged at most once a minute).
    failures_unlogged: u64,
    log: crate::util::LogEvery,
}

impl Exporter {
    fn new(handle: &'static Handle) -> Self {
        Self {
            handle,
            settings: None,
            transport: None,
            head: None,
            in_flight: None,
            due: false,
            failures_unlogged: 0,
            log: crate::util::LogEvery::new(Duration::from_secs(60)),
        }
    }

    fn metrics(&self) -> &ExportMetrics {
        &self.handle.metrics
    }

    fn configure(&mut self, settings: Arc<TracingSettings>, tls: &Arc<rustls::ClientConfig>) {
        if self.settings.as_deref() == Some(&*settings) {
            return;
        }
        self.transport = None;
        if settings.enabled {
            match Transport::build(&settings, tls) {
                Ok(t) => {
                    tracing::info!(
                        endpoint = %settings.endpoint,
                        protocol = ?settings.protocol,
                        sampling_ratio = settings.sampling_ratio,
                        "tracing: exporting spans over OTLP"
                    );
                    self.transport = Some(Arc::new(t));
                    self.head = Some(Arc::new(export_head(&settings)));
                }
                Err(e) => tracing::error!(
                    endpoint = %settings.endpoint,
                    error = %e,
                    "tracing: cannot build the OTLP exporter; spans are dropped"
                ),
            }
        }
        let accepting = self.transport.is_some().then_some(&*settings);
        let dropped = self.handle.queue().configure(accepting);
        self.metrics().dropped.inc_by(dropped as u64);
        self.settings = Some(settings);
    }

    /// Starts an export when none is in flight and a full batch waits (or a tick passed and
    /// anything waits); otherwise the queue wakes the exporter when a full batch is there.
    fn next(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let taken = self.handle.queue().take(self.due);
        if let Some((batches, n)) = taken {
            self.due = false;
            self.start_export(batches, n);
        }
    }

    fn start_export(&mut self, batches: Vec<EncodedSpans>, n: usize) {
        let (Some(s), Some(transport), Some(head)) = (&self.settings, &self.transport, &self.head)
        else {
            self.metrics().dropped.inc_by(n as u64);
            return;
        };
        let body = head.request(batches);
        let transport = transport.clone();
        let timeout = s.timeout;
        self.in_flight = Some(tokio::spawn(async move {
            let res = tokio::time::timeout(timeout, transport.send(body)).await;
            (n, res)
        }));
    }

    fn account(&mut self, done: Result<ExportResult, tokio::task::JoinError>) {
        let (n, res) = match done {
            Ok(d) => d,
            Err(e) => {
                self.failed(0, &e.to_string());
                return;
            }
        };
        match res {
            Ok(Ok(())) => self.metrics().exported.inc_by(n as u64),
            Ok(Err(e)) => self.failed(n, &e),
            Err(_) => self.failed(n, "timed out"),
        }
    }

    fn failed(&mut self, spans: usize, why: &str) {
        self.metrics().failed.inc();
        self.metrics().dropped.inc_by(spans as u64);
        self.failures_unlogged += 1;
        if self.log.due() {
            tracing::warn!(
                failures = self.failures_unlogged,
                spans_dropped = spans,
                error = %crate::util::clip(why),
                "tracing: span export failed"
            );
            self.failures_unlogged = 0;
        }
    }

    /// Exports everything waiting, one batch after the other.
    async fn drain(&mut self) {
        loop {
            if let Some(h) = self.in_flight.take() {
                let done = h.await;
                self.account(done);
            }
            let Some((batches, n)) = self.handle.queue().take(true) else {
                return;
            };
            self.start_export(batches, n);
        }
    }
}

/// The resource every span of this process belongs to, and LLMux as the instrumentation.
fn export_head(s: &TracingSettings) -> ExportHead {
    let version = env!("CARGO_PKG_VERSION");
    let mut resource: Vec<(&str, &str)> = vec![
        ("service.name", &s.service_name),
        ("service.version", version),
        ("telemetry.sdk.name", "llmux"),
        ("telemetry.sdk.language", "rust"),
        ("telemetry.sdk.version", version),
    ];
    for (k, v) in &s.resource_attributes {
        if !resource.iter().any(|(have, _)| have == k) {
            resource.push((k, v));
        }
    }
    ExportHead::new(&resource, "llmux", version)
}

/// The gRPC method of OTLP's trace service.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The largest collector answer read (an `ExportTraceServiceResponse`, or an error's text).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<
        hyper_util::client::legacy::connect::HttpConnector<crate::upstream::dns::HyperResolve>,
    >,
    Full<ExportBody>,
>;

/// How export requests reach the collector.
enum Transport {
    Http {
        client: Box<HttpClient>,
        uri: http::Uri,
        headers: http::HeaderMap,
    },
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
}

impl Transport {
    /// The transport for `s`; must run inside the exporter's runtime (its HTTP clients spawn
    /// on it). Connects nothing yet.
    fn build(s: &TracingSettings, tls: &Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let invalid = |e: &dyn std::fmt::Display| format!("OTLP endpoint {}: {e}", s.endpoint);
        let mut headers = http::HeaderMap::new();
        for (k, v) in &s.headers {
            match (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                // The value is a secret: only the name is said.
                _ => return Err(format!("OTLP header `{k}` is not a valid HTTP header")),
            }
        }
        match s.protocol {
            OtlpProtocol::HttpProtobuf => {
                let uri: http::Uri = s.endpoint.parse().map_err(|e| invalid(&e))?;
                // The upstream client's TLS settings (webpki roots plus
                // `llmux.upstream.ca_file`), over rustls (no OpenSSL anywhere), on LLMux's
                // resolver (no C library), for `http://` endpoints too.
                let connector = crate::upstream::credentials::client::https_connector(tls);
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build(connector);
                Ok(Transport::Http {
                    client: Box::new(client),
                    uri,
                    headers,
                })
            }
            OtlpProtocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                    .map_err(|e| invalid(&e))?
                    .timeout(s.timeout)
                    .connect_timeout(s.timeout);
                if s.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
                        .map_err(|e| invalid(&e))?;
                }
                // On LLMux's resolver (no C library); connected on first export.
                let channel =
                    endpoint.connect_with_connector_lazy(crate::upstream::dns::hyper_connector());
                Ok(Transport::Grpc {
                    grpc: tonic::client::Grpc::new(channel),
                    metadata: tonic::metadata::MetadataMap::from_headers(headers),
                })
            }
        }
    }

    /// Sends one `ExportTraceServiceRequest`.
    async fn send(&self, body: ExportBody) -> Result<(), String> {
        match self {
            Transport::Http {
                client,
                uri,
                headers,
            } => {
                let mut req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(body))
                    .map_err(|e| e.to_string())?;
                req.headers_mut()
                    .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| crate::upstream::credentials::client::chain(&e))?;
                let status = resp.status();
                // Read whole (bounded), so that the connection serves the next export.
                let answer = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "the collector answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    ))
                }
            }
            Transport::Grpc { grpc, metadata } => {
                let mut grpc = grpc.clone();
                grpc.ready().await.map_err(|e| e.to_string())?;
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = metadata.clone();
                grpc.unary::<ExportBody, (), _>(
                    req,
                    http::uri::PathAndQuery::from_static(GRPC_EXPORT),
                    RawCodec,
                )
                .await
                .map(drop)
                .map_err(|s| format!("gRPC status {:?}: {}", s.code(), s.message()))
            }
        }
    }
}

/// A gRPC codec for messages that are already protobuf: the request goes as it is, the
/// answer (`ExportTraceServiceResponse`, a partial success at most) is read and let go.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportBody;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportBody;
    type Error = tonic::Status;

    fn encode(&mut self, item: ExportBody, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        // tonic frames the message in its own buffer: one copy here.
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::otel::proto::{SpanIds, SpanKind, SpanWriter};

    fn spans(n: usize) -> EncodedSpans {
        let mut out = EncodedSpans::default();
        let ids = SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            parent_is_remote: false,
        };
        for _ in 0..n {
            let w = SpanWriter::begin(&mut out, &ids, SpanKind::Server, "chat", "m");
            w.end(0, 0, None);
        }
        out
    }

    fn settings(max_queue_spans: usize, max_export_batch: usize) -> TracingSettings {
        TracingSettings {
            enabled: true,
            max_queue_spans,
            max_export_batch,
            ..TracingSettings::default()
        }
    }

    /// A full batch is due at once, counted in spans (hand-offs hold 64 or so each), less than
    /// one waits for the tick; the queue holds `max_queue_spans` spans and drops the rest.
    #[test]
    fn full_batches_go_at_once_and_the_queue_is_counted_in_spans() {
        let mut q = Queue::default();
        q.configure(Some(&settings(1000, 512)));
        assert!(q.take(false).is_none(), "nothing waits");
        assert!(q.idle, "the exporter waits for a full batch");
        for _ in 0..7 {
            assert_eq!(q.add(spans(64)), (0, false));
        }
        assert_eq!(q.spans, 448);
        assert_eq!(
            q.add(spans(64)),
            (0, true),
            "512 spans wake the idle exporter"
        );
        assert!(!q.idle);
        assert_eq!(q.add(spans(64)), (0, false), "woken once");
        assert_eq!(
            q.add(spans(600)),
            (176, false),
            "1000 kept, the rest dropped"
        );
        assert_eq!(q.spans, 1000);
        // Whole hand-offs, up to an export batch.
        let (taken, n) = q.take(false).expect("a full batch");
        assert_eq!((taken.len(), n), (8, 512));
        assert_eq!(taken.iter().map(EncodedSpans::len).sum::<usize>(), 512);
        // 488 left, less than a batch: they wait for the tick.
        assert!(q.take(false).is_none());
        let (taken, n) = q.take(true).expect("the tick sends them");
        assert_eq!((taken.len(), n), (2, 488));
        assert_eq!(q.spans, 0);
        assert!(q.take(true).is_none());
        // A hand-off larger than a batch goes whole (it is never split).
        q.add(spans(600));
        assert_eq!(q.take(false).map(|(_, n)| n), Some(600));
    }

    #[test]
    fn a_tick_sends_what_waits_and_a_small_queue_is_sent_half_full() {
        let mut q = Queue::default();
        q.configure(Some(&settings(200, 512)));
        q.take(false);
        assert_eq!(q.add(spans(64)), (0, false));
        assert!(q.take(false).is_none(), "64 spans wait for the tick");
        assert_eq!(q.add(spans(64)), (0, true), "128 of 200: half full");
        assert_eq!(q.take(false).map(|(_, n)| n), Some(128));
        q.add(spans(10));
        assert!(q.take(false).is_none());
        let (_, n) = q.take(true).expect("the tick sends what waits");
        assert_eq!(n, 10);
    }

    #[test]
    fn without_a_transport_spans_are_dropped_and_counted() {
        let mut q = Queue::default();
        assert_eq!(q.add(spans(5)), (5, false), "not configured yet");
        q.configure(Some(&settings(100, 50)));
        q.add(spans(30));
        assert_eq!(q.configure(None), 30, "what waited is dropped");
        assert_eq!(q.add(spans(5)), (5, false));
        assert_eq!(q.spans, 0);
    }

    /// The export request's pieces read back as the request written in one buffer would.
    #[test]
    fn an_export_body_is_its_pieces_in_order() {
        let head = export_head(&TracingSettings::default());
        let body = head.request(vec![spans(3), EncodedSpans::default(), spans(2)]);
        let mut whole = Vec::new();
        let mut b = body.clone();
        while b.has_remaining() {
            let chunk = b.chunk().to_vec();
            whole.extend_from_slice(&chunk);
            b.advance(chunk.len());
        }
        assert_eq!(whole.len(), body.remaining());
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(
            body.chunks_vectored(&mut slices),
            3,
            "the head and two non-empty batches"
        );
        let mut partial = body.clone();
        partial.advance(5);
        partial.advance(body.remaining());
        assert_eq!(partial.remaining(), 0, "advancing past the end stops at it");
        use prost::Message;
        let req =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                &whole[..],
            )
            .expect("decodes");
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 5);
    }

    /// Every protocol and scheme builds a transport (building connects nothing).
    #[test]
    fn exporters_build_for_http_and_https_endpoints() {
        // As the upstream client's config comes: with its own ALPN set.
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = Arc::new(config);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
                for endpoint in [
                    "http://collector.invalid:4318",
                    "https://collector.invalid:4318",
                ] {
                    let s = TracingSettings {
                        protocol,
                        endpoint: endpoint.into(),
                        ..TracingSettings::default()
                    };
                    assert!(
                        Transport::build(&s, &tls).is_ok(),
                        "{protocol:?} {endpoint}"
                    );
                }
            }
        });
    }
}
