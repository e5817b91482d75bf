//! The span exporter: a thread of its own (`llmux-otel`) running a current-thread tokio
//! runtime, never a shard. Shards hand it batches of ended spans, already OTLP protobuf
//! ([`super::proto`]), through a bounded channel ([`submit`] never waits); it keeps at most
//! `llmux.tracing.max_queue_spans` waiting and exports them one request at a time, over
//! OTLP/HTTP (protobuf; hyper, TLS by rustls) or OTLP/gRPC (tonic), counting what it exported,
//! what it dropped and what failed. A dead or slow collector only fills the queue: requests
//! never wait on it.
//!
//! The thread starts when tracing is first enabled (a gateway that never traces starts
//! nothing); a reload that changes the settings rebuilds the transport.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_http::HttpClient;
use prometheus::IntCounter;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::proto::{EncodedSpans, ExportHead};
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

struct Handle {
    spans: flume::Sender<EncodedSpans>,
    control: flume::Sender<Control>,
    metrics: ExportMetrics,
}

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Batches in the hand-off channel: shards flush at most every 256 spans, so this holds a
/// few seconds of heavy traffic while the exporter is busy; the queue proper is `pending`.
const CHANNEL_BATCHES: usize = 16;
/// How often waiting spans are exported when fewer than a full batch wait.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

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
        let (spans_tx, spans_rx) = flume::bounded(CHANNEL_BATCHES);
        let (control_tx, control_rx) = flume::unbounded();
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("llmux-otel".into())
            .spawn(move || run(spans_rx, control_rx, m))?;
        let _ = HANDLE.set(Handle {
            spans: spans_tx,
            control: control_tx,
            metrics: metrics.clone(),
        });
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
/// collector), the batch is dropped and counted.
pub fn submit(batch: EncodedSpans) {
    let Some(h) = HANDLE.get() else {
        return;
    };
    if let Err(e) = h.spans.try_send(batch) {
        h.metrics.dropped.inc_by(e.into_inner().len() as u64);
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

fn run(
    spans: flume::Receiver<EncodedSpans>,
    control: flume::Receiver<Control>,
    metrics: ExportMetrics,
) {
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
        let mut ex = Exporter::new(metrics);
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
                batch = spans.recv_async() => match batch {
                    Ok(batch) => ex.enqueue(batch),
                    Err(_) => break,
                },
                _ = tick.tick() => ex.due = true,
            }
            if ex.export_due() {
                ex.due = false;
                ex.start_export();
            }
        }
    });
}

type ExportResult = (
    usize,
    Result<Result<(), String>, tokio::time::error::Elapsed>,
);

struct Exporter {
    settings: Option<Arc<TracingSettings>>,
    transport: Option<Arc<Transport>>,
    head: Option<Arc<ExportHead>>,
    pending: VecDeque<EncodedSpans>,
    /// Spans in `pending`.
    pending_spans: usize,
    in_flight: Option<tokio::task::JoinHandle<ExportResult>>,
    /// A tick passed since the last export: send what waits, full batch or not.
    due: bool,
    metrics: ExportMetrics,
    /// Export failures since the last one logged (logged at most once a minute).
    failures_unlogged: u64,
    log: crate::util::LogEvery,
}

