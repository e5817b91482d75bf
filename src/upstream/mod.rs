//! The per-shard upstream HTTP/1.1 client: DNS off the shard, a keep-alive pool per
//! (scheme, host, port), TLS through monoio-rustls, proxies, timeouts, streamed bodies.
//!
//! Dropping a response (or its body stream) before the body is complete closes the connection:
//! it is never returned to the pool. That is how a client disconnect cancels the upstream call.

mod conn;
pub mod credentials;
pub mod dns;
mod pool;
pub mod proxy;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use monoio::time::Instant;

use crate::config::UpstreamSettings;
use crate::http1::body::{BodyDecoder, Step};
use crate::http1::head::{parse_response, Headers};
use crate::http1::response::push_header;
use crate::util::write_authority;
pub use conn::UpstreamConn;
pub use dns::{DnsService, Resolver};
use pool::{Pool, PoolKeyRef, PooledConn};

const MAX_RESPONSE_HEAD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {host}:{port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("upstream timed out ({0})")]
    Timeout(&'static str),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream connection failed: {0}")]
    Io(String),
    #[error("upstream response body exceeds {0} bytes")]
    BodyTooLarge(usize),
}

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }
}

/// One request to send upstream.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    pub tls: bool,
    pub host: &'a str,
    pub port: u16,
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Connect only to these addresses, already resolved and checked by the caller (remote
    /// media: the addresses the SSRF check passed, so a DNS answer that changes in between
    /// cannot point the connection elsewhere). `None`: resolve `host`.
    pub addrs: Option<&'a [std::net::SocketAddr]>,
}

/// Per-request timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two reads of the body.
    pub idle: Duration,
    /// Deadline for the whole exchange (None for streams, which are bounded by `idle`).
    pub total: Option<Duration>,
    /// To open a connection; `None`: `llmux.upstream.connect_timeout`.
    pub connect: Option<Duration>,
    /// When the timeouts start (the caller's clock read, if it has just made one); `None`:
    /// when the request is sent.
    pub from: Option<Instant>,
}

/// A response whose body has not been read yet.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: Headers,
    pub body: BodyStream,
}

/// The per-shard client.
pub struct UpstreamClient {
    pool: Rc<Pool>,
    resolver: Resolver,
}

impl UpstreamClient {
    pub fn new(resolver: Resolver) -> Self {
        Self {
            pool: Rc::new(Pool::new()),
            resolver,
        }
    }

