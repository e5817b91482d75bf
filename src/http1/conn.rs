//! The per-connection loop: read a request head (httparse, see `head`), read its body within
//! limits, hand it to the service, repeat while keep-alive holds.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::body::{read_more, BodyDecoder, Step};
use super::head::{parse_request, HeadError, RequestHead};
use super::response::ResponseWriter;
use super::{valid_request_id, Request, ServerIo, Service};
use crate::api::{ApiError, ErrorKind};
use bytes::{Bytes, BytesMut};
use http::StatusCode;

/// Limits applied to each request on a connection (read from the current config per request).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Small first read: most idle keep-alive connections never need more.
const INITIAL_READ: usize = 2048;

/// Serves requests on one connection until it closes, errs, or keep-alive ends.
pub async fn serve<S: Service, IO: ServerIo>(svc: &S, mut io: IO, limits: impl Fn() -> ConnLimits) {
    let mut buf = BytesMut::new();
    loop {
        let lim = limits();
        let head = match read_head(&mut io, &mut buf, &lim).await {
            HeadOutcome::Head(h) => h,
            HeadOutcome::Closed => return,
            HeadOutcome::Reject(status, msg) => {
                let id = svc.next_request_id();
                reject(svc, &mut io, &id, status, &msg).await;
                return;
            }
        };

        let request_id = match head.headers.get_str("x-request-id") {
            Some(v) if valid_request_id(v) => v.to_owned(),
            _ => svc.next_request_id(),
        };
        let http10 = head.version == http::Version::HTTP_10;
        let conn_hdr = head.headers.get("connection");
        let mut keep_alive = if http10 {
            conn_hdr.is_some_and(|v| v.eq_ignore_ascii_case(b"keep-alive"))
        } else {
            !conn_hdr.is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
        };

        let mut decoder = match BodyDecoder::from_headers(&head.headers, false) {
            Ok(d) => d,
            Err(e) => {
                reject(
                    svc,
                    &mut io,
                    &request_id,
                    StatusCode::BAD_REQUEST,
                    &format!("Malformed request: {e}."),
                )
                .await;
                return;
            }
        };
        if let Some(n) = decoder.known_length() {
            if n > lim.max_body_bytes {
                reject(
                    svc,
                    &mut io,
                    &request_id,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "Request body of {n} bytes exceeds the limit of {} bytes.",
                        lim.max_body_bytes
                    ),
                )
                .await;
                return;
            }
        }
        let expects_continue = head
            .headers
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
        if expects_continue && !decoder.is_done() {
            let mut w = ResponseWriter::new(&mut io, &request_id, true, http10, false);
            if w.raw_write(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                return;
            }
        }
        let body = match read_body(&mut io, &mut buf, &mut decoder, &lim).await {
            Ok(b) => b,
            Err(BodyFailure::TooLarge) => {
                reject(
                    svc,
                    &mut io,
                    &request_id,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "Request body exceeds the limit of {} bytes.",
                        lim.max_body_bytes
                    ),
                )
                .await;
                return;
            }
            Err(BodyFailure::Malformed) => {
                reject(
                    svc,
                    &mut io,
                    &request_id,
                    StatusCode::BAD_REQUEST,
                    "Malformed request body framing.",
                )
                .await;
                return;
            }
            Err(BodyFailure::Closed) => return,
        };

        if svc.draining() {
            keep_alive = false;
        }
        let head_request = head.method == http::Method::HEAD;
        let req = Request {
            head,
            body,
            request_id,
        };
        let mut w = ResponseWriter::new(&mut io, &req.request_id, keep_alive, http10, head_request);
        // Boxed so that an idle keep-alive connection's task stays small: the handler's state
        // (upstream call, stream relay) exists only while a request is in flight.
        let outcome = CatchUnwind(Box::pin(svc.call(&req, &mut w))).await;
        if let Err(panic) = outcome {
            tracing::error!(request_id = %req.request_id, path = %req.path(), panic = %panic_message(&panic),
                "request handler panicked; answering 500");
            if !w.head_sent() {
                w.close_after();
                let e = ApiError::new(ErrorKind::Internal, "Internal server error.");
                let _ = w.send_error(&e).await;
            }
            return;
        }
        if !w.head_sent() {
            let e = ApiError::new(ErrorKind::Internal, "The handler produced no response.");
            let _ = w.send_error(&e).await;
        }
        if !w.finished() || !w.keep_alive() {
            return;
        }
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
    let mut w = ResponseWriter::new(io, request_id, false, false, false);
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ErrorKind::PayloadTooLarge
        }
        _ => ErrorKind::BadRequest,
    };
    let e = ApiError::new(kind, msg).with_code(status.as_u16().to_string());
    let _ = w.send(status, "application/json", &[], &e.to_json()).await;
}

