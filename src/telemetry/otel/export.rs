//! The span exporter: a thread of its own (`llmux-otel`) running a current-thread tokio
//! runtime, never a shard. Shards hand it batches of ended spans through a bounded channel
//! ([`submit`] never waits); it keeps at most `llmux.tracing.max_queue_spans` waiting, exports
//! them with `opentelemetry-otlp` (HTTP/protobuf or gRPC, TLS by rustls) one batch at a time,
//! and counts what it exported, what it dropped and what failed. A dead or slow collector
//! only fills the queue: requests never wait on it.
//!
//! The thread starts when tracing is first enabled (a gateway that never traces starts
//! nothing); a reload that changes the settings rebuilds the exporter.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;

use super::record::SpanRecord;
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
    spans: flume::Sender<Vec<SpanRecord>>,
    control: flume::Sender<Control>,
    metrics: ExportMetrics,
}

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Batches in the hand-off channel: shards flush at most every 64 spans, so this holds a few
/// seconds of heavy traffic while the exporter is busy; the queue proper is `pending`.
const CHANNEL_BATCHES: usize = 64;
/// Spans sent in one export request (the batch processor's default).
const MAX_EXPORT_BATCH: usize = 512;
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
pub fn submit(batch: Vec<SpanRecord>) {
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
    spans: flume::Receiver<Vec<SpanRecord>>,
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
            // Full batches as soon as they are full, the rest once a tick: fewer, larger
            // export requests cost the collector and this thread less per span.
            if ex.in_flight.is_none()
                && !ex.pending.is_empty()
                && (ex.due || ex.pending.len() >= MAX_EXPORT_BATCH)
            {
                ex.due = false;
                ex.start_export();
            }
        }
    });
}

type ExportResult = (usize, Result<OTelSdkResult, tokio::time::error::Elapsed>);

struct Exporter {
    settings: Option<Arc<TracingSettings>>,
    exporter: Option<Arc<SpanExporter>>,
    scope: InstrumentationScope,
    pending: Vec<SpanRecord>,
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
            exporter: None,
            scope: InstrumentationScope::builder("llmux")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            pending: Vec::new(),
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
        self.exporter = None;
        if settings.enabled {
            match build(&settings, tls) {
                Ok(e) => {
                    tracing::info!(
                        endpoint = %settings.endpoint,
                        protocol = ?settings.protocol,
                        sampling_ratio = settings.sampling_ratio,
                        "tracing: exporting spans over OTLP"
                    );
                    self.exporter = Some(Arc::new(e));
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

    fn enqueue(&mut self, mut batch: Vec<SpanRecord>) {
        let (Some(s), Some(_)) = (&self.settings, &self.exporter) else {
            self.metrics.dropped.inc_by(batch.len() as u64);
            return;
        };
        let room = s.max_queue_spans.saturating_sub(self.pending.len());
        if batch.len() > room {
            self.metrics.dropped.inc_by((batch.len() - room) as u64);
            batch.truncate(room);
        }
        self.pending.append(&mut batch);
    }

    fn drop_pending(&mut self) {
        self.metrics.dropped.inc_by(self.pending.len() as u64);
        self.pending.clear();
    }

    fn start_export(&mut self) {
        let (Some(s), Some(exporter)) = (&self.settings, &self.exporter) else {
            self.drop_pending();
            return;
        };
        let n = self.pending.len().min(MAX_EXPORT_BATCH);
        let batch: Vec<SpanData> = self
            .pending
            .drain(..n)
            .map(|r| span_data(r, &self.scope))
            .collect();
        let exporter = exporter.clone();
        let timeout = s.timeout;
        self.in_flight = Some(tokio::spawn(async move {
            let res = tokio::time::timeout(timeout, exporter.export(batch)).await;
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
            Ok(Err(e)) => self.failed(n, &e.to_string()),
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

fn span_data(r: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(r.trace_id),
            SpanId::from_bytes(r.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: r.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: r.parent_is_remote,
        span_kind: r.kind,
        name: r.name.into(),
        start_time: r.start,
        end_time: r.end,
        attributes: r.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match r.error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The OTLP exporter for `s`; must run inside the exporter's runtime (its HTTP clients spawn
/// on it).
fn build(
    s: &TracingSettings,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let https = s.endpoint.starts_with("https://");
    let mut exporter = match s.protocol {
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = s.headers.iter().cloned().collect();
            let builder = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(&s.endpoint)
                .with_timeout(s.timeout)
                .with_headers(headers);
            // The upstream client's TLS settings (webpki roots plus `llmux.upstream.ca_file`),
            // over rustls (no OpenSSL anywhere), on LLMux's resolver (no C library), for
            // `http://` endpoints too.
            let mut config = (**tls).clone();
            // The connector sets ALPN from the enabled versions (and refuses a preset one).
            config.alpn_protocols.clear();
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(crate::upstream::dns::hyper_connector());
            builder
                .with_http_client(opentelemetry_http::hyper::HyperClient::new(
                    connector, s.timeout, None,
                ))
                .build()?
        }
        OtlpProtocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (k, v) in &s.headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    map.insert(k, v);
                }
            }
            let invalid = |e: tonic::transport::Error| {
                opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!(
                    "OTLP gRPC endpoint {}: {e}",
                    s.endpoint
                ))
            };
            let mut endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                .map_err(invalid)?
                .timeout(s.timeout)
                .connect_timeout(s.timeout);
            if https {
                endpoint = endpoint
                    .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
                    .map_err(invalid)?;
            }
            // On LLMux's resolver (no C library); connected on first export.
            let channel =
                endpoint.connect_with_connector_lazy(crate::upstream::dns::hyper_connector());
            SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_timeout(s.timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map),
                )
                .build()?
        }
    };
    let resource = Resource::builder()
        .with_service_name(s.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    exporter.set_resource(&resource);
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every protocol and scheme builds an exporter (building connects nothing).
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
                    assert!(build(&s, &tls).is_ok(), "{protocol:?} {endpoint}");
                }
            }
        });
    }
}
