//! What a span says about the answer: its id, the model that wrote it and why each choice
//! finished, read from OpenAI-shaped bodies and stream chunks. Only sampled requests read
//! them, so a plain (borrowing) parse is fine here.

use std::borrow::Cow;

use serde::Deserialize;

/// At most this many finish reasons are kept (one per choice).
const MAX_CHOICES: usize = 16;
/// Longest id or model name kept.
const MAX_NAME: usize = 256;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResponseMeta {
    pub id: Option<String>,
    pub model: Option<String>,
    /// By choice index.
    pub finish_reasons: Vec<String>,
    /// The answer's text, when content is captured (`llmux.tracing.capture_content`).
    pub output: Option<String>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceHead<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceHead<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

impl ResponseMeta {
    /// A whole (non-streamed) chat completion.
    pub fn from_body(body: &[u8]) -> Self {
        let mut m = Self::default();
        m.observe_chunk(body);
        m
    }

    /// One stream chunk (`data:` payload); the id and the model are taken from the first
    /// chunk that has them, a choice's finish reason from the chunk that ends it.
    pub fn observe_chunk(&mut self, data: &[u8]) {
        let Ok(head) = serde_json::from_slice::<Head<'_>>(data) else {
            return;
        };
        if self.id.is_none() {
            self.id = head.id.filter(|s| !s.is_empty()).map(bounded);
        }
        if self.model.is_none() {
            self.model = head.model.filter(|s| !s.is_empty()).map(bounded);
        }
        for (pos, c) in head.choices.iter().flatten().enumerate() {
            let Some(reason) = &c.finish_reason else {
                continue;
            };
            let index = c.index.unwrap_or(pos);
            if index >= MAX_CHOICES {
                continue;
            }
            if self.finish_reasons.len() <= index {
                self.finish_reasons.resize(index + 1, String::new());
            }
            self.finish_reasons[index] = bounded(reason.clone());
        }
    }

    /// The finish reasons of the choices that have one.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.finish_reasons
            .iter()
            .filter(|r| !r.is_empty())
            .map(String::as_str)
    }
}

fn bounded(s: Cow<'_, str>) -> String {
    crate::util::clip_to(&s, MAX_NAME).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_whole_completion() {
        let m = ResponseMeta::from_body(
            br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06",
               "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"},
                          {"index":1,"message":{"role":"assistant","content":"ho"},"finish_reason":"length"}],
               "usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        );
        assert_eq!(m.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(m.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["stop", "length"]);
    }

    #[test]
    fn reads_stream_chunks() {
        let mut m = ResponseMeta::default();
        m.observe_chunk(br#"{"id":"c1","model":"m1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#);
        m.observe_chunk(br#"{"id":"c1","model":"m1","choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}"#);
        m.observe_chunk(br#"{"id":"c1","model":"m1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#);
        m.observe_chunk(b"not json");
        assert_eq!(m.id.as_deref(), Some("c1"));
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["tool_calls", "stop"]);
    }

    #[test]
    fn hostile_indexes_are_bounded() {
        let mut m = ResponseMeta::default();
        m.observe_chunk(br#"{"choices":[{"index":18446744073709551615,"finish_reason":"stop"}]}"#);
        assert!(m.finish_reasons.is_empty());
    }
}
