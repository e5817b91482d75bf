//! Listening sockets: one SO_REUSEPORT TCP listener per shard on the same address, and an
//! optional Unix domain socket shared by all shards.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds `count` listeners on `addr`. With port 0 the first picks the port and the others
/// join it.
pub fn bind_tcp_group(addr: &str, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut resolved = match addr.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "expected host:port"))?;
            let port = port
                .parse::<u16>()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad port"))?;
            crate::upstream::dns::lookup_blocking(host, port)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
                })?
        }
    };
    let first = bind_one(resolved)?;
    resolved = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(resolved)?);
    }
    Ok(all)
}

pub fn bind_uds(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        // A stale socket from a previous run: only remove it if nobody answers on it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "socket is in use"));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}
