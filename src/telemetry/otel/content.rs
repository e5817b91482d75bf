//! Message content for spans, recorded only when `llmux.tracing.capture_content` is on: the
//! request's messages (`gen_ai.input.messages`) and the answer (`gen_ai.output.messages`), in
//! the GenAI conventions' shape (`[{"role", "parts": [{"type": "text", "content"}]}]`), with
//! every configured secret and personal data (e-mail addresses, phone, card and social
//! security numbers) masked, and bounded in size.

use serde_json::{json, Value};

use crate::telemetry::{pii, redact};

/// Longest content attribute, in bytes (cut at a character boundary, marked).
const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// `gen_ai.input.messages` from an OpenAI chat request's `messages`.
pub fn input_messages(body: &Value, secrets: &[String]) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let converted: Vec<Value> = messages
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            let mut parts = content_parts(m.get("content"));
            for call in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parts.push(json!({
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": call.pointer("/function/name"),
                    "arguments": call.pointer("/function/arguments"),
                }));
            }
            if role == "tool" {
                let text = m.get("content").cloned().unwrap_or(Value::Null);
                parts = vec![json!({
                    "type": "tool_call_response",
                    "id": m.get("tool_call_id"),
                    "response": text,
                })];
            }
            json!({ "role": role, "parts": parts })
        })
        .collect();
    Some(finish(&Value::Array(converted), secrets))
}

/// `gen_ai.output.messages` from the answer's text.
pub fn output_messages(text: &str, finish_reason: Option<&str>, secrets: &[String]) -> String {
    let v = json!([{
        "role": "assistant",
        "parts": [{ "type": "text", "content": text }],
        "finish_reason": finish_reason.unwrap_or(""),
    }]);
    finish(&v, secrets)
}

/// OpenAI content (a string or an array of parts) as GenAI parts; media are named, not
/// copied (a data URL can be megabytes).
fn content_parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({ "type": "text", "content": s })],
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => json!({ "type": "text", "content": p.get("text") }),
                Some(other) => json!({ "type": other }),
                None => json!({ "type": "unknown" }),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn finish(v: &Value, secrets: &[String]) -> String {
    let text = serde_json::to_string(v).unwrap_or_default();
    let text = redact::redact_str(&text, secrets);
    let masked = pii::redact_pii(text.as_bytes());
    let mut s = String::from_utf8_lossy(&masked).into_owned();
    if s.len() > MAX_CONTENT_BYTES {
        let mut cut = MAX_CONTENT_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…[truncated]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_the_genai_shape_with_secrets_and_personal_data_masked() {
        let body = json!({
            "messages": [
                {"role": "system", "content": "key sk-live-0123456789abcdef0123"},
                {"role": "user", "content": [
                    {"type": "text", "text": "mail me at jane.doe@example.com"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]}
            ]
        });
        let secrets = vec!["sk-live-0123456789abcdef0123".to_string()];
        let s = input_messages(&body, &secrets).unwrap();
        assert!(!s.contains("sk-live-0123456789abcdef0123"), "{s}");
        assert!(!s.contains("jane.doe@example.com"), "{s}");
        assert!(!s.contains("base64,AAAA"), "{s}");
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v[0]["role"], "system");
        assert_eq!(v[1]["parts"][0]["type"], "text");
        assert_eq!(v[1]["parts"][1]["type"], "image_url");
    }

    #[test]
    fn long_content_is_cut() {
        let text = "é".repeat(MAX_CONTENT_BYTES);
        let s = output_messages(&text, Some("stop"), &[]);
        assert!(s.len() <= MAX_CONTENT_BYTES + "…[truncated]".len());
        assert!(s.ends_with("…[truncated]"));
    }
}
