//! What a span says about the answer: its id, the model that wrote it and why each choice
//! finished, read from OpenAI-shaped bodies and stream chunks. Only sampled requests read
//! them, so a plain (borrowing) parse is fine here.

use crate::json::members::{
    for_each_element, for_each_member, skip_ws, string_end, top_level_member, top_level_members,
};

/// At most this many finish reasons are kept (one per choice).
const MAX_CHOICES: usize = 16;
/// Longest id or model name kept.
const MAX_NAME: usize = 256;
/// The most text a [`ResponseMeta`] holds: both names and every reason at their longest (cut
/// with an ellipsis), with room for a stream that restates some; what comes after is dropped.
const MAX_TEXT: usize = 8 * 1024;

/// Where a value is in [`ResponseMeta::text`].
type Place = (u16, u16);

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResponseMeta {
    /// The id, the model and the finish reasons, one after the other: one allocation for all
    /// of them (a sampled request used to make four).
    text: String,
    id: Option<Place>,
    model: Option<Place>,
    /// Where each choice's finish reason is, by choice index (empty: none).
    reasons: [Place; MAX_CHOICES],
    /// The answer's text, when content is captured (`llmux.tracing.capture_content`).
    pub output: Option<String>,
    /// The names were looked for (in a stream's first chunk).
    names_read: bool,
}

impl ResponseMeta {
    /// A whole (non-streamed) chat completion. `id` and `model` are read from the top-level
    /// members around the messages, not by parsing them; the finish reasons are found by a
    /// byte search (choices in order). The gateway finds the members with the answer's usage
    /// and calls [`ResponseMeta::from_members`]; this is the tests' way in.
    #[cfg(test)]
    pub fn from_body(body: &[u8]) -> Self {
        let [id, model, usage] = top_level_members(body, [b"id", b"model", b"usage"]);
        Self::from_members(body, id, model, usage)
    }

    /// A whole chat completion whose `id`, `model` and `usage` members (raw values, slices
    /// of `body`) were already found. The finish reasons are searched for around the usage
    /// (its token counts are most of the body's `_`s, each a candidate to check).
    pub fn from_members(
        body: &[u8],
        id: Option<&[u8]>,
        model: Option<&[u8]>,
        usage: Option<&[u8]>,
    ) -> Self {
        let mut m = Self::default();
        m.set_names(id, model);
        let (before, after) = around(body, usage);
        let reasons = finish_reasons(before).chain(finish_reasons(after));
        for (index, raw) in reasons.take(MAX_CHOICES).enumerate() {
            m.reasons[index] = m.push_string(raw).unwrap_or_default();
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
        // Most chunks carry `"finish_reason":null`: only one with a reason is walked, by its
        // bytes (a serde parse of the chunk cost about 5k instructions).
        if finish_reasons(data).next().is_none() {
            return;
        }
        let Some(choices) = top_level_member(data, b"choices") else {
            return;
        };
        let mut pos = 0;
        for_each_element(choices, |choice| {
            let (mut index, mut reason) = (None, None);
            // From the last member to the first: a repeated name counts by its last value.
            for_each_member(choice, |key, value| {
                match key {
                    b"index" if index.is_none() => {
                        index = std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.parse::<usize>().ok());
                    }
                    b"finish_reason" if reason.is_none() => reason = Some(value),
                    _ => {}
                }
                true
            });
            let index = index.unwrap_or(pos);
            pos += 1;
            if let Some(raw) = reason.filter(|_| index < MAX_CHOICES) {
                if let Some(place) = self.push_string(raw) {
                    self.reasons[index] = place;
                }
            }
            true
        });
    }

    pub fn id(&self) -> Option<&str> {
        self.id.map(|p| self.at(p))
    }

    pub fn model(&self) -> Option<&str> {
        self.model.map(|p| self.at(p))
    }

    /// The answer's model, as the provider named it before the gateway renamed the chunks.
    pub fn set_model(&mut self, model: &str) {
        if let Some(place) = self.push_text(model) {
            self.model = Some(place);
        }
    }