impl Exporter {
    fn new(metrics: ExportMetrics) -> Self {
        Self {
            settings: None,
            transport: None,
            head: None,
            pending: VecDeque::new(),
            pending_spans: 0,
            in_flight: None,
            due: false,
            metrics,
            failures_unlogged: 0,
            log: crate::util::LogEvery::new(Duration::from_secs(60)),
        }
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
        } else {
            self.drop_pending();
        }
        self.settings = Some(settings);
    }

    /// Whether to send an export request now: full batches as soon as they are full, the
    /// rest once a tick (fewer, larger requests cost the collector and this thread less per
    /// span), one request at a time.
    fn export_due(&self) -> bool {
        // A small queue is sent when half full, so that what comes while it is sent fits.
        let full = self
            .settings
            .as_ref()
            .map_or(1, |s| s.max_export_batch.min(s.max_queue_spans / 2))
            .max(1);
        self.in_flight.is_none()
            && self.pending_spans > 0
            && (self.due || self.pending_spans >= full)
    }

    fn enqueue(&mut self, mut batch: EncodedSpans) {
        let (Some(s), Some(_)) = (&self.settings, &self.transport) else {
            self.metrics.dropped.inc_by(batch.len() as u64);
            return;
        };
        let room = s.max_queue_spans.saturating_sub(self.pending_spans);
        if batch.len() > room {
            self.metrics.dropped.inc_by((batch.len() - room) as u64);
            batch.truncate(room);
        }
        if !batch.is_empty() {
            self.pending_spans += batch.len();
            self.pending.push_back(batch);
        }
    }

    fn drop_pending(&mut self) {
        self.metrics.dropped.inc_by(self.pending_spans as u64);
        self.pending.clear();
        self.pending_spans = 0;
    }

    fn start_export(&mut self) {
        let (Some(s), Some(transport), Some(head)) = (&self.settings, &self.transport, &self.head)
        else {
            self.drop_pending();
            return;
        };
        // Whole hand-offs (up to 256 spans each) up to a full export batch.
        let mut n = 0;
        let mut take = 0;
        for b in &self.pending {
            if take > 0 && n + b.len() > s.max_export_batch {
                break;
            }
            n += b.len();
            take += 1;
        }
        let body = head.request(self.pending.iter().take(take));
        self.pending.drain(..take);
        self.pending_spans -= n;
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
            Ok(Ok(())) => self.metrics.exported.inc_by(n as u64),
            Ok(Err(e)) => self.failed(n, &e),
            Err(_) => self.failed(n, "timed out"),
        }
    }

    fn failed(&mut self, spans: usize, why: &str) {
        self.metrics.failed.inc();
        self.metrics.dropped.inc_by(spans as u64);
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
            if self.pending.is_empty() {
                return;
            }
            self.start_export();
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

/// How export requests reach the collector.
enum Transport {
    Http {
        client: Box<dyn HttpClient>,
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
                let mut config = (**tls).clone();
                // The connector sets ALPN from the enabled versions (and refuses a preset one).
                config.alpn_protocols.clear();
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(crate::upstream::dns::hyper_connector());
                Ok(Transport::Http {
                    client: Box::new(opentelemetry_http::hyper::HyperClient::new(
                        connector, s.timeout, None,
                    )),
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
    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match self {
            Transport::Http {
                client,
                uri,
                headers,
            } => {
                let mut req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Bytes::from(body))
                    .map_err(|e| e.to_string())?;
                req.headers_mut()
                    .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                let resp = client.send_bytes(req).await.map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "the collector answered {}: {}",
                        resp.status(),
                        String::from_utf8_lossy(resp.body())
                    ))
                }
            }
            Transport::Grpc { grpc, metadata } => {
                let mut grpc = grpc.clone();
                grpc.ready().await.map_err(|e| e.to_string())?;
                let mut req = tonic::Request::new(Bytes::from(body));
                *req.metadata_mut() = metadata.clone();
                grpc.unary::<Bytes, (), _>(
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
    type Encode = Bytes;
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
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
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

    fn metrics() -> ExportMetrics {
        ExportMetrics {
            exported: IntCounter::new("e", "e").unwrap(),
            dropped: IntCounter::new("d", "d").unwrap(),
            failed: IntCounter::new("f", "f").unwrap(),
        }
    }

    fn spans(n: usize) -> EncodedSpans {
        let mut out = EncodedSpans::default();
        let mut buf = Vec::new();
        let ids = SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            parent_is_remote: false,
        };
        for _ in 0..n {
            let w = SpanWriter::begin(&mut buf, &ids, SpanKind::Server, "chat", "m");
            w.end(0, 0, None);
            out.push(&buf);
        }
        out
    }

    /// A full batch goes at once, counted in spans (hand-offs hold 64 or so each), less than
    /// one waits for the tick; the queue holds `max_queue_spans` spans and drops the rest.
    #[test]
    fn full_batches_go_at_once_and_the_queue_is_counted_in_spans() {
        let mut ex = Exporter::new(metrics());
        let settings = TracingSettings {
            enabled: true,
            max_queue_spans: 1000,
            ..TracingSettings::default()
        };
        ex.settings = Some(Arc::new(settings.clone()));
        ex.head = Some(Arc::new(export_head(&settings)));
        // A transport is needed for spans to be queued at all (built, never used here).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        ex.transport = Some(Arc::new(
            rt.block_on(async { Transport::build(&settings, &tls) })
                .unwrap(),
        ));
        for _ in 0..7 {
            ex.enqueue(spans(64));
        }
        assert_eq!(ex.pending_spans, 448);
        assert!(!ex.export_due(), "448 spans wait for the tick");
        ex.enqueue(spans(64));
        assert!(ex.export_due(), "512 spans are a full batch");
        ex.enqueue(spans(600));
        assert_eq!(ex.pending_spans, 1000);
        assert_eq!(ex.metrics.dropped.get(), 112);
        // A queue smaller than two batches is sent when half full.
        let mut small = TracingSettings::clone(ex.settings.as_deref().unwrap());
        small.max_queue_spans = 200;
        ex.settings = Some(Arc::new(small));
        ex.pending.clear();
        ex.pending_spans = 0;
        ex.enqueue(spans(64));
        assert!(!ex.export_due());
        ex.enqueue(spans(64));
        assert!(ex.export_due(), "128 of 200");
        ex.due = true;
        let mut few = Exporter::new(metrics());
        few.due = true;
        assert!(!few.export_due(), "nothing to send");
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
