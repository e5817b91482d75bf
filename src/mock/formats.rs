//! The wire formats the mock answers in. Each is chosen by the request path, the way the real
//! services are addressed: `/chat/completions` (also under `/openai/deployments/<name>/`),
//! `/v1/messages`, `/models/<model>:generateContent` / `:streamGenerateContent`, Ollama's
//! `/api/chat` (JSON, or NDJSON lines when streamed, its default), and Bedrock's
//! `/model/<model>/converse` / `/converse-stream` (AWS event-stream frames).

use http::Method;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI chat completions (also the deployment-URL flavour).
    Chat,
    /// The Messages API.
    Messages,
    /// generateContent / streamGenerateContent.
    Generate,
    /// Ollama's `/api/chat`.
    Ollama,
    /// Bedrock's Converse and ConverseStream.
    Converse,
}

/// One Converse stream event as an AWS event-stream message.
fn frame(event: &str, data: &Value) -> Vec<u8> {
    crate::dsl::eventstream::encode_event(event, data.to_string().as_bytes())
}

/// An Ollama answer line (the fields its docs give; times are fixed).
fn ollama_line(r: &Reply, message: Value, done: Option<(&str, u64, u64)>) -> Value {
    let mut v = json!({"model": r.model, "created_at": "2026-01-01T00:00:00Z", "message": message, "done": done.is_some()});
    if let Some((reason, p, c)) = done {
        v["done_reason"] = json!(reason);
        v["total_duration"] = json!(1_000_000);
        v["prompt_eval_count"] = json!(p);
        v["eval_count"] = json!(c);
    }
    v
}

fn ndjson(v: &Value) -> String {
    format!("{v}\n")
}

/// The content of one mock answer.
pub struct Reply {
    pub model: String,
    pub words: Vec<String>,
    pub prompt_tokens: u64,
    pub include_usage: bool,
    pub created: u64,
    pub id: String,
    /// The tool to call, when the answer is a tool call.
    pub tool: Option<String>,
    /// Thinking blocks come first (Messages format only).
    pub thinking: bool,
}

/// The mock's thinking: its text (streamed in these pieces), the signature that comes with
/// it, and a redacted_thinking block's data. Clients must send both back unchanged.
const THINKING_PIECES: [&str; 2] = ["mock ", "thinking"];
pub const MOCK_SIGNATURE: &str = "bW9jay1zaWduYXR1cmU=";
pub const MOCK_REDACTED: &str = "bW9jay1yZWRhY3RlZA==";

/// The thinking blocks of a Messages answer that thinks.
fn thinking_blocks() -> Vec<Value> {
    vec![
        json!({"type": "thinking", "thinking": THINKING_PIECES.concat(), "signature": MOCK_SIGNATURE}),
        json!({"type": "redacted_thinking", "data": MOCK_REDACTED}),
    ]
}

/// The same blocks as Messages stream events (blocks 0 and 1): thinking_delta events, one
/// signature_delta, and a redacted_thinking block that arrives whole.
fn thinking_events() -> Vec<String> {
    let mut out = vec![named(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    )];
    for piece in THINKING_PIECES {
        out.push(named(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}),
        ));
    }
    out.push(named(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": MOCK_SIGNATURE}}),
    ));
    out.push(named(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(named(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": MOCK_REDACTED}}),
    ));
    out.push(named(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 1}),
    ));
    out
}

