//! The `model` an answer carries. LiteLLM answers with the model group the client asked for
//! (after a fallback too), in a whole answer and in every stream chunk, so that is LLMux's
//! default (`llmux.response_model: requested`); `provider` keeps the provider's model name.
//! Relayed bytes stay as the provider sent them apart from that one value.

use crate::gateway::sse::event_payloads;
use crate::json::members::{leading_member, top_level_members};

/// Finds a chunk's `model` member where OpenAI writes it (before `choices`) in one search.
static MODEL_NAME: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"model\":"));

/// The requested model group, ready to be written into answers.
#[derive(Debug, Clone)]
pub struct ResponseModel {
    /// The group's name as a JSON string (quoted, escaped).
    json: Vec<u8>,
}

impl ResponseModel {
    pub fn new(group: &str) -> Self {
        // Made per request: written as JSON directly (model names are short and plain).
        let mut json = Vec::with_capacity(group.len() + 2);
        crate::dsl::out::write_str(&mut json, group);
        Self { json }
    }

    /// The group's name as a JSON value (for chunks built as values; once a stream).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.json).unwrap_or_default()
    }

    /// `json` (one object) with its top-level `model` string replaced, as the three pieces to
    /// write one after the other (no joined copy); `value` is that member's raw value as found
    /// in `json` (by the walk that also found the answer's usage). `None` when it already says
    /// the group or is not a string.
    pub fn splice_member<'a>(&'a self, json: &'a [u8], value: &[u8]) -> Option<[&'a [u8]; 3]> {
        let (start, end) = self.value_span(json, value, 0)?;
        Some([&json[..start], &self.json, &json[end..]])
    }

    /// [`ResponseModel::splice_member`], joined.
    pub fn apply_to_member(&self, json: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        Some(self.splice_member(json, value)?.concat())
    }

    /// A batch of SSE events with each event's `model` replaced (framing kept byte for byte);
    /// `None` when no event needed it.
    pub fn apply_events(&self, events: &[u8]) -> Option<Vec<u8>> {
        let mut spans = Vec::new();
        for (_, data) in event_payloads(events) {
            if let Some(span) = self.event_span(events, &data) {
                spans.push(span);
            }
        }
        self.splice_spans(events, &spans)
    }

    /// Where the `model` value of one event's payload `data` (as `event_payloads` gave it for
    /// `events`) is in `events`, when it must change. A payload split over several `data:`
    /// lines is joined (a copy, not within `events`): left as it is.
    pub fn event_span(&self, events: &[u8], data: &[u8]) -> Option<(usize, usize)> {
        self.model_span(data, event_offset(events, data)?)
    }

    /// [`ResponseModel::event_span`] for a payload whose `model` value is known (`value`, a
    /// slice of `data`: found by the relay's structure check).
    pub fn event_value_span(
        &self,
        events: &[u8],
        data: &[u8],
        value: &[u8],
    ) -> Option<(usize, usize)> {
        self.value_span(data, value, event_offset(events, data)?)
    }

    /// `events` with each span (in order, from [`ResponseModel::event_span`]) replaced by the
    /// group's name; `None` when there is none.
    pub fn splice_spans(&self, events: &[u8], spans: &[(usize, usize)]) -> Option<Vec<u8>> {
        if spans.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(events.len() + spans.len() * self.json.len());
        let mut at = 0;
        for &(start, end) in spans {
            if start < at || end > events.len() {
                return None; // not spans of these events, in order
            }
            out.extend_from_slice(&events[at..start]);
            out.extend_from_slice(&self.json);
            at = end;
        }
        out.extend_from_slice(&events[at..]);
        Some(out)
    }

    /// Where the top-level `model` string's value is in `json`, offset by `offset`.
    fn model_span(&self, json: &[u8], offset: usize) -> Option<(usize, usize)> {
        self.value_span(json, model_value(json)?, offset)
    }

    /// Where `value` (a string that must change) is in `json`, offset by `offset`.
    fn value_span(&self, json: &[u8], value: &[u8], offset: usize) -> Option<(usize, usize)> {
        if !value.starts_with(b"\"") || value == self.json.as_slice() {
            return None;
        }
        let start = (value.as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
        if start + value.len() > json.len() {
            return None;
        }
        Some((offset + start, offset + start + value.len()))
    }
}

/// The raw value of the top-level `model` member of `json`. Read from the front first: a chunk
/// names its model before its `choices`, and walking back to it from the end crossed every
/// string of the choices (about 900 instructions an event).
pub fn model_value(json: &[u8]) -> Option<&[u8]> {
    leading_member(json, &MODEL_NAME).or_else(|| {
        let [model] = top_level_members(json, [b"model"]);
        model
    })
}

