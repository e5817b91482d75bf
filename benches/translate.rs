//! Translator cost: a typical Anthropic request (system + 6 turns + 2 tools) and its response
//! through `providers/anthropic.llmux`, one stream event, and — as the yardstick in the same
//! run — an equivalent hand-written serde mapping and the bare JSON parse of the event. And
//! the OpenAI passthrough of a 12 KiB request: its check, and its upstream body built with the
//! check's notes of where the members are and without them.
//!
//! Run: `cargo bench --bench translate`.

use std::path::PathBuf;

// The gateway's allocator, so that allocation costs are those of production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use llmux::dsl::{self, RequestCtx};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

fn request() -> Value {
    json!({
        "model": "claude",
        "max_tokens": 1024,
        "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "You are a helpful travel assistant. Answer briefly."},
            {"role": "user", "content": "I am planning a trip to Paris next week."},
            {"role": "assistant", "content": "Great! How can I help you plan it?"},
            {"role": "user", "content": "What will the weather be like, and what should I pack?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":7}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"forecast\":\"mild, 18C, light rain midweek\"}"},
            {"role": "user", "content": "Thanks. Also find me a hotel near the Louvre."}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "find_hotel", "description": "Search hotels near a landmark",
                "parameters": {"type": "object", "properties": {"near": {"type": "string"}, "max_price": {"type": "number"}}, "required": ["near"]}}}
        ],
        "tool_choice": "auto"
    })
}

fn response() -> Vec<u8> {
    json!({
        "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [
            {"type": "text", "text": "Pack layers and an umbrella. Let me look for hotels."},
            {"type": "tool_use", "id": "toolu_01", "name": "find_hotel", "input": {"near": "Louvre", "max_price": 250}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 412, "output_tokens": 58, "cache_read_input_tokens": 128, "cache_creation_input_tokens": 0}
    })
    .to_string()
    .into_bytes()
}

const EVENT: &[u8] = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Pack layers and"}}"#;

fn ctx() -> RequestCtx<'static> {
    RequestCtx {
        model: "claude-sonnet-4".into(),
        api_key: Some("sk-ant-bench".into()),
        stream: false,
        request_id: "bench".into(),
        now: 1_700_000_000,
        ..Default::default()
    }
}

// ---- the yardstick: the same mapping written by hand with serde ----

#[derive(Deserialize)]
struct OaRequest {
    #[allow(dead_code)]
    model: String,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    messages: Vec<OaMessage>,
    #[serde(default)]
    tools: Vec<OaTool>,
}

#[derive(Deserialize)]
struct OaMessage {
    role: String,
    content: Option<String>,
    tool_calls: Option<Vec<OaToolCall>>,
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct OaToolCall {
    id: String,
    function: OaFunction,
}

#[derive(Deserialize)]
struct OaFunction {
    name: String,
    arguments: String,
}

#[derive(Deserialize)]
struct OaTool {
    function: OaToolDef,
}

#[derive(Deserialize)]
struct OaToolDef {
    name: String,
    description: Option<String>,
    parameters: Value,
}

#[derive(Serialize)]
struct AnRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Value>,
    tools: Vec<Value>,
    tool_choice: Value,
}

fn hand_request(body: &[u8]) -> Vec<u8> {
    let r: OaRequest = sonic_rs::from_slice(body).unwrap();
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &r.messages {
        match m.role.as_str() {
            "system" | "developer" => system.push(m.content.clone().unwrap_or_default()),
            "tool" => messages.push(json!({"role": "user", "content": [{"type": "tool_result",
                "tool_use_id": m.tool_call_id, "content": m.content}]})),
            "assistant" if m.tool_calls.is_some() => {
                let blocks: Vec<Value> = m.tool_calls.iter().flatten().map(|c| json!({"type": "tool_use", "id": c.id,
                    "name": c.function.name, "input": serde_json::from_str::<Value>(&c.function.arguments).unwrap_or(Value::Null)})).collect();
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            role => messages.push(json!({"role": role, "content": m.content})),
        }
    }
    let out = AnRequest {
        model: "claude-sonnet-4",
        max_tokens: r.max_tokens.unwrap_or(4096),
        temperature: r.temperature,
        system: (!system.is_empty()).then(|| system.join("\n")),
        messages,
        tools: r
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.function.name, "description": t.function.description,
            "input_schema": t.function.parameters})
            })
            .collect(),
        tool_choice: json!({"type": "auto"}),
    };
    sonic_rs::to_vec(&out).unwrap()
}

