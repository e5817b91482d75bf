//! W3C Trace Context (`traceparent`, `tracestate`): the client's trace is continued, each
//! upstream attempt gets a span id of its own in the `traceparent` it forwards, and the trace id
//! goes into the access log, so that a request can be followed from the client through the
//! gateway to the provider's logs. (Exporting spans is the tracing layer's work; this is the
//! context it will use.)
//!
//! Parsing follows the W3C recommendation (<https://www.w3.org/TR/trace-context/>): version
//! `00` exactly as specified; a higher version is read by its first four fields; version `ff`,
//! all-zero ids, upper-case hex or a wrong length make the header invalid, and a new trace
//! starts.

/// `tracestate` longer than this is not forwarded (the recommendation's 512 characters).
const MAX_TRACESTATE: usize = 512;

/// A request's trace: the trace id, the span it was called from (the client's), and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The caller's span id; `None` when the trace started here.
    pub parent_span_id: Option<[u8; 8]>,
    /// `01`: sampled.
    pub flags: u8,
}

impl TraceContext {
    /// The client's `traceparent` if it is valid, else a new trace (not sampled: nothing here
    /// records it yet).
    pub fn from_request(traceparent: Option<&[u8]>) -> Self {
        traceparent
            .and_then(parse_traceparent)
            .unwrap_or_else(Self::new_root)
    }

    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        loop {
            trace_id[..8].copy_from_slice(&fastrand::u64(..).to_be_bytes());
            trace_id[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
            if trace_id != [0; 16] {
                break;
            }
        }
        Self {
            trace_id,
            parent_span_id: None,
            flags: 0,
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` for an upstream call made in span `span_id` (built on the stack: it
    /// is made for every attempt).
    pub fn traceparent_for(&self, span_id: [u8; 8]) -> TraceParent {
        let mut b = [b'-'; TRACEPARENT_LEN];
        b[0] = b'0';
        b[1] = b'0';
        hex_into(&mut b[3..35], &self.trace_id);
        hex_into(&mut b[36..52], &span_id);
        hex_into(&mut b[53..55], &[self.flags]);
        TraceParent(b)
    }
}

/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// A `traceparent` header value.
pub struct TraceParent([u8; TRACEPARENT_LEN]);

impl TraceParent {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// A new span id (never all zeros).
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// `tracestate` as the client sent it, if it is forwardable (printable ASCII, bounded).
pub fn forwardable_tracestate(v: &[u8]) -> Option<&str> {
    if v.is_empty() || v.len() > MAX_TRACESTATE || !v.iter().all(|b| (0x20..0x7f).contains(b)) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

fn parse_traceparent(v: &[u8]) -> Option<TraceContext> {
    let v = std::str::from_utf8(v)
        .ok()?
        .trim_matches(|c| c == ' ' || c == '\t');
    let mut parts = v.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || !lower_hex(version) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; a later version may add more after a dash.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?.try_into().ok()?;
    let span_id: [u8; 8] = unhex(span)?.try_into().ok()?;
    let flags = *unhex(flags)?.first()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        parent_span_id: Some(span_id),
        // Only the sampled bit is defined; the rest is not propagated.
        flags: flags & 0x01,
    })
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !lower_hex(s) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued() {
        let t = TraceContext::from_request(Some(VALID.as_bytes()));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_span_id.map(|s| hex(&s)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(t.flags, 1);
        let out = t.traceparent_for([0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(
            out.as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000007-01"
        );
        let root = TraceContext::new_root();
        assert_eq!(
            root.traceparent_for([0xab; 8]).as_str(),
            format!("00-{}-abababababababab-00", root.trace_id_hex())
        );
        // A later version is read by its first four fields.
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert_eq!(
            TraceContext::from_request(Some(v.as_bytes())).trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            let t = TraceContext::from_request(Some(bad.as_bytes()));
            assert_eq!(t.parent_span_id, None, "{bad:?}");
            assert_ne!(t.trace_id, [0; 16]);
            assert_eq!(t.flags, 0);
        }
        assert_ne!(
            TraceContext::new_root().trace_id,
            TraceContext::new_root().trace_id
        );
        assert_ne!(new_span_id(), [0; 8]);
    }

    #[test]
    fn tracestate_is_forwarded_only_when_sane() {
        assert_eq!(
            forwardable_tracestate(b"congo=t61rcWkgMzE"),
            Some("congo=t61rcWkgMzE")
        );
        assert_eq!(forwardable_tracestate(b"a=1\r\nx-evil: 1"), None);
        assert_eq!(forwardable_tracestate(&[b'a'; 600]), None);
        assert_eq!(forwardable_tracestate(b""), None);
    }
}
