//! AWS event-stream framing (`application/vnd.amazon.eventstream`): the binary frames of
//! Bedrock's `ConverseStream` and `InvokeModelWithResponseStream`, Transcribe, Kinesis and
//! others. Each message is
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC-32 u32 | headers | payload | message CRC-32 u32
//! ```
//!
//! (big-endian; the prelude CRC covers the first 8 bytes, the message CRC everything before
//! it). A header is a 1-byte name length, the name, a 1-byte type and a typed value. The
//! decoder checks both CRCs and every length against the bytes present and the frame limit;
//! `:event-type` names the frame, and a frame whose `:message-type` is `exception` (or
//! `error`) is handed on marked as one, named by `:exception-type` (or `:error-code`), so the
//! provider's error rules classify it.

use super::framing::{Frame, FramingError};

/// Prelude (12 bytes) plus the message CRC (4).
const OVERHEAD: usize = 16;

#[derive(Debug)]
pub struct EventStreamDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl EventStreamDecoder {
    pub fn with_max_frame(max_frame: usize) -> Self {
        EventStreamDecoder {
            buf: Vec::new(),
            max_frame,
        }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Frame>) -> Result<(), FramingError> {
        self.buf.extend_from_slice(input);
        let mut at = 0;
        let result = loop {
            let rest = &self.buf[at..];
            if rest.len() < 12 {
                break Ok(());
            }
            let total = be32(&rest[0..4]) as usize;
            let headers_len = be32(&rest[4..8]) as usize;
            if crc32fast::hash(&rest[0..8]) != be32(&rest[8..12]) {
                break Err(FramingError::Malformed(
                    "event-stream prelude checksum mismatch",
                ));
            }
            if total > self.max_frame.saturating_add(OVERHEAD) {
                break Err(FramingError::FrameTooLarge {
                    limit: self.max_frame,
                });
            }
            if total < OVERHEAD || headers_len > total - OVERHEAD {
                break Err(FramingError::Malformed(
                    "event-stream lengths are inconsistent",
                ));
            }
            if rest.len() < total {
                break Ok(());
            }
            let msg = &rest[..total];
            if crc32fast::hash(&msg[..total - 4]) != be32(&msg[total - 4..]) {
                break Err(FramingError::Malformed(
                    "event-stream message checksum mismatch",
                ));
            }
            let headers = &msg[12..12 + headers_len];
            let payload = &msg[12 + headers_len..total - 4];
            match frame_of(headers, payload) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            at += total;
        };
        self.buf.drain(..at);
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
        result
    }

    /// End of input: bytes of an unfinished frame mean the stream was cut.
    pub fn finish(&mut self, _out: &mut Vec<Frame>) -> Result<(), FramingError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FramingError::Malformed("event stream ended inside a frame"))
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The frame a message makes; `None` for one without an event or exception type (AWS sends
/// none such today: skipped rather than guessed at).
fn frame_of(headers: &[u8], payload: &[u8]) -> Result<Option<Frame>, FramingError> {
    let mut message_type = None;
    let mut event_type = None;
    let mut exception_type = None;
    let mut error_code = None;
    for h in Headers(headers) {
        let (name, value) = h?;
        let HeaderValue::Str(v) = value else {
            continue;
        };
        match name {
            b":message-type" => message_type = Some(v),
            b":event-type" => event_type = Some(v),
            b":exception-type" => exception_type = Some(v),
            b":error-code" => error_code = Some(v),
            _ => {}
        }
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (name, exception) = match message_type {
        Some(b"exception") => (exception_type.or(event_type), true),
        Some(b"error") => (error_code, true),
        _ => (event_type, false),
    };
    Ok(name.map(|n| Frame {
        event: Some(text(n)),
        data: payload.to_vec(),
        exception,
    }))
}

enum HeaderValue<'a> {
    Str(&'a [u8]),
    Other,
}

/// The headers of one message, in order.
struct Headers<'a>(&'a [u8]);

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a [u8], HeaderValue<'a>), FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = read_header(self.0);
        match r {
            Ok((name, value, used)) => {
                self.0 = &self.0[used..];
                Some(Ok((name, value)))
            }
            Err(e) => {
                self.0 = &[];
                Some(Err(e))
            }
        }
    }
}

fn read_header(b: &[u8]) -> Result<(&[u8], HeaderValue<'_>, usize), FramingError> {
    const SHORT: FramingError = FramingError::Malformed("event-stream header runs past its frame");
    let name_len = *b.first().ok_or(SHORT)? as usize;
    let name = b.get(1..1 + name_len).ok_or(SHORT)?;
    let ty = *b.get(1 + name_len).ok_or(SHORT)?;
    let at = 2 + name_len;
    let fixed = |n: usize| -> Result<(HeaderValue<'_>, usize), FramingError> {
        b.get(at..at + n).ok_or(SHORT)?;
        Ok((HeaderValue::Other, at + n))
    };
    let (value, end) = match ty {
        0 | 1 => (HeaderValue::Other, at),
        2 => fixed(1)?,
        3 => fixed(2)?,
        4 => fixed(4)?,
        5 | 8 => fixed(8)?,
        9 => fixed(16)?,
        6 | 7 => {
            let len = b.get(at..at + 2).ok_or(SHORT)?;
            let len = u16::from_be_bytes([len[0], len[1]]) as usize;
            let v = b.get(at + 2..at + 2 + len).ok_or(SHORT)?;
            let value = if ty == 7 {
                HeaderValue::Str(v)
            } else {
                HeaderValue::Other
            };
            (value, at + 2 + len)
        }
        _ => {
            return Err(FramingError::Malformed(
                "event-stream header of an unknown type",
            ))
        }
    };
    Ok((name, value, end))
}