fn hand_response(body: &[u8]) -> Vec<u8> {
    let v: Value = sonic_rs::from_slice(body).unwrap();
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls
                .push(json!({"id": block["id"], "type": "function", "function": {
                "name": block["name"], "arguments": block["input"].to_string()}})),
            _ => {}
        }
    }
    let finish = match v["stop_reason"].as_str() {
        Some("tool_use") => "tool_calls",
        Some("max_tokens") => "length",
        _ => "stop",
    };
    let (p, c) = (
        v["usage"]["input_tokens"].as_u64().unwrap_or(0),
        v["usage"]["output_tokens"].as_u64().unwrap_or(0),
    );
    sonic_rs::to_vec(&json!({"id": v["id"], "object": "chat.completion", "created": 1_700_000_000u64, "model": v["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": calls}, "finish_reason": finish}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})).unwrap()
}

fn benches(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("providers");
    let set = dsl::load_dir(&dir).unwrap_or_else(|e| panic!("{}", dsl::format_errors(&e)));
    let anthropic = set.get("anthropic").expect("providers/anthropic.llmux");
    let req = request();
    let raw = serde_json::to_vec(&req).unwrap();
    let resp = response();
    let ctx = ctx();

    // Sanity: the mapping works before it is timed.
    anthropic.build_request_raw(&ctx, &req, &raw).unwrap();
    anthropic.parse_response(200, &resp, &ctx).unwrap();

    let mut g = c.benchmark_group("anthropic");
    g.bench_function("request+response (dsl, incl. JSON parse)", |b| {
        b.iter(|| {
            let v: Value = dsl::parse_json(black_box(&raw), 128).unwrap();
            let up = anthropic.build_request_raw(&ctx, &v, &raw).unwrap();
            let out = anthropic
                .parse_response(200, black_box(&resp), &ctx)
                .unwrap();
            black_box((up, dsl::to_json_vec(&out)))
        })
    });
    g.bench_function("request+response (hand-written serde)", |b| {
        b.iter(|| {
            black_box((
                hand_request(black_box(&raw)),
                hand_response(black_box(&resp)),
            ))
        })
    });
    let mut sctx = ctx.clone();
    sctx.stream = true;
    let mut state = anthropic.stream_state(&sctx);
    let mut chunks = Vec::with_capacity(4);
    g.bench_function("stream event (dsl: parse + map + serialise)", |b| {
        b.iter(|| {
            chunks.clear();
            anthropic
                .map_event(
                    &mut state,
                    Some("content_block_delta"),
                    black_box(EVENT),
                    &mut chunks,
                )
                .unwrap();
            black_box(dsl::to_json_vec(&chunks[0]))
        })
    });
    g.bench_function("stream event (JSON parse only)", |b| {
        b.iter(|| black_box(dsl::parse_json(black_box(EVENT), 128).unwrap()))
    });
    // The same event as it arrives: SSE framing decoded first (the yardstick of the
    // event-stream row below).
    let sse = [
        b"event: content_block_delta\ndata: ".as_slice(),
        EVENT,
        b"\n\n",
    ]
    .concat();
    let mut frames = Vec::with_capacity(2);
    g.bench_function("SSE event (decode + map + serialise)", |b| {
        b.iter(|| {
            frames.clear();
            chunks.clear();
            let mut dec = dsl::FrameDecoder::new(dsl::Framing::Sse);
            dec.feed(black_box(&sse), &mut frames).unwrap();
            anthropic
                .map_frame(&mut state, &frames[0], &mut chunks)
                .unwrap();
            black_box(dsl::to_json_vec(&chunks[0]))
        })
    });
    g.finish();

    bedrock(c, &set, &req, &raw, &ctx);
    passthrough(c, &set, &ctx);
}

/// A 12 KiB chat request: a long system prompt and turns of history, as chat clients send.
fn large_request() -> Vec<u8> {
    let words = [
        "the", "gateway", "routes", "each", "call", "to", "one", "of", "many", "upstream",
    ];
    let text = |n: usize, seed: usize| -> String {
        (0..n)
            .map(|i| words[(seed + i * 7) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut messages = vec![json!({"role": "system", "content": text(300, 1)})];
    for turn in 0..5 {
        messages.push(json!({"role": "user", "content": text(150, turn)}));
        messages.push(json!({"role": "assistant", "content": text(120, turn + 3)}));
    }
    messages.push(json!({"role": "user", "content": text(60, 5)}));
    serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": messages,
        "temperature": 0.7, "max_tokens": 512, "user": "u-123"}))
    .unwrap()
}

