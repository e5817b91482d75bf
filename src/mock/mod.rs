//! `llmux mock`: a mock upstream that speaks the chat wire formats LLMux translates to (OpenAI
//! and its deployment-URL variant, the Messages API, generateContent), streamed and not, with
//! knobs for latency, chunking and failures. Tests and benchmarks run against it; users can too.
//!
//! Knobs come from request headers (`x-mock-delay-ms`, `x-mock-chunks`, `x-mock-chunk-delay-ms`,
//! `x-mock-status`, `x-mock-malformed`, `x-mock-tool`, `x-mock-thinking`, `x-mock-error-code`,
//! `x-mock-retry-after`, `x-mock-cut-after`) or from the upstream model name
//! (`…-mock-status-429`, `…-mock-delay-500`, `…-mock-chunks-20`, `…-mock-chunk-delay-10`,
//! `…-mock-chunk-bytes-4096`, `…-mock-malformed`, `…-mock-tool`, `…-mock-thinking`,
//! `…-mock-error-context_length_exceeded`, `…-mock-retry-after-2`, `…-mock-cut-1`), because a
//! gateway config selects failure modes per deployment and does not forward client headers.
//! `mock-thinking` (Messages format) puts a thinking block with a signature and a
//! redacted_thinking block before the answer; `mock-status-529` answers the Messages format's
//! `overloaded_error`. `POST /mock/faults` switches a model's failure on and off at run time
//! (`{"model": "m", "status": 500}`, `{"model": "m", "status": null}`). `GET /mock/last-request`
//! and `GET /mock/last-request-headers` return the last chat request's body and header fields.

mod formats;
mod knobs;
mod sigv4;

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use monoio::net::TcpListener;

use crate::http1::{conn, ConnLimits, Request, ResponseWriter, ServerIo, Service};
use crate::server::IoDriver;
use crate::telemetry::request_id::RequestIds;
use formats::Format;
pub use formats::{MOCK_REDACTED, MOCK_SIGNATURE};
pub use knobs::Knobs;

/// Counters visible at `GET /mock/stats` (process-wide; the mock is a test tool, so plain
/// atomics are fine here).
#[derive(Default)]
pub struct MockStats {
    pub requests: AtomicU64,
    /// TCP connections accepted (shows whether a client reuses its connections).
    pub connections: AtomicU64,
    pub disconnects: AtomicU64,
    pub completed_streams: AtomicU64,
    /// OTLP/HTTP trace exports received at `POST /v1/traces` (the mock doubles as a span sink
    /// for benchmarks of tracing), and their bytes.
    pub otlp_exports: AtomicU64,
    pub otlp_bytes: AtomicU64,
    /// Requests whose AWS SigV4 signature the mock checked and found valid, and the key ids
    /// they were signed with (see `sigv4`).
    pub sigv4_valid: AtomicU64,
    #[allow(clippy::disallowed_types)]
    // the mock is a test tool; this lock is taken per signed request
    pub sigv4_keys: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The body of the last chat request, at `GET /mock/last-request` (to check translations).
    pub last_request: arc_swap::ArcSwap<Vec<u8>>,
    /// The header fields of the last chat request, served at `GET /mock/last-request-headers`
    /// as a JSON object (to check auth and version headers). Kept as fields and worded only when
    /// asked: this runs on every request of a benchmark, where the mock is the yardstick.
    pub last_request_headers: arc_swap::ArcSwap<crate::http1::head::Headers>,
    /// Failures switched on at run time, by upstream model name (`POST /mock/faults`): every
    /// request for that model is answered with the status until the fault is cleared.
    pub faults: arc_swap::ArcSwap<std::collections::HashMap<String, u16>>,
}

/// A 1x1 PNG, served at `GET /mock/image.png` (remote-media tests).
pub const MOCK_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Header fields as a JSON object: lowercase names, the first value of each.
fn headers_json(headers: &crate::http1::head::Headers) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    for (name, value) in headers.iter() {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        m.entry(name).or_insert_with(|| {
            serde_json::Value::String(String::from_utf8_lossy(value).into_owned())
        });
    }
    serde_json::Value::Object(m).to_string().into_bytes()
}

struct MockService {
    stats: Arc<MockStats>,
    ids: Rc<RequestIds>,
}

fn limits() -> ConnLimits {
    ConnLimits {
        max_header_bytes: 64 * 1024,
        max_body_bytes: 64 * 1024 * 1024,
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(120),
    }
}

