//! Incremental stream decoders. Each is fed byte slices exactly as they arrive
//! from the socket (events may be split anywhere) and yields whole frames.
//! Pure: no I/O, no clock.

/// How an upstream stream is framed; named by `framing` in a provider file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events, with or without `event:` lines.
    Sse,
    /// Newline-delimited JSON.
    Ndjson,
    /// One JSON array whose elements arrive over time (`[{...},\r\n{...}]`).
    JsonArray,
    /// AWS event-stream binary frames (see [`super::eventstream`]).
    AwsEventStream,
}

impl Framing {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sse" => Some(Framing::Sse),
            "ndjson" => Some(Framing::Ndjson),
            "json_array" => Some(Framing::JsonArray),
            "aws_eventstream" => Some(Framing::AwsEventStream),
            _ => None,
        }
    }
}

/// One decoded unit: the SSE event name (if any) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub event: Option<String>,
    pub data: Vec<u8>,
    /// The framing marks the frame as the upstream's error (an event-stream exception):
    /// classified by the provider's error rules, never mapped as an event.
    pub exception: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("stream frame exceeds {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("malformed JSON array stream: {0}")]
    Malformed(&'static str),
}

/// Default cap on one frame (`llmux.upstream.max_stream_event_bytes`); a bigger one is a
/// broken or hostile upstream.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// A buffer that grew past this for one large frame is given back once that frame is out, so
/// a burst of huge events does not stay resident for the rest of a long stream.
const KEEP_CAPACITY: usize = 64 * 1024;

fn shrink(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}

/// A decoder for any of the framings.
#[derive(Debug)]
pub enum FrameDecoder {
    Sse(SseDecoder),
    Ndjson(NdjsonDecoder),
    JsonArray(JsonArrayDecoder),
    AwsEventStream(super::eventstream::EventStreamDecoder),
}

impl FrameDecoder {
    pub fn new(framing: Framing) -> Self {
        Self::with_max_frame(framing, DEFAULT_MAX_FRAME)
    }

    /// A decoder that refuses frames larger than `max_frame` bytes.
    pub fn with_max_frame(framing: Framing, max_frame: usize) -> Self {
        match framing {
            Framing::Sse => FrameDecoder::Sse(SseDecoder::with_max_frame(max_frame)),
            Framing::Ndjson => FrameDecoder::Ndjson(NdjsonDecoder {
                max_frame,
                ..NdjsonDecoder::default()
            }),
            Framing::JsonArray => FrameDecoder::JsonArray(JsonArrayDecoder {
                max_frame,
                ..JsonArrayDecoder::default()
            }),
            Framing::AwsEventStream => FrameDecoder::AwsEventStream(
                super::eventstream::EventStreamDecoder::with_max_frame(max_frame),
            ),
        }
    }

    /// Feed bytes; complete frames are appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Frame>) -> Result<(), FramingError> {
        match self {
            FrameDecoder::Sse(d) => d.feed(input, out),
            FrameDecoder::Ndjson(d) => d.feed(input, out),
            FrameDecoder::JsonArray(d) => d.feed(input, out),
            FrameDecoder::AwsEventStream(d) => d.feed(input, out),
        }
    }

    /// End of input: flush a final frame that had no terminator.
    pub fn finish(&mut self, out: &mut Vec<Frame>) -> Result<(), FramingError> {
        match self {
            FrameDecoder::Sse(d) => {
                d.finish(out);
                Ok(())
            }
            FrameDecoder::Ndjson(d) => d.finish(out),
            FrameDecoder::JsonArray(d) => d.finish(out),
            FrameDecoder::AwsEventStream(d) => d.finish(out),
        }
    }
}

