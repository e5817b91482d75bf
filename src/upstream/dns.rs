//! Name resolution off the shards and without the C library: one control-plane thread
//! (`llmux-dns`, a current-thread tokio runtime) runs hickory-resolver, which reads
//! `/etc/hosts` and `/etc/resolv.conf` itself, so the static binary needs no NSS modules
//! (a static glibc cannot load them). Shards send it lookups and cache the answers for the
//! configured TTL; the other control-plane clients (PostgreSQL, Redis, the OTLP exporter) and
//! start-up (listener addresses) ask it too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{ResolverBuilder, TokioResolver};
use monoio::time::Instant;

type Answer = io::Result<Vec<SocketAddr>>;

struct Job {
    host: String,
    port: u16,
    reply: flume::Sender<Answer>,
}

/// The process's resolver thread: lookups from any thread or runtime.
#[derive(Clone)]
pub struct DnsService {
    tx: flume::Sender<Job>,
}

static SERVICE: OnceLock<DnsService> = OnceLock::new();

/// The process's resolver, started on first use.
pub fn service() -> io::Result<&'static DnsService> {
    if let Some(s) = SERVICE.get() {
        return Ok(s);
    }
    let started = DnsService::start()?;
    // Two first uses at once: one thread is kept, the other's channel closes and it ends.
    Ok(SERVICE.get_or_init(|| started))
}

/// Resolves `host` (a name or an IP literal) from any runtime.
pub async fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Some(addr) = literal(host, port) {
        return Ok(vec![addr]);
    }
    service()?.lookup(host, port).await
}

/// Resolves `host` on a thread that may block (start-up).
pub fn lookup_blocking(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Some(addr) = literal(host, port) {
        return Ok(vec![addr]);
    }
    let (reply, rx) = flume::bounded(1);
    service()?.send(host, port, reply)?;
    rx.recv().map_err(|_| stopped())?
}

fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

fn stopped() -> io::Error {
    io::Error::other("the resolver thread stopped")
}

impl DnsService {
    fn start() -> io::Result<Self> {
        let (tx, rx) = flume::unbounded::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("llmux-dns".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let resolver = system_resolver();
                    while let Ok(job) = rx.recv_async().await {
                        let resolver = resolver.clone();
                        tokio::spawn(async move {
                            let answer = resolve(&resolver, &job.host, job.port).await;
                            let _ = job.reply.send(answer);
                        });
                    }
                });
            })?;
        Ok(Self { tx })
    }

    fn send(&self, host: &str, port: u16, reply: flume::Sender<Answer>) -> io::Result<()> {
        self.tx
            .send(Job {
                host: host.to_owned(),
                port,
                reply,
            })
            .map_err(|_| stopped())
    }

    /// Resolves `host` (not an IP literal) from any runtime.
    pub async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let (reply, rx) = flume::bounded(1);
        self.send(host, port, reply)?;
        rx.recv_async().await.map_err(|_| stopped())?
    }

    /// A shard-local resolver with its own cache.
    pub fn shard_resolver(&self, ttl: Duration) -> Resolver {
        Resolver {
            service: self.clone(),
            cache: Rc::new(RefCell::new(HashMap::new())),
            ttl,
        }
    }
}

/// hickory-resolver on the system's configuration (`/etc/resolv.conf`), `/etc/hosts` always
/// read first. Without a readable resolv.conf only the hosts file answers (and says so).
fn system_resolver() -> TokioResolver {
    let with_options = |mut b: ResolverBuilder<TokioRuntimeProvider>| {
        b.options_mut().use_hosts_file = ResolveHosts::Always;
        // IPv4 first, IPv6 when a name has no IPv4 address: `localhost` is 127.0.0.1 (where
        // local services listen), as the C library answers from a hosts file without `::1`.
        b.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        b
    };
    let no_servers = || {
        with_options(TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![]),
            Default::default(),
        ))
    };
    let builder = match TokioResolver::builder_tokio() {
        Ok(b) => with_options(b),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "dns: /etc/resolv.conf is unreadable; only /etc/hosts and localhost resolve"
            );
            no_servers()
        }
    };
    builder.build().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "dns: the system's resolver configuration is refused; only /etc/hosts and localhost resolve");
        no_servers()
            .build()
            .unwrap_or_else(|_| unreachable!("a resolver without name servers builds"))
    })
}

async fn resolve(resolver: &TokioResolver, host: &str, port: u16) -> Answer {
    match resolver.lookup_ip(host).await {
        Ok(ips) => {
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} has no addresses"),
                ));
            }
            Ok(addrs)
        }
        // RFC 6761: `localhost` is the loopback interface, hosts file or not.
        Err(_) if is_localhost(host) => Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve {host}: {e}"),
        )),
    }
}

fn is_localhost(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// LLMux's resolver as hyper's (`HttpConnector::new_with_resolver`), for the control-plane
/// HTTP and gRPC clients (the OTLP exporter). The connector sets the port.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperResolve;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for HyperResolve {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move { Ok(lookup(&host, 0).await?.into_iter()) })
    }
}

/// An HTTP connector on LLMux's resolver that also takes `https` URIs (for a TLS wrapper).
pub fn hyper_connector() -> hyper_util::client::legacy::connect::HttpConnector<HyperResolve> {
    let mut c = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(HyperResolve);
    c.enforce_http(false);
    c.set_nodelay(true);
    c
}

type Cache = Rc<RefCell<HashMap<(String, u16), (Rc<[SocketAddr]>, Instant)>>>;

/// The shard side.
#[derive(Clone)]
pub struct Resolver {
    service: DnsService,
    cache: Cache,
    ttl: Duration,
}

impl Resolver {
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Rc<[SocketAddr]>> {
        if let Some(addr) = literal(host, port) {
            return Ok(Rc::from(vec![addr]));
        }
        let key = (host.to_owned(), port);
        if let Some((addrs, at)) = self.cache.borrow().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let answer = self.service.lookup(host, port).await?;
        let addrs: Rc<[SocketAddr]> = Rc::from(answer);
        let mut cache = self.cache.borrow_mut();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_lookup() {
        assert_eq!(
            lookup_blocking("127.0.0.1", 80).unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            lookup_blocking("[::1]", 80).unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
    }

    #[test]
    fn localhost_resolves_to_the_loopback() {
        let addrs = lookup_blocking("localhost", 4000).unwrap();
        assert_eq!(addrs[0], "127.0.0.1:4000".parse().unwrap());
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 4000));
    }

    #[test]
    fn an_unknown_name_is_a_clear_error() {
        let e = lookup_blocking("no-such-host.invalid", 80).unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    }
}