/// Runs the mock on `workers` threads until the process ends.
pub fn run(listen: &str, workers: usize, driver: IoDriver) -> std::io::Result<()> {
    let listeners = crate::server::bind_tcp_group(listen, workers.max(1))?;
    let addr = listeners[0].local_addr()?;
    let stats = Arc::new(MockStats::default());
    let mut handles = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let stats = stats.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("llmux-mock-{i}"))
                .spawn(move || serve_listener(l, stats, driver, i))?,
        );
    }
    tracing::info!(addr = %addr, workers, "mock upstream listening");
    println!("mock listening on {addr}");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Starts the mock on one background thread (used by `llmux serve` when the config asks for it).
pub fn spawn_background(listen: &str, driver: IoDriver) -> std::io::Result<()> {
    let mut listeners = crate::server::bind_tcp_group(listen, 1)?;
    let l = listeners.remove(0);
    let stats = Arc::new(MockStats::default());
    std::thread::Builder::new()
        .name("llmux-mock".into())
        .spawn(move || serve_listener(l, stats, driver, 0))?;
    Ok(())
}

fn serve_listener(l: std::net::TcpListener, stats: Arc<MockStats>, driver: IoDriver, shard: usize) {
    let (mut rt, _) = match crate::server::build_runtime(driver) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "mock runtime failed to start");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "mock listener failed");
                return;
            }
        };
        let ids = Rc::new(RequestIds::new(shard));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let svc = MockService {
                        stats: stats.clone(),
                        ids: ids.clone(),
                    };
                    monoio::spawn(async move { conn::serve(&svc, stream, limits).await });
                }
                Err(_) => monoio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