/// Server-sent events (WHATWG rules): lines end in `\n`, `\r\n` or `\r`; a blank
/// line dispatches; `:` lines are comments (keep-alives); several `data:` lines
/// join with `\n`; `id:`/`retry:` are ignored.
#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in `\r`: a leading `\n` now belongs to it.
    after_cr: bool,
    max_frame: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder {
            line: Vec::new(),
            event: None,
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl SseDecoder {
    pub fn with_max_frame(max_frame: usize) -> Self {
        SseDecoder {
            max_frame,
            ..Self::default()
        }
    }

    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Frame>) -> Result<(), FramingError> {
        // An empty read says nothing about the byte after the `\r`: keep waiting for it.
        if self.after_cr && !input.is_empty() {
            if let [b'\n', rest @ ..] = input {
                input = rest;
            }
            self.after_cr = false;
        }
        while let Some(pos) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = input.split_at(pos);
            self.line.extend_from_slice(head);
            let mut rest = &tail[1..];
            if tail[0] == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
            self.line = line;
            self.line.clear();
            shrink(&mut self.line);
            input = rest;
        }
        self.line.extend_from_slice(input);
        if self.line.len() + self.data.len() > self.max_frame {
            return Err(FramingError::FrameTooLarge {
                limit: self.max_frame,
            });
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Frame>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Frame {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                    exception: false,
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    /// At EOF a pending event without its blank line is still delivered: some
    /// upstreams close right after the last `data:` line.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.line_done(&[], out);
    }
}

/// Newline-delimited JSON: one value per line; blank lines skipped.
#[derive(Debug)]
pub struct NdjsonDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl Default for NdjsonDecoder {
    fn default() -> Self {
        NdjsonDecoder {
            buf: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl NdjsonDecoder {
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Frame>) -> Result<(), FramingError> {
        while let Some(pos) = input.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&input[..pos]);
            self.flush(out);
            input = &input[pos + 1..];
        }
        self.buf.extend_from_slice(input);
        if self.buf.len() > self.max_frame {
            return Err(FramingError::FrameTooLarge {
                limit: self.max_frame,
            });
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<Frame>) {
        let trimmed = self.buf.trim_ascii();
        if !trimmed.is_empty() {
            out.push(Frame {
                event: None,
                data: trimmed.to_vec(),
                exception: false,
            });
        }
        self.buf.clear();
        shrink(&mut self.buf);
    }

    pub fn finish(&mut self, out: &mut Vec<Frame>) -> Result<(), FramingError> {
        self.flush(out);
        Ok(())
    }
}

/// A JSON array streamed element by element. Only the nesting depth and string
/// state are tracked; each top-level element is handed out as a frame.
#[derive(Debug)]
pub struct JsonArrayDecoder {
    buf: Vec<u8>,
    started: bool,
    ended: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_frame: usize,
}

impl Default for JsonArrayDecoder {
    fn default() -> Self {
        JsonArrayDecoder {
            buf: Vec::new(),
            started: false,
            ended: false,
            depth: 0,
            in_string: false,
            escaped: false,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl JsonArrayDecoder {
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Frame>) -> Result<(), FramingError> {
        for &b in input {
            if self.depth == 0 && !self.in_string {
                // Between elements: only structure and whitespace are allowed.
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'[' if !self.started => {
                        self.started = true;
                        continue;
                    }
                    b',' if self.started && !self.ended => continue,
                    b']' if self.started && !self.ended => {
                        self.ended = true;
                        continue;
                    }
                    b'{' | b'[' if self.started && !self.ended => {}
                    _ => return Err(FramingError::Malformed("unexpected byte between elements")),
                }
            }
            self.buf.push(b);
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        out.push(Frame {
                            event: None,
                            data: std::mem::take(&mut self.buf),
                            exception: false,
                        });
                    }
                }
                _ => {}
            }
            if self.buf.len() > self.max_frame {
                return Err(FramingError::FrameTooLarge {
                    limit: self.max_frame,
                });
            }
        }
        Ok(())
    }

    pub fn finish(&mut self, _out: &mut Vec<Frame>) -> Result<(), FramingError> {
        if self.depth != 0 || self.in_string {
            return Err(FramingError::Malformed("stream ended inside an element"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, input: &[u8], step: usize) -> Vec<(Option<String>, String)> {
        let mut d = FrameDecoder::new(framing);
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            d.feed(chunk, &mut out).expect("feed");
        }
        d.finish(&mut out).expect("finish");
        out.into_iter()
            .map(|f| (f.event, String::from_utf8_lossy(&f.data).into_owned()))
            .collect()
    }

    #[test]
    fn sse_with_events_comments_and_any_split() {
        let input = b": keep-alive\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\n: OPENROUTER PROCESSING\n\nevent: ping\ndata: {}\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let want = vec![
            (Some("message_start".to_string()), "{\"a\":1}".to_string()),
            (Some("ping".to_string()), "{}".to_string()),
            (None, "line1\nline2".to_string()),
            (None, "[DONE]".to_string()),
        ];
        for step in 1..input.len() {
            assert_eq!(run(Framing::Sse, input, step), want, "step {step}");
        }
    }

    #[test]
    fn sse_bare_cr_and_missing_final_blank_line() {
        assert_eq!(
            run(Framing::Sse, b"data: a\r\rdata:b", 1),
            vec![(None, "a".to_string()), (None, "b".to_string())]
        );
    }

    #[test]
    fn sse_crlf_split_by_an_empty_read() {
        // Found by fuzz/fuzz_targets/framing.rs: an empty feed between `\r` and `\n`
        // made the `\n` a blank line of its own.
        let mut d = FrameDecoder::new(Framing::Sse);
        let mut out = Vec::new();
        for part in [&b"event: x\r"[..], b"", b"\ndata: a\r\n\r\n"] {
            d.feed(part, &mut out).expect("feed");
        }
        assert_eq!(
            out,
            vec![Frame {
                event: Some("x".to_string()),
                data: b"a".to_vec(),
                exception: false,
            }]
        );
    }

    #[test]
    fn sse_event_without_data_is_not_dispatched() {
        assert_eq!(run(Framing::Sse, b"event: x\n\n", 3), vec![]);
    }

    #[test]
    fn sse_frame_limit() {
        let mut d = SseDecoder::with_max_frame(8);
        let mut out = Vec::new();
        assert!(d.feed(b"data: 0123456789", &mut out).is_err());
    }

    #[test]
    fn ndjson_lines() {
        let input = b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}";
        for step in 1..input.len() {
            assert_eq!(
                run(Framing::Ndjson, input, step),
                vec![
                    (None, "{\"a\":1}".to_string()),
                    (None, "{\"b\":2}".to_string()),
                    (None, "{\"c\":3}".to_string())
                ]
            );
        }
    }

    #[test]
    fn json_array_elements() {
        let input = b"[{\"a\":\"x]}\\\"\"},\r\n{\"b\":[1,{\"c\":2}]}\n]";
        for step in 1..input.len() {
            assert_eq!(
                run(Framing::JsonArray, input, step),
                vec![
                    (None, "{\"a\":\"x]}\\\"\"}".to_string()),
                    (None, "{\"b\":[1,{\"c\":2}]}".to_string())
                ]
            );
        }
    }

    #[test]
    fn json_array_rejects_garbage() {
        let mut d = JsonArrayDecoder::default();
        let mut out = Vec::new();
        assert!(d.feed(b"[x", &mut out).is_err());
        let mut d = JsonArrayDecoder::default();
        d.feed(b"[{\"a\":", &mut out).expect("partial ok");
        assert!(d.finish(&mut out).is_err());
    }
}
