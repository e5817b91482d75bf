//! What a span says about the answer: its id, the model that wrote it and why each choice
//! finished, read from OpenAI-shaped bodies and stream chunks. Only sampled requests read
//! them, so a plain (borrowing) parse is fine here.

use std::borrow::Cow;

use serde::Deserialize;

use crate::json::members::{skip_ws, string_end, top_level_members};

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
    /// The names were looked for (in a stream's first chunk).
    names_read: bool,
}

#[derive(Deserialize)]
struct Head<'a> {
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
    /// A whole (non-streamed) chat completion. `id` and `model` are read from the top-level
    /// members around the messages, not by parsing them; the finish reasons are found by a
    /// byte search (choices in order). The gateway finds the members with the answer's usage
    /// and calls [`ResponseMeta::from_members`]; this is the tests' way in.
    #[cfg(test)]
    pub fn from_body(body: &[u8]) -> Self {
        let [id, model] = top_level_members(body, [b"id", b"model"]);
        Self::from_members(body, id, model)
    }

    /// A whole chat completion whose `id` and `model` members (raw values) were already
    /// found.
    pub fn from_members(body: &[u8], id: Option<&[u8]>, model: Option<&[u8]>) -> Self {
        let mut m = Self::default();
        m.set_names(id, model);
        for reason in finish_reasons(body).take(MAX_CHOICES) {
            m.finish_reasons.push(reason);
        }
        m
    }

    /// One stream chunk (`data:` payload): the id and the model come from the first chunk,
    /// a choice's finish reason from the chunk that ends it (the only chunks parsed).
    pub fn observe_chunk(&mut self, data: &[u8]) {
        if !self.names_read {
            self.names_read = true;
            self.read_names(data);
        }
        // Most chunks carry `"finish_reason":null`: only one with a reason is parsed.
        if finish_reasons(data).next().is_none() {
            return;
        }
        let Ok(head) = serde_json::from_slice::<Head<'_>>(data) else {
            return;
        };
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

    /// `id` and `model`, read from the top-level members around the messages.
    fn read_names(&mut self, json: &[u8]) {
        let [id, model] = top_level_members(json, [b"id", b"model"]);
        self.set_names(id, model);
    }

    /// The names from the raw values of the answer's `id` and `model` members.
    fn set_names(&mut self, id: Option<&[u8]>, model: Option<&[u8]>) {
        self.id = id.and_then(string_value).filter(|s| !s.is_empty());
        self.model = model.and_then(string_value).filter(|s| !s.is_empty());
    }

    /// The finish reasons of the choices that have one.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.finish_reasons
            .iter()
            .filter(|r| !r.is_empty())
            .map(String::as_str)
    }
}

const FINISH_KEY: &[u8] = b"\"finish_reason\"";

/// The string values of `"finish_reason"` members, in the order they appear. A match inside
/// a string value is told apart by its escaped quote; `null` values are skipped.
fn finish_reasons(json: &[u8]) -> impl Iterator<Item = String> + '_ {
    // The searcher is built once: building one costs more than searching a chunk.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(FINISH_KEY));
    FINDER.find_iter(json).filter_map(move |at| {
        let backslashes = json[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            return None;
        }
        let mut i = skip_ws(json, at + FINISH_KEY.len());
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        string_value(json.get(i..string_end(json, i)?)?)
    })
}

/// A JSON string value's text, at most [`MAX_NAME`] bytes; `None` for anything else.
fn string_value(raw: &[u8]) -> Option<String> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner)
            .ok()
            .map(|s| bounded(Cow::Borrowed(s)));
    }
    serde_json::from_slice::<String>(raw)
        .ok()
        .map(|s| bounded(Cow::Owned(s)))
}

fn bounded(s: Cow<'_, str>) -> String {
    if s.len() <= MAX_NAME {
        // No more characters than bytes: nothing to cut.
        return s.into_owned();
    }
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
    fn a_finish_reason_inside_content_is_not_one() {
        let m = ResponseMeta::from_body(
            br#"{"id":"c","model":"m","choices":[{"index":0,"message":{"content":"say \"finish_reason\": \"stop\""},"finish_reason":null}]}"#,
        );
        assert_eq!(m.reasons().count(), 0);
        let m = ResponseMeta::from_body(br#"{"choices":[{"finish_reason" : "length"}]}"#);
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["length"]);
    }

    #[test]
    fn names_are_found_past_nested_values_and_escapes() {
        let m = ResponseMeta::from_body(
            br#" { "object" : "x", "nested": {"id": "no", "a": [1, {"model": "no"}, "]}"]}, "n": -1.5e3,
                 "t": true, "id" : "c\u0031", "model":"m}\"" , "choices": []}"#,
        );
        assert_eq!(m.id.as_deref(), Some("c1"));
        assert_eq!(m.model.as_deref(), Some("m}\""));
        // Not JSON, cut short, or names that are not strings: nothing, and no panic.
        for bad in [
            &br#"{"id":"a"#[..],
            br#"{"id" "a"}"#,
            br#"{"nested":{"#,
            br#"["id","a"]"#,
            br#"{"id":1,"model":null}"#,
            br#"{"x":"\"#,
            b"",
            b"{",
        ] {
            let m = ResponseMeta::from_body(bad);
            assert!(
                m.id.is_none() && m.model.is_none(),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(1000));
        assert_eq!(
            ResponseMeta::from_body(long.as_bytes())
                .id
                .map(|s| s.chars().count()),
            Some(MAX_NAME + 1) // with the `…`
        );
    }

    #[test]
    fn names_after_the_messages_are_read_from_the_end() {
        // Sorted keys, as some servers write them: `choices` comes first.
        let m = ResponseMeta::from_body(
            br#"{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"{\"id\":\"no\"}"}}],
               "created":1,"id":"c-9","model":"m-9","object":"chat.completion",
               "usage":{"completion_tokens":1,"prompt_tokens":2}}"#,
        );
        assert_eq!(m.id.as_deref(), Some("c-9"));
        assert_eq!(m.model.as_deref(), Some("m-9"));
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["stop"]);
        // Names inside nested values are never taken, from either side.
        let m = ResponseMeta::from_body(
            br#"{"id":"c-1","choices":[{"id":"no","model":"no"}],"usage":{"model":"no"}}"#,
        );
        assert_eq!(m.id.as_deref(), Some("c-1"));
        assert_eq!(m.model, None);
        // The backward walk stops at the nested value the forward walk stopped at.
        let m = ResponseMeta::from_body(br#"{"model":"m","a":{"id":"no"},"b":[1],"c":2}"#);
        assert_eq!((m.id, m.model.as_deref()), (None, Some("m")));
    }

    #[test]
    fn hostile_indexes_are_bounded() {
        let mut m = ResponseMeta::default();
        m.observe_chunk(br#"{"choices":[{"index":18446744073709551615,"finish_reason":"stop"}]}"#);
        assert!(m.finish_reasons.is_empty());
    }
}
