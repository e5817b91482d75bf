//! Relaying an upstream stream to the client, event by event.
//!
//! Two relays: one for streams already in OpenAI's shape (passthrough providers), which are
//! split at event boundaries and forwarded in batches without being mapped, and one for every
//! other provider, whose frames go through its mapping file. Both hold to the same rules:
//! - every event is checked before it leaves (one complete JSON value in structure, within
//!   the nesting bound, valid UTF-8: `json::check_structure`; a frame within
//!   `llmux.upstream.max_stream_event_bytes`);
//! - nothing goes to the client before the first events are ready to go: a failure before
//!   that (the upstream closed, timed out, sent garbage or an error event first) is returned
//!   as a [`Failure`], and the router may retry the request elsewhere;
//! - after that, anything wrong ends the stream with one OpenAI-format error event,
//!   `data: {"error": {...}}`, and no `data: [DONE]`, so a cut answer never looks complete;
//! - a stream must end with its provider's end (`[DONE]` for an OpenAI-shaped one; the
//!   mapping's `done` for the others): an upstream that closes before it has cut the answer,
//!   and that is a failure like any other;
//! - upstream text in an error event has the configured secrets redacted;
//! - a client that goes away drops the upstream connection at once.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

use http::StatusCode;

use super::failure;
use super::sse::{event_payloads, SseSplitter};
use crate::api::{ApiError, ErrorKind};
use crate::dsl::{FrameDecoder, MappedError, Provider, StreamControl, StreamEnd, StreamState};
use crate::http1::io::DisconnectWatch;
use crate::http1::{ResponseWriter, ServerIo};
use crate::json::members;
use crate::router::{Failure, FailureClass};
use crate::telemetry::redact::redact;
use crate::upstream::{BodyStream, Buffered, UpstreamError};
use crate::usage::completion::CompletionText;
use crate::usage::{self, Usage};
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
    /// Extra response headers (routing), sent with the stream's head.
    pub headers: &'a [(&'a str, &'a str)],
    /// The client did not ask for usage (`stream_options.include_usage`): an OpenAI-shaped
    /// usage-only chunk (`"choices": []`) is read and not relayed. Provider files ask their
    /// upstream for usage in every stream where it can give it, so that cost and spend are
    /// counted, not estimated; clients that index `choices[0]` of every chunk must not see it.
    pub drop_usage_chunk: bool,
    /// Keep the completion text relayed, for counting it if no usage comes: set when the
    /// upstream was not asked for usage (when it was, a stream that ends without it was cut,
    /// and its events are counted instead: about a token each).
    pub collect_text: bool,
    /// The model group every chunk names (`llmux.response_model: requested`), if any.
    pub response_model: Option<&'a crate::gateway::response_model::ResponseModel>,
}

/// What the relay saw, for metrics and the access log.
#[derive(Debug, Default)]
pub struct RelayOutcome {
    pub status: u16,
    pub ttft_secs: Option<f64>,
    pub usage: Usage,
    pub error: Option<String>,
    /// What went wrong after the answer began (a stream cut, an error event), if anything:
    /// the router counts it against the deployment.
    pub failure: Option<FailureClass>,
    /// Buffers of more than [`LARGE_BUFFER`] bytes were held (see `util::release_memory`).
    pub large_buffers: bool,
    /// The completion text relayed, for counting its tokens when the provider reports no
    /// usage (see `RelayCtx::collect_text`).
    pub completion: CompletionText,
    /// Events (chunks) relayed.
    pub events: u64,
    /// The answer's id, model and finish reasons, read only for a sampled request's spans
    /// (the relay fills it when it is `Some`).
    pub meta: Option<crate::telemetry::otel::ResponseMeta>,
    /// The bytes sent, kept for the response cache when it is to store this answer (dropped
    /// past its size bound).
    pub capture: Option<Vec<u8>>,
}

impl RelayOutcome {
    /// Keeps what was sent, for the response cache.
    pub fn capture(&mut self, bytes: &[u8]) {
        if let Some(c) = self.capture.as_mut() {
            if c.len() + bytes.len() > crate::gateway::chat::MAX_CACHED_BYTES {
                self.capture = None;
            } else {
                c.extend_from_slice(bytes);
            }
        }
    }
}

/// How a relay ended: `Ok` once anything went to the client (whatever followed, recorded in
/// the [`RelayOutcome`]); `Err` when nothing did, so the request may be tried again.
pub type Relayed = Result<(), Failure>;

/// Above this, a request's buffers count as large.
pub const LARGE_BUFFER: usize = 1024 * 1024;