    /// Starts the background sweep of expired idle connections on the current shard.
    pub fn spawn_maintenance(&self) {
        let pool = Rc::downgrade(&self.pool);
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(Duration::from_secs(5)).await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Resolves a host through the shard's DNS cache (the answer later connects use).
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<std::rc::Rc<[std::net::SocketAddr]>> {
        self.resolver.resolve(host, port).await
    }

    /// Sends a request and reads the response head.
    pub async fn send(
        &self,
        req: &UpstreamRequest<'_>,
        settings: &UpstreamSettings,
        timeouts: Timeouts,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let start = timeouts.from.unwrap_or_else(Instant::now);
        let deadline = timeouts.total.map(|t| start + t);
        let route = proxy::route(&settings.proxy, req.tls, req.host, req.port);
        let key = PoolKeyRef {
            tls: req.tls,
            host: req.host,
            port: req.port,
        };
        let mut wire = encode_request(req, route.absolute_form);
        // A pooled connection may have been closed by the server since it was idle: one retry
        // on a fresh connection is safe because nothing of the response was seen.
        for attempt in 0..2 {
            let mut conn = self.pool.acquire(key, settings, attempt > 0).await;
            // The first-byte timer starts now: a pooled connection on the first try comes at
            // once unless the host was at its limit (then the clock read at `start` serves); a
            // new one after its connect.
            let mut sending = (attempt == 0 && !conn.waited).then_some(start);
            if conn.conn.is_none() {
                sending = None;
                // Boxed: only new connections take this path (TLS handshake state is large).
                let c = within(
                    deadline,
                    timeouts.connect.unwrap_or(settings.connect_timeout),
                    "connect",
                    async {
                        Box::pin(conn::connect(
                            &self.resolver,
                            &route,
                            req.tls,
                            req.host,
                            req.port,
                            req.addrs,
                            settings,
                        ))
                        .await
                    },
                )
                .await??;
                conn.conn = Some(c);
            }
            let reused = conn.reused;
            let sending = sending.unwrap_or_else(Instant::now);
            match exchange(&mut conn, &mut wire, sending, timeouts, deadline).await {
                Ok((status, headers, buf)) => {
                    let until_close = true;
                    let mut decoder = BodyDecoder::from_headers(&headers, until_close)
                        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                    if req.method == "HEAD"
                        || status == StatusCode::NO_CONTENT
                        || status == StatusCode::NOT_MODIFIED
                    {
                        decoder = BodyDecoder::Empty;
                    }
                    let keep_alive = !headers
                        .get("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                    return Ok(UpstreamResponse {
                        status,
                        headers,
                        body: BodyStream::new(conn, buf, decoder, timeouts, deadline, keep_alive),
                    });
                }
                Err(Exchange::Stale) if reused && attempt == 0 => continue,
                Err(Exchange::Stale) => {
                    return Err(UpstreamError::Io(
                        "connection closed before the response".into(),
                    ))
                }
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        Err(UpstreamError::Io(
            "connection closed before the response".into(),
        ))
    }
}

enum Exchange {
    /// The connection died before any response byte: safe to retry on a fresh one.
    Stale,
    Failed(UpstreamError),
}

/// Writes the request and reads the response head, all under one first-byte deadline (one
/// timer per exchange, not one per read).
async fn exchange(
    conn: &mut PooledConn,
    wire: &mut Vec<u8>,
    sending: Instant,
    timeouts: Timeouts,
    deadline: Option<Instant>,
) -> Result<(StatusCode, Headers, BytesMut), Exchange> {
    let Some(c) = conn.conn.as_mut() else {
        return Err(Exchange::Stale);
    };
    let mut head_deadline = sending + timeouts.first_byte;
    if let Some(d) = deadline {
        head_deadline = head_deadline.min(d);
    }
    let phase = std::cell::Cell::new("sending request");
    let io = async {
        let data = std::mem::take(wire);
        let (res, back) = c.write_all(data).await;
        *wire = back;
        if res.is_err() {
            return Err(Exchange::Stale);
        }
        phase.set("waiting for response");
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match parse_response(&mut buf) {
                Ok(Some(head)) => {
                    if head.status.is_informational() {
                        continue;
                    }
                    return Ok((head.status, head.headers, buf));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Exchange::Failed(UpstreamError::Protocol(format!(
                        "bad response head: {e}"
                    ))))
                }
            }
            if buf.len() > MAX_RESPONSE_HEAD {
                return Err(Exchange::Failed(UpstreamError::Protocol(
                    "response head too large".into(),
                )));
            }
            let seen = !buf.is_empty();
            match c.read_more(&mut buf, 4096).await {
                Ok(0) | Err(_) if !seen => return Err(Exchange::Stale),
                Ok(0) => {
                    return Err(Exchange::Failed(UpstreamError::Protocol(
                        "connection closed mid-head".into(),
                    )))
                }
                Err(e) => return Err(Exchange::Failed(UpstreamError::Io(e.to_string()))),
                Ok(_) => {}
            }
        }
    };
    match monoio::time::timeout_at(head_deadline, io).await {
        Ok(r) => r,
        Err(_) => Err(Exchange::Failed(UpstreamError::Timeout(phase.get()))),
    }
}

