//! The per-connection loop: read a request head (httparse, see `head`), read its body within
//! limits, hand it to the service, repeat while keep-alive holds.
//!
//! A request whose framing is not certain (RFC 9112 §6), whose head is too large, that lacks a
//! proper Host field or that is too slow is refused with an OpenAI-format error and the
//! connection closed: bytes after a refused head are never read as another request.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::body::{read_at_most, read_more, BodyDecoder, FramingError, Step};
use super::head::{parse_request, HeadError, RequestHead};
use super::response::ResponseWriter;
use super::{valid_request_id, Request, ServerIo, Service};
use crate::api::{ApiError, ErrorKind};
use crate::util::timer::ReusedTimer;
use bytes::{Bytes, BytesMut};
use http::{StatusCode, Version};
use monoio::time::Instant;

/// Limits applied to each request on a connection (read from the current config per request).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// The whole head: request line, fields and the empty line. Also the budget for a chunked
    /// body's extensions and trailer fields.
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    /// For the whole request body, counted from the end of its head.
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Small first read: most idle keep-alive connections never need more.
const INITIAL_READ: usize = 2048;

/// How long, and how much, a refused connection's remaining input is read and discarded.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Why a connection stops reading requests.
enum Stop {
    /// The peer went away, or stayed idle too long: close without an answer.
    Closed,
    /// Answer with this status and message, then close.
    Refuse(StatusCode, String),
}

impl Stop {
    fn refuse(status: StatusCode, msg: impl Into<String>) -> Self {
        Stop::Refuse(status, msg.into())
    }
}

/// Serves requests on one connection until it closes, errs, or keep-alive ends.
pub async fn serve<S: Service, IO: ServerIo>(svc: &S, mut io: IO, limits: impl Fn() -> ConnLimits) {
    let mut buf = BytesMut::new();
    // Made by the first stream that needs it, kept for the connection's later requests.
    let mut watch = None;
    // The idle and head timeouts of every request on the connection.
    let mut timer = ReusedTimer::new();
    loop {
        let lim = limits();
        let head = match read_head(&mut io, &mut buf, &lim, &mut timer).await {
            Ok(h) => h,
            Err(Stop::Closed) => return,
            Err(stop) => {
                let id = svc.next_request_id();
                return stop_with(svc, &mut io, &mut buf, &id, stop).await;
            }
        };
        let request_id = match head.headers.get_str("x-request-id") {
            Some(v) if valid_request_id(v) => v.to_owned(),
            _ => svc.next_request_id(),
        };
        let body = match admit_body(&mut io, &mut buf, &head, &lim, &request_id).await {
            Ok(b) => b,
            Err(stop) => return stop_with(svc, &mut io, &mut buf, &request_id, stop).await,
        };
        let req = Request {
            head,
            body,
            request_id,
        };
        if !respond(svc, &mut io, &mut watch, &req).await {
            return;
        }
    }
}

/// Hands a request to the service. Returns whether the connection can carry another one.
async fn respond<S: Service, IO: ServerIo>(
    svc: &S,
    io: &mut IO,
    watch: &mut Option<std::rc::Rc<super::io::DisconnectWatch>>,
    req: &Request,
) -> bool {
    let http10 = req.head.version == Version::HTTP_10;
    let keep_alive = wants_keep_alive(&req.head) && !svc.draining();
    let head_request = req.head.method == http::Method::HEAD;
    let mut w = ResponseWriter::new(io, watch, &req.request_id, keep_alive, http10, head_request);
    // Boxed so that an idle keep-alive connection's task stays small: the handler's state
    // (upstream call, stream relay) exists only while a request is in flight.
    let outcome = CatchUnwind(crate::util::boxed_in_place(|| svc.call(req, &mut w))).await;
    if let Err(panic) = outcome {
        tracing::error!(request_id = %req.request_id, path = %req.path(), panic = %panic_message(&panic),
            "request handler panicked; answering 500");
        if !w.head_sent() {
            w.close_after();
            let e = ApiError::new(ErrorKind::Internal, "Internal server error.");
            let _ = w.send_error(&e).await;
        }
        return false;
    }
    if !w.head_sent() {
        let e = ApiError::new(ErrorKind::Internal, "The handler produced no response.");
        let _ = w.send_error(&e).await;
    }
    w.finished() && w.keep_alive()
}

