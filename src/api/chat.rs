//! The chat-completions request as the gateway receives it: parsed once into the JSON tree the
//! provider interpreter works on, and validated for the few fields the gateway itself needs to
//! route it (model, stream flags).

use serde_json::Value;

use super::error::ApiError;
use crate::json::JsonError;
use crate::util::clip;

/// What the gateway reads from a chat-completions body before routing it.
#[derive(Debug, Clone)]
pub struct ChatRequestView {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

/// A request body that passed the checks.
#[derive(Debug)]
pub struct CheckedBody {
    pub view: ChatRequestView,
    /// It has a top-level `cache` member (the gateway's own controls, taken out before the
    /// body goes upstream).
    pub has_cache: bool,
    /// Its tree, when the check built one.
    pub tree: Option<Value>,
    /// The OpenAI request fields at its top level, bit per id (`dsl::schema::REQUEST_FIELDS`;
    /// all set when the check built the tree).
    pub fields: u64,
    /// Where its top-level members are, when the check noted it.
    pub members: Option<crate::json::TopMembers>,
}

impl ChatRequestView {
    /// Checks the request body without building its tree (`chat_shape`); a body that fails is
    /// checked again by [`ChatRequestView::parse`], which words the error. Errors are 400s in
    /// the OpenAI shape.
    pub fn check(body: &[u8], max_depth: usize) -> Result<CheckedBody, ApiError> {
        if !body.is_empty() {
            if let Some(shape) = super::chat_shape::check(body, max_depth) {
                return Ok(CheckedBody {
                    view: Self {
                        model: shape.model,
                        stream: shape.stream,
                        include_usage: shape.include_usage,
                    },
                    has_cache: shape.has_cache,
                    tree: None,
                    fields: shape.fields,
                    members: shape.members,
                });
            }
        }
        let checked = Self::check_with_tree(body, max_depth)?;
        // The two checks disagree (they should not): the tree's verdict stands.
        tracing::warn!("a chat request passed only the tree-building check");
        Ok(checked)
    }

    /// Checks the request body by building its tree (kept in the answer): for a gateway whose
    /// providers all read the tree anyway.
    pub fn check_with_tree(body: &[u8], max_depth: usize) -> Result<CheckedBody, ApiError> {
        let (view, tree) = Self::parse(body, max_depth)?;
        Ok(CheckedBody {
            view,
            has_cache: tree.get("cache").is_some(),
            tree: Some(tree),
            fields: u64::MAX,
            members: None,
        })
    }

    /// Parses and validates the request body, returning the view and the parsed body. Errors
    /// are 400s in the OpenAI shape. Nesting deeper than `max_depth` is refused before the
    /// body is parsed.
    pub fn parse(body: &[u8], max_depth: usize) -> Result<(Self, Value), ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "Request body is empty: expected a JSON object.",
            ));
        }
        let json = crate::json::parse(body, max_depth).map_err(|e| match e {
            JsonError::TooDeep { max, .. } => ApiError::bad_request(format!(
                "Request body nests JSON deeper than the limit of {max} levels."
            )),
            JsonError::Invalid(m) => {
                ApiError::bad_request(format!("Invalid JSON in request body: {}", clip(&m)))
            }
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
        let f = TopFields::of(obj);
        let model = match f.model {
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
            Some(other) => return Err(wrong_type("model", "a string", other)),
        };
        match f.messages {
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
            Some(Value::Array(messages)) => {
                for (i, m) in messages.iter().enumerate() {
                    check_message(i, m)?;
                }
            }
            Some(other) => return Err(wrong_type("messages", "an array", other)),
        }
        let stream = optional_bool(f.stream, "stream")?.unwrap_or(false);
        let include_usage = match f.stream_options {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(wrong_type(
                        "stream_options.include_usage",
                        "a boolean",
                        other,
                    ))
                }
            },
            Some(other) => return Err(wrong_type("stream_options", "an object", other)),
        };
        for (value, field, min) in [
            (f.n, "n", 1),
            (f.max_tokens, "max_tokens", 1),
            (f.max_completion_tokens, "max_completion_tokens", 1),
        ] {
            check_count(value, field, min)?;
        }
        match f.tools {
            None | Some(Value::Null) => {}
            Some(Value::Array(tools)) => {
                for (i, t) in tools.iter().enumerate() {
                    check_tool(i, t)?;
                }
            }
            Some(other) => return Err(wrong_type("tools", "an array", other)),
        }
        Ok(Self {
            model,
            stream,
            include_usage,
        })
    }
}

