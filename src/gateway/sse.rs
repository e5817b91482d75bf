//! Splits an SSE byte stream at event boundaries so that only whole events are forwarded (and
//! each forwarded batch can be inspected for usage), with a bound on a partial event's size.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// See [`SseSplitter::push`].
const KEEP_CAPACITY: usize = 64 * 1024;
/// The room `pending` is given when it grows: a batch of a few events.
const MIN_CAPACITY: usize = 4 * 1024;

pub struct SseSplitter {
    /// A piece kept as it came while nothing else is pending: when it ends with whole events
    /// (a read usually does) they are handed out without being copied.
    whole: Option<Bytes>,
    pending: BytesMut,
    max_event: usize,
    /// `pending[..scanned]` holds no event boundary: a large event that arrives in many reads
    /// is searched once, not once per read.
    scanned: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("stream event exceeds {0} bytes")]
pub struct EventTooLarge(pub usize);

impl SseSplitter {
    pub fn new(max_event: usize) -> Self {
        Self {
            whole: None,
            pending: BytesMut::new(),
            max_event,
            scanned: 0,
        }
    }

    /// Adds bytes; returns the complete events now available (possibly several, possibly none).
    pub fn push(&mut self, data: &[u8]) -> Result<Option<Bytes>, EventTooLarge> {
        self.append(data);
        self.take()
    }

    /// Bytes held that have not been handed out yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.whole.as_ref().map_or(0, Bytes::len)
    }

    /// Adds bytes without looking for event boundaries yet (see [`SseSplitter::take`]).
    pub fn append(&mut self, data: &[u8]) {
        self.spill();
        self.reserve(data.len());
        self.pending.extend_from_slice(data);
    }

    /// Room for `more` bytes, at least [`MIN_CAPACITY`]: grown from nothing by each small
    /// event, the buffer was reallocated (and, once events were split off it, allocated anew)
    /// on nearly every append; with room for a batch, the space the relayed events held is
    /// taken back in place once they are written.
    fn reserve(&mut self, more: usize) {
        if self.pending.capacity() - self.pending.len() < more {
            self.pending.reserve(more.max(MIN_CAPACITY));
        }
    }

    /// Like [`SseSplitter::append`], keeping a piece that comes when nothing is pending as it
    /// is (no copy unless it ends inside an event).
    pub fn append_bytes(&mut self, data: Bytes) {
        if self.whole.is_none() && self.pending.is_empty() {
            self.whole = Some(data);
        } else {
            self.append(&data);
        }
    }

    /// Moves a kept piece into `pending`.
    fn spill(&mut self) {
        if let Some(whole) = self.whole.take() {
            self.reserve(whole.len());
            self.pending.extend_from_slice(&whole);
        }
    }

    /// The complete events appended so far (possibly several, possibly none); a partial event
    /// over the bound is an error.
    pub fn take(&mut self) -> Result<Option<Bytes>, EventTooLarge> {
        // A kept piece is all there is: its whole events go out as a slice of it, and only an
        // unfinished event after them is copied.
        if let Some(mut whole) = self.whole.take() {
            match last_boundary(&whole) {
                Some(end) => {
                    let events = whole.split_to(end);
                    if !whole.is_empty() {
                        self.reserve(whole.len());
                        self.pending.extend_from_slice(&whole);
                        // No boundary in the rest: the last one was found.
                        self.scanned = self.pending.len();
                    }
                    return Ok(Some(events));
                }
                None => {
                    self.reserve(whole.len());
                    self.pending.extend_from_slice(&whole);
                }
            }
        }
        // A boundary ends in `\n\n` or `\n\r\n`: the two bytes before the new ones may start it.
        let from = self.scanned.saturating_sub(2);
        match last_boundary(&self.pending[from..]).map(|end| from + end) {
            Some(end) => {
                self.scanned = 0;
                let events = self.pending.split_to(end).freeze();
                // After a large event, start small again instead of keeping its capacity for
                // the rest of the stream.
                if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
                    self.pending = BytesMut::new();
                }
                Ok(Some(events))
            }
            None if self.pending.len() > self.max_event => Err(EventTooLarge(self.max_event)),
            None => {
                self.scanned = self.pending.len();
                Ok(None)
            }
        }
    }

    /// What is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Bytes> {
        self.spill();
        self.scanned = 0;
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }
}

