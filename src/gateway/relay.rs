//! Relaying an upstream stream to the client, event by event.
//!
//! Two relays: one for streams already in OpenAI's shape (passthrough providers), which are
//! split at event boundaries and forwarded in batches without being mapped, and one for every
//! other provider, whose frames go through its mapping file. Both hold to the same rules:
//! - every event is checked before it leaves (one complete JSON value in structure, within
//!   the nesting bound, valid UTF-8: `json::check_structure`; a frame within
//!   `llmux.upstream.max_stream_event_bytes`);
//! - anything wrong ends the stream with one OpenAI-format error event,
//!   `data: {"error": {...}}`, and no `data: [DONE]`, so a cut answer never looks complete;
//! - upstream text in an error event has the configured secrets redacted;
//! - a client that goes away drops the upstream connection at once.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

use http::StatusCode;

use super::sse::{event_payloads, SseSplitter};
use super::usage::{self, Usage};
use crate::api::{ApiError, ErrorKind};
use crate::dsl::{FrameDecoder, MappedError, Provider, StreamControl, StreamState};
use crate::http1::io::DisconnectWatch;
use crate::http1::{ResponseWriter, ServerIo};
use crate::telemetry::redact::redact;
use crate::upstream::{BodyStream, Buffered, UpstreamError};
use crate::util::clip;

/// What a relay needs to know beyond the bytes.
pub struct RelayCtx<'a> {
    /// Deployment id, for error messages.
    pub deployment: &'a str,
    /// Every secret value of the config: redacted from upstream text sent to the client.
    pub secrets: &'a [String],
    pub max_event_bytes: usize,
    pub max_json_depth: usize,
    /// Validate relayed events (`llmux.upstream.check_relayed_json`).
    pub check_json: bool,
    /// When the client's request arrived (time to first token).
    pub started: Instant,
}

/// What the relay saw, for metrics and the access log.
#[derive(Debug, Default)]
pub struct RelayOutcome {
    pub status: u16,
    pub ttft_secs: Option<f64>,
    pub usage: Usage,
    pub error: Option<String>,
    /// Buffers of more than [`LARGE_BUFFER`] bytes were held (see `util::release_memory`).
    pub large_buffers: bool,
}

/// Above this, a request's buffers count as large.
pub const LARGE_BUFFER: usize = 1024 * 1024;

impl RelayCtx<'_> {
    fn bad_upstream(&self, what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            ErrorKind::BadGateway,
            format!("Upstream deployment `{}`: {what}", self.deployment),
        )
    }

    /// The OpenAI-format body of a mapped upstream error, with secrets redacted.
    pub fn mapped_error_body(&self, e: &MappedError) -> Vec<u8> {
        let body = serde_json::to_vec(&e.to_openai_body()).unwrap_or_default();
        redact(&body, self.secrets).into_owned()
    }

    /// Checks one event's payload: `[DONE]`, or one complete JSON value.
    fn check_event(&self, data: &[u8]) -> Result<(), ApiError> {
        if !self.check_json || data.trim_ascii() == b"[DONE]" {
            return Ok(());
        }
        crate::json::check_structure(data, self.max_json_depth).map_err(|e| {
            self.bad_upstream(format_args!(
                "the stream carried an invalid event: {}",
                clip(&e.to_string())
            ))
        })
    }
}

/// Building a searcher costs more than searching one event: built once.
static ERROR_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));

/// Relays an upstream SSE stream that is already in OpenAI's shape: split at event boundaries,
/// each batch of whole events checked and forwarded as one chunk, flushed at once.
pub async fn relay_identity_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut BodyStream,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
) {
    let Some(watch) = begin_stream(w, body, out).await else {
        return;
    };
    let mut splitter = SseSplitter::new(cx.max_event_bytes);
    let closed = client_closed(&watch);
    let mut closed = std::pin::pin!(closed);
    let mut ended = false;
    while !ended {
        let piece = match next_piece(&mut closed, body).await {
            Next::ClientGone => return client_gone(w, out),
            Next::Piece(p) => p,
            Next::End => break,
            Next::Failed(e) => {
                let err = upstream_error(&e, cx.deployment);
                return end_with_error(w, out, e.to_string(), &err.to_json()).await;
            }
        };
        splitter.append(&piece);
        // Whatever else has already arrived, or arrives within a turn of the runtime, leaves
        // with it in the same write.
        loop {
            match drain_buffered(body, |p| splitter.append(p)) {
                Ok(true) => {
                    ended = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    let err = upstream_error(&e, cx.deployment);
                    return end_with_error(w, out, e.to_string(), &err.to_json()).await;
                }
            }
            if !body.read_ahead(splitter.pending_len()).await {
                break;
            }
        }
        let events = match splitter.take() {
            Ok(events) => {
                out.large_buffers |= events.as_ref().is_some_and(|e| e.len() > LARGE_BUFFER);
                events
            }
            Err(e) => {
                out.large_buffers = true;
                let err =
                    cx.bad_upstream(format_args!("{e} (llmux.upstream.max_stream_event_bytes)"));
                return end_with_error(w, out, e.to_string(), &err.to_json()).await;
            }
        };
        if ended {
            // The last events, an unterminated rest and the end of the stream leave together.
            let last = match (events, splitter.finish()) {
                (Some(events), None) => events,
                (None, Some(rest)) => rest,
                (Some(events), Some(rest)) => [&events[..], &rest[..]].concat().into(),
                (None, None) => bytes::Bytes::new(),
            };
            forward_events(w, cx, out, &last, true).await;
            return;
        }
        if let Some(events) = events {
            if !forward_events(w, cx, out, &events, false).await {
                return;
            }
        }
    }
    // The upstream ended with nothing left over in its buffer. An unterminated last event is
    // forwarded if it is whole, and is an error if it was cut.
    let rest = splitter.finish().unwrap_or_default();
    forward_events(w, cx, out, &rest, true).await;
}

