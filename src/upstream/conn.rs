//! Establishing upstream connections: DNS, TCP (every resolved address in turn), an optional
//! proxy tunnel, TLS.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::pki_types::ServerName;

use super::dns::Resolver;
use super::proxy::Route;
use super::UpstreamError;
use crate::config::UpstreamSettings;
use crate::http1::body::read_more;

pub enum UpstreamConn {
    Plain(TcpStream),
    Tls {
        fd: RawFd,
        stream: Box<ClientTlsStream<TcpStream>>,
    },
}

impl UpstreamConn {
    fn fd(&self) -> RawFd {
        match self {
            UpstreamConn::Plain(s) => s.as_raw_fd(),
            UpstreamConn::Tls { fd, .. } => *fd,
        }
    }

    pub async fn read_more(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        match self {
            UpstreamConn::Plain(s) => read_more(s, buf, want).await,
            UpstreamConn::Tls { stream, .. } => read_more(&mut **stream, buf, want).await,
        }
    }

    /// Writes all of `data` (and flushes TLS); gives the buffer back for a possible retry.
    pub async fn write_all(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, data) = match self {
            UpstreamConn::Plain(s) => s.write_all(data).await,
            UpstreamConn::Tls { stream, .. } => {
                let (r, data) = stream.write_all(data).await;
                if r.is_ok() {
                    use monoio::io::AsyncWriteRent;
                    if let Err(e) = stream.flush().await {
                        return (Err(e), data);
                    }
                }
                (r, data)
            }
        };
        (res.map(|_| ()), data)
    }

    /// False if the server closed (or wrote to) an idle connection: a non-blocking peek.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        // SAFETY: one-byte peek into a local buffer; MSG_DONTWAIT keeps it non-blocking.
        let n = unsafe {
            libc::recv(
                self.fd(),
                probe.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

pub async fn connect(
    resolver: &Resolver,
    route: &Route,
    tls: bool,
    host: &str,
    port: u16,
    pinned: Option<&[std::net::SocketAddr]>,
    settings: &UpstreamSettings,
) -> Result<UpstreamConn, UpstreamError> {
    let (dial_host, dial_port) = match &route.proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (host, port),
    };
    let fail = |reason: String| UpstreamError::Connect {
        host: dial_host.to_owned(),
        port: dial_port,
        reason,
    };
    // Pinned addresses are the upstream's own; through a proxy, the proxy is dialled.
    let addrs: std::rc::Rc<[std::net::SocketAddr]> = match (pinned, &route.proxy) {
        (Some(a), None) => a.into(),
        _ => resolver
            .resolve(dial_host, dial_port)
            .await
            .map_err(|e| fail(e.to_string()))?,
    };
    let mut last_err = String::from("no addresses");
    let mut tcp = None;
    for addr in addrs.iter() {
        match TcpStream::connect_addr(*addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_err = format!("{addr}: {e}"),
        }
    }
    let mut tcp = tcp.ok_or_else(|| fail(last_err))?;
    let _ = tcp.set_nodelay(true);
    if route.proxy.is_some() && tls {
        tunnel(&mut tcp, host, port)
            .await
            .map_err(|e| fail(format!("proxy CONNECT failed: {e}")))?;
    }
    if !tls {
        return Ok(UpstreamConn::Plain(tcp));
    }
    let fd = tcp.as_raw_fd();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| fail(format!("invalid TLS server name: {e}")))?;
    let connector = TlsConnector::from(settings.tls.clone());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
    Ok(UpstreamConn::Tls {
        fd,
        stream: Box::new(stream),
    })
}

/// Opens a CONNECT tunnel through an HTTP proxy.
async fn tunnel(tcp: &mut TcpStream, host: &str, port: u16) -> io::Result<()> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let req = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").into_bytes();
    let (res, _) = tcp.write_all(req).await;
    res?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = &buf[..end];
            let status_ok = head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200");
            if !status_ok {
                let line =
                    String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or(b""));
                return Err(io::Error::other(line.into_owned()));
            }
            return Ok(());
        }
        if buf.len() > 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "proxy response too large",
            ));
        }
        if read_more(tcp, &mut buf, 1024).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "proxy closed the connection",
            ));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[allow(dead_code)]
fn _assert_read<T: AsyncReadRent>() {}
