//! DNS resolution off the shards: a small pool of control-plane threads does the blocking
//! `getaddrinfo`; each shard caches answers for the configured TTL.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use monoio::time::Instant;

type Answer = io::Result<Vec<SocketAddr>>;

struct Job {
    host: String,
    port: u16,
    reply: flume::Sender<Answer>,
}

/// The control-plane side: threads that answer lookups.
#[derive(Clone)]
pub struct ResolverPool {
    tx: flume::Sender<Job>,
}

impl ResolverPool {
    pub fn start(threads: usize) -> io::Result<Self> {
        let (tx, rx) = flume::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("llmux-dns-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let answer = (job.host.as_str(), job.port)
                            .to_socket_addrs()
                            .map(|it| it.collect::<Vec<_>>());
                        let _ = job.reply.send(answer);
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// A shard-local resolver with its own cache.
    pub fn shard_resolver(&self, ttl: Duration) -> Resolver {
        Resolver {
            tx: self.tx.clone(),
            cache: Rc::new(RefCell::new(HashMap::new())),
            ttl,
        }
    }
}

type Cache = Rc<RefCell<HashMap<(String, u16), (Rc<[SocketAddr]>, Instant)>>>;

/// The shard side.
#[derive(Clone)]
pub struct Resolver {
    tx: flume::Sender<Job>,
    cache: Cache,
    ttl: Duration,
}

impl Resolver {
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Rc<[SocketAddr]>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Rc::from(vec![SocketAddr::new(ip, port)]));
        }
        let key = (host.to_owned(), port);
        if let Some((addrs, at)) = self.cache.borrow().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send(Job {
                host: host.to_owned(),
                port,
                reply,
            })
            .map_err(|_| io::Error::other("resolver stopped"))?;
        let answer = rx
            .recv_async()
            .await
            .map_err(|_| io::Error::other("resolver stopped"))??;
        if answer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no addresses"),
            ));
        }
        let addrs: Rc<[SocketAddr]> = Rc::from(answer);
        let mut cache = self.cache.borrow_mut();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}
