//! Streams for providers that cannot stream (`fake_stream` in their file): the upstream answers
//! one whole completion, and the client, which asked for a stream, gets it as the chunks a
//! streaming provider would have sent — each choice's message in one delta, its finish, the
//! usage chunk when the client asked for it (`stream_options.include_usage`), then
//! `data: [DONE]`.

use serde_json::{json, Map, Value};

/// The SSE text of `completion` (an OpenAI `chat.completion`) as a stream.
pub fn chunks(completion: &[u8], include_usage: bool, max_depth: usize) -> Result<Vec<u8>, String> {
    let v = crate::json::parse(completion, max_depth).map_err(|e| e.to_string())?;
    let Value::Object(top) = v else {
        return Err("the completion is not a JSON object".into());
    };
    let head = |choices: Value| {
        let mut c = Map::new();
        for k in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(x) = top.get(k).filter(|x| !x.is_null()) {
                c.insert(k.to_owned(), x.clone());
            }
        }
        c.insert("object".into(), json!("chat.completion.chunk"));
        c.insert("choices".into(), choices);
        c
    };
    let mut out = Vec::with_capacity(completion.len() * 2 + 64);
    let mut push = |c: Map<String, Value>| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(Value::Object(c).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    let choices = top
        .get("choices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or_else(|| json!(i));
        let mut delta = choice
            .get("message")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        delta.entry("role").or_insert_with(|| json!("assistant"));
        // Streamed tool calls carry their position.
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (k, call) in calls.iter_mut().enumerate() {
                if let Value::Object(c) = call {
                    c.insert("index".into(), json!(k));
                }
            }
        }
        push(head(
            json!([{"index": index, "delta": delta, "finish_reason": null}]),
        ));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        push(head(
            json!([{"index": index, "delta": {}, "finish_reason": finish}]),
        ));
    }
    if include_usage {
        if let Some(u) = top.get("usage").filter(|u| u.is_object()) {
            let mut c = head(json!([]));
            c.insert("usage".into(), u.clone());
            push(c);
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &[u8]) -> Vec<Value> {
        let s = String::from_utf8(text.to_vec()).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n"), "{s}");
        s.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }

    #[test]
    fn a_completion_becomes_a_delta_a_finish_and_the_usage() {
        let body = br#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let ev = events(&chunks(body, true, 64).unwrap());
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["object"], "chat.completion.chunk");
        assert_eq!(ev[0]["id"], "c1");
        assert_eq!(ev[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(
            ev[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[1]["choices"][0]["delta"], json!({}));
        assert_eq!(ev[2]["choices"], json!([]));
        assert_eq!(ev[2]["usage"]["total_tokens"], 5);
        // Without include_usage: no usage chunk.
        assert_eq!(events(&chunks(body, false, 64).unwrap()).len(), 2);
    }

    #[test]
    fn several_choices_keep_their_indexes_and_bad_bodies_are_errors() {
        let body = br#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"message":{"content":"a"},"finish_reason":"stop"},{"index":1,"message":{"content":"b"},"finish_reason":"length"}]}"#;
        let ev = events(&chunks(body, true, 64).unwrap());
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[2]["choices"][0]["index"], 1);
        assert_eq!(ev[2]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[3]["choices"][0]["finish_reason"], "length");
        assert!(chunks(b"[1]", true, 64).is_err());
        assert!(chunks(b"{", true, 64).is_err());
    }
}
