//! Small helpers shared across modules.

use std::time::Duration;

/// An absolute http(s) URL split into what the upstream client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (may be empty).
    pub path: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        Self::from_uri(&uri, s)
    }

    /// From an already parsed URI (`shown` is the text used in error messages).
    pub fn from_uri(uri: &http::Uri, shown: &str) -> Result<Self, String> {
        let s = shown;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("URL {s:?} must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("URL {s:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }

    /// `Host` header value.
    pub fn authority(&self) -> String {
        let mut out = Vec::with_capacity(self.host.len() + 8);
        write_authority(&mut out, self.tls, &self.host, self.port);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Appends the `Host` header value for (scheme, host, port) to `out` without allocating: IPv6
/// hosts in brackets, the port only when it is not the scheme's default.
pub fn write_authority(out: &mut Vec<u8>, tls: bool, host: &str, port: u16) {
    let bracket = host.contains(':');
    if bracket {
        out.push(b'[');
    }
    out.extend_from_slice(host.as_bytes());
    if bracket {
        out.push(b']');
    }
    if port != if tls { 443 } else { 80 } {
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
    }
}

pub fn secs(f: f64) -> Duration {
    if f.is_finite() && f > 0.0 {
        Duration::from_secs_f64(f.min(1e9))
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = BaseUrl::parse("https://api.example.com/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "api.example.com", 443, "/v1")
        );
        assert_eq!(u.authority(), "api.example.com");
        let u = BaseUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.port, u.path.as_str(), u.authority().as_str()),
            (8080, "", "127.0.0.1:8080")
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("not a url").is_err());
    }
}

/// A shard-local one-shot event: tasks wait until it is set. No locks, no atomics.
#[derive(Default)]
pub struct LocalEvent {
    set: std::cell::Cell<bool>,
    waiters: std::cell::RefCell<Vec<std::task::Waker>>,
}

impl LocalEvent {
    pub fn set(&self) {
        self.set.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.get() {
                std::task::Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }
}