/// The roles OpenAI's chat API accepts (`function` is deprecated but still sent by old clients).
pub(super) const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn check_message(i: usize, m: &Value) -> Result<(), ApiError> {
    let Some(m) = m.as_object() else {
        return Err(wrong_type(&format!("messages[{i}]"), "an object", m));
    };
    match m.get("role") {
        None | Some(Value::Null) => Err(ApiError::bad_request(format!(
            "Missing required parameter: 'messages[{i}].role'."
        ))
        .with_param(format!("messages[{i}].role"))),
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => match m.get("content") {
            None | Some(Value::Null | Value::String(_)) => Ok(()),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let at = format!("messages[{i}].content[{j}]");
                    let Some(part) = p.as_object() else {
                        return Err(wrong_type(&at, "an object", p));
                    };
                    match part.get("type") {
                        Some(Value::String(_)) => {}
                        None | Some(Value::Null) => {
                            return Err(ApiError::bad_request(format!(
                                "Missing required parameter: '{at}.type'."
                            ))
                            .with_param(format!("{at}.type")))
                        }
                        Some(other) => {
                            return Err(wrong_type(&format!("{at}.type"), "a string", other))
                        }
                    }
                }
                Ok(())
            }
            Some(other) => Err(wrong_type(
                &format!("messages[{i}].content"),
                "a string or an array of content parts",
                other,
            )),
        },
        Some(Value::String(r)) => Err(ApiError::bad_request(format!(
            "Invalid value for 'messages[{i}].role': `{}`; expected one of {}.",
            clip(r),
            ROLES.join(", ")
        ))
        .with_param(format!("messages[{i}].role"))),
        Some(other) => Err(wrong_type(
            &format!("messages[{i}].role"),
            "a string",
            other,
        )),
    }
}

fn check_tool(i: usize, t: &Value) -> Result<(), ApiError> {
    let at = format!("tools[{i}]");
    let Some(tool) = t.as_object() else {
        return Err(wrong_type(&at, "an object", t));
    };
    match tool.get("type") {
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => {
            return Err(
                ApiError::bad_request(format!("Missing required parameter: '{at}.type'."))
                    .with_param(format!("{at}.type")),
            )
        }
        Some(other) => return Err(wrong_type(&format!("{at}.type"), "a string", other)),
    }
    if tool.get("type").and_then(Value::as_str) == Some("function") {
        match tool.get("function") {
            Some(Value::Object(f)) => match f.get("name") {
                Some(Value::String(_)) => {}
                None | Some(Value::Null) => {
                    return Err(ApiError::bad_request(format!(
                        "Missing required parameter: '{at}.function.name'."
                    ))
                    .with_param(format!("{at}.function.name")))
                }
                Some(other) => {
                    return Err(wrong_type(
                        &format!("{at}.function.name"),
                        "a string",
                        other,
                    ))
                }
            },
            None | Some(Value::Null) => {
                return Err(ApiError::bad_request(format!(
                    "Missing required parameter: '{at}.function'."
                ))
                .with_param(format!("{at}.function")))
            }
            Some(other) => return Err(wrong_type(&format!("{at}.function"), "an object", other)),
        }
    }
    Ok(())
}

/// The top-level members the gateway checks, found in one pass over the object (a lookup
/// each compared names again and again).
#[derive(Default)]
struct TopFields<'a> {
    model: Option<&'a Value>,
    messages: Option<&'a Value>,
    stream: Option<&'a Value>,
    stream_options: Option<&'a Value>,
    n: Option<&'a Value>,
    max_tokens: Option<&'a Value>,
    max_completion_tokens: Option<&'a Value>,
    tools: Option<&'a Value>,
}