/// The OpenAI passthrough of a large request: the gateway's check (which notes where the
/// top-level members are), and the upstream body patched from those notes against the same
/// patch walking every member's value.
fn passthrough(c: &mut Criterion, set: &dsl::ProviderSet, ctx: &RequestCtx) {
    use llmux::api::ChatRequestView;
    let openai = set.get("openai").expect("providers/openai.llmux");
    let raw = large_request();
    let checked = ChatRequestView::check(&raw, 128).unwrap();
    assert!(checked.members.is_some(), "the check notes the members");
    let tree = std::cell::OnceCell::new();
    let walked = llmux::json::LazyDoc::new(&raw, &tree, 128);
    let noted = walked.with_members(checked.members.as_ref());
    let build = |doc: &llmux::json::LazyDoc<'_>| {
        openai
            .build_request_doc(ctx, None, doc, checked.fields)
            .unwrap()
    };
    assert_eq!(build(&walked).body, build(&noted).body);
    assert!(tree.get().is_none(), "the passthrough reads no tree");

    let mut g = c.benchmark_group(format!("openai passthrough, {} bytes", raw.len()));
    g.bench_function("request check (notes the members)", |b| {
        b.iter(|| black_box(ChatRequestView::check(black_box(&raw), 128).unwrap()))
    });
    g.bench_function("upstream request, members from the check's notes", |b| {
        b.iter(|| black_box(build(black_box(&noted))))
    });
    g.bench_function("upstream request, members walked", |b| {
        b.iter(|| black_box(build(black_box(&walked))))
    });
    g.finish();
}

/// A Converse answer with the same content as [`response`].
fn converse_response() -> Vec<u8> {
    json!({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Pack layers and an umbrella. Let me look for hotels."},
            {"toolUse": {"toolUseId": "tooluse_01", "name": "find_hotel", "input": {"near": "Louvre", "max_price": 250}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 412, "outputTokens": 58, "totalTokens": 470, "cacheReadInputTokens": 128, "cacheWriteInputTokens": 0},
        "metrics": {"latencyMs": 812}
    })
    .to_string()
    .into_bytes()
}

/// Bedrock Converse: the same request and answer as the Anthropic rows, plus the SigV4
/// signature over the upstream body; one ConverseStream frame decoded from the AWS event
/// stream and mapped, against the SSE row above.
fn bedrock(c: &mut Criterion, set: &dsl::ProviderSet, req: &Value, raw: &[u8], ctx: &RequestCtx) {
    use llmux::upstream::credentials::{sign_aws, AwsCredentials};
    let bedrock = set
        .get("bedrock_converse")
        .expect("providers/bedrock.llmux");
    let mut ctx = ctx.clone();
    ctx.model = "anthropic.claude-3-5-sonnet-20240620-v1:0".into();
    let resp = converse_response();
    let creds = AwsCredentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
    );
    let now = std::time::SystemTime::now();
    bedrock.build_request_raw(&ctx, req, raw).unwrap();
    bedrock.parse_response(200, &resp, &ctx).unwrap();

    let mut g = c.benchmark_group("bedrock");
    g.bench_function("request+response (dsl, incl. JSON parse, + SigV4)", |b| {
        b.iter(|| {
            let v: Value = dsl::parse_json(black_box(raw), 128).unwrap();
            let up = bedrock.build_request_raw(&ctx, &v, raw).unwrap();
            let signed = sign_aws(
                &creds,
                "us-east-1",
                "bedrock",
                &up.method,
                &up.url,
                &up.headers,
                &up.body,
                now,
            )
            .unwrap();
            let out = bedrock.parse_response(200, black_box(&resp), &ctx).unwrap();
            black_box((up, signed, dsl::to_json_vec(&out)))
        })
    });
    g.bench_function("SigV4 signature alone", |b| {
        let up = bedrock.build_request_raw(&ctx, req, raw).unwrap();
        b.iter(|| {
            black_box(
                sign_aws(
                    &creds,
                    "us-east-1",
                    "bedrock",
                    &up.method,
                    &up.url,
                    &up.headers,
                    black_box(&up.body),
                    now,
                )
                .unwrap(),
            )
        })
    });
    let frame = dsl::eventstream::encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"Pack layers and"}}"#,
    );
    let mut sctx = ctx.clone();
    sctx.stream = true;
    let mut state = bedrock.stream_state(&sctx);
    let mut frames = Vec::with_capacity(2);
    let mut chunks = Vec::with_capacity(4);
    g.bench_function("event-stream frame (decode + map + serialise)", |b| {
        b.iter(|| {
            frames.clear();
            chunks.clear();
            let mut dec = dsl::FrameDecoder::new(dsl::Framing::AwsEventStream);
            dec.feed(black_box(&frame), &mut frames).unwrap();
            bedrock
                .map_frame(&mut state, &frames[0], &mut chunks)
                .unwrap();
            black_box(dsl::to_json_vec(&chunks[0]))
        })
    });
    g.finish();
}

criterion_group!(translate, benches);
criterion_main!(translate);