/// Arguments of the mock tool call, and how they are split across stream events.
const TOOL_ARGS: &str = r#"{"city":"Paris"}"#;
const TOOL_ARG_PIECES: [&str; 2] = [r#"{"city":"#, r#""Paris"}"#];

/// The name of the first tool in any of the request formats.
fn first_tool(body: &Value) -> Option<String> {
    let t = &body["tools"][0];
    t["function"]["name"]
        .as_str()
        .or_else(|| t["name"].as_str())
        .or_else(|| t["functionDeclarations"][0]["name"].as_str())
        .or_else(|| t["function_declarations"][0]["name"].as_str())
        .map(str::to_owned)
}

impl Reply {
    pub fn new(
        model: &str,
        body: &Value,
        raw: &[u8],
        chunks: usize,
        chunk_bytes: usize,
        tool_call: bool,
        thinking: bool,
    ) -> Self {
        let words = (0..chunks)
            .map(|i| {
                let mut w = if i == 0 {
                    "mock".to_owned()
                } else {
                    format!(" word{i}")
                };
                while w.len() < chunk_bytes {
                    w.push('x');
                }
                w
            })
            .collect();
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            model: model.to_owned(),
            words,
            prompt_tokens: (raw.len() as u64 / 4).max(1),
            include_usage: body["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false),
            created,
            id: format!("mock-{:016x}", fastrand::u64(..)),
            tool: if tool_call { first_tool(body) } else { None },
            thinking,
        }
    }

    fn text(&self) -> String {
        self.words.concat()
    }

    fn completion_tokens(&self) -> u64 {
        self.words.len() as u64
    }

    /// A Messages answer's content: the thinking blocks (when thinking), then `rest`.
    fn messages_content(&self, rest: Value) -> Value {
        let mut content = if self.thinking {
            thinking_blocks()
        } else {
            Vec::new()
        };
        content.push(rest);
        Value::Array(content)
    }

    /// The index of a Messages answer's first block after its thinking blocks.
    fn first_block(&self) -> usize {
        if self.thinking {
            2
        } else {
            0
        }
    }
}

fn sse(data: &Value) -> String {
    let mut out = b"data: ".to_vec();
    write_openai_ordered(&mut out, data);
    out.extend_from_slice(b"\n\n");
    into_text(out)
}

/// The order OpenAI writes a completion's and a chunk's members in (as its API reference shows
/// them and its servers send them). `json!` sorts keys by name, which would put `choices` before
/// `id` and `model`: a proxy that reads a chunk's names from its front would then meet the
/// choices first, as it never does with the real service.
const OPENAI_ORDER: [&str; 7] = [
    "id",
    "object",
    "created",
    "model",
    "system_fingerprint",
    "choices",
    "usage",
];

/// `v` as JSON text with its top-level members in [`OPENAI_ORDER`] (others after them, by
/// name); nested values as `json!` made them.
fn openai_ordered(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_openai_ordered(&mut out, v);
    out
}

/// Written with `serde_json::to_writer`, not `Display`: the mock is the benchmarks' upstream,
/// and `Display` goes through a formatter call per string, doubling the mock's CPU per event.
fn write_openai_ordered(out: &mut Vec<u8>, v: &Value) {
    let Some(members) = v.as_object() else {
        write_json(out, v);
        return;
    };
    let first = OPENAI_ORDER
        .iter()
        .copied()
        .filter(|k| members.contains_key(*k));
    let rest = (members.keys().map(String::as_str)).filter(|k| !OPENAI_ORDER.contains(k));
    out.push(b'{');
    for (i, key) in first.chain(rest).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, &key);
        out.push(b':');
        write_json(out, &members[key]);
    }
    out.push(b'}');
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing a `Value` or a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Text the mock wrote itself from JSON (always UTF-8).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn named(event: &str, data: &Value) -> String {
    let mut out = format!("event: {event}\ndata: ").into_bytes();
    write_json(&mut out, data);
    out.extend_from_slice(b"\n\n");
    into_text(out)
}

