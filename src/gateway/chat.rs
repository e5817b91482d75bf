//! `POST /v1/chat/completions`.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::adapter::build_request;
use super::sse::{data_lines, SseSplitter};
use super::usage::{self, Usage};
use super::GatewayShard;
use crate::api::{ApiError, ChatRequestView, ErrorKind};
use crate::config::{Deployment, Snapshot};
use crate::http1::{Request, ResponseWriter, ServerIo};
use crate::telemetry::metrics::RequestRecord;
use crate::upstream::{Timeouts, UpstreamError, UpstreamRequest};

/// Largest partial SSE event held while waiting for its end.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// What happened to one request, for metrics and the access log.
struct Outcome {
    status: u16,
    upstream_secs: Option<f64>,
    ttft_secs: Option<f64>,
    usage: Usage,
    error: Option<String>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            status: 0,
            upstream_secs: None,
            ttft_secs: None,
            usage: Usage::default(),
            error: None,
        }
    }
}

pub async fn chat_completions<IO: ServerIo>(
    gw: &GatewayShard,
    snap: &Arc<Snapshot>,
    req: &Request,
    w: &mut ResponseWriter<'_, IO>,
) {
    let started = Instant::now();
    let view = match ChatRequestView::parse(&req.body) {
        Ok(v) => v,
        Err(e) => {
            let _ = w.send_error(&e).await;
            return;
        }
    };
    let Some(group) = snap.group(&view.model) else {
        let _ = w.send_error(&ApiError::model_not_found(&view.model)).await;
        return;
    };
    let Some(dep) = pick(&group.deployments) else {
        let _ = w.send_error(&ApiError::model_not_found(&view.model)).await;
        return;
    };
    let mut out = Outcome::new();
    forward(gw, snap, req, &view, &dep, w, started, &mut out).await;
    if out.status == 0 {
        out.status = w.status().map(|s| s.as_u16()).unwrap_or(500);
    }
    let duration = started.elapsed().as_secs_f64();
    gw.metrics.record_request(&RequestRecord {
        deployment: &dep,
        status: out.status,
        duration,
        upstream_duration: out.upstream_secs,
        ttft: out.ttft_secs,
        prompt_tokens: out.usage.prompt,
        completion_tokens: out.usage.completion,
    });
    tracing::info!(
        target: "llmux::access",
        request_id = %req.request_id,
        model_group = %dep.group,
        deployment = %dep.id,
        provider = %dep.provider,
        stream = view.stream,
        status = out.status,
        duration_ms = (duration * 1000.0) as u64,
        ttft_ms = out.ttft_secs.map(|t| (t * 1000.0) as u64),
        prompt_tokens = out.usage.prompt,
        completion_tokens = out.usage.completion,
        error = out.error.as_deref(),
        "request"
    );
}

/// Weighted random choice among the group's deployments (the routing work replaces this with
/// strategies, cooldowns and breakers).
fn pick(deps: &[Arc<Deployment>]) -> Option<Arc<Deployment>> {
    match deps.len() {
        0 => None,
        1 => Some(deps[0].clone()),
        _ => {
            let total: f64 = deps.iter().map(|d| d.weight).sum();
            if total <= 0.0 {
                return Some(deps[fastrand::usize(..deps.len())].clone());
            }
            let mut x = fastrand::f64() * total;
            for d in deps {
                if x < d.weight {
                    return Some(d.clone());
                }
                x -= d.weight;
            }
            deps.last().cloned()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward<IO: ServerIo>(
    gw: &GatewayShard,
    snap: &Arc<Snapshot>,
    req: &Request,
    view: &ChatRequestView,
    dep: &Arc<Deployment>,
    w: &mut ResponseWriter<'_, IO>,
    started: Instant,
    out: &mut Outcome,
) {
    let prepared = match build_request(dep, &req.body, view) {
        Ok(p) => p,
        Err(e) => {
            let _ = w.send_error(&e).await;
            return;
        }
    };
    let request_id_header = ("x-request-id", req.request_id.as_str());
    let mut headers: Vec<(&str, &str)> = prepared
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    headers.push(request_id_header);
    let up_req = UpstreamRequest {
        tls: dep.base.tls,
        host: &dep.base.host,
        port: dep.base.port,
        method: "POST",
        path: &prepared.path,
        headers: &headers,
        body: &prepared.body,
    };
    let timeouts = if view.stream {
        Timeouts {
            first_byte: dep.stream_timeout,
            idle: dep.stream_timeout,
            total: None,
        }
    } else {
        Timeouts {
            first_byte: dep.timeout,
            idle: dep.timeout,
            total: Some(dep.timeout),
        }
    };
    let up_started = Instant::now();
    let mut resp = match gw.upstream.send(&up_req, &snap.upstream, timeouts).await {
        Ok(r) => r,
        Err(e) => {
            out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
            let _ = w.send_error(&upstream_error(&e, &dep.id)).await;
            out.error = Some(e.to_string());
            return;
        }
    };
    let status = resp.status;
    let is_sse = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));

    if status.is_success() && view.stream && is_sse {
        relay_stream(w, &mut resp.body, started, out).await;
        out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
        return;
    }

    let body = match resp
        .body
        .collect(snap.upstream.max_response_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
            let _ = w.send_error(&upstream_error(&e, &dep.id)).await;
            out.error = Some(e.to_string());
            return;
        }
    };
    out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
    if status.is_success() {
        if let Some(u) = usage::extract(&body) {
            out.usage = u;
        }
        let _ = w.send_json(StatusCode::OK, &body).await;
        return;
    }
    // Upstream error: relay its status; keep an OpenAI-shaped body as is, wrap anything else.
    out.error = Some(format!("upstream status {}", status.as_u16()));
    if looks_like_openai_error(&body) {
        let _ = w.send_json(status, &body).await;
    } else {
        let kind = kind_for_status(status);
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        let mut e = ApiError::new(
            kind,
            format!(
                "Upstream deployment `{}` returned {}: {}",
                dep.id,
                status.as_u16(),
                text
            ),
        );
        e.code = Some(status.as_u16().to_string());
        let _ = w.send(status, "application/json", &[], &e.to_json()).await;
    }
}

