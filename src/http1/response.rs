//! Writing responses: whole bodies with Content-Length, or streams as chunked transfer
//! encoding, flushed per chunk so that every event reaches the client at once.

use std::io;
use std::rc::Rc;

use http::StatusCode;
use monoio::io::AsyncWriteRentExt;

use super::io::{DisconnectWatch, ServerIo};
use crate::api::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    /// Head sent; body framed by chunked encoding (or by close, for HTTP/1.0 clients).
    Streaming {
        chunked: bool,
        /// The head is in `buf`, not yet written: it leaves with the first piece of body.
        head_pending: bool,
    },
    Done,
    Broken,
}

/// The room a stream's write buffer starts with: a batch of a few events. It is held for the
/// stream's life, so thousands of slow streams each keep one: small.
const STREAM_WRITE_BUF: usize = 1024;

/// Writes the response to one request. Handlers get `&mut ResponseWriter`.
pub struct ResponseWriter<'a, IO: ServerIo> {
    io: &'a mut IO,
    /// The connection's disconnect watch, made on first use and kept for its later requests
    /// (a `dup` and its registration per stream would cost four system calls each time).
    watch: &'a mut Option<Rc<DisconnectWatch>>,
    state: State,
    keep_alive: bool,
    http10: bool,
    head_request: bool,
    request_id: &'a str,
    status: Option<StatusCode>,
    buf: Vec<u8>,
}

impl<'a, IO: ServerIo> ResponseWriter<'a, IO> {
    pub(super) fn new(
        io: &'a mut IO,
        watch: &'a mut Option<Rc<DisconnectWatch>>,
        request_id: &'a str,
        keep_alive: bool,
        http10: bool,
        head_request: bool,
    ) -> Self {
        Self {
            io,
            watch,
            state: State::Fresh,
            keep_alive,
            http10,
            head_request,
            request_id,
            status: None,
            buf: Vec::new(),
        }
    }

    pub fn head_sent(&self) -> bool {
        self.state != State::Fresh
    }

    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn broken(&self) -> bool {
        matches!(self.state, State::Broken)
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Answer with `Connection: close` and close the connection afterwards.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// A watcher that resolves when the client disconnects (see [`DisconnectWatch`]).
    pub fn disconnect_watch(&mut self) -> Option<Rc<DisconnectWatch>> {
        if self.watch.is_none() {
            *self.watch = DisconnectWatch::new(self.io.socket_fd()).ok().map(Rc::new);
        }
        self.watch.clone()
    }

    fn write_head(
        &mut self,
        status: StatusCode,
        content_type: &str,
        extra: &[(&str, &str)],
        length: Option<usize>,
    ) {
        self.status = Some(status);
        let b = &mut self.buf;
        b.clear();
        // One allocation for head and body (a whole body is appended right after): growing
        // from empty would reallocate and copy half a dozen times.
        let extra_len: usize = extra.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        b.reserve(
            160 + content_type.len() + self.request_id.len() + extra_len + length.unwrap_or(0),
        );
        let mut num = itoa::Buffer::new();
        b.extend_from_slice(b"HTTP/1.1 ");
        b.extend_from_slice(num.format(status.as_u16()).as_bytes());
        b.push(b' ');
        b.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        b.extend_from_slice(b"\r\ncontent-type: ");
        b.extend_from_slice(content_type.as_bytes());
        b.extend_from_slice(b"\r\nx-request-id: ");
        b.extend_from_slice(self.request_id.as_bytes());
        b.extend_from_slice(b"\r\n");
        for (k, v) in extra {
            if k.is_empty() {
                // No header has an empty name: such a field is whole header lines rendered
                // ahead of time (each ending in CR LF), written as they are.
                b.extend_from_slice(v.as_bytes());
            } else {
                push_header(b, k, v);
            }
        }
        match length {
            Some(n) => {
                b.extend_from_slice(b"content-length: ");
                b.extend_from_slice(num.format(n).as_bytes());
                b.extend_from_slice(b"\r\n");
            }
            None if !self.http10 => b.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            None => self.keep_alive = false,
        }
        if !self.keep_alive {
            b.extend_from_slice(b"connection: close\r\n");
        } else if self.http10 {
            b.extend_from_slice(b"connection: keep-alive\r\n");
        }
        b.extend_from_slice(b"\r\n");
    }

    async fn flush_buf(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let (res, mut buf) = self.io.write_all(buf).await;
        buf.clear();
        self.buf = buf;
        if let Err(e) = res {
            self.state = State::Broken;
            return Err(e);
        }
        Ok(())
    }

    fn ensure_fresh(&self) -> io::Result<()> {
        if self.state == State::Fresh {
            Ok(())
        } else {
            Err(io::Error::other("response already started"))
        }
    }

    /// Sends a complete response.
    pub async fn send(
        &mut self,
        status: StatusCode,
        content_type: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        self.send_pieces(status, content_type, extra, &[body]).await
    }

    /// Sends a complete response whose body is `pieces` one after the other (a body with one
    /// value spliced in goes out without being joined first).
    pub async fn send_pieces(
        &mut self,
        status: StatusCode,
        content_type: &str,
        extra: &[(&str, &str)],
        pieces: &[&[u8]],
    ) -> io::Result<()> {
        self.ensure_fresh()?;
        let len = pieces.iter().map(|p| p.len()).sum();
        self.write_head(status, content_type, extra, Some(len));
        if !self.head_request {
            for p in pieces {
                self.buf.extend_from_slice(p);
            }
        }
        self.flush_buf().await?;
        self.state = State::Done;
        Ok(())
    }

    pub async fn send_json(&mut self, status: StatusCode, body: &[u8]) -> io::Result<()> {
        self.send(status, "application/json", &[], body).await
    }

    pub async fn send_error(&mut self, err: &ApiError) -> io::Result<()> {
        let extra: &[(&str, &str)] = if err.status() == StatusCode::METHOD_NOT_ALLOWED {
            &[("allow", "GET, POST")]
        } else {
            &[]
        };
        self.send(err.status(), "application/json", extra, &err.to_json())
            .await
    }

    /// Sends the head of a streamed response.
    pub async fn start_stream(
        &mut self,
        status: StatusCode,
        content_type: &str,
        extra: &[(&str, &str)],
    ) -> io::Result<()> {
        self.start_stream_deferred(status, content_type, extra)?;
        self.flush_head().await
    }

    /// Starts a streamed response whose head leaves with the first piece of body (one write
    /// instead of two when the body is already there); [`ResponseWriter::flush_head`] sends it
    /// alone when the body is not.
    pub fn start_stream_deferred(
        &mut self,
        status: StatusCode,
        content_type: &str,
        extra: &[(&str, &str)],
    ) -> io::Result<()> {
        self.ensure_fresh()?;
        self.write_head(status, content_type, extra, None);
        self.state = State::Streaming {
            chunked: !self.http10,
            head_pending: true,
        };
        Ok(())
    }

    /// Writes a deferred head now (nothing to do if it has gone out).
    pub async fn flush_head(&mut self) -> io::Result<()> {
        if let State::Streaming {
            chunked,
            head_pending: true,
        } = self.state
        {
            self.flush_buf().await?;
            self.state = State::Streaming {
                chunked,
                head_pending: false,
            };
        }
        Ok(())
    }

    /// Sends one piece of a streamed body and flushes it.
    pub async fn send_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_piece(data, false).await
    }