/// Hands every piece of the body that is already here to `take`. True when the body is over.
fn drain_buffered(
    body: &mut BodyStream,
    mut take: impl FnMut(&[u8]),
) -> Result<bool, UpstreamError> {
    loop {
        match body.next_buffered()? {
            Buffered::Data(p) => take(&p),
            Buffered::End => return Ok(true),
            Buffered::Nothing => return Ok(false),
        }
    }
}

/// Checks and forwards a batch of whole events; with `last`, the stream ends in the same
/// write. False when the relay must stop (the batch was refused, with an error event sent and
/// the stream ended, or the client is gone).
async fn forward_events<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
    events: &[u8],
    last: bool,
) -> bool {
    let mut has_error = false;
    for (at, data) in event_payloads(events) {
        if let Err(e) = cx.check_event(&data) {
            // The whole events before the bad one still go out, then the error event.
            let mut last = Vec::with_capacity(at + 256);
            last.extend_from_slice(&redact(&events[..at], cx.secrets));
            append_event(&mut last, &e.to_json());
            send_final(w, out, e.message.clone(), &last).await;
            return false;
        }
        if let Some(u) = usage::extract(&data) {
            out.usage = u;
        }
        has_error |=
            ERROR_KEY.find(&data).is_some() && usage::top_level_member(&data, b"error").is_some();
    }
    if out.ttft_secs.is_none() && !events.is_empty() {
        out.ttft_secs = Some(cx.started.elapsed().as_secs_f64());
    }
    // An upstream error event relays the upstream's text: redact it like any error body.
    let events: Cow<'_, [u8]> = if has_error {
        out.error = Some("upstream error event".into());
        redact(events, cx.secrets)
    } else {
        Cow::Borrowed(events)
    };
    let sent = if last {
        w.send_last_chunk(&events).await
    } else {
        w.send_chunk(&events).await
    };
    if sent.is_err() {
        client_gone(w, out);
        return false;
    }
    !last
}