impl RelayCtx<'_> {
    fn bad_upstream(&self, what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            ErrorKind::BadGateway,
            format!("Upstream deployment `{}`: {what}", self.deployment),
        )
    }

    /// The stream ended before its provider's end.
    fn cut(&self) -> ApiError {
        self.bad_upstream("the stream ended before its end (the answer is incomplete)")
    }

    /// The OpenAI-format body of a mapped upstream error, with secrets redacted.
    pub fn mapped_error_body(&self, e: &MappedError) -> Vec<u8> {
        let body = serde_json::to_vec(&e.to_openai_body()).unwrap_or_default();
        redact(&body, self.secrets).into_owned()
    }

    /// Checks one event's payload (`[DONE]`, or one complete JSON value) and reads the
    /// members the relay needs from it: found by the check itself in the same pass, or, when
    /// relayed JSON is not checked, by searches for each.
    fn check_event<'d>(&self, data: &'d [u8]) -> Result<EventMembers<'d>, ApiError> {
        if data.trim_ascii() == b"[DONE]" {
            return Ok(EventMembers::default());
        }
        if !self.check_json {
            return Ok(EventMembers::search(data, self.response_model.is_some()));
        }
        let [usage, error, model] =
            crate::json::check_structure_of::<EventMembers<'_>, 3>(data, self.max_json_depth)
                .map_err(|e| {
                    self.bad_upstream(format_args!(
                        "the stream carried an invalid event: {}",
                        clip(&e.to_string())
                    ))
                })?;
        // A value is read only when it is of the kind wanted (most chunks say `"usage":null`).
        let value = |at: Option<usize>, name: &[u8], kind: u8| {
            let start = members::member_value_start(data, at?, name.len())?;
            if data.get(start) != Some(&kind) {
                return None;
            }
            Some(&data[start..members::value_end(data, start)?])
        };
        Ok(EventMembers {
            usage: value(usage, EVENT_MEMBERS[0], b'{'),
            error: error.is_some(),
            model: value(model, EVENT_MEMBERS[2], b'"'),
        })
    }
}

/// The top-level members of an OpenAI-shaped stream event that the identity relay reads, in
/// the order of [`EventMembers`]'s fields.
const EVENT_MEMBERS: [&[u8]; 3] = [b"usage", b"error", b"model"];

impl crate::json::MemberNames<3> for EventMembers<'_> {
    const NAMES: [&'static [u8]; 3] = EVENT_MEMBERS;
}

/// What the identity relay reads from one event: its usage object, whether it is an error
/// event, and its `model` value (each a raw slice of the event).
#[derive(Default)]
struct EventMembers<'d> {
    usage: Option<&'d [u8]>,
    error: bool,
    model: Option<&'d [u8]>,
}

impl<'d> EventMembers<'d> {
    /// The members found by a search for each (an event not checked); the `model` only when
    /// `model` is asked for.
    fn search(data: &'d [u8], model: bool) -> Self {
        // Building a searcher costs more than searching one event: built once.
        static ERROR_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));
        Self {
            usage: usage::extract::usage_value(data),
            error: ERROR_KEY.find(data).is_some()
                && usage::top_level_member(data, b"error").is_some(),
            model: if model {
                crate::gateway::response_model::model_value(data)
            } else {
                None
            },
        }
    }
}

