//! Small helpers shared across modules.

use std::time::Duration;

pub mod clock;
pub mod timer;

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

/// An upstream request URL as a provider file built it, checked and split once without copying
/// its parts: what the upstream client needs (scheme, host, port, and the request target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    url: String,
    tls: bool,
    host: std::ops::Range<usize>,
    port: u16,
    target_from: usize,
}

impl UpstreamUrl {
    /// Accepts `http(s)://host[:port][/path][?query]`; the host is a name, an IPv4 address or a
    /// bracketed IPv6 address. The target must be visible ASCII (it goes into the request line
    /// as is, so nothing that could split it), and has no fragment.
    pub fn parse(mut url: String) -> Result<Self, String> {
        let (tls, rest_from) = if starts_with_ci(&url, "https://") {
            (true, 8)
        } else if starts_with_ci(&url, "http://") {
            (false, 7)
        } else {
            return Err(format!("URL {url:?} must start with http:// or https://"));
        };
        let rest = &url[rest_from..];
        // Byte by byte: a `char` set search costs more than these few bytes (every request).
        let auth_len = rest
            .bytes()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let authority = &rest[..auth_len];
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6
                .find(']')
                .ok_or_else(|| format!("URL {url:?} has an unclosed IPv6 address"))?;
            let host = &v6[..close];
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(format!("URL {url:?} has an invalid IPv6 address"));
            }
            (rest_from + 1..rest_from + 1 + close, &v6[close + 1..])
        } else {
            let end = authority.rfind(':').unwrap_or(authority.len());
            let host = &authority[..end];
            let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
            if host.is_empty() || !host.bytes().all(valid) {
                return Err(format!("URL {url:?} has an invalid host"));
            }
            (rest_from..rest_from + end, &authority[end..])
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) if p.len() <= 5 => parse_decimal(p.as_bytes())
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("URL {url:?} has an invalid port"))?,
            _ => return Err(format!("URL {url:?} has an invalid port")),
        };
        let target_from = rest_from + auth_len;
        let target = &url[target_from..];
        if !target.bytes().all(|b| b.is_ascii_graphic()) || target.contains('#') {
            return Err(format!(
                "URL {url:?} has characters a request target cannot carry"
            ));
        }
        if !target.starts_with('/') {
            // `http://host` or `http://host?q`: the request target needs its `/`.
            url.insert(target_from, '/');
        }
        Ok(Self {
            url,
            tls,
            host,
            port,
            target_from,
        })
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.url[self.host.clone()]
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path and query: the request target, starting with `/`.
    pub fn target(&self) -> &str {
        &self.url[self.target_from..]
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Longest piece of client- or upstream-supplied text echoed into an error message or a log
/// line (a 100 KB model name must not come back whole).
pub const MAX_ECHO_CHARS: usize = 200;

/// `s` cut to [`MAX_ECHO_CHARS`] characters, with `…` where it was cut.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    clip_to(s, MAX_ECHO_CHARS)
}

