//! The I/O types a server connection can run on, and client-disconnect detection.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;

/// A server-side connection: plain TCP, a Unix domain socket, or TLS over TCP.
pub trait ServerIo: AsyncReadRent + AsyncWriteRent + 'static {
    /// The socket underneath (for TLS, the TCP socket), used to watch for a client that goes away.
    fn socket_fd(&self) -> RawFd;
}

impl ServerIo for TcpStream {
    fn socket_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl ServerIo for UnixStream {
    fn socket_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

/// A TLS connection, remembering its TCP socket (monoio-rustls does not expose it).
pub struct TlsConn {
    fd: RawFd,
    inner: monoio_rustls::ServerTlsStream<TcpStream>,
}

impl TlsConn {
    pub async fn accept(
        acceptor: &monoio_rustls::TlsAcceptor,
        tcp: TcpStream,
    ) -> Result<Self, monoio_rustls::TlsError> {
        let fd = tcp.as_raw_fd();
        let inner = acceptor.accept(tcp).await?;
        Ok(Self { fd, inner })
    }
}

impl AsyncReadRent for TlsConn {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.inner.read(buf)
    }
    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.inner.readv(buf)
    }
}

impl AsyncWriteRent for TlsConn {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.inner.write(buf)
    }
    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.inner.writev(buf)
    }
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.inner.flush()
    }
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        self.inner.shutdown()
    }
}

impl ServerIo for TlsConn {
    fn socket_fd(&self) -> RawFd {
        self.fd
    }
}

/// Watches a client socket for EOF without consuming its bytes, so that a streamed response can
/// stop (and drop its upstream connection) the moment the client disconnects, even while the
/// upstream is silent. It owns a duplicate of the descriptor so that it can wait on readiness
/// while the connection itself is borrowed for writing.
pub struct DisconnectWatch {
    dup: TcpStream,
}

impl DisconnectWatch {
    pub fn new(fd: RawFd) -> io::Result<Self> {
        // SAFETY: `dup` returns a new descriptor that we own exclusively from here on.
        let dup_fd = unsafe { libc::dup(fd) };
        if dup_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let std_stream = unsafe { std::net::TcpStream::from_raw_fd(dup_fd) };
        Ok(Self {
            dup: TcpStream::from_std(std_stream)?,
        })
    }

    /// Resolves when the peer has closed (or reset) the connection. If the peer sends data
    /// instead (a pipelined request), it stops watching and never resolves.
    pub async fn closed(&self) {
        loop {
            if self.dup.readable(false).await.is_err() {
                return;
            }
            let mut probe = [0u8; 1];
            // SAFETY: a one-byte peek into a local buffer; MSG_DONTWAIT keeps it non-blocking.
            let n = unsafe {
                libc::recv(
                    self.dup.as_raw_fd(),
                    probe.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return,
                n if n > 0 => std::future::pending::<()>().await,
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::WouldBlock
                        && err.kind() != io::ErrorKind::Interrupted
                    {
                        return;
                    }
                }
            }
        }
    }
}
