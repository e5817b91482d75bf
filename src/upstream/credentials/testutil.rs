//! Test helpers: fake credential endpoints (plain HTTP/1.1 on 127.0.0.1, one thread each), an
//! environment that is not the process's, and a runtime to run fetches on.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::env::Env;

/// A request as a fake endpoint saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body's form fields, decoded.
    pub fn form(&self) -> HashMap<String, String> {
        self.body_text()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                (
                    crate::util::percent_decode(k, true),
                    crate::util::percent_decode(v, true),
                )
            })
            .collect()
    }
}

/// A fake's answer.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::status(200, body)
    }

    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

/// The most any wait for an event of a fake may take before the test fails (a bound on a hung
/// test, never a window a result has to fall into).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A fake endpoint: answers each request with `handler(hit number from 1, request)`, one
/// connection at a time, `Connection: close`.
pub struct Fake {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: flume::Receiver<Seen>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    pub fn start(handler: impl FnMut(usize, &Seen) -> Reply + Send + 'static) -> Fake {
        Self::spawn(Some(Box::new(handler)))
    }

    /// A fake that accepts connections and never answers.
    pub fn silent() -> Fake {
        Self::spawn(None)
    }

    #[allow(clippy::type_complexity)]
    fn spawn(mut handler: Option<Box<dyn FnMut(usize, &Seen) -> Reply + Send>>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake endpoint");
        let addr = listener.local_addr().expect("its address");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, seen) = flume::unbounded();
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let Some(handler) = handler.as_mut() else {
                    // Silent: keep the connection open, say nothing.
                    held.push(conn);
                    continue;
                };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                // Seen before answered: a test can wait for a request the handler holds.
                let _ = tx.send(req.clone());
                let reply = handler(n, &req);
                let head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    reply.status,
                    reply.body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&reply.body);
            }
        });
        Fake {
            addr,
            hits,
            seen,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `host:port`, for settings that take a host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The next request the fake answered, waiting for it (fails the test after [`PATIENCE`]).
    pub fn next_seen(&self) -> Seen {
        self.seen
            .recv_timeout(PATIENCE)
            .expect("the fake endpoint was not called")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    conn.set_read_timeout(Some(PATIENCE)).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf[..head_end]).ok()?;
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method: req.method?.to_owned(),
        target: req.path?.to_owned(),
        headers,
        body,
    })
}

/// A URL on which nothing listens.
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/")
}

/// Runs `f` on a current-thread tokio runtime, as the credential thread does.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

pub fn test_tls() -> rustls::ClientConfig {
    super::client::webpki_tls().expect("a TLS configuration")
}

/// An environment with exactly these variables (the process's is never read or changed).
pub fn env(vars: &[(&str, &str)]) -> Env {
    Env::from_maps(
        BTreeMap::new(),
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Deployment parameters.
pub fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A private directory for files a test writes (token files, key files).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "llmux-cred-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// An STS answer of `action` with these credentials.
pub fn sts_answer(action: &str, key_id: &str, secret: &str, token: &str, expires: &str) -> String {
    format!(
        r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{key_id}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expires}</Expiration>
    </Credentials>
  </{action}Result>
  <ResponseMetadata><RequestId>c6104cbe</RequestId></ResponseMetadata>
</{action}Response>"#
    )
}

/// The RFC 3339 time `secs` seconds from now.
pub fn rfc3339_after(secs: u64) -> String {
    let t = super::time::unix(std::time::SystemTime::now()) + secs;
    let (days, secs) = (t / 86_400, t % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The time of an `x-amz-date` value.
fn amz_date(v: &str) -> std::time::SystemTime {
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &v[0..4],
        &v[4..6],
        &v[6..8],
        &v[9..11],
        &v[11..13],
        &v[13..15]
    );
    super::time::parse_rfc3339(&iso).expect("an x-amz-date")
}

/// True when the request an STS fake received carries the signature `base` makes for it:
/// recomputed with the signer itself over the headers the request says it signed.
pub fn signature_checks(
    seen: &Seen,
    url: &str,
    base: &super::AwsCredentials,
    region: &str,
) -> bool {
    let (Some(authz), Some(date)) = (seen.header("authorization"), seen.header("x-amz-date"))
    else {
        return false;
    };
    let signed_names = authz
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("");
    let headers: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, _)| k != "host" && signed_names.split(';').any(|n| n == k))
        .cloned()
        .collect();
    let again = super::sign_aws(
        base,
        region,
        "sts",
        &seen.method,
        url,
        &headers,
        &seen.body,
        amz_date(date),
    )
    .expect("re-sign");
    again
        .iter()
        .any(|(k, v)| k == "authorization" && v == authz)
}
