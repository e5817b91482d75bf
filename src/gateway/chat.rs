//! `POST /v1/chat/completions`.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::adapter::prepare;
use super::media;
use super::sse::{data_lines, SseSplitter};
use super::usage::{self, Usage};
use super::GatewayShard;
use crate::api::{ApiError, ChatRequestView, ErrorKind};
use crate::config::{Deployment, Snapshot};
use crate::dsl::{FrameDecoder, Provider, StreamControl, StreamState};
use crate::http1::io::DisconnectWatch;
use crate::http1::{Request, ResponseWriter, ServerIo};
use crate::telemetry::metrics::RequestRecord;
use crate::upstream::{BodyStream, Timeouts, UpstreamError, UpstreamRequest};

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
    let (view, req_json) = match ChatRequestView::parse(&req.body) {
        Ok(parsed) => parsed,
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
    forward(gw, snap, req, &view, req_json, dep, w, started, &mut out).await;
    if out.status == 0 {
        out.status = w.status().map(|s| s.as_u16()).unwrap_or(500);
    }
    let duration = started.elapsed().as_secs_f64();
    gw.metrics.record_request(&RequestRecord {
        deployment: dep,
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
fn pick(deps: &[Arc<Deployment>]) -> Option<&Arc<Deployment>> {
    match deps.len() {
        0 => None,
        1 => Some(&deps[0]),
        _ => {
            let total: f64 = deps.iter().map(|d| d.weight).sum();
            if total <= 0.0 {
                return Some(&deps[fastrand::usize(..deps.len())]);
            }
            let mut x = fastrand::f64() * total;
            for d in deps {
                if x < d.weight {
                    return Some(d);
                }
                x -= d.weight;
            }
            deps.last()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward<IO: ServerIo>(
    gw: &GatewayShard,
    snap: &Arc<Snapshot>,
    req: &Request,
    view: &ChatRequestView,
    mut req_json: serde_json::Value,
    dep: &Arc<Deployment>,
    w: &mut ResponseWriter<'_, IO>,
    started: Instant,
    out: &mut Outcome,
) {
    let Some(provider) = snap.providers.get(&dep.provider) else {
        // The config loader only accepts deployments whose provider file exists.
        let e = ApiError::new(
            ErrorKind::Internal,
            format!("Provider `{}` is not loaded.", dep.provider),
        );
        let _ = w.send_error(&e).await;
        return;
    };
    // Image URLs the provider cannot take by reference are fetched here, before translation.
    let mut raw = std::borrow::Cow::Borrowed(&req.body[..]);
    let policy = provider.fetch_images();
    // Boxed, like the stream relays below: rarely-taken paths should not grow every request's
    // future (it is moved to the heap per request).
    let fetched = if policy == crate::dsl::FetchImages::None {
        Ok(false)
    } else {
        Box::pin(media::inline_images(
            &mut req_json,
            policy,
            &gw.upstream,
            &snap.upstream,
            &snap.media,
        ))
        .await
    };
    match fetched {
        Ok(false) => {}
        Ok(true) => {
            raw = std::borrow::Cow::Owned(serde_json::to_vec(&req_json).unwrap_or_default())
        }
        Err(e) => {
            out.error = Some("remote media fetch failed".into());
            let _ = w.send_error(&e).await;
            return;
        }
    }
    let prepared = match prepare(provider, dep, view, &req_json, &raw, &req.request_id) {
        Ok(p) => p,
        Err(r) => {
            out.error = Some("request translation failed".into());
            let _ = w.send_json(r.status, &r.body).await;
            return;
        }
    };
    let mut headers: Vec<(&str, &str)> = prepared
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("x-request-id", req.request_id.as_str()));
    let up_req = UpstreamRequest {
        tls: prepared.url.tls(),
        host: prepared.url.host(),
        port: prepared.url.port(),
        method: &prepared.method,
        path: prepared.url.target(),
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
        .get("content-type")
        .is_some_and(|v| v.starts_with(b"text/event-stream"));

    if status.is_success() && view.stream {
        if provider.stream_is_identity() {
            if is_sse {
                Box::pin(relay_identity_stream(
                    w,
                    &mut resp.body,
                    &dep.id,
                    started,
                    out,
                ))
                .await;
                out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
                return;
            }
        } else {
            let mut state = provider.stream_state(&prepared.ctx);
            Box::pin(relay_mapped_stream(
                w,
                &mut resp.body,
                provider,
                &mut state,
                &dep.id,
                started,
                out,
            ))
            .await;
            out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
            return;
        }
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
    if status.is_success() && provider.response_is_identity() {
        if let Some(u) = usage::extract(&body) {
            out.usage = u;
        }
        let _ = w.send_json(StatusCode::OK, &body).await;
        return;
    }
    match provider.parse_response(status.as_u16(), &body, &prepared.ctx) {
        Ok(completion) => {
            if let Some(u) = usage::extract(&completion.body) {
                out.usage = u;
            }
            let _ = w.send_json(StatusCode::OK, &completion.body).await;
        }
        Err(mapped) => {
            out.error = Some(format!(
                "upstream status {}: {}",
                status.as_u16(),
                mapped.class.as_str()
            ));
            let code = StatusCode::from_u16(mapped.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = serde_json::to_vec(&mapped.to_openai_body()).unwrap_or_default();
            let _ = w.send_json(code, &body).await;
        }
    }
}

/// Relays an upstream SSE stream that is already in OpenAI's shape, event by event, flushing
/// each batch at once; stops the moment the client disconnects (dropping the upstream connection).
async fn relay_identity_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut BodyStream,
    deployment: &str,
    started: Instant,
    out: &mut Outcome,
) {
    let Some(watch) = begin_stream(w, out).await else {
        return;
    };
    let mut splitter = SseSplitter::new(MAX_EVENT_BYTES);
    let closed = client_closed(&watch);
    let mut closed = std::pin::pin!(closed);
    loop {
        let piece = match next_piece(&mut closed, body).await {
            Next::ClientGone => return client_gone(w, out),
            Next::Piece(p) => p,
            Next::End => break,
            Next::Failed(e) => {
                out.error = Some(e.to_string());
                let _ = send_stream_error(w, &upstream_error(&e, deployment).to_json()).await;
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
            return client_gone(w, out);
        }
    }
    if let Some(rest) = splitter.finish() {
        let _ = w.send_chunk(&rest).await;
    }
    if w.finish_stream().await.is_err() {
        out.status = 499;
    }
}

/// Relays a provider stream through its mapping file: frames are decoded (SSE, NDJSON, JSON
/// array), each event mapped to zero or more OpenAI chunks, and `[DONE]` sent at the end.
#[allow(clippy::too_many_arguments)]
async fn relay_mapped_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut BodyStream,
    provider: &Provider,
    state: &mut StreamState,
    deployment: &str,
    started: Instant,
    out: &mut Outcome,
) {
    let Some(watch) = begin_stream(w, out).await else {
        return;
    };
    let closed = client_closed(&watch);
    let mut closed = std::pin::pin!(closed);
    let mut decoder = FrameDecoder::new(provider.framing());
    let mut frames = Vec::new();
    let mut chunks = Vec::new();
    let mut buf = Vec::with_capacity(1024);
    let mut finished = false;
    while !finished {
        frames.clear();
        match next_piece(&mut closed, body).await {
            Next::ClientGone => return client_gone(w, out),
            Next::Piece(p) => {
                if let Err(e) = decoder.feed(&p, &mut frames) {
                    out.error = Some(e.to_string());
                    let err = ApiError::new(
                        ErrorKind::BadGateway,
                        format!("Upstream deployment `{deployment}`: {e}"),
                    );
                    let _ = send_stream_error(w, &err.to_json()).await;
                    finished = true;
                }
            }
            Next::End => {
                let _ = decoder.finish(&mut frames);
                finished = true;
            }
            Next::Failed(e) => {
                out.error = Some(e.to_string());
                let _ = send_stream_error(w, &upstream_error(&e, deployment).to_json()).await;
                break;
            }
        }
        buf.clear();
        let mut done = false;
        for f in &frames {
            chunks.clear();
            match provider.map_event(state, f.event.as_deref(), &f.data, &mut chunks) {
                Ok(ctl) => {
                    for c in &chunks {
                        buf.extend_from_slice(b"data: ");
                        let _ = sonic_rs::to_writer(&mut buf, c);
                        buf.extend_from_slice(b"\n\n");
                    }
                    if ctl == StreamControl::Done {
                        done = true;
                        break;
                    }
                }
                Err(mapped) => {
                    out.error = Some(format!("stream error: {}", mapped.class.as_str()));
                    buf.extend_from_slice(b"data: ");
                    let _ = serde_json::to_writer(&mut buf, &mapped.to_openai_body());
                    buf.extend_from_slice(b"\n\n");
                    done = true;
                    break;
                }
            }
        }
        if done || (finished && out.error.is_none()) {
            buf.extend_from_slice(b"data: [DONE]\n\n");
            finished = true;
        }
        if !buf.is_empty() {
            if out.ttft_secs.is_none() {
                out.ttft_secs = Some(started.elapsed().as_secs_f64());
            }
            if w.send_chunk(&buf).await.is_err() {
                return client_gone(w, out);
            }
        }
    }
    if let Some(u) = state.usage() {
        out.usage = Usage {
            prompt: u["prompt_tokens"].as_u64().unwrap_or(0),
            completion: u["completion_tokens"].as_u64().unwrap_or(0),
        };
    }
    if w.finish_stream().await.is_err() {
        out.status = 499;
    }
}

async fn begin_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    out: &mut Outcome,
) -> Option<Option<DisconnectWatch>> {
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
        return None;
    }
    out.status = 200;
    Some(watch)
}

async fn client_closed(watch: &Option<DisconnectWatch>) {
    match watch {
        Some(wt) => wt.closed().await,
        None => std::future::pending::<()>().await,
    }
}

enum Next {
    ClientGone,
    Piece(bytes::Bytes),
    End,
    Failed(UpstreamError),
}

async fn next_piece(
    closed: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    body: &mut BodyStream,
) -> Next {
    monoio::select! {
        _ = closed => Next::ClientGone,
        r = body.next() => match r {
            Ok(Some(p)) => Next::Piece(p),
            Ok(None) => Next::End,
            Err(e) => Next::Failed(e),
        },
    }
}

/// The client went away: abandon the upstream (its connection is closed on drop).
fn client_gone<IO: ServerIo>(w: &mut ResponseWriter<'_, IO>, out: &mut Outcome) {
    out.status = 499;
    out.error = Some("client disconnected".into());
    w.abort();
}

async fn send_stream_error<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    json: &[u8],
) -> std::io::Result<()> {
    let mut ev = Vec::with_capacity(json.len() + 8);
    ev.extend_from_slice(b"data: ");
    ev.extend_from_slice(json);
    ev.extend_from_slice(b"\n\n");
    w.send_chunk(&ev).await
}

fn upstream_error(e: &UpstreamError, deployment: &str) -> ApiError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::BadGateway
    };
    ApiError::new(kind, format!("Upstream deployment `{deployment}`: {e}"))
}