/// Runs `fut` within `limit`, and within the overall deadline if there is one.
async fn within<T>(
    deadline: Option<Instant>,
    limit: Duration,
    phase: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, UpstreamError> {
    let mut limit = limit;
    if let Some(d) = deadline {
        limit = limit.min(d.saturating_duration_since(Instant::now()));
    }
    monoio::time::timeout(limit, fut)
        .await
        .map_err(|_| UpstreamError::Timeout(phase))
}

/// The request on the wire: head and body in one buffer (one write).
fn encode_request(req: &UpstreamRequest<'_>, absolute_form: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(256 + req.headers.len() * 48 + req.body.len());
    b.extend_from_slice(req.method.as_bytes());
    b.push(b' ');
    if absolute_form {
        b.extend_from_slice(b"http://");
        write_authority(&mut b, req.tls, req.host, req.port);
    }
    b.extend_from_slice(req.path.as_bytes());
    b.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    write_authority(&mut b, req.tls, req.host, req.port);
    b.extend_from_slice(b"\r\n");
    push_header(
        &mut b,
        "content-length",
        itoa::Buffer::new().format(req.body.len()),
    );
    for (k, v) in req.headers {
        push_header(&mut b, k, v);
    }
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(req.body);
    b
}

/// What [`BodyStream::next_buffered`] found without reading.
#[derive(Debug)]
pub enum Buffered {
    Data(Bytes),
    /// The body is complete.
    End,
    /// Nothing more until the next read.
    Nothing,
}

/// The most bytes a relay reads ahead into one batch before writing it.
const READ_AHEAD_LIMIT: usize = 64 * 1024;

/// A read of the body in flight. It owns the connection and the buffer for as long as it runs
/// and gives them back, so that it can outlive the call that started it: a relay starts the
/// next read, writes what it has, and finds the read done (or not) afterwards. Dropping it
/// cancels the read and closes the connection.
type ReadFuture = Pin<Box<dyn Future<Output = ReadDone>>>;

struct ReadDone {
    conn: PooledConn,
    buf: BytesMut,
    result: Result<usize, UpstreamError>,
}

/// The body of an upstream response, read piece by piece.
pub struct BodyStream {
    /// The connection at rest (`None` once the body is over, or after EOF), and the bytes read
    /// but not decoded yet.
    conn: Option<PooledConn>,
    buf: BytesMut,
    /// A read in flight: it holds `conn` and `buf` meanwhile.
    reading: Option<ReadFuture>,
    decoder: BodyDecoder,
    idle: Duration,
    deadline: Option<Instant>,
    keep_alive: bool,
    /// The upstream closed the connection: no more reads.
    eof: bool,
    /// Bytes asked for by the next read: small while pieces are small (a stream's events), so
    /// that thousands of open streams each hold a small buffer under their posted read;
    /// doubled while reads come back full (a large body).
    read_size: usize,
}

/// Reads of a body start at this size and grow up to [`MAX_READ`].
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

impl BodyStream {
    fn new(
        conn: PooledConn,
        buf: BytesMut,
        decoder: BodyDecoder,
        timeouts: Timeouts,
        deadline: Option<Instant>,
        keep_alive: bool,
    ) -> Self {
        Self {
            conn: Some(conn),
            buf,
            reading: None,
            decoder,
            idle: timeouts.idle,
            deadline,
            keep_alive,
            eof: false,
            read_size: MIN_READ,
        }
    }

    /// The next piece of the body, or `None` at its end (the connection then goes back to the
    /// pool if it can be reused).
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            if let Some(read) = self.reading.as_mut() {
                let done = read.await;
                self.reading = None;
                self.read_done(done)?;
            }
            match self
                .decoder
                .step(&mut self.buf)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
            {
                Step::Data(b) => return Ok(Some(b)),
                Step::End => {
                    self.release();
                    return Ok(None);
                }
                Step::NeedMore => {}
            }
            if self.eof {
                return if self.decoder.eof() {
                    Ok(None)
                } else {
                    Err(UpstreamError::Protocol("connection closed mid-body".into()))
                };
            }
            if !self.start_read() {
                return Ok(None);
            }
        }
    }

    /// The next piece of the body if it is already here (decodable from what has been read,
    /// no I/O): a relay drains these before it writes, so that what arrived together leaves
    /// together in one write.
    pub fn next_buffered(&mut self) -> Result<Buffered, UpstreamError> {
        if self.reading.is_some() {
            return Ok(Buffered::Nothing);
        }
        match self
            .decoder
            .step(&mut self.buf)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            Step::Data(b) => Ok(Buffered::Data(b)),
            Step::End => {
                self.release();
                Ok(Buffered::End)
            }
            Step::NeedMore => Ok(Buffered::Nothing),
        }
    }

    /// Starts the next read and gives the runtime one turn to complete it without waiting:
    /// true when more of the body arrived meanwhile (then [`BodyStream::next_buffered`] has
    /// it). A relay calls this before writing a batch, so that events the upstream sent
    /// together, a moment apart, still leave together; an event that arrives alone is not held
    /// back (one turn of the runtime is no wait). The read stays in flight when nothing came;
    /// [`BodyStream::next`] picks it up.
    pub async fn read_ahead(&mut self, batch: usize) -> bool {
        if batch >= READ_AHEAD_LIMIT || self.eof || self.decoder.is_done() {
            return false;
        }
        if self.reading.is_none() && !self.start_read() {
            return false;
        }
        let Some(read) = self.reading.as_mut() else {
            return false;
        };
        // First poll: the read is queued (io_uring) or tried (epoll).
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let done = match first {
            Poll::Ready(d) => Some(d),
            Poll::Pending => {
                yield_once().await;
                match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
                    Poll::Ready(d) => Some(d),
                    Poll::Pending => None,
                }
            }
        };
        let Some(done) = done else {
            return false;
        };
        self.reading = None;
        // An error or EOF is found again by the next `next()`.
        self.read_done(done).is_ok() && !self.buf.is_empty()
    }

    /// Moves the connection and the buffer into a read in flight. False when there is no
    /// connection to read from.
    fn start_read(&mut self) -> bool {
        let Some(mut conn) = self.conn.take() else {
            return false;
        };
        let mut buf = std::mem::take(&mut self.buf);
        // Read into what is left of the buffer while that is at least a quarter of a read: the
        // pieces handed out share the buffer, so making room for a whole read took a new
        // buffer (an allocation and a copy) on nearly every read of a stream's small events.
        let spare = buf.capacity() - buf.len();
        let want = if spare >= self.read_size / 4 {
            spare.min(self.read_size)
        } else {
            self.read_size
        };
        let (deadline, idle) = (self.deadline, self.idle);
        self.reading = Some(crate::util::boxed_in_place(|| async move {
            let result = match conn.conn.as_mut() {
                Some(c) => within(
                    deadline,
                    idle,
                    "reading response body",
                    c.read_more(&mut buf, want),
                )
                .await
                .and_then(|r| r.map_err(|e| UpstreamError::Io(e.to_string()))),
                None => Ok(0),
            };
            ReadDone { conn, buf, result }
        }));
        true
    }

    /// Takes back the connection and the buffer from a finished read.
    fn read_done(&mut self, done: ReadDone) -> Result<(), UpstreamError> {
        self.buf = done.buf;
        match done.result {
            Ok(0) => {
                // Closed by the upstream: never pooled again.
                self.eof = true;
                drop(done.conn);
                Ok(())
            }
            Ok(n) => {
                self.read_size = if n >= self.read_size {
                    (self.read_size * 2).min(MAX_READ)
                } else if n < self.read_size / 4 {
                    (self.read_size / 2).max(MIN_READ)
                } else {
                    self.read_size
                };
                self.conn = Some(done.conn);
                Ok(())
            }
            Err(e) => {
                self.eof = true;
                Err(e)
            }
        }
    }

    /// True when bytes of the body have been read and not yet handed out.
    pub fn has_buffered(&self) -> bool {
        self.reading.is_none() && !self.buf.is_empty()
    }

    /// Reads the whole body, up to `limit` bytes.
    pub async fn collect(&mut self, limit: usize) -> Result<Bytes, UpstreamError> {
        let mut out =
            BytesMut::with_capacity(self.decoder.known_length().unwrap_or(8 * 1024).min(limit));
        while let Some(b) = self.next().await? {
            if out.len() + b.len() > limit {
                return Err(UpstreamError::BodyTooLarge(limit));
            }
            out.extend_from_slice(&b);
        }
        Ok(out.freeze())
    }

    fn release(&mut self) {
        if let Some(c) = self.conn.take() {
            if self.keep_alive && self.decoder.reusable() && self.buf.is_empty() {
                c.recycle();
            }
        }
    }
}

/// Returns `Pending` once, after waking itself: the runtime runs a turn (submitting queued
/// I/O and reaping what completed, without waiting) before polling the caller again.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