/// Relays an upstream SSE stream that is already in OpenAI's shape: split at event boundaries,
/// each batch of whole events checked and forwarded as one chunk, flushed at once.
pub async fn relay_identity_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut BodyStream,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
) -> Relayed {
    let watch = w.disconnect_watch();
    let mut splitter = SseSplitter::new(cx.max_event_bytes);
    let closed = client_closed(&watch);
    let mut closed = std::pin::pin!(closed);
    let mut ended = false;
    let mut saw_done = false;
    while !ended {
        let piece = match next_piece(&mut closed, body).await {
            Next::ClientGone => return client_gone(w, out),
            Next::Piece(p) => p,
            Next::End => break,
            Next::Failed(e) => return upstream_failed(w, cx, out, &e).await,
        };
        splitter.append_bytes(piece);
        // Whatever else has already arrived, or arrives within a turn of the runtime, leaves
        // with it in the same write.
        loop {
            match drain_buffered(body, |p| splitter.append_bytes(p)) {
                Ok(true) => {
                    ended = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => return upstream_failed(w, cx, out, &e).await,
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
                return fail(w, out, e.to_string(), &err, b"").await;
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
            return forward_events(w, cx, out, &last, true, &mut saw_done).await;
        }
        if let Some(events) = events {
            forward_events(w, cx, out, &events, false, &mut saw_done).await?;
            if w.finished() || w.broken() {
                return Ok(());
            }
        }
    }
    // The upstream ended with nothing left over in its buffer. An unterminated last event is
    // forwarded if it is whole, and is an error if it was cut.
    let rest = splitter.finish().unwrap_or_default();
    forward_events(w, cx, out, &rest, true, &mut saw_done).await
}

/// Hands every piece of the body that is already here to `take`. True when the body is over.
fn drain_buffered(
    body: &mut BodyStream,
    mut take: impl FnMut(bytes::Bytes),
) -> Result<bool, UpstreamError> {
    loop {
        match body.next_buffered()? {
            Buffered::Data(p) => take(p),
            Buffered::End => return Ok(true),
            Buffered::Nothing => return Ok(false),
        }
    }
}

/// Checks and forwards a batch of whole events; with `last`, the stream ends in the same
/// write, and must have carried its `[DONE]`. On `Ok`, the relay goes on unless the response
/// is finished or broken (a refused batch ended the stream with an error event; the client is
/// gone; or this was the last batch).
async fn forward_events<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
    events: &[u8],
    last: bool,
    saw_done: &mut bool,
) -> Relayed {
    let mut has_error = false;
    // The usage-only chunk to leave out: where it starts, and where the next event starts.
    let mut cut: Option<(usize, usize)> = None;
    let mut cut_from: Option<usize> = None;
    // Where each event's `model` is, found in this one pass over the events (a second pass
    // cost as much again as the first).
    // Room for one a chunk (OpenAI's are longer than 128 bytes): no regrowing as they come.
    let mut model_spans: Vec<(usize, usize)> = match cx.response_model {
        Some(_) => Vec::with_capacity(events.len() / 128 + 1),
        None => Vec::new(),
    };
    for (at, data) in event_payloads(events) {
        if let Some(from) = cut_from.take() {
            cut = Some((from, at));
        }
        let members = match cx.check_event(&data) {
            Ok(members) => members,
            Err(e) => {
                // The whole events before the bad one still go out, then the error event.
                let before = redact(&events[..at], cx.secrets).into_owned();
                return fail(w, out, e.message.clone(), &e, &before).await;
            }
        };
        if data.trim_ascii() == b"[DONE]" {
            *saw_done = true;
        } else {
            out.events += 1;
            if let Some(m) = out.meta.as_mut() {
                m.observe_chunk(&data);
            }
        }
        if let Some(u) = members.usage.and_then(usage::extract::from_value) {
            out.usage = u;
            if cx.drop_usage_chunk
                && cut.is_none()
                && usage::top_level_member(&data, b"choices") == Some(b"[]")
            {
                cut_from = Some(at);
            }
        }
        has_error |= members.error;
        let model_span = cx
            .response_model
            .zip(members.model)
            .and_then(|(m, value)| m.event_value_span(events, &data, value));
        if let Some(span) = model_span {
            model_spans.push(span);
        }
    }
    if last && !*saw_done {
        let before = redact(events, cx.secrets).into_owned();
        return fail(w, out, "upstream stream cut".into(), &cx.cut(), &before).await;
    }
    if events.is_empty() && !last {
        return Ok(());
    }
    if has_error {
        out.error = Some("upstream error event".into());
        out.failure.get_or_insert(FailureClass::Internal);
    }
    if let Some(from) = cut_from {
        cut = Some((from, events.len()));
    }
    // The batch is relayed as it came but for its models, spliced from the spans found above
    // (those of a chunk left out go with it, those after it move up); a redaction moves the
    // bytes unpredictably, and the models are then found again.
    if let Some((from, to)) = cut {
        crate::gateway::response_model::spans_without(&mut model_spans, from, to);
    }
    let events: Cow<'_, [u8]> = match cut {
        Some((from, to)) => Cow::Owned([&events[..from], &events[to..]].concat()),
        None => Cow::Borrowed(events),
    };
    // An upstream error event relays the upstream's text: redact it like any error body.
    let events: Cow<'_, [u8]> = if has_error {
        Cow::Owned(redact(&events, cx.secrets).into_owned())
    } else {
        events
    };
    let named = cx.response_model.and_then(|m| {
        if has_error {
            m.apply_events(&events)
        } else {
            m.splice_spans(&events, &model_spans)
        }
    });
    let events: Cow<'_, [u8]> = match named {
        Some(named) => Cow::Owned(named),
        None => events,
    };
    begin(w, cx, out)?;
    if cx.collect_text {
        out.completion.take_from(&events);
    }
    if out.ttft_secs.is_none() && !events.is_empty() {
        out.ttft_secs = Some(cx.started.elapsed().as_secs_f64());
    }
    let sent = if last {
        w.send_last_chunk(&events).await
    } else {
        w.send_chunk(&events).await
    };
    if sent.is_err() {
        return client_gone(w, out);
    }
    out.capture(&events);
    Ok(())
}