/// `s` cut to `max` characters (not bytes: never inside a UTF-8 sequence), with `…` where it
/// was cut.
pub fn clip_to(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        // No more characters than bytes: nothing to count.
        return std::borrow::Cow::Borrowed(s);
    }
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// Returns this thread's freed memory to the OS now. mimalloc gives freed pages back after a
/// delay, and only when the thread allocates or frees again: a shard that goes quiet after a
/// burst of large buffers would keep them resident. Called after a request that held large
/// buffers, not per request (it walks the thread's heap).
pub fn release_memory() {
    // SAFETY: `mi_collect` only touches the calling thread's heap and mimalloc's own state.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// `make()`'s value on the heap, built where it will live. `Box::pin(make())` builds it on the
/// stack and copies it over: for a future that is its whole size (a request handler's is
/// 8 KiB, an upstream exchange's 2.4 KiB), every time.
pub fn boxed_in_place<T>(make: impl FnOnce() -> T) -> std::pin::Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// An unsigned decimal of ASCII digits only (no sign, no spaces), `None` when it is empty, holds
/// anything else or does not fit. For lengths and counts read off the wire, where going through
/// `str::parse` meant a UTF-8 check first.
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

pub fn secs(f: f64) -> Duration {
    if f.is_finite() && f > 0.0 {
        Duration::from_secs_f64(f.min(1e9))
    } else {
        Duration::ZERO
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`), for the timestamps configs, databases and credential endpoints write.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"307"), Some(307));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1.0",
            b"1e3",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

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

    #[test]
    fn clips_long_text_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(500);
        let c = clip(&long);
        assert_eq!(c.chars().count(), MAX_ECHO_CHARS + 1);
        assert!(c.ends_with('…'));
        assert_eq!(clip_to("abcdef", 3), "abc…");
        assert_eq!(clip_to("abc", 3), "abc");
    }

    #[test]
    fn splits_upstream_urls() {
        let u =
            UpstreamUrl::parse("https://api.example.com/v1/chat/completions?x=1".into()).unwrap();
        assert_eq!(
            (u.tls(), u.host(), u.port(), u.target()),
            (true, "api.example.com", 443, "/v1/chat/completions?x=1")
        );
        let u = UpstreamUrl::parse("HTTP://127.0.0.1:8080".into()).unwrap();
        assert_eq!(
            (u.tls(), u.host(), u.port(), u.target()),
            (false, "127.0.0.1", 8080, "/")
        );
        let u = UpstreamUrl::parse("http://[::1]:4010?alt=sse".into()).unwrap();
        assert_eq!((u.host(), u.port(), u.target()), ("::1", 4010, "/?alt=sse"));
        let u = UpstreamUrl::parse("https://[fe80::1]/v1".into()).unwrap();
        assert_eq!((u.host(), u.port()), ("fe80::1", 443));
        for bad in [
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:80x/",
            "http://host:/",
            "http://host:+80/",
            "http://host:-1/",
            "http://user@host/",
            "http://[::1/",
            "http://host/a b",
            "http://host/a\r\nx: y",
            "http://host/a#frag",
        ] {
            assert!(UpstreamUrl::parse(bad.into()).is_err(), "{bad}");
        }
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

/// How far the process's wall clock is moved from the system's, in ms: 0 except in tests,
/// which move it through `POST /debug/clock` (debug routes only) so that rate windows, minute
/// counters and budget resets can be tested without waiting for real minutes to pass.
static CLOCK_SKEW_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The current clock skew (see [`set_clock_skew_ms`]).
pub fn clock_skew_ms() -> i64 {
    CLOCK_SKEW_MS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Moves the wall clock every shard and the control plane read (tests only).
pub fn set_clock_skew_ms(skew: i64) {
    CLOCK_SKEW_MS.store(skew, std::sync::atomic::Ordering::Relaxed);
}

/// Milliseconds since the Unix epoch, without the test skew (0 if the clock is before 1970).
pub fn system_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch: the wall clock of rate windows, budgets and spend
/// timestamps (the system's, plus the test skew).
pub fn unix_ms() -> u64 {
    system_unix_ms().saturating_add_signed(clock_skew_ms())
}

/// Lets a repeated warning through at most once per `every` (a dead database or collector
/// must not fill the log).
#[derive(Debug)]
pub struct LogEvery {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
}

impl LogEvery {
    pub const fn new(every: std::time::Duration) -> Self {
        Self { every, last: None }
    }

    /// True when a line may be written now (and counts it as written).
    pub fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// A shard-local buffer's hand-off task: waits (on no timer) until something is buffered, lets
/// more gather for `after`, hands it over, and again. `signal` is woken by the buffer's first
/// push ([`FlushSignal::wake`]).
pub async fn flush_periodically(
    signal: &FlushSignal,
    is_empty: impl Fn() -> bool,
    after: std::time::Duration,
    flush: impl Fn(),
) {
    loop {
        std::future::poll_fn(|cx| {
            if is_empty() {
                signal.0.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        monoio::time::sleep(after).await;
        flush();
    }
}

/// Wakes a [`flush_periodically`] task waiting for a buffer's first entry.
#[derive(Default)]
pub struct FlushSignal(std::cell::Cell<Option<std::task::Waker>>);

impl FlushSignal {
    pub fn wake(&self) {
        if let Some(w) = self.0.take() {
            w.wake();
        }
    }
}

/// `%XX` sequences decoded (`+` stays a plus unless `plus_is_space`); invalid ones are kept
/// as they are; the result is lossy UTF-8.
pub fn percent_decode(v: &str, plus_is_space: bool) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