    /// The finish reasons of the choices that have one, by choice index.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.reasons
            .iter()
            .filter(|(start, end)| start < end)
            .map(|p| self.at(*p))
    }

    fn at(&self, (start, end): Place) -> &str {
        self.text
            .get(usize::from(start)..usize::from(end))
            .unwrap_or("")
    }

    /// `id` and `model`, read from the top-level members around the messages.
    fn read_names(&mut self, json: &[u8]) {
        let [id, model] = top_level_members(json, [b"id", b"model"]);
        self.set_names(id, model);
    }

    /// The names from the raw values of the answer's `id` and `model` members.
    fn set_names(&mut self, id: Option<&[u8]>, model: Option<&[u8]>) {
        self.id = id.and_then(|raw| self.push_string(raw));
        self.model = model.and_then(|raw| self.push_string(raw));
    }

    /// Keeps a JSON string value's text (raw, with its quotes): `None` for anything else or
    /// an empty string.
    fn push_string(&mut self, raw: &[u8]) -> Option<Place> {
        let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if let Some(text) = plain_text(inner) {
            return self.push_text(text);
        }
        let decoded = serde_json::from_slice::<String>(raw).ok()?;
        self.push_text(&decoded)
    }

    /// Keeps `s`, cut at [`MAX_NAME`] characters: `None` when it is empty or there is no room.
    fn push_text(&mut self, s: &str) -> Option<Place> {
        if s.is_empty() {
            return None;
        }
        let s = crate::util::clip_to(s, MAX_NAME);
        if self.text.len() + s.len() > MAX_TEXT {
            return None;
        }
        if self.text.capacity() == 0 {
            // An id, a model and a reason, usually: one allocation for them.
            self.text.reserve(128);
        }
        let start = self.text.len();
        self.text.push_str(&s);
        // Both fit: the text is at most `MAX_TEXT` long.
        Some((start as u16, self.text.len() as u16))
    }
}

/// `body` before and after `part` (a slice of it); all of `body` and nothing when `part` is
/// `None` or not a part of it.
fn around<'a>(body: &'a [u8], part: Option<&[u8]>) -> (&'a [u8], &'a [u8]) {
    let range = body.as_ptr_range();
    match part {
        Some(p) if range.start <= p.as_ptr() && p.as_ptr_range().end <= range.end => {
            let start = p.as_ptr() as usize - range.start as usize;
            (&body[..start], &body[start + p.len()..])
        }
        _ => (body, &[]),
    }
}