impl<'a> TopFields<'a> {
    fn of(obj: &'a serde_json::Map<String, Value>) -> Self {
        let mut f = Self::default();
        for (name, value) in obj {
            let slot = match name.as_str() {
                "model" => &mut f.model,
                "messages" => &mut f.messages,
                "stream" => &mut f.stream,
                "stream_options" => &mut f.stream_options,
                "n" => &mut f.n,
                "max_tokens" => &mut f.max_tokens,
                "max_completion_tokens" => &mut f.max_completion_tokens,
                "tools" => &mut f.tools,
                _ => continue,
            };
            *slot = Some(value);
        }
        f
    }
}

fn optional_bool(value: Option<&Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(field, "a boolean", other)),
    }
}

/// An optional integer field that must be at least `min`.
fn check_count(value: Option<&Value>, field: &str, min: u64) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= min => Ok(()),
            _ if n.is_f64() => Err(wrong_type(field, "an integer", &Value::Number(n.clone()))),
            _ => Err(ApiError::bad_request(format!(
                "Invalid value for '{field}': {n}; it must be at least {min}."
            ))
            .with_param(field)),
        },
        Some(other) => Err(wrong_type(field, "an integer", other)),
    }
}

/// 400 naming the field, the type expected and the type received (not the value: it may be
/// large, and it is the client's own).
fn wrong_type(field: &str, expected: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::bad_request(format!(
        "Invalid type for '{field}': expected {expected}, but got {got}."
    ))
    .with_param(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routing_fields() {
        let body =
            br#"{"model": "demo", "messages":[{"role":"user","content":"hi"}], "stream": true,
            "stream_options": {"include_usage": true}}"#;
        let (v, json) = ChatRequestView::parse(body, 128).unwrap();
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
            (br#"{"model":"m","messages":[1,2]}"#, Some("messages[0]")),
            (br#"{"model":"m","messages":[{"content":"x"}]}"#, Some("messages[0].role")),
            (br#"{"model":"m","messages":[{"role":7}]}"#, Some("messages[0].role")),
            (br#"{"model":"m","messages":[{"role":"robot"}]}"#, Some("messages[0].role")),
            (br#"{"model":"m","messages":[{"role":"user","content":5}]}"#, Some("messages[0].content")),
            (br#"{"model":"m","messages":[{"role":"user","content":["x"]}]}"#, Some("messages[0].content[0]")),
            (br#"{"model":"m","messages":[{"role":"user"}],"stream":"true"}"#, Some("stream")),
            (br#"{"model":"m","messages":[{"role":"user"}],"stream":1}"#, Some("stream")),
            (br#"{"model":"m","messages":[{"role":"user"}],"stream_options":true}"#, Some("stream_options")),
            (br#"{"model":"m","messages":[{"role":"user"}],"stream_options":{"include_usage":"yes"}}"#, Some("stream_options.include_usage")),
            (br#"{"model":"m","messages":[{"role":"user"}],"n":"2"}"#, Some("n")),
            (br#"{"model":"m","messages":[{"role":"user"}],"n":0}"#, Some("n")),
            (br#"{"model":"m","messages":[{"role":"user"}],"n":1.5}"#, Some("n")),
            (br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#, Some("max_tokens")),
            (br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":"9"}"#, Some("max_tokens")),
            (br#"{"model":"m","messages":[{"role":"user"}],"tools":"x"}"#, Some("tools")),
            (br#"{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function"}]}"#, Some("tools[0].function")),
            (br#"{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function","function":{"name":3}}]}"#, Some("tools[0].function.name")),
            (br#"{"model":"m","messages":[{"role":"user"}],"tools":[3]}"#, Some("tools[0]")),
        ] {
            let e = ChatRequestView::parse(body, 128).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(
                e.param.as_deref(),
                param,
                "{}: {}",
                String::from_utf8_lossy(body),
                e.message
            );
        }
    }

    #[test]
    fn accepts_nulls_and_well_typed_optional_fields() {
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]},
            {"role":"assistant","content":null}],"stream":null,"stream_options":null,"n":2,
            "max_tokens":null,"tools":[{"type":"function","function":{"name":"f"}}]}"#;
        let (v, _) = ChatRequestView::parse(body, 128).unwrap();
        assert!(!v.stream);
    }

    #[test]
    fn deep_nesting_is_a_clear_400() {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":{}{}}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = ChatRequestView::parse(body.as_bytes(), 128).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("deeper than the limit of 128"),
            "{}",
            e.message
        );
    }
}