/// The end of the last complete event (just after its blank line).
fn last_boundary(buf: &[u8]) -> Option<usize> {
    let mut end = buf.len();
    // Only a `\n` can end a blank line: jump from one to the previous.
    while let Some(i) = memchr::memrchr(b'\n', &buf[..end]) {
        let blank = i >= 1
            && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'));
        if blank {
            return Some(i + 1);
        }
        end = i;
    }
    None
}

/// The `data:` payload of each complete event in `events` (several `data:` lines of one event
/// joined with `\n`, as SSE defines), with the offset where that event starts; events without
/// data (comments, keep-alives) are skipped.
pub fn event_payloads(events: &[u8]) -> impl Iterator<Item = (usize, Cow<'_, [u8]>)> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if let Some((payload, next)) = plain_event(events, at) {
            let start = at;
            at = next;
            return Some((start, Cow::Borrowed(payload)));
        }
        next_event(events, &mut at)
    })
}

/// The event at `at` when it is what OpenAI-shaped servers send: one `data:` line and a blank
/// line, both ended by a bare `\n` — its payload and where the next event starts. `None` for
/// any other shape, which [`next_event`] reads (it searches twice an event, this once).
fn plain_event(events: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = events.get(at..)?.strip_prefix(b"data:")?;
    let line_end = memchr::memchr(b'\n', rest)?;
    if events.get(at + 5 + line_end + 1) != Some(&b'\n') {
        return None;
    }
    let line = &rest[..line_end];
    if line.last() == Some(&b'\r') {
        return None;
    }
    let data = line.strip_prefix(b" ").unwrap_or(line);
    Some((data, at + 5 + line_end + 2))
}