/// One message with string headers, as an AWS service writes it (for tests, the golden
/// harness and the mock upstream).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        h.push(name.len() as u8);
        h.extend_from_slice(name);
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value);
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An event message (`:message-type event`, JSON payload).
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An exception message (`:message-type exception`).
pub fn encode_exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<Frame>, FramingError> {
        let mut d = EventStreamDecoder::with_max_frame(1 << 20);
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            d.feed(piece, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    /// The `payload_no_headers` vector of AWS's event-stream test suite
    /// (awslabs/aws-c-event-stream, `test/` encoded positive cases; also in smithy-rs's
    /// `aws-smithy-eventstream` tests): real CRCs, so the decoder is not only checked against
    /// its own encoder.
    #[test]
    fn a_known_message_decodes() {
        // total 0x1d = 29: 16 overhead + 0 headers + 13 payload ("{'foo':'bar'}").
        let bytes = [
            0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27,
            0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39,
            0x36,
        ];
        // No :event-type: decoded and checked, but not a frame.
        assert_eq!(decode_all(&bytes, 29), Ok(vec![]));
        let mut broken = bytes;
        broken[20] ^= 1;
        assert!(decode_all(&broken, 29).is_err());
    }

    #[test]
    fn events_and_exceptions_round_trip_at_any_split() {
        let mut bytes = encode_event("contentBlockDelta", br#"{"delta":{"text":"Hi"}}"#);
        bytes.extend(encode_event("messageStop", br#"{"stopReason":"end_turn"}"#));
        bytes.extend(encode_exception(
            "throttlingException",
            br#"{"message":"slow"}"#,
        ));
        for step in [1, 3, 7, 64, bytes.len()] {
            let frames = decode_all(&bytes, step).expect("decoded");
            assert_eq!(frames.len(), 3);
            assert_eq!(frames[0].event.as_deref(), Some("contentBlockDelta"));
            assert_eq!(frames[0].data, br#"{"delta":{"text":"Hi"}}"#);
            assert!(!frames[0].exception);
            assert_eq!(frames[2].event.as_deref(), Some("throttlingException"));
            assert!(frames[2].exception);
        }
    }

    #[test]
    fn corrupt_truncated_and_oversized_frames_are_errors() {
        let good = encode_event("e", b"{}");
        let mut bad_prelude = good.clone();
        bad_prelude[9] ^= 0xff;
        assert!(decode_all(&bad_prelude, 4).is_err());
        let mut bad_body = good.clone();
        let n = bad_body.len();
        bad_body[n - 6] ^= 0x01;
        assert!(decode_all(&bad_body, 4).is_err());
        assert!(decode_all(&good[..good.len() - 1], 4).is_err());
        let mut d = EventStreamDecoder::with_max_frame(8);
        let mut out = Vec::new();
        let big = encode_event("e", &[b' '; 64]);
        assert!(matches!(
            d.feed(&big, &mut out),
            Err(FramingError::FrameTooLarge { .. })
        ));
        // A header claiming more bytes than its frame holds.
        let mut h = vec![5u8];
        h.extend_from_slice(b":abcd");
        h.push(7);
        h.extend_from_slice(&500u16.to_be_bytes());
        assert!(frame_of(&h, b"").is_err());
    }

    #[test]
    fn every_header_type_is_skipped_safely() {
        let mut h = Vec::new();
        for (ty, len) in [
            (0u8, 0usize),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 4),
            (5, 8),
            (8, 8),
            (9, 16),
        ] {
            h.push(1);
            h.push(b'x');
            h.push(ty);
            h.extend(std::iter::repeat_n(0u8, len));
        }
        h.push(1);
        h.push(b'b');
        h.push(6);
        h.extend_from_slice(&2u16.to_be_bytes());
        h.extend_from_slice(b"\x00\x01");
        h.push(11);
        h.extend_from_slice(b":event-type");
        h.push(7);
        h.extend_from_slice(&3u16.to_be_bytes());
        h.extend_from_slice(b"abc");
        let f = frame_of(&h, b"{}").expect("read").expect("a frame");
        assert_eq!(f.event.as_deref(), Some("abc"));
        h.push(1);
        h.push(b'z');
        h.push(42);
        assert!(frame_of(&h, b"{}").is_err());
    }
}