/// Relays a provider stream through its mapping file: frames are decoded (SSE, NDJSON, JSON
/// array), each event mapped to zero or more OpenAI chunks, and `[DONE]` sent once the mapping
/// reached its end.
pub async fn relay_mapped_stream<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    body: &mut BodyStream,
    provider: &Provider,
    state: &mut StreamState<'_>,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
) -> Relayed {
    let watch = w.disconnect_watch();
    let closed = client_closed(&watch);
    let mut closed = std::pin::pin!(closed);
    let mut decoder = FrameDecoder::with_max_frame(provider.framing(), cx.max_event_bytes);
    let mut frames = Vec::new();
    let mut mapped = Mapped {
        buf: Vec::with_capacity(1024),
        model: cx.response_model.map(|m| m.value()),
        ..Mapped::default()
    };
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
                            fed = decoder.feed(&p, &mut frames);
                        }
                    });
                    match drained {
                        Ok(true) => {
                            upstream_done = true;
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => return upstream_failed(w, cx, out, &e).await,
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
                    mapped.buf.clear();
                    let _ = mapped.map(provider, state, &frames);
                    let err = cx
                        .bad_upstream(format_args!("{e} (llmux.upstream.max_stream_event_bytes)"));
                    return fail(w, out, e.to_string(), &err, &mapped.buf).await;
                }
            }
            Next::End => {
                if let Err(e) = decoder.finish(&mut frames) {
                    mapped.buf.clear();
                    let _ = mapped.map(provider, state, &frames);
                    let err = cx.bad_upstream(&e);
                    return fail(w, out, e.to_string(), &err, &mapped.buf).await;
                }
                ended = true;
            }
            Next::Failed(e) => return upstream_failed(w, cx, out, &e).await,
        }
        mapped.buf.clear();
        let mut done = match mapped.map(provider, state, &frames) {
            Ok(done) => done,
            Err(err) => return mapped_failed(w, cx, out, &err, &mapped.buf).await,
        };
        if ended && !done {
            // The upstream is over: the mapping's end hook says whether that was its end.
            mapped.chunks.clear();
            match provider.finish_stream(state, &mut mapped.chunks) {
                Ok(end) => {
                    mapped.push_chunks();
                    if end == StreamEnd::Cut {
                        let cut = cx.cut();
                        return fail(w, out, "upstream stream cut".into(), &cut, &mapped.buf).await;
                    }
                    done = true;
                }
                Err(err) => return mapped_failed(w, cx, out, &err, &mapped.buf).await,
            }
        }
        let buf = &mut mapped.buf;
        if done {
            buf.extend_from_slice(b"data: [DONE]\n\n");
            if let Some(u) = state.usage() {
                out.usage = Usage::from_value(u);
            } else if let Some(u) = mapped.usage {
                out.usage = u;
            }
        }
        if buf.is_empty() {
            continue;
        }
        if let Some(m) = out.meta.as_mut() {
            for (_, data) in event_payloads(buf) {
                if data.trim_ascii() != b"[DONE]" {
                    m.observe_chunk(&data);
                }
            }
            if let Some(provider_model) = mapped.provider_model.take() {
                m.set_model(&provider_model);
            }
        }
        begin(w, cx, out)?;
        if cx.collect_text {
            out.completion.take_from(buf);
        }
        if out.ttft_secs.is_none() {
            out.ttft_secs = Some(cx.started.elapsed().as_secs_f64());
        }
        // The last events, `[DONE]` and the end of the stream leave in one write.
        let sent = if done {
            w.send_last_chunk(buf).await
        } else {
            w.send_chunk(buf).await
        };
        if sent.is_err() {
            return client_gone(w, out);
        }
        out.capture(buf);
        if done {
            return Ok(());
        }
    }
}

/// What a mapped stream's frames became: the chunks of one event (reused), the SSE bytes to
/// send, and the last usage object a chunk carried (one a mapping passed on as the upstream
/// sent it, `emit ev`), for answers whose mapping records none.
#[derive(Default)]
struct Mapped {
    chunks: Vec<serde_json::Value>,
    buf: Vec<u8>,
    usage: Option<Usage>,
    /// The model group every chunk names, when answers name the requested group.
    model: Option<serde_json::Value>,
    /// The provider's model name the first chunk carried before it was replaced (for the
    /// spans' `gen_ai.response.model`).
    provider_model: Option<String>,
}

