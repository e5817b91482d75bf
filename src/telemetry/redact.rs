//! Secret redaction for text that leaves the process: log lines, and upstream error text
//! relayed to a client (an upstream that echoes the request head would otherwise hand the
//! deployment's key to whoever sent the request).
//!
//! Two layers: the exact values of every secret the config resolved (Azure keys are 32 hex
//! digits with no prefix, so no pattern finds them), then the shapes of keys and credentials
//! (`sk-…`, `AIza…`, bearer tokens, the values of credential headers).

use std::borrow::Cow;

/// What replaces an exact secret value.
pub const MASK: &[u8] = b"[REDACTED]";

/// Shortest secret value redacted by exact match: shorter ones would mask ordinary words.
pub const MIN_SECRET_LEN: usize = 4;

/// Redacts `text`; borrows it back unchanged when there is nothing to mask.
pub fn redact<'t, S: AsRef<str>>(text: &'t [u8], secrets: &[S]) -> Cow<'t, [u8]> {
    let mut out = Cow::Borrowed(text);
    for s in secrets {
        let s = s.as_ref().as_bytes();
        if s.len() < MIN_SECRET_LEN {
            continue;
        }
        if memchr::memmem::find(&out, s).is_some() {
            out = Cow::Owned(replace_all(&out, s, MASK));
        }
    }
    for (prefix, min) in PATTERNS {
        if memchr::memmem::find(&out, prefix).is_some() {
            mask_after(out.to_mut(), prefix, *min);
        }
    }
    if has_credential_header(&out) {
        mask_credential_headers(out.to_mut());
    }
    out
}

/// [`redact`] for text.
pub fn redact_str<'t, S: AsRef<str>>(text: &'t str, secrets: &[S]) -> Cow<'t, str> {
    match redact(text.as_bytes(), secrets) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Masks are ASCII and replace whole ASCII tokens or whole values, so the text stays
        // UTF-8; the lossy conversion only guards that invariant.
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// Key shapes: the characters after the prefix are masked when there are at least `min`.
const PATTERNS: &[(&[u8], usize)] = &[
    // OpenAI `sk-…`, `sk-proj-…`; Anthropic `sk-ant-…`; LiteLLM virtual keys `sk-…`.
    (b"sk-", 8),
    // Google API keys.
    (b"AIza", 16),
    (b"Bearer ", 1),
    (b"bearer ", 1),
    (b"BEARER ", 1),
    (b"Basic ", 8),
];

/// Header names whose values are credentials, as they appear in an echoed request head
/// (`x-api-key: …`) or in JSON (`"x-api-key": "…"`).
const CREDENTIAL_HEADERS: &[&[u8]] = &[
    b"authorization",
    b"x-api-key",
    b"api-key",
    b"x-goog-api-key",
    b"proxy-authorization",
    b"cookie",
    // An AWS session token (STS, container and instance credentials) beside a signature.
    b"x-amz-security-token",
];

fn has_credential_header(text: &[u8]) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| find_ci(text, h, 0).is_some())
}

/// Masks the value after `name:` / `"name":` for every credential header name, to the end of
/// the line (header form) or of the JSON string (JSON form).
fn mask_credential_headers(buf: &mut [u8]) {
    for name in CREDENTIAL_HEADERS {
        let mut from = 0;
        while let Some(at) = find_ci(buf, name, from) {
            let mut i = at + name.len();
            from = i;
            // A longer name that merely ends with this one (`x-api-key` vs `api-key`) is masked
            // by its own entry; here only a real boundary counts.
            if at > 0 && (buf[at - 1].is_ascii_alphanumeric() || buf[at - 1] == b'-') {
                continue;
            }
            if buf.get(i) == Some(&b'"') {
                i += 1;
            }
            while buf.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
                i += 1;
            }
            if buf.get(i) != Some(&b':') {
                continue;
            }
            i += 1;
            while buf.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
                i += 1;
            }
            let quoted = buf.get(i) == Some(&b'"');
            if quoted {
                i += 1;
            }
            let start = i;
            while let Some(&b) = buf.get(i) {
                let end = if quoted {
                    b == b'"' && buf[i - 1] != b'\\'
                } else {
                    b == b'\r' || b == b'\n'
                };
                if end {
                    break;
                }
                i += 1;
            }
            for b in &mut buf[start..i] {
                if !b.is_ascii_whitespace() {
                    *b = b'*';
                }
            }
            from = i;
        }
    }
}

/// Case-insensitive search for an ASCII needle from `from` on.
fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = needle.first()?;
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let off = memchr::memchr2(lo, up, &hay[i..=hay.len() - needle.len()])?;
        let at = i + off;
        if hay[at..at + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut out = Vec::with_capacity(hay.len());
    let mut last = 0;
    for at in finder.find_iter(hay) {
        if at < last {
            continue;
        }
        out.extend_from_slice(&hay[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&hay[last..]);
    out
}

/// Replaces the token characters following `prefix` with `*` when there are at least `min`.
fn mask_after(buf: &mut [u8], prefix: &[u8], min: usize) {
    let is_tok =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'/' | b'=');
    let mut i = 0;
    while let Some(pos) = memchr::memmem::find(&buf[i..], prefix) {
        let start = i + pos + prefix.len();
        let mut end = start;
        while end < buf.len() && is_tok(buf[end]) {
            end += 1;
        }
        if end - start >= min {
            for b in &mut buf[start..end] {
                *b = b'*';
            }
        }
        i = end.max(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str, secrets: &[&str]) -> String {
        redact_str(text, secrets).into_owned()
    }

    #[test]
    fn exact_values_and_key_shapes() {
        let out = r(
            "key=sk-abcdefghijklmnop auth=Bearer tok123 custom=hunter2-secret g=AIzaSyA1234567890abcdefgh",
            &["hunter2-secret"],
        );
        for gone in [
            "abcdefghijklmnop",
            "tok123",
            "hunter2-secret",
            "SyA1234567890abcdefgh",
        ] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
        assert!(out.contains("[REDACTED]"));
        // A key of 32 hex characters has no prefix: only its exact value finds it.
        let hex_key = "0123456789abcdef0123456789abcdef";
        assert_eq!(r(&format!("k={hex_key}"), &[hex_key]), "k=[REDACTED]");
    }

    #[test]
    fn echoed_request_heads_and_json_headers() {
        let head = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key: ant-secret-value\r\nAuthorization: Basic dXNlcjpwYXNz\r\napi-key: hexkey123\r\nX-Amz-Security-Token: IQoJb3JpZ2luX2VjEXAMPLE\r\n\r\n";
        let out = r(head, &[]);
        for gone in [
            "ant-secret-value",
            "dXNlcjpwYXNz",
            "hexkey123",
            "IQoJb3JpZ2luX2VjEXAMPLE",
        ] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
        assert!(out.contains("Host: x"));
        let json = r#"{"headers":{"x-api-key":"k-12345","authorization" : "Token abc"}}"#;
        let out = r(json, &[]);
        assert!(
            !out.contains("k-12345") && !out.contains("Token abc"),
            "{out}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{out}"
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        let text = "The model `gpt-4o` is overloaded; request id req_123, trace 4bf92f3577b34da6a3ce929d0e0e4736.";
        assert!(matches!(redact_str(text, &["hunter2"]), Cow::Borrowed(_)));
        // Short secrets would mask ordinary words: they are not matched.
        assert_eq!(r("a b c", &["a"]), "a b c");
    }
}