/// Relays a provider stream through its mapping file: frames are decoded (SSE, NDJSON, JSON
/// array), each event mapped to zero or more OpenAI chunks, and `[DONE]` sent at the end.
pub async fn relay_mapped_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut BodyStream,
    provider: &Provider,
    state: &mut StreamState,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
) {
    let Some(watch) = begin_stream(w, body, out).await else {
        return;
    };
    let closed = client_closed(&watch);
    let mut closed = std::pin::pin!(closed);
    let mut decoder = FrameDecoder::with_max_frame(provider.framing(), cx.max_event_bytes);
    let mut frames = Vec::new();
    let mut chunks = Vec::new();
    let mut buf = Vec::with_capacity(1024);
    loop {
        frames.clear();
        let mut ended = false;
        match next_piece(&mut closed, body).await {
            Next::ClientGone => return client_gone(w, out),
            Next::Piece(p) => {
                let mut fed = decoder.feed(&p, &mut frames);
                // Whatever else has already arrived, or arrives within a turn of the runtime,
                // is mapped and leaves with it.
                let mut upstream_done = false;
                let mut batch = p.len();
                while fed.is_ok() {
                    let drained = drain_buffered(body, |p| {
                        batch += p.len();
                        if fed.is_ok() {
                            fed = decoder.feed(p, &mut frames);
                        }
                    });
                    match drained {
                        Ok(true) => {
                            upstream_done = true;
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let err = upstream_error(&e, cx.deployment);
                            return end_with_error(w, out, e.to_string(), &err.to_json()).await;
                        }
                    }
                    if fed.is_err() || !body.read_ahead(batch).await {
                        break;
                    }
                }
                if upstream_done && fed.is_ok() {
                    fed = decoder.finish(&mut frames);
                    ended = true;
                }
                out.large_buffers |=
                    fed.is_err() || frames.iter().any(|f| f.data.len() > LARGE_BUFFER);
                if let Err(e) = fed {
                    // Frames decoded before the bad one still go out first.
                    buf.clear();
                    let _ = map_frames(provider, state, cx, &frames, &mut chunks, &mut buf, out);
                    let err = cx
                        .bad_upstream(format_args!("{e} (llmux.upstream.max_stream_event_bytes)"));
                    append_event(&mut buf, &err.to_json());
                    return send_final(w, out, e.to_string(), &buf).await;
                }
            }
            Next::End => {
                if let Err(e) = decoder.finish(&mut frames) {
                    buf.clear();
                    let _ = map_frames(provider, state, cx, &frames, &mut chunks, &mut buf, out);
                    let err = cx.bad_upstream(&e);
                    append_event(&mut buf, &err.to_json());
                    return send_final(w, out, e.to_string(), &buf).await;
                }
                ended = true;
            }
            Next::Failed(e) => {
                let err = upstream_error(&e, cx.deployment);
                return end_with_error(w, out, e.to_string(), &err.to_json()).await;
            }
        }
        buf.clear();
        let step = map_frames(provider, state, cx, &frames, &mut chunks, &mut buf, out);
        if step == Mapped::Failed {
            let error = out.error.take().unwrap_or_default();
            return send_final(w, out, error, &buf).await;
        }
        let last = step == Mapped::Done || ended;
        if last {
            buf.extend_from_slice(b"data: [DONE]\n\n");
            if let Some(u) = state.usage() {
                out.usage = Usage {
                    prompt: u["prompt_tokens"].as_u64().unwrap_or(0),
                    completion: u["completion_tokens"].as_u64().unwrap_or(0),
                };
            }
        }
        if buf.is_empty() {
            continue;
        }
        if out.ttft_secs.is_none() {
            out.ttft_secs = Some(cx.started.elapsed().as_secs_f64());
        }
        // The last events, `[DONE]` and the end of the stream leave in one write.
        let sent = if last {
            w.send_last_chunk(&buf).await
        } else {
            w.send_chunk(&buf).await
        };
        if sent.is_err() {
            return client_gone(w, out);
        }
        if last {
            return;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Mapped {
    More,
    Done,
    /// A mapped error event is in the buffer; the stream ends after it.
    Failed,
}

/// Maps decoded frames into `buf` as SSE events.
fn map_frames(
    provider: &Provider,
    state: &mut StreamState,
    cx: &RelayCtx<'_>,
    frames: &[crate::dsl::Frame],
    chunks: &mut Vec<serde_json::Value>,
    buf: &mut Vec<u8>,
    out: &mut RelayOutcome,
) -> Mapped {
    for f in frames {
        chunks.clear();
        match provider.map_event(state, f.event.as_deref(), &f.data, chunks) {
            Ok(ctl) => {
                for c in chunks.iter() {
                    buf.extend_from_slice(b"data: ");
                    let _ = sonic_rs::to_writer(&mut *buf, c);
                    buf.extend_from_slice(b"\n\n");
                }
                if ctl == StreamControl::Done {
                    return Mapped::Done;
                }
            }
            Err(mapped) => {
                out.error = Some(format!("stream error: {}", mapped.class.as_str()));
                append_event(buf, &cx.mapped_error_body(&mapped));
                return Mapped::Failed;
            }
        }
    }
    Mapped::More
}

fn append_event(buf: &mut Vec<u8>, json: &[u8]) {
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
}

/// Sends the last events (ending in an error event) and ends the stream without `[DONE]`.
async fn send_final<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    out: &mut RelayOutcome,
    error: String,
    buf: &[u8],
) {
    out.error = Some(error);
    if w.send_chunk(buf).await.is_err() || w.finish_stream().await.is_err() {
        out.status = 499;
    }
}

/// Sends one error event and ends the stream without `[DONE]`.
async fn end_with_error<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    out: &mut RelayOutcome,
    error: String,
    json: &[u8],
) {
    let mut ev = Vec::with_capacity(json.len() + 8);
    append_event(&mut ev, json);
    send_final(w, out, error, &ev).await;
}

/// Starts the client's stream. The head is written at once unless the upstream's first bytes
/// are already here, in which case it leaves with them.
async fn begin_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &BodyStream,
    out: &mut RelayOutcome,
) -> Option<Option<Rc<DisconnectWatch>>> {
    let watch = w.disconnect_watch();
    let started = w.start_stream_deferred(
        StatusCode::OK,
        "text/event-stream",
        &[("cache-control", "no-cache")],
    );
    let flushed = match started {
        Ok(()) if body.has_buffered() => Ok(()),
        Ok(()) => w.flush_head().await,
        Err(e) => Err(e),
    };
    if flushed.is_err() {
        out.status = 499;
        return None;
    }
    out.status = 200;
    Some(watch)
}

async fn client_closed(watch: &Option<Rc<DisconnectWatch>>) {
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
fn client_gone<IO: ServerIo>(w: &mut ResponseWriter<'_, IO>, out: &mut RelayOutcome) {
    out.status = 499;
    out.error = Some("client disconnected".into());
    w.abort();
}

/// An upstream transport failure as the client sees it: 504 for timeouts, else 502.
pub fn upstream_error(e: &UpstreamError, deployment: &str) -> ApiError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::BadGateway
    };
    ApiError::new(kind, format!("Upstream deployment `{deployment}`: {e}"))
}