/// The next event with data from `at` on, any shape SSE allows; `at` moves past it.
fn next_event<'e>(events: &'e [u8], at: &mut usize) -> Option<(usize, Cow<'e, [u8]>)> {
    let mut payload: Option<Cow<'_, [u8]>> = None;
    let mut start = *at;
    while *at < events.len() {
        let line_end = memchr::memchr(b'\n', &events[*at..]).map_or(events.len(), |i| *at + i);
        let raw = &events[*at..line_end];
        let line_start = *at;
        *at = (line_end + 1).min(events.len());
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            if payload.is_some() {
                return payload.map(|p| (start, p));
            }
            start = *at;
            continue;
        }
        if payload.is_none() {
            start = start.min(line_start);
        }
        let Some(rest) = line.strip_prefix(b"data:") else {
            continue;
        };
        let data = rest.strip_prefix(b" ").unwrap_or(rest);
        payload = Some(match payload {
            None => Cow::Borrowed(data),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(data);
                Cow::Owned(joined)
            }
        });
    }
    payload.map(|p| (start, p))
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
    fn a_piece_of_whole_events_is_handed_out_without_a_copy() {
        let mut s = SseSplitter::new(1024);
        let piece = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        s.append_bytes(piece.clone());
        assert_eq!(s.pending_len(), piece.len());
        let out = s.take().unwrap().unwrap();
        assert_eq!(out.as_ptr(), piece.as_ptr(), "the piece itself");
        assert_eq!(out, piece);
        assert_eq!(s.pending_len(), 0);
        assert!(s.finish().is_none());
    }

    #[test]
    fn kept_pieces_split_and_join_as_copied_ones_do() {
        // Every way of cutting a stream into pieces gives the same events, whichever way the
        // pieces are added.
        let stream: &[u8] =
            b"data: {\"a\":1}\n\n: ping\r\n\r\ndata: {\"b\":\n data: 2}\n\ndata: [DONE]\n\ntail";
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let pieces = [&stream[..cut], &stream[cut..cut2], &stream[cut2..]];
                let mut kept = SseSplitter::new(1024);
                let mut copied = SseSplitter::new(1024);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for p in pieces {
                    kept.append_bytes(Bytes::copy_from_slice(p));
                    copied.append(p);
                    assert_eq!(kept.pending_len(), copied.pending_len());
                    if let Some(e) = kept.take().unwrap() {
                        a.extend_from_slice(&e);
                    }
                    if let Some(e) = copied.take().unwrap() {
                        b.extend_from_slice(&e);
                    }
                    assert_eq!(a, b, "cut at {cut}, {cut2}");
                }
                assert_eq!(kept.finish(), copied.finish());
                assert_eq!(a, &stream[..stream.len() - 4]);
            }
        }
    }

    #[test]
    fn a_kept_piece_without_a_boundary_counts_against_the_bound() {
        let mut s = SseSplitter::new(8);
        s.append_bytes(Bytes::from_static(b"data: 123456789"));
        assert!(s.take().is_err());
    }

    #[test]
    fn the_plain_event_shape_reads_as_the_general_reading_does() {
        // Events built from the lines and line ends that matter; every batch gives the same
        // payloads and starts with the shortcut as by the general reading alone.
        let parts: [&[u8]; 10] = [
            b"data: {\"a\":1}",
            b"data:x",
            b"data: ",
            b"event: e",
            b": c",
            b"\n",
            b"\r\n",
            b"\n\n",
            b"\r",
            b"data",
        ];
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50_000 {
            let mut batch = Vec::new();
            for _ in 0..rng.usize(0..12) {
                batch.extend_from_slice(parts[rng.usize(..parts.len())]);
            }
            let fast: Vec<(usize, Vec<u8>)> = event_payloads(&batch)
                .map(|(at, p)| (at, p.into_owned()))
                .collect();
            let mut at = 0;
            let general: Vec<(usize, Vec<u8>)> = std::iter::from_fn(|| next_event(&batch, &mut at))
                .map(|(at, p)| (at, p.into_owned()))
                .collect();
            assert_eq!(fast, general, "{:?}", String::from_utf8_lossy(&batch));
        }
    }

    #[test]
    fn payloads_join_multi_line_data_and_skip_comments() {
        let batch = b": keep-alive\n\ndata: {\"a\":\ndata: 1}\n\nevent: x\r\ndata: [DONE]\r\n\r\ndata: tail";
        let got: Vec<(usize, Vec<u8>)> = event_payloads(batch)
            .map(|(at, p)| (at, p.into_owned()))
            .collect();
        let starts: Vec<usize> = got.iter().map(|g| g.0).collect();
        let datas: Vec<&[u8]> = got.iter().map(|g| g.1.as_slice()).collect();
        assert_eq!(datas, vec![&b"{\"a\":\n1}"[..], b"[DONE]", b"tail"]);
        assert!(batch[starts[0]..].starts_with(b"data: {"));
        assert!(batch[starts[1]..].starts_with(b"event: x"));
        assert!(batch[starts[2]..].starts_with(b"data: tail"));
        assert!(batch[..starts[0]].starts_with(b": keep-alive"));
    }

    #[test]
    fn a_large_event_in_many_reads_is_found_once_complete() {
        let mut s = SseSplitter::new(1 << 20);
        s.push(b"data: {\"a\":\"").unwrap();
        for _ in 0..1000 {
            assert!(s.push(&[b'x'; 100]).unwrap().is_none());
        }
        // The boundary's first `\n` came with the previous read.
        assert!(s.push(b"\"}\n").unwrap().is_none());
        let ev = s.push(b"\ndata: next").unwrap().expect("the event");
        assert!(ev.ends_with(b"\"}\n\n"));
        assert_eq!(s.finish().as_deref(), Some(&b"data: next"[..]));
    }

    #[test]
    fn bounds_partial_events() {
        let mut s = SseSplitter::new(8);
        assert!(s.push(b"data: 0123456789").is_err());
    }
}