    /// Sends the last piece of a streamed body and ends it, in one write.
    pub async fn send_last_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_piece(data, true).await
    }

    /// Ends a streamed body.
    pub async fn finish_stream(&mut self) -> io::Result<()> {
        self.send_piece(b"", true).await
    }

    async fn send_piece(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        let State::Streaming {
            chunked,
            head_pending,
        } = self.state
        else {
            return Err(io::Error::other("no stream started"));
        };
        if !head_pending {
            self.buf.clear();
        }
        // Room for a batch of events at once: grown from the head's size by doubling, the
        // buffer was reallocated (and copied) a few times in every stream.
        let need = data.len() + 32;
        if self.buf.capacity() - self.buf.len() < need {
            self.buf.reserve(need.max(STREAM_WRITE_BUF));
        }
        if !data.is_empty() {
            if chunked {
                push_chunk_size(&mut self.buf, data.len());
                self.buf.extend_from_slice(data);
                self.buf.extend_from_slice(b"\r\n");
            } else {
                self.buf.extend_from_slice(data);
            }
        }
        if last && chunked {
            self.buf.extend_from_slice(b"0\r\n\r\n");
        }
        if !self.buf.is_empty() {
            self.flush_buf().await?;
        }
        self.state = if last {
            State::Done
        } else {
            State::Streaming {
                chunked,
                head_pending: false,
            }
        };
        Ok(())
    }

    /// Marks a stream that could not be finished cleanly: the connection will be closed.
    pub fn abort(&mut self) {
        self.state = State::Broken;
        self.keep_alive = false;
    }

    pub(super) async fn raw_write(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.flush_buf().await
    }
}

/// Appends `name: value\r\n`.
/// Appends `<len in hex>\r\n` (a chunk's size line) without the formatting machinery.
fn push_chunk_size(buf: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
    buf.extend_from_slice(b"\r\n");
}

pub(crate) fn push_header(b: &mut Vec<u8>, name: &str, value: &str) {
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b": ");
    b.extend_from_slice(value.as_bytes());
    b.extend_from_slice(b"\r\n");
}