/// A JSON string's content as it is, when it has no escape and is ASCII (ids, model names
/// and finish reasons are): one pass the compiler vectorises, where a search for `\` and a
/// UTF-8 check were two calls each longer than such a string.
fn plain_text(inner: &[u8]) -> Option<&str> {
    const SHORT: usize = 128;
    if inner.len() <= SHORT {
        // Without an early exit: the loop is vectorised.
        let special = inner
            .iter()
            .fold(false, |acc, &b| acc | (b >= 0x80) | (b == b'\\'));
        if !special {
            // SAFETY: every byte is below 0x80: ASCII, which is UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(inner) });
        }
    }
    if memchr::memchr(b'\\', inner).is_some() {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

const FINISH_KEY: &[u8] = b"\"finish_reason\"";

/// Where the key's `_` is in it (after `"finish`).
const FINISH_KEY_UNDERSCORE: usize = 7;

/// The raw string values (with their quotes) of `"finish_reason"` members, in the order they
/// appear. A match inside a string value is told apart by its escaped quote; `null` values are
/// skipped. Every stream chunk is searched: each `_` (rare in a chunk, where quotes and letters
/// are not) is a candidate checked against the whole key around it (callgrind, 200-byte chunks:
/// about 250 instructions a chunk, against 345 for a prebuilt substring searcher).
fn finish_reasons(json: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    memchr::memchr_iter(b'_', json).filter_map(move |underscore| {
        let at = underscore.checked_sub(FINISH_KEY_UNDERSCORE)?;
        if json.get(at..at + FINISH_KEY.len()) != Some(FINISH_KEY) {
            return None;
        }
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
        json.get(i..string_end(json, i)?)
    })
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
        assert_eq!(m.id(), Some("chatcmpl-1"));
        assert_eq!(m.model(), Some("gpt-4o-2024-08-06"));
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["stop", "length"]);
    }

    #[test]
    fn reads_stream_chunks() {
        let mut m = ResponseMeta::default();
        m.observe_chunk(br#"{"id":"c1","model":"m1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#);
        m.observe_chunk(br#"{"id":"c1","model":"m1","choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}"#);
        m.observe_chunk(br#"{"id":"c1","model":"m1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#);
        m.observe_chunk(b"not json");
        assert_eq!(m.id(), Some("c1"));
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["tool_calls", "stop"]);
    }

    #[test]
    fn reasons_are_found_on_both_sides_of_the_usage() {
        // Choices after the usage, and a usage that names a finish reason (not a choice's).
        let m = ResponseMeta::from_body(
            br#"{"id":"c","usage":{"prompt_tokens":1,"x":{"finish_reason":"no"}},"choices":[{"finish_reason":"stop"}]}"#,
        );
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["stop"]);
        let body = b"0123456789";
        assert_eq!(around(body, Some(&body[2..5])), (&b"01"[..], &b"56789"[..]));
        assert_eq!(around(body, Some(&body[..0])), (&b""[..], &body[..]));
        assert_eq!(around(body, Some(b"elsewhere")), (&body[..], &b""[..]));
        assert_eq!(around(body, None), (&body[..], &b""[..]));
    }

    #[test]
    fn plain_strings_are_taken_as_they_are_and_others_decoded() {
        assert_eq!(plain_text(b"chatcmpl-1"), Some("chatcmpl-1"));
        assert_eq!(plain_text("modèle".as_bytes()), Some("modèle"));
        let long = "m".repeat(300);
        assert_eq!(plain_text(long.as_bytes()), Some(long.as_str()));
        assert_eq!(plain_text(br"a\nb"), None);
        assert_eq!(plain_text(&[b'a', 0xff]), None);
        let mut m = ResponseMeta::default();
        let place = m.push_string(br#""a\u00e9\"b""#);
        assert_eq!(place.map(|p| m.at(p)), Some("a\u{e9}\"b"));
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
        assert_eq!(m.id(), Some("c1"));
        assert_eq!(m.model(), Some("m}\""));
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
                m.id().is_none() && m.model().is_none(),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(1000));
        assert_eq!(
            ResponseMeta::from_body(long.as_bytes())
                .id()
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
        assert_eq!(m.id(), Some("c-9"));
        assert_eq!(m.model(), Some("m-9"));
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["stop"]);
        // Names inside nested values are never taken, from either side.
        let m = ResponseMeta::from_body(
            br#"{"id":"c-1","choices":[{"id":"no","model":"no"}],"usage":{"model":"no"}}"#,
        );
        assert_eq!(m.id(), Some("c-1"));
        assert_eq!(m.model(), None);
        // The backward walk stops at the nested value the forward walk stopped at.
        let m = ResponseMeta::from_body(br#"{"model":"m","a":{"id":"no"},"b":[1],"c":2}"#);
        assert_eq!((m.id(), m.model()), (None, Some("m")));
    }

    #[test]
    fn a_stream_that_restates_its_reasons_is_held_to_a_bound() {
        let mut m = ResponseMeta::default();
        let reason = "r".repeat(MAX_NAME);
        let chunk = format!(
            r#"{{"id":"c","model":"m","choices":[{{"index":0,"finish_reason":"{reason}"}}]}}"#
        );
        for _ in 0..1000 {
            m.observe_chunk(chunk.as_bytes());
        }
        assert!(m.text.len() <= MAX_TEXT, "{}", m.text.len());
        assert_eq!(m.reasons().collect::<Vec<_>>(), [reason.as_str()]);
        assert_eq!((m.id(), m.model()), (Some("c"), Some("m")));
        // Once full, a later name is not taken; the earlier stays.
        m.set_model(&"x".repeat(MAX_NAME));
        assert_eq!(m.model(), Some("m"));
        let mut fresh = ResponseMeta::default();
        fresh.observe_chunk(br#"{"id":"c","model":"group","choices":[]}"#);
        fresh.set_model("provider-model");
        assert_eq!(fresh.model(), Some("provider-model"));
    }

    #[test]
    fn a_chunk_ending_several_choices_and_keys_near_the_edges() {
        let mut m = ResponseMeta::default();
        m.observe_chunk(
            br#"{"choices":[{"delta":{"content":"a_b \"finish_reason\":\"x\""},"finish_reason":"length","index":1},
                           {"finish_reason":null,"index":0},{"finish_reason":"stop"}],"id":"c"}"#,
        );
        // The third choice has no index: its position (2).
        assert_eq!(m.reasons().collect::<Vec<_>>(), ["length", "stop"]);
        assert_eq!(m.at(m.reasons[2]), "stop");
        // A `_` too near the start to be the key's, an escaped key, and the key cut short.
        for data in [
            &b"_finish_reason\":\"stop\""[..],
            br#"{"a":"\"finish_reason\":\"stop\""}"#,
            br#"{"choices":[{"finish_rea"#,
        ] {
            let mut m = ResponseMeta::default();
            m.observe_chunk(data);
            assert_eq!(m.reasons().count(), 0, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn hostile_indexes_are_bounded() {
        let mut m = ResponseMeta::default();
        m.observe_chunk(br#"{"choices":[{"index":18446744073709551615,"finish_reason":"stop"}]}"#);
        assert_eq!(m.reasons().count(), 0);
    }
}