enum HeadOutcome {
    Head(RequestHead),
    Closed,
    Reject(StatusCode, String),
}

async fn read_head<IO: ServerIo>(io: &mut IO, buf: &mut BytesMut, lim: &ConnLimits) -> HeadOutcome {
    if buf.is_empty() {
        // Idle keep-alive wait. The buffer is allocated only once bytes arrive? No: io_uring
        // needs the buffer up front, so keep it small.
        match monoio::time::timeout(lim.idle_timeout, read_more(io, buf, INITIAL_READ)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return HeadOutcome::Closed,
            Ok(Ok(_)) => {}
        }
    }
    let deadline = monoio::time::Instant::now() + lim.header_timeout;
    loop {
        match parse_request(buf) {
            Ok(Some(head)) => return HeadOutcome::Head(head),
            Ok(None) => {}
            Err(HeadError::TooManyHeaders) => {
                return HeadOutcome::Reject(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("{}.", HeadError::TooManyHeaders),
                )
            }
            Err(e) => {
                return HeadOutcome::Reject(
                    StatusCode::BAD_REQUEST,
                    format!("Malformed HTTP request: {e}."),
                )
            }
        }
        if buf.len() > lim.max_header_bytes {
            return HeadOutcome::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("Request head exceeds {} bytes.", lim.max_header_bytes),
            );
        }
        let left = deadline.saturating_duration_since(monoio::time::Instant::now());
        match monoio::time::timeout(left, read_more(io, buf, INITIAL_READ.max(buf.len()))).await {
            Ok(Ok(0)) | Ok(Err(_)) => return HeadOutcome::Closed,
            Ok(Ok(_)) => {}
            Err(_) => {
                return HeadOutcome::Reject(
                    StatusCode::REQUEST_TIMEOUT,
                    "Timed out reading the request head.".to_owned(),
                )
            }
        }
    }
}

enum BodyFailure {
    TooLarge,
    Malformed,
    Closed,
}

async fn read_body<IO: ServerIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    d: &mut BodyDecoder,
    lim: &ConnLimits,
) -> Result<Bytes, BodyFailure> {
    let mut first: Option<Bytes> = None;
    let mut acc: Option<BytesMut> = None;
    let mut total = 0usize;
    let deadline = monoio::time::Instant::now() + lim.idle_timeout.max(lim.header_timeout);
    loop {
        match d.step(buf).map_err(|_| BodyFailure::Malformed)? {
            Step::Data(chunk) => {
                total += chunk.len();
                if total > lim.max_body_bytes {
                    return Err(BodyFailure::TooLarge);
                }
                match (&mut first, &mut acc) {
                    (None, None) => first = Some(chunk),
                    (Some(f), None) => {
                        let mut a = BytesMut::with_capacity(f.len() + chunk.len());
                        a.extend_from_slice(f);
                        a.extend_from_slice(&chunk);
                        acc = Some(a);
                        first = None;
                    }
                    (_, Some(a)) => a.extend_from_slice(&chunk),
                }
            }
            Step::End => break,
            Step::NeedMore => {
                let want = d
                    .known_length()
                    .unwrap_or(16 * 1024)
                    .clamp(INITIAL_READ, 256 * 1024);
                let left = deadline.saturating_duration_since(monoio::time::Instant::now());
                match monoio::time::timeout(left, read_more(io, buf, want)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(BodyFailure::Closed),
                    Ok(Ok(_)) => {}
                }
            }
        }
    }
    Ok(match (first, acc) {
        (_, Some(a)) => a.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
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
