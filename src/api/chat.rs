//! A borrowed view of a chat-completions request: the few fields the gateway itself needs
//! (model, stream flags) and where the `model` value sits in the body, so the passthrough path can
//! rewrite it without re-serialising the whole request.

use serde::Deserialize;
use sonic_rs::LazyValue;

use super::error::ApiError;

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    model: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    messages: Option<LazyValue<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What the gateway reads from a chat-completions body before routing it.
#[derive(Debug, Clone)]
pub struct ChatRequestView {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// Byte range of the `model` value (including its quotes) inside the body.
    pub model_span: Option<std::ops::Range<usize>>,
}

impl ChatRequestView {
    /// Parses and validates the request body. Errors are 400s in the OpenAI shape.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "Request body is empty: expected a JSON object.",
            ));
        }
        let raw: RawRequest<'_> = sonic_rs::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid JSON in request body: {}",
                first_line(&e.to_string())
            ))
        })?;
        let model_val = raw.model.ok_or_else(|| {
            ApiError::bad_request("Missing required parameter: 'model'.").with_param("model")
        })?;
        let model_raw = model_val.as_raw_str();
        let model: String = sonic_rs::from_str(model_raw)
            .map_err(|_| ApiError::bad_request("'model' must be a string.").with_param("model"))?;
        if model.is_empty() {
            return Err(ApiError::bad_request("'model' must not be empty.").with_param("model"));
        }
        let messages = raw.messages.ok_or_else(|| {
            ApiError::bad_request("Missing required parameter: 'messages'.").with_param("messages")
        })?;
        let m = messages.as_raw_str().trim_start();
        if !m.starts_with('[') {
            return Err(
                ApiError::bad_request("'messages' must be an array.").with_param("messages")
            );
        }
        if m[1..].trim_start().starts_with(']') {
            return Err(
                ApiError::bad_request("'messages' must contain at least one message.")
                    .with_param("messages"),
            );
        }
        let model_span = span_within(body, model_raw.as_bytes());
        Ok(Self {
            model,
            stream: raw.stream.unwrap_or(false),
            include_usage: raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            model_span,
        })
    }
}

/// Returns where `part` lies inside `whole`, if it is a sub-slice of it.
fn span_within(whole: &[u8], part: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Returns `body` with the `model` value replaced by `new_model` (a JSON string), copying the
/// rest of the bytes unchanged.
pub fn replace_model(body: &[u8], view: &ChatRequestView, new_model: &str) -> Vec<u8> {
    let encoded = serde_json::to_string(new_model).unwrap_or_else(|_| "\"\"".to_owned());
    match &view.model_span {
        Some(span) => {
            let mut out = Vec::with_capacity(body.len() + encoded.len());
            out.extend_from_slice(&body[..span.start]);
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(&body[span.end..]);
            out
        }
        None => {
            // The parser gave us a copy rather than a borrow: fall back to a full rewrite.
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(mut v) => {
                    v["model"] = serde_json::Value::String(new_model.to_owned());
                    serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
                }
                Err(_) => body.to_vec(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_replaces_model() {
        let body =
            br#"{"model": "demo", "messages":[{"role":"user","content":"hi"}], "stream": true,
            "stream_options": {"include_usage": true}}"#;
        let v = ChatRequestView::parse(body).unwrap();
        assert_eq!(v.model, "demo");
        assert!(v.stream && v.include_usage);
        let out = replace_model(body, &v, "gpt-4o-mini");
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["model"], "gpt-4o-mini");
        assert_eq!(j["messages"][0]["content"], "hi");
    }

    #[test]
    fn rejects_bad_input() {
        for (body, param) in [
            (&b"{nope"[..], None),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (br#"{"model":"m"}"#, Some("messages")),
            (br#"{"model":"m","messages":[]}"#, Some("messages")),
            (br#"{"model":3,"messages":[1]}"#, Some("model")),
            (b"", None),
        ] {
            let e = ChatRequestView::parse(body).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), param);
        }
    }

    #[test]
    fn escaped_model_name_round_trips() {
        let body = br#"{"model":"a\"b","messages":[{"role":"user","content":"x"}]}"#;
        let v = ChatRequestView::parse(body).unwrap();
        assert_eq!(v.model, "a\"b");
        let out = replace_model(body, &v, "x");
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["model"], "x");
    }
}
