//! `POST /v1/chat/completions`.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::adapter::prepare;
use super::media;
use super::relay::{
    relay_identity_stream, relay_mapped_stream, upstream_error, RelayCtx, RelayOutcome,
    LARGE_BUFFER,
};
use super::usage;
use super::GatewayShard;
use crate::api::{ApiError, ChatRequestView, ErrorKind};
use crate::config::{Deployment, Snapshot};
use crate::dsl::Framing;
use crate::http1::{Request, ResponseWriter, ServerIo};
use crate::telemetry::metrics::RequestRecord;
use crate::telemetry::redact::redact_str;
use crate::upstream::{Timeouts, UpstreamRequest};
use crate::util::clip;

/// What happened to one request, for metrics and the access log.
#[derive(Default)]
struct Outcome {
    relay: RelayOutcome,
    upstream_secs: Option<f64>,
}

pub async fn chat_completions<IO: ServerIo>(
    gw: &GatewayShard,
    snap: &Arc<Snapshot>,
    req: &Request,
    w: &mut ResponseWriter<'_, IO>,
) {
    let started = Instant::now();
    let (view, req_json) = match ChatRequestView::parse(&req.body, snap.server.max_json_depth) {
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
    let mut out = Outcome::default();
    forward(gw, snap, req, &view, req_json, dep, w, started, &mut out).await;
    let mut out_relay = std::mem::take(&mut out.relay);
    if out_relay.large_buffers || req.body.len() > LARGE_BUFFER {
        crate::util::release_memory();
    }
    if out_relay.status == 0 {
        out_relay.status = w.status().map(|s| s.as_u16()).unwrap_or(500);
    }
    let duration = started.elapsed().as_secs_f64();
    gw.metrics.record_request(&RequestRecord {
        deployment: dep,
        status: out_relay.status,
        duration,
        upstream_duration: out.upstream_secs,
        ttft: out_relay.ttft_secs,
        prompt_tokens: out_relay.usage.prompt,
        completion_tokens: out_relay.usage.completion,
    });
    // Upstream text may carry secrets (an upstream that echoes the request head).
    let error = out_relay
        .error
        .as_deref()
        .map(|e| redact_str(e, &snap.secrets));
    tracing::info!(
        target: "llmux::access",
        request_id = %req.request_id,
        model_group = %dep.group,
        deployment = %dep.id,
        provider = %dep.provider,
        stream = view.stream,
        status = out_relay.status,
        duration_ms = (duration * 1000.0) as u64,
        ttft_ms = out_relay.ttft_secs.map(|t| (t * 1000.0) as u64),
        prompt_tokens = out_relay.usage.prompt,
        completion_tokens = out_relay.usage.completion,
        error = error.as_deref(),
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
            out.relay.error = Some("remote media fetch failed".into());
            let _ = w.send_error(&e).await;
            return;
        }
    }
    let prepared = match prepare(provider, dep, view, &req_json, &raw, &req.request_id) {
        Ok(p) => p,
        Err(r) => {
            out.relay.error = Some("request translation failed".into());
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
        addrs: None,
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
    // Boxed: the exchange's state is needed only until the response head, and a stream lives on
    // for minutes in the request's future (thousands of them at once).
    let mut resp = match Box::pin(gw.upstream.send(&up_req, &snap.upstream, timeouts)).await {
        Ok(r) => r,
        Err(e) => {
            out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
            let _ = w.send_error(&upstream_error(&e, &dep.id)).await;
            out.relay.error = Some(e.to_string());
            return;
        }
    };
    let status = resp.status;
    let cx = RelayCtx {
        deployment: &dep.id,
        secrets: &snap.secrets,
        max_event_bytes: snap.upstream.max_stream_event_bytes,
        max_json_depth: snap.server.max_json_depth,
        check_json: snap.upstream.check_relayed_json,
        started,
    };

    if status.is_success() && view.stream {
        let content_type = resp.headers.get("content-type").unwrap_or_default();
        let is_sse = content_type.starts_with(b"text/event-stream");
        // An SSE provider that answers a stream request with anything else (a JSON
        // completion, an HTML page) has not streamed: say so instead of sending an empty
        // stream that looks complete.
        if !is_sse && (provider.stream_is_identity() || provider.framing() == Framing::Sse) {
            out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
            let e = ApiError::new(
                ErrorKind::BadGateway,
                format!(
                    "Upstream deployment `{}` answered a stream request with `{}` instead of an event stream.",
                    dep.id,
                    clip(&String::from_utf8_lossy(content_type))
                ),
            );
            out.relay.error = Some("upstream did not stream".into());
            let _ = w.send_error(&e).await;
            return;
        }
        if provider.stream_is_identity() {
            Box::pin(relay_identity_stream(
                w,
                &mut resp.body,
                &cx,
                &mut out.relay,
            ))
            .await;
        } else {
            let mut state = provider.stream_state(&prepared.ctx);
            Box::pin(relay_mapped_stream(
                w,
                &mut resp.body,
                provider,
                &mut state,
                &cx,
                &mut out.relay,
            ))
            .await;
        }
        out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
        return;
    }

    let body = match Box::pin(resp.body.collect(snap.upstream.max_response_body_bytes)).await {
        Ok(b) => b,
        Err(e) => {
            out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
            let _ = w.send_error(&upstream_error(&e, &dep.id)).await;
            out.relay.error = Some(e.to_string());
            return;
        }
    };
    out.upstream_secs = Some(up_started.elapsed().as_secs_f64());
    out.relay.large_buffers |= body.len() > LARGE_BUFFER;
    if status.is_success() && provider.response_is_identity() {
        // Relayed as it came, once it is known to be one JSON value within the bounds.
        let checked = if snap.upstream.check_relayed_json {
            crate::json::check_structure(&body, snap.server.max_json_depth)
        } else {
            Ok(())
        };
        if let Err(e) = checked {
            let e = ApiError::new(
                ErrorKind::BadGateway,
                format!(
                    "Upstream deployment `{}` returned an unreadable body: {}",
                    dep.id,
                    clip(&e.to_string())
                ),
            );
            out.relay.error = Some("upstream body is not JSON".into());
            let _ = w.send_error(&e).await;
            return;
        }
        if let Some(u) = usage::extract(&body) {
            out.relay.usage = u;
        }
        let _ = w.send_json(StatusCode::OK, &body).await;
        return;
    }
    match provider.parse_response(status.as_u16(), &body, &prepared.ctx) {
        Ok(completion) => {
            if let Some(u) = usage::extract(&completion.body) {
                out.relay.usage = u;
            }
            let _ = w.send_json(StatusCode::OK, &completion.body).await;
        }
        Err(mapped) => {
            out.relay.error = Some(format!(
                "upstream status {}: {}: {}",
                status.as_u16(),
                mapped.class.as_str(),
                clip(&mapped.message)
            ));
            let code = StatusCode::from_u16(mapped.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let _ = w.send_json(code, &cx.mapped_error_body(&mapped)).await;
        }
    }
}
