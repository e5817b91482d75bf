//! Request and response heads parsed by httparse straight from the read buffer.
//!
//! The head's bytes are frozen once and every field (method aside) is a span into them, so a
//! head costs one small allocation for the span list instead of a `HeaderMap` with an owned name
//! and value per header and a parsed `Uri`: this runs twice per proxied request.

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};

/// More header fields than this in one head is an error (431 for a client, a protocol error for
/// an upstream). Generous: API clients send about ten.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("{0}")]
    Malformed(&'static str),
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status"),
            httparse::Error::Token => HeadError::Malformed("invalid token"),
            httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        }
    }
}

type Span = (u32, u32);

/// The header fields of one head, in the order received. Names compare case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    raw: Bytes,
    fields: Vec<(Span, Span)>,
    /// A one-word filter of the field names ([`name_bit`] of each): most lookups are for
    /// fields a head does not have (`expect`, `transfer-encoding`, `x-request-id`, ...), and a
    /// name whose bit is clear is answered without a scan.
    name_bits: u64,
}

/// One of 64 bits for a field name, the same for every spelling of it (ASCII case folded):
/// from its length and three of its bytes, weighted so that no two of the names OpenAI's
/// SDKs and curl send and the gateway looks up share a bit (by length alone `accept` and
/// `expect`, `user-agent` and `connection`, `content-type` and `x-request-id` would; the
/// test `common_names_have_bits_of_their_own` holds the list).
fn name_bit(name: &[u8]) -> u64 {
    let fold = |i: usize| u32::from(name.get(i).map_or(0, |b| b | 0x20));
    let len = name.len();
    let mixed = len as u32 + fold(0) * 3 + fold(len.wrapping_sub(1)) * 6 + fold(len / 2) * 15;
    1 << (mixed % 64)
}

fn name_bits<'a>(names: impl Iterator<Item = &'a [u8]>) -> u64 {
    names.fold(0, |m, n| m | name_bit(n))
}

impl Headers {
    /// Whether some field's name may be `name` (false: none is).
    fn may_have(&self, name: &str) -> bool {
        self.name_bits & name_bit(name.as_bytes()) != 0
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        if !self.may_have(name) {
            return None;
        }
        self.fields
            .iter()
            .find(|&&(n, _)| self.slice(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, v)| self.slice(v))
    }

    /// The first value of `name`, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let fields = if self.may_have(name) {
            &self.fields[..]
        } else {
            &[]
        };
        fields
            .iter()
            .filter(move |&&(n, _)| self.slice(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, v)| self.slice(v))
    }

    /// All fields as (name, value).
    /// Every field as owned text, names in lowercase (what a provider file reads as
    /// `headers`); values that are not UTF-8 are read lossily.
    pub fn to_lowercase_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|&(n, v)| (self.slice(n), self.slice(v)))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Builds headers from pairs (tests and tools; the wire path parses them).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut raw = Vec::new();
        let mut fields = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let n = push_span(&mut raw, k.as_bytes());
            let v = push_span(&mut raw, v.as_bytes());
            fields.push((n, v));
        }
        let raw: Bytes = raw.into();
        let name_bits = name_bits(
            fields
                .iter()
                .map(|&(n, _)| &raw[n.0 as usize..n.1 as usize]),
        );
        Self {
            raw,
            fields,
            name_bits,
        }
    }

    /// A copy that owns its bytes: parsed heads share the connection's read buffer, and a
    /// head kept past its request would pin that buffer (the next read then allocates anew).
    pub fn detached(&self) -> Self {
        Self {
            raw: Bytes::copy_from_slice(&self.raw),
            fields: self.fields.clone(),
            name_bits: self.name_bits,
        }
    }

    fn slice(&self, (start, end): Span) -> &[u8] {
        &self.raw[start as usize..end as usize]
    }
}

fn push_span(raw: &mut Vec<u8>, s: &[u8]) -> Span {
    let start = raw.len() as u32;
    raw.extend_from_slice(s);
    (start, raw.len() as u32)
}

/// A request line and its header fields.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    /// The path and query of the target; `None` for the asterisk and authority forms.
    target: Option<Span>,
    /// Where the path ends inside `target` (a query, if any, follows the `?` there).
    path_end: u32,
    pub headers: Headers,
}

