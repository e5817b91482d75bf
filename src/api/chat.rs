//! A borrowed view of a chat-completions request: the few fields the gateway itself needs to
//! route it (model, stream flags), read without building a JSON tree.

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
        Ok(Self {
            model,
            stream: raw.stream.unwrap_or(false),
            include_usage: raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routing_fields() {
        let body =
            br#"{"model": "demo", "messages":[{"role":"user","content":"hi"}], "stream": true,
            "stream_options": {"include_usage": true}}"#;
        let v = ChatRequestView::parse(body).unwrap();
        assert_eq!(v.model, "demo");
        assert!(v.stream && v.include_usage);
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
}