/// Relays an upstream SSE stream event by event, flushing each batch at once, and stops the
/// moment the client disconnects (dropping the upstream connection).
async fn relay_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut crate::upstream::BodyStream,
    started: Instant,
    out: &mut Outcome,
) {
    let watch = w.disconnect_watch();
    if w.start_stream(
        StatusCode::OK,
        "text/event-stream",
        &[("cache-control", "no-cache")],
    )
    .await
    .is_err()
    {
        out.status = 499;
        return;
    }
    out.status = 200;
    let mut splitter = SseSplitter::new(MAX_EVENT_BYTES);
    let closed = async {
        match &watch {
            Some(wt) => wt.closed().await,
            None => std::future::pending::<()>().await,
        }
    };
    let mut closed = std::pin::pin!(closed);
    loop {
        let next = monoio::select! {
            _ = &mut closed => None,
            r = body.next() => Some(r),
        };
        let piece = match next {
            None => {
                // Client went away: abandon the upstream (its connection is closed on drop).
                out.status = 499;
                out.error = Some("client disconnected".into());
                w.abort();
                return;
            }
            Some(Ok(Some(piece))) => piece,
            Some(Ok(None)) => break,
            Some(Err(e)) => {
                out.error = Some(e.to_string());
                let err = upstream_error(&e, "stream");
                let event = format!("data: {}\n\n", String::from_utf8_lossy(&err.to_json()));
                if w.send_chunk(event.as_bytes()).await.is_err() {
                    out.status = 499;
                    w.abort();
                    return;
                }
                break;
            }
        };
        let events = match splitter.push(&piece) {
            Ok(Some(ev)) => ev,
            Ok(None) => continue,
            Err(e) => {
                out.error = Some(e.to_string());
                w.abort();
                return;
            }
        };
        if out.ttft_secs.is_none() {
            out.ttft_secs = Some(started.elapsed().as_secs_f64());
        }
        for data in data_lines(&events) {
            if let Some(u) = usage::extract(data) {
                out.usage = u;
            }
        }
        if w.send_chunk(&events).await.is_err() {
            out.status = 499;
            out.error = Some("client disconnected".into());
            w.abort();
            return;
        }
    }
    if let Some(rest) = splitter.finish() {
        let _ = w.send_chunk(&rest).await;
    }
    if w.finish_stream().await.is_err() {
        out.status = 499;
    }
}

fn upstream_error(e: &UpstreamError, deployment: &str) -> ApiError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::BadGateway
    };
    ApiError::new(kind, format!("Upstream deployment `{deployment}`: {e}"))
}

fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 422 => ErrorKind::BadRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimit,
        503 => ErrorKind::ServiceUnavailable,
        504 | 408 => ErrorKind::Timeout,
        s if s >= 500 => ErrorKind::Internal,
        _ => ErrorKind::BadRequest,
    }
}

fn looks_like_openai_error(body: &[u8]) -> bool {
    sonic_rs::get(body, ["error"]).is_ok_and(|v| v.as_raw_str().trim_start().starts_with('{'))
}