fn wants_keep_alive(head: &RequestHead) -> bool {
    let conn_hdr = head.headers.get("connection");
    if head.version == Version::HTTP_10 {
        conn_hdr.is_some_and(|v| v.eq_ignore_ascii_case(b"keep-alive"))
    } else {
        !conn_hdr.is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
    }
}

/// Ends a connection that will not serve another request: a refusal is answered first.
async fn stop_with<S: Service, IO: ServerIo>(
    svc: &S,
    io: &mut IO,
    buf: &mut BytesMut,
    request_id: &str,
    stop: Stop,
) {
    if let Stop::Refuse(status, msg) = stop {
        reject(svc, io, request_id, status, &msg).await;
        linger(io, buf).await;
    }
}

/// Answers a request the connection cannot serve (malformed, too large, too slow) with an
/// OpenAI-format error carrying the exact status, then the caller closes the connection.
async fn reject<S: Service, IO: ServerIo>(
    svc: &S,
    io: &mut IO,
    request_id: &str,
    status: StatusCode,
    msg: &str,
) {
    svc.on_rejected(status);
    let mut no_watch = None;
    let mut w = ResponseWriter::new(io, &mut no_watch, request_id, false, false, false);
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ErrorKind::PayloadTooLarge
        }
        _ => ErrorKind::BadRequest,
    };
    let e = ApiError::new(kind, msg).with_code(status.as_u16().to_string());
    let _ = w.send(status, "application/json", &[], &e.to_json()).await;
}

/// After a refusal: half-close, then read and discard what the client is still sending, for a
/// moment. Closing a socket with unread input makes the kernel send a reset, and a client that
/// is still sending could then lose the error response it has not read yet.
async fn linger<IO: ServerIo>(io: &mut IO, buf: &mut BytesMut) {
    if io.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        buf.clear();
        match monoio::time::timeout_at(deadline, read_more(io, buf, 16 * 1024)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

async fn read_head<IO: ServerIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    lim: &ConnLimits,
    timer: &mut ReusedTimer,
) -> Result<RequestHead, Stop> {
    if buf.is_empty() {
        // Idle keep-alive wait. io_uring needs the buffer up front, so a new one is small; one
        // a previous request grew is used as it is (this read never grows it further).
        let want = INITIAL_READ.max(buf.capacity());
        let idle_end = Instant::now() + lim.idle_timeout;
        match timer.within(idle_end, read_at_most(io, buf, want)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Stop::Closed),
        }
    }
    // Read only if the head is not all here already (the usual case on a keep-alive
    // connection): a clock read costs more than parsing a short head.
    let mut deadline = Deadline::after(lim.header_timeout);
    loop {
        if let Some(head) = parse_head(buf, lim)? {
            return Ok(head);
        }
        // All of `buf` is the unfinished head (at most the limit, or parse_head refused it):
        // read no further than one byte past the limit.
        let room = lim
            .max_header_bytes
            .saturating_add(1)
            .saturating_sub(buf.len())
            .max(1);
        let want = INITIAL_READ.max(buf.len()).min(room);
        match timer
            .within(deadline.at(), read_at_most(io, buf, want))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Closed),
            Ok(Ok(_)) => {}
            Err(_) => {
                return Err(Stop::refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "Timed out reading the request head.",
                ))
            }
        }
    }
}

/// A complete head off the front of `buf`, `None` while it is incomplete and within the limit.
fn parse_head(buf: &mut BytesMut, lim: &ConnLimits) -> Result<Option<RequestHead>, Stop> {
    let too_large = || {
        Stop::refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("Request head exceeds {} bytes.", lim.max_header_bytes),
        )
    };
    match parse_request(buf) {
        // Checked on what arrived, however it arrived: one read may carry a whole large head.
        Ok(Some(head)) if head.wire_len() > lim.max_header_bytes => Err(too_large()),
        Ok(Some(head)) => Ok(Some(head)),
        Ok(None) if buf.len() > lim.max_header_bytes => Err(too_large()),
        Ok(None) => Ok(None),
        Err(HeadError::TooManyHeaders) => Err(Stop::refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("{}.", HeadError::TooManyHeaders),
        )),
        Err(e) => Err(Stop::refuse(
            StatusCode::BAD_REQUEST,
            format!("Malformed HTTP request: {e}."),
        )),
    }
}

