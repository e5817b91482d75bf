//! The chat-completions request as the gateway receives it: parsed once into the JSON tree the
//! provider interpreter works on, and validated for the few fields the gateway itself needs to
//! route it (model, stream flags).

use serde_json::Value;

use super::error::ApiError;

/// What the gateway reads from a chat-completions body before routing it.
#[derive(Debug, Clone)]
pub struct ChatRequestView {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

impl ChatRequestView {
    /// Parses and validates the request body, returning the view and the parsed body. Errors
    /// are 400s in the OpenAI shape.
    pub fn parse(body: &[u8]) -> Result<(Self, Value), ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "Request body is empty: expected a JSON object.",
            ));
        }
        let json: Value = sonic_rs::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid JSON in request body: {}",
                first_line(&e.to_string())
            ))
        })?;
        let view = Self::from_json(&json)?;
        Ok((view, json))
    }

    fn from_json(json: &Value) -> Result<Self, ApiError> {
        let Some(obj) = json.as_object() else {
            return Err(ApiError::bad_request(
                "The request body must be a JSON object.",
            ));
        };
        let model = match obj.get("model") {
            None | Some(Value::Null) => {
                return Err(
                    ApiError::bad_request("Missing required parameter: 'model'.")
                        .with_param("model"),
                )
            }
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::bad_request("'model' must not be empty.").with_param("model"))
            }
            Some(_) => {
                return Err(ApiError::bad_request("'model' must be a string.").with_param("model"))
            }
        };
        match obj.get("messages") {
            None | Some(Value::Null) => {
                return Err(
                    ApiError::bad_request("Missing required parameter: 'messages'.")
                        .with_param("messages"),
                )
            }
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(
                    ApiError::bad_request("'messages' must contain at least one message.")
                        .with_param("messages"),
                )
            }
            Some(Value::Array(_)) => {}
            Some(_) => {
                return Err(
                    ApiError::bad_request("'messages' must be an array.").with_param("messages")
                )
            }
        }
        let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            model,
            stream,
            include_usage,
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
        let (v, json) = ChatRequestView::parse(body).unwrap();
        assert_eq!(json["messages"][0]["content"], "hi");
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