impl RequestHead {
    /// The path of the request target (`/` when the target has none).
    pub fn path(&self) -> &str {
        match self.target {
            // The target was checked to be ASCII when parsed.
            Some((start, _)) => {
                std::str::from_utf8(self.headers.slice((start, self.path_end))).unwrap_or("/")
            }
            None => "/",
        }
    }

    /// The head's size on the wire: request line, fields and the empty line.
    pub fn wire_len(&self) -> usize {
        self.headers.raw.len()
    }

    /// The query string without its `?`.
    pub fn query(&self) -> Option<&str> {
        let (_, end) = self.target?;
        if self.path_end >= end {
            return None;
        }
        std::str::from_utf8(self.headers.slice((self.path_end + 1, end))).ok()
    }
}

/// A status line and its header fields.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: Headers,
}

fn version(v: Option<u8>) -> Version {
    if v == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    }
}

/// Parses a request head from the front of `buf`. `Ok(None)`: not complete yet. On success the
/// head's bytes are split off `buf` (what follows, the body, stays).
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    let mut storage = header_storage();
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut storage)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let method = req
        .method
        .ok_or(HeadError::Malformed("missing method"))
        .and_then(|m| {
            Method::from_bytes(m.as_bytes()).map_err(|_| HeadError::Malformed("invalid method"))
        })?;
    let target = req.path.ok_or(HeadError::Malformed("missing target"))?;
    if target.is_empty() || !target.is_ascii() {
        return Err(HeadError::Malformed("invalid request target"));
    }
    // Origin form is the norm; an absolute-form target (`http://host/path`, as sent to proxies)
    // is served by its path.
    let path_from = if target.starts_with('/') {
        Some(0)
    } else {
        target.find("://").map(|scheme_end| {
            let after = scheme_end + 3;
            target[after..]
                .find('/')
                .map_or(target.len(), |i| after + i)
        })
    }
    .filter(|&i| i < target.len());
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let (target, path_end) = match path_from {
        Some(from) => {
            let t = &target.as_bytes()[from..];
            let start = offset(t);
            let end = start + t.len() as u32;
            let path_end = memchr::memchr(b'?', t).map_or(end, |i| start + i as u32);
            (Some((start, end)), path_end)
        }
        None => (None, 0),
    };
    let version = version(req.version);
    let fields = spans(req.headers, base);
    let name_bits = name_bits(req.headers.iter().map(|h| h.name.as_bytes()));
    // `split_to` keeps the memory where it is, so the spans stay valid in the frozen head.
    let raw = buf.split_to(n).freeze();
    Ok(Some(RequestHead {
        method,
        version,
        target,
        path_end,
        headers: Headers {
            raw,
            fields,
            name_bits,
        },
    }))
}

/// Parses a response head from the front of `buf`, as [`parse_request`] does.
pub fn parse_response(buf: &mut BytesMut) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage = header_storage();
    let mut resp = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    )? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Malformed("invalid status"))?;
    let version = version(resp.version);
    let fields = spans(resp.headers, buf.as_ptr() as usize);
    let name_bits = name_bits(resp.headers.iter().map(|h| h.name.as_bytes()));
    // Copied out rather than split off: the head lives as long as the response (a stream, for
    // minutes), and a split would pin the whole read buffer under it while the body's reads
    // need a buffer of their own. A few hundred bytes of copy keep one buffer per response.
    let raw = Bytes::copy_from_slice(&buf[..n]);
    bytes::Buf::advance(buf, n);
    Ok(Some(ResponseHead {
        status,
        version,
        headers: Headers {
            raw,
            fields,
            name_bits,
        },
    }))
}

/// Room for the parser's header slices, left uninitialised: initialising all of it
/// (3.2 KB) took longer than parsing a short head, twice a request.
fn header_storage<'b>() -> [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

