//! Splits an SSE byte stream at event boundaries so that only whole events are forwarded (and
//! each forwarded batch can be inspected for usage), with a bound on a partial event's size.

use bytes::{Bytes, BytesMut};

pub struct SseSplitter {
    pending: BytesMut,
    max_event: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("stream event exceeds {0} bytes")]
pub struct EventTooLarge(pub usize);

impl SseSplitter {
    pub fn new(max_event: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            max_event,
        }
    }

    /// Adds bytes; returns the complete events now available (possibly several, possibly none).
    pub fn push(&mut self, data: &[u8]) -> Result<Option<Bytes>, EventTooLarge> {
        self.pending.extend_from_slice(data);
        match last_boundary(&self.pending) {
            Some(end) => Ok(Some(self.pending.split_to(end).freeze())),
            None if self.pending.len() > self.max_event => Err(EventTooLarge(self.max_event)),
            None => Ok(None),
        }
    }

    /// What is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }
}

/// The end of the last complete event (just after its blank line).
fn last_boundary(buf: &[u8]) -> Option<usize> {
    let mut i = buf.len();
    while i >= 2 {
        if buf[i - 1] == b'\n'
            && (buf[i - 2] == b'\n' || (i >= 3 && buf[i - 2] == b'\r' && buf[i - 3] == b'\n'))
        {
            return Some(i);
        }
        i -= 1;
    }
    None
}

/// Iterates the `data:` payloads of complete events.
pub fn data_lines(events: &[u8]) -> impl Iterator<Item = &[u8]> {
    events.split(|b| *b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let rest = line.strip_prefix(b"data:")?;
        Some(rest.strip_prefix(b" ").unwrap_or(rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_blank_lines_across_reads() {
        let mut s = SseSplitter::new(1024);
        assert!(s.push(b"data: {\"a\":1}\n").unwrap().is_none());
        let out = s.push(b"\ndata: {\"b\"").unwrap().unwrap();
        assert_eq!(&out[..], b"data: {\"a\":1}\n\n");
        let out = s.push(b":2}\r\n\r\ndata: [DONE]\n\n").unwrap().unwrap();
        let datas: Vec<&[u8]> = data_lines(&out).collect();
        assert_eq!(datas, vec![&b"{\"b\":2}"[..], &b"[DONE]"[..]]);
        assert!(s.finish().is_none());
    }

    #[test]
    fn bounds_partial_events() {
        let mut s = SseSplitter::new(8);
        assert!(s.push(b"data: 0123456789").is_err());
    }
}