impl Format {
    pub fn detect(method: &Method, path: &str) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        // watsonx.ai's chat (`/ml/v1/text/chat`) answers in OpenAI's shape, near enough.
        if path.ends_with("/chat/completions") || path.ends_with("/ml/v1/text/chat") {
            Some(Self::Chat)
        } else if path.ends_with("/messages") {
            Some(Self::Messages)
        } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
            Some(Self::Generate)
        } else if path.ends_with("/api/chat") {
            Some(Self::Ollama)
        } else if path.starts_with("/model/")
            && (path.ends_with("/converse") || path.ends_with("/converse-stream"))
        {
            Some(Self::Converse)
        } else {
            None
        }
    }

    /// The model asked for: in the body, or in the URL for deployment-style and generate paths.
    pub fn model(self, path: &str, body: &Value) -> String {
        if let Some(m) = body["model"].as_str() {
            return m.to_owned();
        }
        if self == Format::Converse {
            let rest = path.trim_start_matches("/model/");
            let m = rest.rsplit_once('/').map_or(rest, |(m, _)| m);
            return crate::util::percent_decode(m, false);
        }
        if let Some(rest) = path.split("/deployments/").nth(1) {
            return rest.split('/').next().unwrap_or("").to_owned();
        }
        if let Some(rest) = path.split("/models/").nth(1) {
            return rest.split(':').next().unwrap_or("").to_owned();
        }
        String::new()
    }

    pub fn wants_stream(self, path: &str, query: Option<&str>, body: &Value) -> bool {
        match self {
            Format::Generate => {
                path.contains(":streamGenerateContent")
                    || query.is_some_and(|q| q.contains("alt=sse"))
            }
            // Ollama streams unless told not to.
            Format::Ollama => body["stream"].as_bool().unwrap_or(true),
            Format::Converse => path.ends_with("/converse-stream"),
            _ => body["stream"].as_bool().unwrap_or(false),
        }
    }

    /// The content type of a streamed answer.
    pub fn stream_content_type(self) -> &'static str {
        match self {
            Format::Ollama => "application/x-ndjson",
            Format::Converse => "application/vnd.amazon.eventstream",
            _ => "text/event-stream",
        }
    }

    /// The error type header an AWS service sends with an error (`x-amzn-errortype`).
    pub fn error_type(self, status: u16) -> Option<&'static str> {
        if self != Format::Converse {
            return None;
        }
        Some(match status {
            400 => "ValidationException",
            403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            429 => "ThrottlingException",
            503 => "ServiceUnavailableException",
            _ => "InternalServerException",
        })
    }

    pub fn error_body(self, status: u16, code: Option<&str>) -> Vec<u8> {
        let message = match code {
            Some(c) => format!("mock error {c} with status {status}"),
            None => format!("mock error with status {status}"),
        };
        let v = match self {
            Format::Chat => {
                let kind = match status {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    429 => "rate_limit_error",
                    _ => "server_error",
                };
                let code = code.map_or_else(|| status.to_string(), str::to_owned);
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            }
            Format::Messages => {
                let kind = match status {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            Format::Generate => {
                let st = match status {
                    400 => "INVALID_ARGUMENT",
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    404 => "NOT_FOUND",
                    429 => "RESOURCE_EXHAUSTED",
                    503 => "UNAVAILABLE",
                    _ => "INTERNAL",
                };
                json!({"error": {"code": status, "message": message, "status": st}})
            }
            Format::Ollama => json!({"error": message}),
            Format::Converse => json!({"message": message}),
        };
        v.to_string().into_bytes()
    }

    pub fn complete(self, r: &Reply) -> Vec<u8> {
        let (p, c) = (r.prompt_tokens, r.completion_tokens());
        if let Some(tool) = &r.tool {
            return openai_ordered(&self.complete_tool(r, tool));
        }
        let v = match self {
            Format::Chat => json!({
                "id": format!("chatcmpl-{}", r.id),
                "object": "chat.completion",
                "created": r.created,
                "model": r.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text()}, "finish_reason": "stop", "logprobs": null}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            }),
            Format::Messages => json!({
                "id": format!("msg_{}", r.id),
                "type": "message",
                "role": "assistant",
                "model": r.model,
                "content": r.messages_content(json!({"type": "text", "text": r.text()})),
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": c},
            }),
            Format::Generate => json!({
                "candidates": [{"content": {"parts": [{"text": r.text()}], "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c},
                "modelVersion": r.model,
            }),
            Format::Ollama => ollama_line(
                r,
                json!({"role": "assistant", "content": r.text()}),
                Some(("stop", p, c)),
            ),
            Format::Converse => json!({
                "output": {"message": {"role": "assistant", "content": [{"text": r.text()}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": p, "outputTokens": c, "totalTokens": p + c},
                "metrics": {"latencyMs": 1},
            }),
        };
        match self {
            Format::Chat => openai_ordered(&v),
            _ => serde_json::to_vec(&v).unwrap_or_default(),
        }
    }

    fn complete_tool(self, r: &Reply, tool: &str) -> Value {
        let p = r.prompt_tokens;
        match self {
            Format::Chat => json!({
                "id": format!("chatcmpl-{}", r.id), "object": "chat.completion", "created": r.created, "model": r.model,
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_mock1", "type": "function", "function": {"name": tool, "arguments": TOOL_ARGS}}]}}],
                "usage": {"prompt_tokens": p, "completion_tokens": 5, "total_tokens": p + 5},
            }),
            Format::Messages => json!({
                "id": format!("msg_{}", r.id), "type": "message", "role": "assistant", "model": r.model,
                "content": r.messages_content(json!({"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {"city": "Paris"}})),
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": 5},
            }),
            Format::Generate => json!({
                "candidates": [{"content": {"parts": [{"functionCall": {"name": tool, "args": {"city": "Paris"}}}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": 5, "totalTokenCount": p + 5},
                "modelVersion": r.model,
            }),
            Format::Ollama => ollama_line(
                r,
                json!({"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": tool, "arguments": {"city": "Paris"}}}]}),
                Some(("stop", p, 5)),
            ),
            Format::Converse => json!({
                "output": {"message": {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "tooluse_mock1", "name": tool, "input": {"city": "Paris"}}}]}},
                "stopReason": "tool_use",
                "usage": {"inputTokens": p, "outputTokens": 5, "totalTokens": p + 5},
                "metrics": {"latencyMs": 1},
            }),
        }
    }

    /// A stream's messages as the bytes sent: text events, or AWS event-stream frames.
    pub fn stream_messages(self, r: &Reply) -> Vec<Vec<u8>> {
        if self != Format::Converse {
            return self
                .stream_events(r)
                .into_iter()
                .map(String::into_bytes)
                .collect();
        }
        let p = r.prompt_tokens;
        let mut out = vec![frame("messageStart", &json!({"role": "assistant"}))];
        let (stop, c) = match &r.tool {
            Some(tool) => {
                out.push(frame(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_mock1", "name": tool}}}),
                ));
                for piece in TOOL_ARG_PIECES {
                    out.push(frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                    ));
                }
                ("tool_use", 5)
            }
            None => {
                for w in &r.words {
                    out.push(frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"text": w}}),
                    ));
                }
                ("end_turn", r.completion_tokens())
            }
        };
        out.push(frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
        out.push(frame("messageStop", &json!({"stopReason": stop})));
        out.push(frame(
            "metadata",
            &json!({"usage": {"inputTokens": p, "outputTokens": c, "totalTokens": p + c}, "metrics": {"latencyMs": 1}}),
        ));
        out
    }

    fn tool_stream_events(self, r: &Reply, tool: &str) -> Vec<String> {
        let p = r.prompt_tokens;
        let mut out = Vec::new();
        match self {
            Format::Chat => {
                let id = format!("chatcmpl-{}", r.id);
                let chunk = |delta: Value, finish: Value| {
                    sse(
                        &json!({"id": id, "object": "chat.completion.chunk", "created": r.created, "model": r.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
                    )
                };
                out.push(chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock1", "type": "function",
                        "function": {"name": tool, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in TOOL_ARG_PIECES {
                    out.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
                out.push(chunk(json!({}), json!("tool_calls")));
                if r.include_usage {
                    out.push(sse(&json!({"id": id, "object": "chat.completion.chunk", "created": r.created, "model": r.model,
                        "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": 5, "total_tokens": p + 5}})));
                }
                out.push("data: [DONE]\n\n".to_owned());
            }
            Format::Messages => {
                out.push(named("message_start", &json!({"type": "message_start", "message": {
                    "id": format!("msg_{}", r.id), "type": "message", "role": "assistant", "model": r.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": p, "output_tokens": 1}}})));
                if r.thinking {
                    out.extend(thinking_events());
                }
                let i = r.first_block();
                out.push(named("content_block_start", &json!({"type": "content_block_start", "index": i,
                    "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": tool, "input": {}}})));
                for piece in TOOL_ARG_PIECES {
                    out.push(named(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
                out.push(named(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": i}),
                ));
                out.push(named("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"output_tokens": 5}})));
                out.push(named("message_stop", &json!({"type": "message_stop"})));
            }
            Format::Generate => {
                out.push(sse(&json!({
                    "candidates": [{"content": {"parts": [{"functionCall": {"name": tool, "args": {"city": "Paris"}}}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": 5, "totalTokenCount": p + 5},
                    "modelVersion": r.model,
                })));
            }
            // Binary frames: see `stream_messages`.
            Format::Converse => {}
            Format::Ollama => {
                out.push(ndjson(&ollama_line(
                    r,
                    json!({"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": tool, "arguments": {"city": "Paris"}}}]}),
                    None,
                )));
                out.push(ndjson(&ollama_line(
                    r,
                    json!({"role": "assistant", "content": ""}),
                    Some(("stop", p, 5)),
                )));
            }
        }
        out
    }

    pub fn stream_events(self, r: &Reply) -> Vec<String> {
        if let Some(tool) = &r.tool {
            return self.tool_stream_events(r, tool);
        }
        let (p, c) = (r.prompt_tokens, r.completion_tokens());
        let mut out = Vec::with_capacity(r.words.len() + 4);
        match self {
            Format::Chat => {
                let id = format!("chatcmpl-{}", r.id);
                let chunk = |delta: Value, finish: Value| {
                    let mut v = json!({
                        "id": id, "object": "chat.completion.chunk", "created": r.created, "model": r.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    });
                    if r.include_usage {
                        v["usage"] = Value::Null;
                    }
                    sse(&v)
                };
                out.push(chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ));
                for w in &r.words {
                    out.push(chunk(json!({"content": w}), Value::Null));
                }
                out.push(chunk(json!({}), json!("stop")));
                if r.include_usage {
                    out.push(sse(&json!({
                        "id": id, "object": "chat.completion.chunk", "created": r.created, "model": r.model,
                        "choices": [],
                        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                    })));
                }
                out.push("data: [DONE]\n\n".to_owned());
            }
            Format::Messages => {
                out.push(named("message_start", &json!({"type": "message_start", "message": {
                    "id": format!("msg_{}", r.id), "type": "message", "role": "assistant", "model": r.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": p, "output_tokens": 1}}})));
                if r.thinking {
                    out.extend(thinking_events());
                }
                let i = r.first_block();
                out.push(named("content_block_start", &json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})));
                out.push(named("ping", &json!({"type": "ping"})));
                for w in &r.words {
                    out.push(named("content_block_delta", &json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": w}})));
                }
                out.push(named(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": i}),
                ));
                out.push(named("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": c}})));
                out.push(named("message_stop", &json!({"type": "message_stop"})));
            }
            Format::Generate => {
                let n = r.words.len();
                for (i, w) in r.words.iter().enumerate() {
                    let mut v = json!({
                        "candidates": [{"content": {"parts": [{"text": w}], "role": "model"}, "index": 0}],
                        "modelVersion": r.model,
                    });
                    if i + 1 == n {
                        v["candidates"][0]["finishReason"] = json!("STOP");
                        v["usageMetadata"] = json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c});
                    }
                    out.push(sse(&v));
                }
            }
            // Binary frames: see `stream_messages`.
            Format::Converse => {}
            Format::Ollama => {
                for w in &r.words {
                    out.push(ndjson(&ollama_line(
                        r,
                        json!({"role": "assistant", "content": w}),
                        None,
                    )));
                }
                out.push(ndjson(&ollama_line(
                    r,
                    json!({"role": "assistant", "content": ""}),
                    Some(("stop", p, c)),
                )));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply {
        Reply {
            model: "m".into(),
            words: vec!["a".into(), "b".into()],
            prompt_tokens: 3,
            include_usage: true,
            created: 1,
            id: "x".into(),
            tool: None,
            thinking: false,
        }
    }

    /// Where each name first appears in `text`.
    fn order(text: &str, names: &[&str]) -> Vec<usize> {
        names
            .iter()
            .map(|n| text.find(&format!("\"{n}\":")).expect(n))
            .collect()
    }

    #[test]
    fn chat_answers_and_chunks_name_their_members_in_openai_s_order() {
        let names = ["id", "object", "created", "model", "choices", "usage"];
        let whole = String::from_utf8(Format::Chat.complete(&reply())).unwrap();
        let at = order(&whole, &names);
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{whole}");
        for event in Format::Chat.stream_events(&reply()) {
            let Some(data) = event.strip_prefix("data: {") else {
                continue; // [DONE]
            };
            let at = order(data, &["id", "object", "created", "model", "choices"]);
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{event}");
            // Still one JSON object, the same as `json!` made it.
            let v: Value = serde_json::from_str(&event[6..]).unwrap();
            assert_eq!(v["model"], "m");
        }
        assert_eq!(
            openai_ordered(&json!([1, {"b": 1, "a": 2}])),
            br#"[1,{"a":2,"b":1}]"#
        );
        assert_eq!(
            openai_ordered(&json!({"z": 1, "id": "i"})),
            br#"{"id":"i","z":1}"#
        );
    }
}