fn spans(parsed: &[httparse::Header<'_>], base: usize) -> Vec<(Span, Span)> {
    let span = |s: &[u8]| -> Span {
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    parsed
        .iter()
        .map(|h| (span(h.name.as_bytes()), span(h.value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_have_bits_of_their_own() {
        let names = [
            "host",
            "content-type",
            "user-agent",
            "accept",
            "content-length",
            "connection",
            "expect",
            "x-request-id",
            "transfer-encoding",
            "traceparent",
            "tracestate",
            "authorization",
            "accept-encoding",
            "x-stainless-os",
            "x-stainless-lang",
            "x-stainless-arch",
            "x-stainless-runtime",
            "x-stainless-runtime-version",
            "x-stainless-package-version",
            "x-stainless-retry-count",
            "x-stainless-read-timeout",
            "x-stainless-async",
            "openai-organization",
            "api-key",
            "x-api-key",
            "anthropic-version",
            "x-goog-api-key",
            "cookie",
        ];
        let mut seen = std::collections::HashMap::new();
        for n in names {
            if let Some(other) = seen.insert(name_bit(n.as_bytes()), n) {
                panic!("{n} and {other} share a bit");
            }
        }
    }

    #[test]
    fn lookups_fold_case_and_find_every_field_past_the_filter() {
        // Every spelling of a name has its bit; names absent or sharing a bit are told apart
        // by the scan.
        let h = Headers::from_pairs(&[("X-Request-ID", "a"), ("Host", "h"), ("", "e")]);
        assert_eq!(h.get_str("x-request-id"), Some("a"));
        assert_eq!(h.get_str("X-REQUEST-ID"), Some("a"));
        assert_eq!(h.get_all("HOST").count(), 1);
        assert_eq!(h.get_str(""), Some("e"));
        assert_eq!(h.get("transfer-encoding"), None);
        assert_eq!(h.get_all("expect").count(), 0);
        for n in [
            "x-request-id",
            "host",
            "",
            "expect",
            "transfer-encoding",
            "a",
            "ab",
        ] {
            let filtered = h.get(n);
            let scanned = h
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
                .map(|(_, v)| v);
            assert_eq!(filtered, scanned, "{n}");
        }
        // Parsed heads fill the filter too.
        let head = req("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.get_str("expect"), Some("100-continue"));
        assert_eq!(head.headers.get("accept"), None);
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Type: a\r\n\r\n");
        let resp = parse_response(&mut buf).unwrap().unwrap();
        assert_eq!(resp.headers.get_str("content-type"), Some("a"));
        assert_eq!(resp.headers.detached().get_str("CONTENT-TYPE"), Some("a"));
    }

    fn req(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(s))
    }

    #[test]
    fn parses_a_request_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            "POST /v1/chat/completions?a=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Twice: 1\r\nx-twice: 2\r\n\r\n{}",
        );
        let h = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.path(), "/v1/chat/completions");
        assert_eq!(h.query(), Some("a=1&b=2"));
        assert_eq!(h.headers.get_str("content-length"), Some("2"));
        assert_eq!(h.headers.get("HOST"), Some(&b"x"[..]));
        let twice: Vec<_> = h.headers.get_all("x-twice").collect();
        assert_eq!(twice, vec![&b"1"[..], &b"2"[..]]);
        assert_eq!(h.headers.len(), 4);
        assert_eq!(h.wire_len(), 98);
        assert_eq!(&buf[..], b"{}");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(req("GET /health HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        assert!(req("GET /hea").unwrap().is_none());
    }

    #[test]
    fn target_forms() {
        let h = req("GET /x? HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (h.path(), h.query(), h.version),
            ("/x", Some(""), Version::HTTP_10)
        );
        let h = req("GET http://example.test/v1/models?x HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.path(), h.query()), ("/v1/models", Some("x")));
        let h = req("OPTIONS * HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.path(), h.query()), ("/", None));
        let h = req("GET http://example.test HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path(), "/");
    }

    #[test]
    fn rejects_malformed_heads() {
        assert!(req("GET / HTTP/1.1\r\nbad header\r\n\r\n").is_err());
        assert!(req("GET / HTTP/2.0\r\n\r\n").is_err());
        assert!(req("\x01\x02 / HTTP/1.1\r\n\r\n").is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn parses_a_response() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\r\n{\"e\":1}",
        );
        let h = parse_response(&mut buf).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.headers.get_str("Content-Type"), Some("application/json"));
        assert_eq!(&buf[..], b"{\"e\":1}");
        assert!(parse_response(&mut BytesMut::from("HTTP/1.1 200 OK\r\n"))
            .unwrap()
            .is_none());
        assert!(parse_response(&mut BytesMut::from("HTTP/1.1 abc OK\r\n\r\n")).is_err());
    }

    #[test]
    fn headers_from_pairs() {
        let h = Headers::from_pairs(&[("A", "1"), ("b", "2")]);
        assert_eq!(h.get_str("a"), Some("1"));
        assert_eq!(h.iter().count(), 2);
        assert!(h.get("c").is_none());
    }
}