/// Checks what the head says about its body, then reads the body, all of it within
/// `body_timeout` of the head's end.
async fn admit_body<IO: ServerIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    head: &RequestHead,
    lim: &ConnLimits,
    request_id: &str,
) -> Result<Bytes, Stop> {
    // Fixed now only if something must be waited for: a body that came with its head (the
    // usual case) needs no clock read.
    let mut deadline = Deadline::after(lim.body_timeout);
    check_host(head)?;
    let mut decoder = framing(head, lim)?;
    let expects_continue = head
        .headers
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && !decoder.is_done() {
        deadline.at();
        let mut no_watch = None;
        let mut w = ResponseWriter::new(io, &mut no_watch, request_id, true, false, false);
        if w.raw_write(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
            return Err(Stop::Closed);
        }
    }
    read_body(io, buf, &mut decoder, lim, &mut deadline).await
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host field, and no request has two.
fn check_host(head: &RequestHead) -> Result<(), Stop> {
    let mut hosts = head.headers.get_all("host");
    let problem = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => "More than one Host header field.",
        (None, _) if head.version == Version::HTTP_11 => "Missing Host header field.",
        (Some(h), None) if !h.iter().all(u8::is_ascii_graphic) => "Invalid Host header field.",
        _ => return Ok(()),
    };
    Err(Stop::refuse(StatusCode::BAD_REQUEST, problem))
}

/// How the body is delimited, or the refusal: 501 for a transfer coding we do not implement,
/// 400 for framing that is ambiguous or malformed, 413 for a declared length over the limit.
fn framing(head: &RequestHead, lim: &ConnLimits) -> Result<BodyDecoder, Stop> {
    let decoder = BodyDecoder::from_headers(&head.headers, false)
        .map_err(|e| match e {
            FramingError::UnsupportedCoding => Stop::refuse(
                StatusCode::NOT_IMPLEMENTED,
                format!("Unsupported request: {e}."),
            ),
            e => Stop::refuse(StatusCode::BAD_REQUEST, format!("Malformed request: {e}.")),
        })?
        .with_metadata_limit(lim.max_header_bytes);
    match decoder.known_length() {
        Some(n) if n > lim.max_body_bytes => Err(Stop::refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body of {n} bytes exceeds the limit of {} bytes.",
                lim.max_body_bytes
            ),
        )),
        _ => Ok(decoder),
    }
}

async fn read_body<IO: ServerIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    d: &mut BodyDecoder,
    lim: &ConnLimits,
    deadline: &mut Deadline,
) -> Result<Bytes, Stop> {
    let mut body = Gathered::default();
    loop {
        // A body of known length is taken once all of it is in the buffer: in one piece, not
        // as the pieces its reads brought joined together (a copy of the whole body). What is
        // still to come is read into room reserved after what came with the head.
        let rest = match d.known_length() {
            Some(n) if body.len == 0 && n > buf.len() => Some(n - buf.len()),
            _ => None,
        };
        let step = match rest {
            Some(_) => Step::NeedMore,
            None => d.step(buf).map_err(|e| {
                Stop::refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Malformed request body framing: {e}."),
                )
            })?,
        };
        match step {
            Step::Data(chunk) => {
                if body.len + chunk.len() > lim.max_body_bytes {
                    return Err(Stop::refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "Request body exceeds the limit of {} bytes.",
                            lim.max_body_bytes
                        ),
                    ));
                }
                body.push(chunk);
            }
            Step::End => return Ok(body.finish()),
            Step::NeedMore => {
                // Room grows with what arrives (at most 256 KiB ahead of it): a declared length
                // reserves nothing by itself.
                let want = rest
                    .or(d.known_length())
                    .unwrap_or(16 * 1024)
                    .clamp(INITIAL_READ, 256 * 1024);
                match monoio::time::timeout_at(deadline.at(), read_more(io, buf, want)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Closed),
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        return Err(Stop::refuse(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "Timed out reading the request body ({} s allowed).",
                                lim.body_timeout.as_secs_f64()
                            ),
                        ))
                    }
                }
            }
        }
    }
}