impl Service for MockService {
    async fn call<IO: ServerIo>(&self, req: &Request, w: &mut ResponseWriter<'_, IO>) {
        match (req.method().as_str(), req.path()) {
            ("GET", "/mock/stats") => {
                let body = serde_json::json!({
                    "requests": self.stats.requests.load(Ordering::Relaxed),
                    "connections": self.stats.connections.load(Ordering::Relaxed),
                    "disconnects": self.stats.disconnects.load(Ordering::Relaxed),
                    "completed_streams": self.stats.completed_streams.load(Ordering::Relaxed),
                    "otlp_exports": self.stats.otlp_exports.load(Ordering::Relaxed),
                    "otlp_bytes": self.stats.otlp_bytes.load(Ordering::Relaxed),
                    "sigv4_valid": self.stats.sigv4_valid.load(Ordering::Relaxed),
                    "sigv4_keys": self.stats.sigv4_keys.lock().map(|k| k.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                });
                let _ = w
                    .send_json(StatusCode::OK, body.to_string().as_bytes())
                    .await;
                return;
            }
            ("POST", "/mock/faults") => {
                // {"model": "<upstream model>", "status": 500} sets a fault; "status": null
                // clears it.
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let Some(model) = v["model"].as_str() else {
                    let _ = w
                        .send_json(
                            StatusCode::BAD_REQUEST,
                            br#"{"error":{"message":"mock: `model` is required"}}"#,
                        )
                        .await;
                    return;
                };
                let status = v["status"].as_u64().and_then(|s| u16::try_from(s).ok());
                self.stats.faults.rcu(|old| {
                    let mut m = (**old).clone();
                    match status {
                        Some(s) => m.insert(model.to_owned(), s),
                        None => m.remove(model),
                    };
                    m
                });
                let _ = w.send_json(StatusCode::OK, br#"{"ok":true}"#).await;
                return;
            }
            ("GET", "/mock/last-request") => {
                let body = self.stats.last_request.load_full();
                let _ = w.send_json(StatusCode::OK, &body).await;
                return;
            }
            ("GET", "/mock/last-request-headers") => {
                let body = headers_json(&self.stats.last_request_headers.load());
                let _ = w.send_json(StatusCode::OK, &body).await;
                return;
            }
            ("GET", "/mock/image.png") => {
                let _ = w.send(StatusCode::OK, "image/png", &[], MOCK_PNG).await;
                return;
            }
            ("GET", "/mock/redirect") => {
                let to = req
                    .query()
                    .and_then(|q| q.strip_prefix("to="))
                    .unwrap_or("/mock/image.png");
                let _ = w
                    .send(StatusCode::FOUND, "text/plain", &[("location", to)], b"")
                    .await;
                return;
            }
            ("POST", "/v1/traces") => {
                // An OTLP/HTTP collector that accepts everything (an empty
                // ExportTraceServiceResponse is zero bytes of protobuf).
                self.stats.otlp_exports.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .otlp_bytes
                    .fetch_add(req.body.len() as u64, Ordering::Relaxed);
                let _ = w
                    .send(StatusCode::OK, "application/x-protobuf", &[], b"")
                    .await;
                return;
            }
            ("GET", "/health") | ("GET", "/") => {
                let _ = w.send_json(StatusCode::OK, br#"{"status":"ok"}"#).await;
                return;
            }
            _ => {}
        }
        let Some(format) = Format::detect(req.method(), req.path()) else {
            let _ = w
                .send_json(
                    StatusCode::NOT_FOUND,
                    br#"{"error":{"message":"mock: unknown path","type":"not_found"}}"#,
                )
                .await;
            return;
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match sigv4::check(req) {
            sigv4::Verdict::Unchecked => {}
            sigv4::Verdict::Valid(key) => {
                self.stats.sigv4_valid.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut keys) = self.stats.sigv4_keys.lock() {
                    keys.insert(key);
                }
            }
            sigv4::Verdict::Refused(kind, message) => {
                let body = serde_json::json!({ "message": message }).to_string();
                let _ = w
                    .send(
                        StatusCode::FORBIDDEN,
                        "application/json",
                        &[("x-amzn-errortype", kind)],
                        body.as_bytes(),
                    )
                    .await;
                return;
            }
        }
        self.stats.last_request.store(Arc::new(req.body.to_vec()));
        self.stats
            .last_request_headers
            .store(Arc::new(req.head.headers.detached()));
        let body: serde_json::Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                let msg = serde_json::json!({"error": {"message": format!("mock: invalid JSON: {e}"), "type": "invalid_request_error"}});
                let _ = w
                    .send_json(StatusCode::BAD_REQUEST, msg.to_string().as_bytes())
                    .await;
                return;
            }
        };
        let model = format.model(req.path(), &body);
        let mut knobs = Knobs::from_request(req, &model);
        if let Some(status) = self.stats.faults.load().get(&model) {
            knobs.status = Some(*status);
        }
        if knobs.delay_ms > 0 {
            monoio::time::sleep(Duration::from_millis(knobs.delay_ms)).await;
        }
        if let Some(status) = knobs.status {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = format.error_body(status, knobs.error_code.as_deref());
            let retry_after = knobs.retry_after.map(|s| s.to_string());
            let headers: Vec<(&str, &str)> = retry_after
                .as_deref()
                .map(|v| ("retry-after", v))
                .into_iter()
                .chain(format.error_type(status).map(|t| ("x-amzn-errortype", t)))
                .collect();
            let _ = w.send(code, "application/json", &headers, &body).await;
            return;
        }
        let reply = formats::Reply::new(
            &model,
            &body,
            &req.body,
            knobs.chunks,
            knobs.chunk_bytes,
            knobs.tool_call,
            knobs.thinking,
        );
        let stream = format.wants_stream(req.path(), req.query(), &body);
        if knobs.malformed && !stream {
            let _ = w.send_json(StatusCode::OK, b"{\"id\": \"broken").await;
            return;
        }
        if !stream {
            let _ = w.send_json(StatusCode::OK, &format.complete(&reply)).await;
            return;
        }
        if w.start_stream(
            StatusCode::OK,
            format.stream_content_type(),
            &[("cache-control", "no-cache")],
        )
        .await
        .is_err()
        {
            self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let events = format.stream_messages(&reply);
        for (i, ev) in events.iter().enumerate() {
            if knobs.cut_after == Some(i) {
                // Gone without the end of the stream.
                w.abort();
                return;
            }
            if i > 0 && knobs.chunk_delay_ms > 0 {
                monoio::time::sleep(Duration::from_millis(knobs.chunk_delay_ms)).await;
            }
            let ev: &[u8] = if knobs.malformed && i == 1 {
                b"data: {\"broken\n\n"
            } else {
                ev
            };
            if w.send_chunk(ev).await.is_err() {
                self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                w.abort();
                return;
            }
        }
        if w.finish_stream().await.is_err() {
            self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.completed_streams.fetch_add(1, Ordering::Relaxed);
    }

    fn next_request_id(&self) -> String {
        self.ids.next()
    }
}