/// Where `data` starts in `events`; `None` when it is not a slice of them (a payload joined
/// from several `data:` lines).
fn event_offset(events: &[u8], data: &[u8]) -> Option<usize> {
    let offset = (data.as_ptr() as usize).checked_sub(events.as_ptr() as usize)?;
    (offset.checked_add(data.len())? <= events.len()).then_some(offset)
}

/// Spans of a batch of events (from [`ResponseModel::event_span`]) made spans of the batch with
/// `from..to` (whole events) left out: those within it go, those after it move up.
pub fn spans_without(spans: &mut Vec<(usize, usize)>, from: usize, to: usize) {
    let gone = to.saturating_sub(from);
    spans.retain(|&(start, _)| start < from || start >= to);
    for span in spans.iter_mut().filter(|s| s.0 >= to) {
        *span = (span.0 - gone, span.1 - gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::top_level_member;

    fn apply(m: &ResponseModel, json: &[u8]) -> Option<Vec<u8>> {
        m.apply_to_member(json, top_level_member(json, b"model")?)
    }

    #[test]
    fn a_whole_answer_says_the_group_and_keeps_every_other_byte() {
        let m = ResponseModel::new("my \"group\"");
        let body = br#"{"id":"c1", "model" : "gpt-4o-2024-08-06","choices":[{"message":{"content":"model: x","model":"inner"}}]}"#;
        let out = apply(&m, body).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"c1", "model" : "my \"group\"","choices":[{"message":{"content":"model: x","model":"inner"}}]}"#
        );
        // Nothing to do: no model (an error), a model that is not a string, the group already.
        assert!(apply(&m, br#"{"error":{"message":"m"}}"#).is_none());
        assert!(apply(&m, br#"{"model":null}"#).is_none());
        assert!(apply(&m, br#"{"model":"my \"group\""}"#).is_none());
        // A value that is not within the answer changes nothing.
        let elsewhere = br#"{"model":"x"}"#;
        assert!(m.apply_to_member(body, &elsewhere[9..12]).is_none());
    }

    #[test]
    fn every_event_of_a_batch_says_the_group() {
        let m = ResponseModel::new("g");
        let events = b"data: {\"id\":\"a\",\"model\":\"up-1\",\"choices\":[]}\n\n: comment\r\ndata:{\"model\":\"up-22\"}\r\n\r\ndata: {\"error\":{}}\n\ndata: [DONE]\n\n";
        let out = m.apply_events(events).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"id\":\"a\",\"model\":\"g\",\"choices\":[]}\n\n: comment\r\ndata:{\"model\":\"g\"}\r\n\r\ndata: {\"error\":{}}\n\ndata: [DONE]\n\n"
        );
        assert!(m.apply_events(b"data: [DONE]\n\n").is_none());
    }

    #[test]
    fn a_model_after_the_choices_is_found_from_the_end() {
        // Servers that sort their keys put `choices` first; an inner `model` is not the answer's.
        let m = ResponseModel::new("g");
        let events =
            b"data: {\"choices\":[{\"delta\":{\"model\":\"inner\"}}],\"model\":\"up\",\"x\":1}\n\n";
        let out = m.apply_events(events).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"choices\":[{\"delta\":{\"model\":\"inner\"}}],\"model\":\"g\",\"x\":1}\n\n"
        );
        // A payload over two `data:` lines is a joined copy: left as the upstream sent it.
        assert!(m
            .apply_events(b"data: {\"model\":\ndata: \"up\"}\n\n")
            .is_none());
        // An event left out of the batch: the spans found before match the rest.
        let events = b"data: {\"model\":\"a\"}\n\ndata: {\"model\":\"bb\",\"choices\":[]}\n\ndata: {\"model\":\"ccc\"}\n\n";
        let mut spans: Vec<_> = event_payloads(events)
            .filter_map(|(_, d)| m.event_span(events, &d))
            .collect();
        assert_eq!(spans.len(), 3);
        let (from, to) = (21, 56);
        assert!(events[to..].starts_with(b"data: {\"model\":\"ccc\""));
        let kept = [&events[..from], &events[to..]].concat();
        spans_without(&mut spans, from, to);
        assert_eq!(m.splice_spans(&kept, &spans), m.apply_events(&kept));
        assert_eq!(
            std::str::from_utf8(&m.splice_spans(&kept, &spans).unwrap()).unwrap(),
            "data: {\"model\":\"g\"}\n\ndata: {\"model\":\"g\"}\n\n"
        );
        // Spans out of order or past the end are not spliced.
        assert!(m.splice_spans(b"abc", &[(2, 3), (0, 1)]).is_none());
        assert!(m.splice_spans(b"abc", &[(1, 9)]).is_none());
    }
}