/// A deadline `timeout` after the moment it is first asked for: the clock is read only when
/// there is something to wait for.
struct Deadline {
    timeout: Duration,
    at: Option<Instant>,
}

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Self { timeout, at: None }
    }

    fn at(&mut self) -> Instant {
        *self.at.get_or_insert_with(|| Instant::now() + self.timeout)
    }
}

/// A body gathered from its pieces. The first piece is kept as it is (a body of known length
/// is taken as one); only a second one, of a chunked body, makes a copy.
#[derive(Default)]
struct Gathered {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    len: usize,
}

impl Gathered {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        if let Some(j) = &mut self.joined {
            j.extend_from_slice(&chunk);
        } else if let Some(f) = self.first.take() {
            let mut j = BytesMut::with_capacity(f.len() + chunk.len());
            j.extend_from_slice(&f);
            j.extend_from_slice(&chunk);
            self.joined = Some(j);
        } else {
            self.first = Some(chunk);
        }
    }

    fn finish(self) -> Bytes {
        match (self.first, self.joined) {
            (_, Some(j)) => j.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        }
    }
}

/// Polls a future, turning a panic inside it into an error instead of unwinding through the
/// runtime (which would take the whole shard down).
struct CatchUnwind<F>(F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the inner future is never moved out of `self`; this is plain structural pinning.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_header_bytes: usize) -> ConnLimits {
        ConnLimits {
            max_header_bytes,
            max_body_bytes: 1000,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    fn head(s: &str) -> RequestHead {
        parse_request(&mut BytesMut::from(s)).unwrap().unwrap()
    }

    /// The status a refusal answers with; 0 for a close without answer, 200 for no refusal.
    fn status<T>(r: Result<T, Stop>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(Stop::Closed) => 0,
            Err(Stop::Refuse(s, _)) => s.as_u16(),
        }
    }

    fn head_of(size: usize, body: &str) -> BytesMut {
        let start = "GET / HTTP/1.1\r\nhost: t\r\nx-pad: ";
        let pad = "a".repeat(size - start.len() - 4);
        BytesMut::from(format!("{start}{pad}\r\n\r\n{body}").as_str())
    }

    #[test]
    fn head_limit_counts_what_arrived() {
        let lim = limits(1024);
        // Complete heads over the limit are refused even when they arrived in one read.
        assert_eq!(status(parse_head(&mut head_of(4096, ""), &lim)), 431);
        assert_eq!(status(parse_head(&mut head_of(1025, ""), &lim)), 431);
        assert_eq!(status(parse_head(&mut head_of(1024, ""), &lim)), 200);
        // A body behind a head within the limit does not count.
        let mut buf = head_of(1000, &"b".repeat(5000));
        assert_eq!(status(parse_head(&mut buf, &lim)), 200);
        assert_eq!(buf.len(), 5000);
        // An unfinished head is refused once it passes the limit.
        let mut partial = head_of(2000, "");
        partial.truncate(1024);
        assert!(matches!(parse_head(&mut partial, &lim), Ok(None)));
        partial.extend_from_slice(b"a");
        assert_eq!(status(parse_head(&mut partial, &lim)), 431);
    }

    #[test]
    fn host_rules() {
        let cases = [
            ("GET / HTTP/1.1\r\nhost: a\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\nhost:\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.0\r\n\r\n", 200),
            ("GET / HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n", 400),
        ];
        for (req, want) in cases {
            assert_eq!(status(check_host(&head(req))), want, "{req:?}");
        }
    }

    #[test]
    fn framing_statuses() {
        let lim = limits(1024);
        let cases = [
            ("transfer-encoding: chunked", 200),
            ("transfer-encoding: identity", 501),
            ("transfer-encoding: gzip, chunked", 501),
            ("transfer-encoding: chunked, gzip", 400),
            ("transfer-encoding: chunked\r\ncontent-length: 2", 400),
            ("content-length: 1000", 200),
            ("content-length: 1001", 413),
        ];
        for (fields, want) in cases {
            let h = head(&format!("POST / HTTP/1.1\r\nhost: t\r\n{fields}\r\n\r\n"));
            assert_eq!(status(framing(&h, &lim)), want, "{fields}");
        }
    }
}
