//! The completion text an answer carried, kept so that its tokens can be counted when the
//! provider reports no usage (a stream cut short, a client gone mid-stream, a provider or a
//! request without usage), and spend is never silently zero.
//!
//! It reads OpenAI-shaped JSON as relayed (whole bodies, stream events, SSE batches of them)
//! without parsing it: the string values of `content`, `reasoning_content` and `arguments`
//! members are appended as they come.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Text kept at most; beyond it only the length is kept (and estimated at four bytes a token).
const MAX_KEPT: usize = 256 * 1024;

/// Member names (their closing quote and colon) whose string values are completion text.
static KEYS: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| [Finder::new(b"content\":"), Finder::new(b"arguments\":")]);

#[derive(Debug, Default)]
pub struct CompletionText {
    text: String,
    /// Bytes seen beyond [`MAX_KEPT`].
    overflow: usize,
}

impl CompletionText {
    /// Appends the completion text found in `json` (one or more OpenAI-shaped documents, as
    /// relayed).
    pub fn take_from(&mut self, json: &[u8]) {
        for finder in KEYS.iter() {
            let mut from = 0;
            while let Some(i) = finder.find(&json[from..]) {
                let mut at = from + i + finder.needle().len();
                while matches!(json.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                    at += 1;
                }
                from = at;
                if json.get(at) != Some(&b'"') {
                    continue; // `null`, an array of parts, ...
                }
                let Some(end) = crate::json::members::string_end(json, at) else {
                    return; // unterminated: nothing more to read here
                };
                self.push(&json[at..end]);
                from = end;
            }
        }
    }

    /// `quoted` is a JSON string with its quotes.
    fn push(&mut self, quoted: &[u8]) {
        let raw = &quoted[1..quoted.len() - 1];
        if self.text.len() + raw.len() > MAX_KEPT {
            self.overflow += raw.len();
            return;
        }
        if memchr::memchr(b'\\', raw).is_none() {
            if let Ok(s) = std::str::from_utf8(raw) {
                self.text.push_str(s);
                return;
            }
        }
        match serde_json::from_slice::<String>(quoted) {
            Ok(s) => self.text.push_str(&s),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(raw)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.overflow == 0
    }

    /// The text kept so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text kept, and the bytes seen beyond it.
    pub fn into_parts(self) -> (String, usize) {
        (self.text, self.overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_content_reasoning_and_tool_arguments_from_events() {
        let mut c = CompletionText::default();
        let sse = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"Think. \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello \\\"you\\\"\\n\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":null,\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\": \"caf\\u00e9\"}}]}\n\n",
        );
        c.take_from(sse.as_bytes());
        let (text, overflow) = c.into_parts();
        assert_eq!(overflow, 0);
        // Order is by member name, then position: every piece is there once.
        for piece in ["Think. ", "Hello \"you\"\n", "{\"x\":", "café"] {
            assert_eq!(text.matches(piece).count(), 1, "{piece:?} in {text:?}");
        }
    }

    #[test]
    fn a_whole_body_and_hostile_text_are_read_without_panicking() {
        let mut c = CompletionText::default();
        c.take_from(br#"{"choices":[{"message":{"role":"assistant","content":"42"}}]}"#);
        assert_eq!(c.into_parts().0, "42");
        for bad in [
            &b"content\":"[..],
            b"content\":\"unterminated",
            b"content\":\"ends in a backslash\\",
            b"content\":\"\xff\xfe\"",
            b"arguments\": \"\\ud800\"",
        ] {
            let mut c = CompletionText::default();
            c.take_from(bad);
        }
    }

    #[test]
    fn keeps_a_bounded_amount() {
        let mut c = CompletionText::default();
        let event = format!("{{\"content\":\"{}\"}}", "a".repeat(200 * 1024));
        c.take_from(event.as_bytes());
        c.take_from(event.as_bytes());
        let (text, overflow) = c.into_parts();
        assert_eq!(text.len(), 200 * 1024);
        assert_eq!(overflow, 200 * 1024);
    }
}