impl Mapped {
    /// Maps decoded frames into `buf` as SSE events. `Ok(true)` once the mapping reached its
    /// end; an error event of the upstream's, as its mapping classified it, is `Err` (the chunks
    /// mapped before it are in `buf`).
    fn map(
        &mut self,
        provider: &Provider,
        state: &mut StreamState<'_>,
        frames: &[crate::dsl::Frame],
    ) -> Result<bool, MappedError> {
        for f in frames {
            self.chunks.clear();
            let ctl = provider.map_frame(state, f, &mut self.chunks)?;
            self.push_chunks();
            if ctl == StreamControl::Done {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes the chunks as SSE events, noting a usage object one of them carries.
    fn push_chunks(&mut self) {
        for c in &mut self.chunks {
            if let Some(u) = c.get("usage").filter(|u| u.is_object()) {
                self.usage = Some(Usage::from_value(u));
            }
            if let (Some(m), Some(slot)) = (&self.model, c.get_mut("model")) {
                if self.provider_model.is_none() {
                    self.provider_model = slot.as_str().map(str::to_owned);
                }
                slot.clone_from(m);
            }
            self.buf.extend_from_slice(b"data: ");
            let _ = sonic_rs::to_writer(&mut self.buf, c);
            self.buf.extend_from_slice(b"\n\n");
        }
    }
}

fn append_event(buf: &mut Vec<u8>, json: &[u8]) {
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
}

/// Something went wrong with the stream. Before anything went to the client, that is a
/// [`Failure`] (the request may be tried elsewhere); after, the events in `before` go out,
/// then one error event, and the stream ends without `[DONE]`.
async fn fail<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    out: &mut RelayOutcome,
    why: String,
    err: &ApiError,
    before: &[u8],
) -> Relayed {
    if !w.head_sent() {
        return Err(Failure::from(err.clone()));
    }
    out.failure.get_or_insert(FailureClass::BadGateway);
    out.error = Some(why);
    let mut last = Vec::with_capacity(before.len() + 256);
    last.extend_from_slice(before);
    append_event(&mut last, &err.to_json());
    send_final(w, out, &last).await;
    Ok(())
}

/// The upstream failed (transport, timeout) mid-stream.
async fn upstream_failed<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
    e: &UpstreamError,
) -> Relayed {
    let f = failure::from_upstream(e, cx.deployment);
    if !w.head_sent() {
        return Err(f);
    }
    out.failure.get_or_insert(f.class);
    out.error = Some(e.to_string());
    let (_, json, _) = failure::render(&f, cx.secrets);
    let mut ev = Vec::with_capacity(json.len() + 8);
    append_event(&mut ev, &json);
    send_final(w, out, &ev).await;
    Ok(())
}

/// The upstream sent an error event, which its mapping classified.
async fn mapped_failed<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
    mapped: &MappedError,
    before: &[u8],
) -> Relayed {
    let f = failure::from_mapped(mapped, None);
    if !w.head_sent() {
        return Err(f);
    }
    out.failure.get_or_insert(f.class);
    out.error = Some(format!("stream error: {}", mapped.class.as_str()));
    let mut last = Vec::with_capacity(before.len() + 256);
    last.extend_from_slice(before);
    append_event(&mut last, &cx.mapped_error_body(mapped));
    send_final(w, out, &last).await;
    Ok(())
}

/// Sends the last events (ending in an error event) and ends the stream without `[DONE]`.
async fn send_final<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    out: &mut RelayOutcome,
    buf: &[u8],
) {
    if w.send_chunk(buf).await.is_err() || w.finish_stream().await.is_err() {
        out.status = 499;
    }
}

/// Starts the client's stream (once): the head leaves with the first events.
fn begin<IO: ServerIo>(
    w: &mut ResponseWriter<'_, IO>,
    cx: &RelayCtx<'_>,
    out: &mut RelayOutcome,
) -> Relayed {
    if w.head_sent() {
        return Ok(());
    }
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(cx.headers.len() + 1);
    headers.push(("cache-control", "no-cache"));
    headers.extend_from_slice(cx.headers);
    // Only fails on a response already started, which `head_sent` rules out.
    let _ = w.start_stream_deferred(StatusCode::OK, "text/event-stream", &headers);
    out.status = 200;
    Ok(())
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
fn client_gone<IO: ServerIo>(w: &mut ResponseWriter<'_, IO>, out: &mut RelayOutcome) -> Relayed {
    out.status = 499;
    out.error = Some("client disconnected".into());
    out.failure = Some(FailureClass::Cancelled);
    let started = w.head_sent();
    w.abort();
    if started {
        Ok(())
    } else {
        Err(failure::cancelled())
    }
}
