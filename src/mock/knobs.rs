//! Failure and latency knobs, from headers or from the model name.

use crate::http1::Request;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knobs {
    pub delay_ms: u64,
    pub chunks: usize,
    pub chunk_delay_ms: u64,
    pub status: Option<u16>,
    pub malformed: bool,
    /// Pads each streamed word to this many bytes (for backpressure tests).
    pub chunk_bytes: usize,
    /// Answer with a call to the request's first tool instead of text.
    pub tool_call: bool,
    /// Think first (Messages format): a thinking block with a signature and a
    /// redacted_thinking block before the answer, in whole answers and streams.
    pub thinking: bool,
    /// The error's `code` (`context_length_exceeded`, `content_policy_violation`, ...); with
    /// no status given, the error is a 400.
    pub error_code: Option<String>,
    /// Seconds sent as `retry-after` with an error.
    pub retry_after: Option<u64>,
    /// A stream stops after this many events: the connection is dropped without the end of
    /// the stream (no `[DONE]`, no chunked terminator).
    pub cut_after: Option<usize>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            chunks: 5,
            chunk_delay_ms: 0,
            status: None,
            malformed: false,
            chunk_bytes: 0,
            tool_call: false,
            thinking: false,
            error_code: None,
            retry_after: None,
            cut_after: None,
        }
    }
}

/// The word after `token` in `name` (`mock-error-context_length_exceeded`): lowercase
/// letters and underscores.
fn word_after(name: &str, token: &str) -> Option<String> {
    let at = name.find(token)? + token.len();
    let word: String = name[at..]
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// The number after `token` in `name` (`mock-status-429` → 429).
fn number_after(name: &str, token: &str) -> Option<u64> {
    let at = name.find(token)? + token.len();
    let digits: String = name[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

impl Knobs {
    pub fn from_model(model: &str) -> Self {
        let mut k = Self::default();
        // Every knob's token starts so; most benchmark requests name none.
        if !model.contains("mock-") {
            return k;
        }
        if let Some(v) = number_after(model, "mock-delay-") {
            k.delay_ms = v;
        }
        if let Some(v) = number_after(model, "mock-chunks-") {
            k.chunks = v as usize;
        }
        if let Some(v) = number_after(model, "mock-chunk-delay-") {
            k.chunk_delay_ms = v;
        }
        if let Some(v) = number_after(model, "mock-status-") {
            k.status = u16::try_from(v).ok();
        }
        if let Some(v) = number_after(model, "mock-chunk-bytes-") {
            k.chunk_bytes = v as usize;
        }
        k.malformed = model.contains("mock-malformed");
        k.tool_call = model.contains("mock-tool");
        k.thinking = model.contains("mock-thinking");
        k.error_code = word_after(model, "mock-error-");
        k.retry_after = number_after(model, "mock-retry-after-");
        k.cut_after = number_after(model, "mock-cut-").map(|n| n as usize);
        k
    }

    pub fn from_request(req: &Request, model: &str) -> Self {
        let mut k = Self::from_model(model);
        let any_header = req
            .head
            .headers
            .iter()
            .any(|(name, _)| name.len() > 7 && name[..7].eq_ignore_ascii_case(b"x-mock-"));
        if !any_header {
            return k.bounded();
        }
        let num = |h: &str| req.header(h).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(v) = num("x-mock-delay-ms") {
            k.delay_ms = v;
        }
        if let Some(v) = num("x-mock-chunks") {
            k.chunks = v as usize;
        }
        if let Some(v) = num("x-mock-chunk-delay-ms") {
            k.chunk_delay_ms = v;
        }
        if let Some(v) = num("x-mock-status") {
            k.status = u16::try_from(v).ok();
        }
        if req.header("x-mock-malformed").is_some() {
            k.malformed = true;
        }
        if req.header("x-mock-tool").is_some() {
            k.tool_call = true;
        }
        if req.header("x-mock-thinking").is_some() {
            k.thinking = true;
        }
        if let Some(v) = num("x-mock-chunk-bytes") {
            k.chunk_bytes = v as usize;
        }
        if let Some(v) = req.header("x-mock-error-code") {
            k.error_code = Some(v.trim().to_owned());
        }
        if let Some(v) = num("x-mock-retry-after") {
            k.retry_after = Some(v);
        }
        if let Some(v) = num("x-mock-cut-after") {
            k.cut_after = Some(v as usize);
        }
        k.bounded()
    }

    fn bounded(mut self) -> Self {
        if self.error_code.is_some() && self.status.is_none() {
            self.status = Some(400);
        }
        self.chunks = self.chunks.clamp(1, 100_000);
        self.chunk_bytes = self.chunk_bytes.min(1024 * 1024);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_name_knobs() {
        let k = Knobs::from_model("gpt-mock-status-429-mock-chunks-20-mock-chunk-delay-10");
        assert_eq!(k.status, Some(429));
        assert_eq!(k.chunks, 20);
        assert_eq!(k.chunk_delay_ms, 10);
        assert_eq!(k.delay_ms, 0);
        assert_eq!(Knobs::from_model("plain"), Knobs::default());
        let k =
            Knobs::from_model("m-mock-error-context_length_exceeded-mock-retry-after-3-mock-cut-2");
        assert_eq!(k.error_code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(k.retry_after, Some(3));
        assert_eq!(k.cut_after, Some(2));
        let k = Knobs::from_model("claude-mock-thinking-mock-tool");
        assert!(k.thinking && k.tool_call);
        assert!(!Knobs::from_model("claude-mock-tool").thinking);
    }
}
