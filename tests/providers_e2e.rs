//! End to end through the running gateway against `llmux mock` speaking each provider's own
//! wire format: the provider files translate requests, responses, streams and errors.

mod common;

use common::*;
use serde_json::{json, Value};

/// One model group per provider and mode, all served by the mock.
fn config(mock: &Mock) -> String {
    let b = mock.base();
    let mut s = String::from("model_list:\n");
    for (provider, base, extra) in [
        ("anthropic", b.clone(), ""),
        ("gemini", format!("{b}/v1beta"), ""),
        ("azure", b.clone(), "      api_version: 2024-10-21\n"),
    ] {
        for (suffix, knobs) in [
            ("", "mock-chunks-4"),
            ("-tool", "mock-tool"),
            ("-429", "mock-status-429"),
        ] {
            s.push_str(&format!(
                "  - model_name: {provider}{suffix}\n    litellm_params:\n      model: {provider}/up-{knobs}\n      api_base: {base}\n      api_key: sk-e2e-{provider}\n{extra}",
            ));
        }
    }
    s
}

/// The body and the header fields of the last chat request the mock received.
fn mock_last_request(mock: &Mock) -> (Value, Value) {
    let get = |path: &str| -> Value {
        let r = request(&mock.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()))
    };
    (get("/mock/last-request"), get("/mock/last-request-headers"))
}

/// What Anthropic requires of every Messages request
/// (https://docs.claude.com/en/api/messages): the key in `x-api-key`, an `anthropic-version`,
/// and `model`, `max_tokens` and `messages` in the body.
fn check_anthropic_upstream_request(mock: &Mock, stream: bool) {
    let (body, headers) = mock_last_request(mock);
    assert_eq!(headers["x-api-key"], "sk-e2e-anthropic", "{headers}");
    assert_eq!(headers["anthropic-version"], "2023-06-01", "{headers}");
    assert!(
        headers.get("authorization").is_none(),
        "the key goes in x-api-key only: {headers}"
    );
    assert_eq!(headers["content-type"], "application/json", "{headers}");
    assert!(
        body["model"].as_str().is_some_and(|m| m.starts_with("up-")),
        "{body}"
    );
    assert_eq!(body["max_tokens"], 100, "{body}");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]),
        "{body}"
    );
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Be brief."}]),
        "{body}"
    );
    assert_eq!(body.get("stream").is_some(), stream, "{body}");
}

fn chat(gw: &Gateway, body: Value) -> Response {
    gw.chat(&body.to_string())
}

fn text_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}
        ]
    })
}

fn tool_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}],
        "tool_choice": "auto"
    })
}

fn chunks(r: &Response) -> (Vec<Value>, bool) {
    let events = data_events(&r.body);
    let done = events.last().map(String::as_str) == Some("[DONE]");
    let parsed = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect();
    (parsed, done)
}

fn stream_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn check_provider(gw: &Gateway, provider: &str) {
    // Non-streamed text.
    let r = chat(gw, text_request(provider, false));
    assert_eq!(r.status, 200, "{provider}: {}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion", "{provider}: {v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"], "mock word1 word2 word3",
        "{provider}: {v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{provider}: {v}"
    );
    assert_eq!(v["usage"]["completion_tokens"], 4);

    // Streamed text.
    let r = chat(gw, text_request(provider, true));
    assert_eq!(r.status, 200, "{provider}: {}", r.text());
    let (cs, done) = chunks(&r);
    assert!(done, "{provider}: stream ends with [DONE]: {}", r.text());
    assert_eq!(stream_text(&cs), "mock word1 word2 word3", "{provider}");
    assert!(
        cs.iter().all(|c| c["object"] == "chat.completion.chunk"),
        "{provider}: {}",
        r.text()
    );
    assert!(
        cs.iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop"),
        "{provider}: a finish chunk: {}",
        r.text()
    );

    // Non-streamed tool call.
    let tool_model = format!("{provider}-tool");
    let r = chat(gw, tool_request(&tool_model, false));
    assert_eq!(r.status, 200, "{provider}: {}", r.text());
    let v = r.json();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function", "{provider}: {v}");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(
        v["choices"][0]["finish_reason"], "tool_calls",
        "{provider}: {v}"
    );

    // Streamed tool call: OpenAI's tool index, the name once, the arguments in pieces.
    let r = chat(gw, tool_request(&tool_model, true));
    assert_eq!(r.status, 200, "{provider}: {}", r.text());
    let (cs, done) = chunks(&r);
    assert!(done, "{provider}: {}", r.text());
    let mut name = String::new();
    let mut arguments = String::new();
    for c in &cs {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(tc["index"], 0, "{provider}: {c}");
            if let Some(n) = tc["function"]["name"].as_str() {
                name.push_str(n);
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                arguments.push_str(a);
            }
        }
    }
    assert_eq!(name, "get_weather", "{provider}: {}", r.text());
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        cs.iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
        "{provider}: {}",
        r.text()
    );

    // Upstream rate limit, in the provider's error shape → OpenAI's.
    let r = chat(gw, text_request(&format!("{provider}-429"), false));
    assert_eq!(r.status, 429, "{provider}: {}", r.text());
    assert_eq!(
        r.json()["error"]["type"],
        "rate_limit_error",
        "{provider}: {}",
        r.text()
    );
}

#[test]
fn anthropic_gemini_and_azure_through_the_gateway() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock));
    for provider in ["anthropic", "gemini", "azure"] {
        check_provider(&gw, provider);
    }
    // What the mock received from the anthropic file: auth, version and required fields.
    for stream in [false, true] {
        let r = chat(&gw, text_request("anthropic", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        check_anthropic_upstream_request(&mock, stream);
    }
    // What the mock received from the gemini and azure files: their auth headers, no bearer,
    // and the body fields each API requires.
    for stream in [false, true] {
        let r = chat(&gw, text_request("gemini", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        let (body, headers) = mock_last_request(&mock);
        assert_eq!(headers["x-goog-api-key"], "sk-e2e-gemini", "{headers}");
        assert!(headers.get("authorization").is_none(), "{headers}");
        assert_eq!(body["contents"][0]["role"], "user", "{body}");
        assert!(
            body["contents"][0]["parts"][0]["text"].is_string(),
            "{body}"
        );
        assert!(
            body["systemInstruction"]["parts"][0]["text"].is_string(),
            "{body}"
        );
        assert!(
            body.get("model").is_none(),
            "the model is in the URL: {body}"
        );

        let r = chat(&gw, text_request("azure", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        let (body, headers) = mock_last_request(&mock);
        assert_eq!(headers["api-key"], "sk-e2e-azure", "{headers}");
        assert!(headers.get("authorization").is_none(), "{headers}");
        assert!(
            body["messages"].as_array().is_some_and(|m| m.len() == 2),
            "{body}"
        );
        assert_eq!(body["stream"].as_bool().unwrap_or(false), stream, "{body}");
    }
    // Everything the requests logged is in once a last request's access line is.
    let last = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-request-id", "e2e-last-request")],
        json!({"model": "anthropic", "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .as_bytes(),
    );
    assert!(last.status > 0);
    gw.proc
        .wait_line("e2e-last-request", std::time::Duration::from_secs(30));
    assert!(
        !gw.proc.output().contains("sk-e2e-"),
        "provider keys never reach the logs"
    );
}

#[test]
fn provider_files_hot_reload_and_a_broken_file_keeps_the_old_adapters() {
    let mock = Mock::start();
    let dir = TempDir::new("prov");
    let pdir = dir.0.join("providers");
    std::fs::create_dir_all(&pdir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/openai.llmux");
    std::fs::copy(shipped, pdir.join("openai.llmux")).unwrap();
    let cfg = format!(
        "model_list:
  - model_name: plain
    litellm_params: {{ model: openai/up, api_base: {b}/v1, api_key: k }}
  - model_name: custom
    litellm_params: {{ model: custom/up, api_base: {b}/v1, api_key: k }}
llmux:
  providers_dir: {}
",
        pdir.display(),
        b = mock.base()
    );
    let gw = Gateway::start(&cfg);
    let body = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(chat(&gw, body("plain")).status, 200);
    assert_eq!(
        chat(&gw, body("custom")).status,
        404,
        "no provider file for `custom` yet"
    );

    std::fs::write(
        pdir.join("custom.llmux"),
        "provider custom extends openai {\n}\n",
    )
    .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(30), || chat(
            &gw,
            body("custom")
        )
        .status
            == 200),
        "{}",
        gw.proc.output()
    );

    std::fs::write(
        pdir.join("custom.llmux"),
        "provider custom extends openai {\n  bogus_item 1\n}\n",
    )
    .unwrap();
    assert!(eventually(std::time::Duration::from_secs(30), || {
        metric(
            &gw.metrics(),
            r#"llmux_config_reloads_total{result="error"}"#,
        )
        .unwrap_or(0.0)
            >= 1.0
    }));
    assert_eq!(
        chat(&gw, body("custom")).status,
        200,
        "the previous adapters keep serving"
    );
    gw.proc
        .wait_line("custom.llmux:2:", std::time::Duration::from_secs(30));
}

fn media_config(mock: &Mock, media: &str) -> String {
    format!(
        "model_list:
  - model_name: g
    litellm_params: {{ model: gemini/up, api_base: {}/v1beta, api_key: k }}
llmux:
  media:
{media}",
        mock.base()
    )
}

fn image_request(url: &str) -> Value {
    json!({"model": "g", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}
    ]}]})
}

#[test]
fn remote_images_are_fetched_inlined_and_guarded() {
    use base64::Engine as _;
    let mock = Mock::start();
    let image = format!("{}/mock/redirect?to=/mock/image.png", mock.base());

    // Allowed (local test server on the allow-list, http enabled): fetched through a redirect
    // and sent to the provider as inline bytes.
    let gw = Gateway::start(&media_config(
        &mock,
        "    allow_http: true\n    allow_hosts: [\"127.0.0.1\"]\n",
    ));
    let r = chat(&gw, image_request(&image));
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value =
        serde_json::from_slice(&request(&mock.addr, "GET", "/mock/last-request", &[], b"").body)
            .unwrap();
    let inline = &sent["contents"][0]["parts"][1]["inlineData"];
    assert_eq!(inline["mimeType"], "image/png", "{sent}");
    let expected = base64::engine::general_purpose::STANDARD.encode(llmux::mock::MOCK_PNG);
    assert_eq!(inline["data"], expected.as_str());

    // Loopback without the allow-list: refused before any request is made (no SSRF).
    let gw = Gateway::start(&media_config(&mock, "    allow_http: true\n"));
    let before = mock.stats()["requests"].as_u64();
    let r = chat(&gw, image_request(&image));
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("non-public address"), "{msg}");
    assert_eq!(
        mock.stats()["requests"].as_u64(),
        before,
        "the provider was not called"
    );

    // https only by default.
    let gw = Gateway::start(&media_config(&mock, "    allow_hosts: [\"127.0.0.1\"]\n"));
    let r = chat(&gw, image_request(&image));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only https"),
        "{}",
        r.text()
    );

    // A URL that does not answer with an image is a clear 400.
    let gw = Gateway::start(&media_config(
        &mock,
        "    allow_http: true\n    allow_hosts: [\"127.0.0.1\"]\n",
    ));
    let r = chat(&gw, image_request(&format!("{}/mock/stats", mock.base())));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an image"),
        "{}",
        r.text()
    );
}

/// Every `model` of a stream's chunks.
fn chunk_models(r: &Response) -> Vec<String> {
    r.text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["model"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// LiteLLM answers with the model group the client asked for — in whole answers, in every
/// chunk, relayed (OpenAI) and translated (Anthropic) alike, and after a fallback too — and
/// so does LLMux unless `llmux.response_model: provider`.
#[test]
fn answers_name_the_group_asked_for_unless_the_provider_s_name_is_wanted() {
    let mock = Mock::start();
    let b = mock.base();
    let groups = format!(
        "model_list:\n  - model_name: oa\n    litellm_params:\n      model: openai/up-mock-chunks-3\n      api_base: {b}/v1\n      api_key: sk-e2e-openai\n  - model_name: an\n    litellm_params:\n      model: anthropic/up-mock-chunks-3\n      api_base: {b}\n      api_key: sk-e2e-anthropic\n  - model_name: down\n    litellm_params:\n      model: openai/up-mock-status-500\n      api_base: {b}/v1\n      api_key: sk-e2e-openai\nrouter_settings:\n  num_retries: 0\n  fallbacks: [{{\"down\": [\"oa\"]}}]\n"
    );
    let gw = Gateway::start(&groups);
    for group in ["oa", "an"] {
        let r = chat(&gw, text_request(group, false));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["model"], group);
        let r = chat(&gw, text_request(group, true));
        assert_eq!(r.status, 200, "{}", r.text());
        let models = chunk_models(&r);
        assert!(models.len() >= 3, "{}", r.text());
        assert!(models.iter().all(|m| m == group), "{group}: {models:?}");
    }
    // After a fallback: the group the client asked for, not the one that answered.
    let r = chat(&gw, text_request("down", false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-llmux-fallback-from"), Some("down"));
    assert_eq!(r.json()["model"], "down");
    let r = chat(&gw, text_request("down", true));
    assert!(chunk_models(&r).iter().all(|m| m == "down"), "{}", r.text());

    // The provider's own names, when asked for.
    let gw = Gateway::start(&format!("{groups}llmux:\n  response_model: provider\n"));
    for group in ["oa", "an"] {
        let r = chat(&gw, text_request(group, false));
        let model = r.json()["model"].as_str().unwrap().to_owned();
        assert!(model.starts_with("up-mock-chunks-3"), "{group}: {model}");
        let r = chat(&gw, text_request(group, true));
        let models = chunk_models(&r);
        assert!(
            models.iter().all(|m| m.starts_with("up-mock-chunks-3")),
            "{group}: {models:?}"
        );
    }
}

/// The provider's own error code, param and details reach the client beside the class:
/// OpenAI's `insufficient_quota`, Azure's `content_filter` with its `innererror`.
#[test]
fn provider_error_codes_and_details_reach_the_client() {
    let azure = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},"violence":{"filtered":false,"severity":"safe"}}}}}"#;
    let quota = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let up_azure = common::hostile::Hostile::start(move |_| {
        common::hostile::response(400, "application/json", azure)
    });
    let up_quota = common::hostile::Hostile::start(move |_| {
        common::hostile::response(429, "application/json", quota)
    });
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: az\n    litellm_params:\n      model: azure/my-deployment\n      api_base: {}\n      api_version: 2024-10-21\n      api_key: sk-e2e-azure\n  - model_name: oa\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-e2e-openai\nrouter_settings:\n  num_retries: 0\n",
        up_azure.base(),
        up_quota.base()
    ));
    let r = chat(&gw, text_request("az", false));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "content_filter", "{e}");
    assert_eq!(e["param"], "prompt", "{e}");
    assert_eq!(
        e["innererror"]["content_filter_result"]["hate"]["filtered"], true,
        "{e}"
    );
    let r = chat(&gw, text_request("oa", false));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        r.json()["error"]["code"],
        "insufficient_quota",
        "{}",
        r.text()
    );
}

/// Collects a stream's thinking as a client does: reasoning text, and the thinking blocks
/// of its deltas joined (texts and signatures of `thinking` pieces concatenated, redacted
/// blocks kept whole).
fn streamed_thinking(cs: &[Value]) -> (String, Vec<Value>) {
    let mut reasoning = String::new();
    let mut thinking = String::new();
    let mut signature = String::new();
    let mut redacted = Vec::new();
    for c in cs {
        let delta = &c["choices"][0]["delta"];
        if let Some(t) = delta["reasoning_content"].as_str() {
            reasoning.push_str(t);
        }
        for b in delta["thinking_blocks"].as_array().into_iter().flatten() {
            match b["type"].as_str() {
                Some("thinking") => {
                    thinking.push_str(b["thinking"].as_str().unwrap_or(""));
                    signature.push_str(b["signature"].as_str().unwrap_or(""));
                }
                Some("redacted_thinking") => redacted.push(b.clone()),
                _ => panic!("unexpected thinking block {b} in {c}"),
            }
        }
    }
    let mut blocks =
        vec![json!({"type": "thinking", "thinking": thinking, "signature": signature})];
    blocks.extend(redacted);
    (reasoning, blocks)
}

/// Extended thinking end to end: the mock's thinking blocks (signed, and redacted) reach the
/// client in whole answers and streams, and go back to Anthropic first in the assistant turn
/// when the client sends them with its tool results. An overloaded Anthropic (529) is a 503.
#[test]
fn anthropic_thinking_round_trip_and_overload_through_the_gateway() {
    let mock = Mock::start();
    let b = mock.base();
    let group = |name: &str, knobs: &str| {
        format!("  - model_name: {name}\n    litellm_params:\n      model: anthropic/up-{knobs}\n      api_base: {b}\n      api_key: sk-e2e-anthropic\n")
    };
    let gw = Gateway::start(&format!(
        "model_list:\n{}{}{}router_settings:\n  num_retries: 0\n",
        group("think", "mock-thinking-mock-chunks-3"),
        group("think-tool", "mock-thinking-mock-tool"),
        group("overloaded", "mock-status-529"),
    ));
    let expected_blocks = json!([
        {"type": "thinking", "thinking": "mock thinking", "signature": llmux::mock::MOCK_SIGNATURE},
        {"type": "redacted_thinking", "data": llmux::mock::MOCK_REDACTED},
    ]);
    let ask = |model: &str, stream: bool| {
        json!({
            "model": model,
            "stream": stream,
            "max_tokens": 2000,
            "reasoning_effort": "low",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
            }}]
        })
    };

    // Whole answer: thinking blocks with the signature, reasoning_content, the text.
    let r = chat(&gw, ask("think", false));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["thinking_blocks"], expected_blocks, "{v}");
    assert_eq!(message["reasoning_content"], "mock thinking", "{v}");
    assert_eq!(message["content"], "mock word1 word2", "{v}");
    let (sent, _) = mock_last_request(&mock);
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024}),
        "{sent}"
    );

    // Stream: reasoning deltas, the signature in a thinking block, the redacted block.
    let r = chat(&gw, ask("think", true));
    assert_eq!(r.status, 200, "{}", r.text());
    let (cs, done) = chunks(&r);
    assert!(done, "{}", r.text());
    let (reasoning, blocks) = streamed_thinking(&cs);
    assert_eq!(reasoning, "mock thinking", "{}", r.text());
    assert_eq!(Value::Array(blocks), expected_blocks, "{}", r.text());
    assert!(
        cs.iter().any(
            |c| c["choices"][0]["delta"]["thinking_blocks"][0]["signature"]
                == llmux::mock::MOCK_SIGNATURE
        ),
        "a delta carries the signature: {}",
        r.text()
    );
    assert_eq!(stream_text(&cs), "mock word1 word2", "{}", r.text());

    // Tool use with thinking, whole and streamed: the client sends the turn back with its
    // thinking blocks, and Anthropic gets them first in the assistant turn.
    for stream in [false, true] {
        let r = chat(&gw, ask("think-tool", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        let (blocks, calls) = if stream {
            let (cs, done) = chunks(&r);
            assert!(done, "{}", r.text());
            let calls: Vec<Value> = cs
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].as_str())
                .map(|id| {
                    json!({"id": id, "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}})
                })
                .collect();
            (Value::Array(streamed_thinking(&cs).1), Value::Array(calls))
        } else {
            let v = r.json();
            let m = &v["choices"][0]["message"];
            (m["thinking_blocks"].clone(), m["tool_calls"].clone())
        };
        assert_eq!(blocks, expected_blocks, "stream {stream}: {}", r.text());
        assert_eq!(
            calls[0]["id"],
            "toolu_mock1",
            "stream {stream}: {}",
            r.text()
        );
        let mut next = ask("think-tool", false);
        next["messages"] = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "thinking_blocks": blocks, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "toolu_mock1", "content": "18C"}
        ]);
        let r = chat(&gw, next);
        assert_eq!(r.status, 200, "{}", r.text());
        let (sent, _) = mock_last_request(&mock);
        assert_eq!(
            sent["messages"][1],
            json!({"role": "assistant", "content": [
                expected_blocks[0], expected_blocks[1],
                {"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {"city": "Paris"}}
            ]}),
            "stream {stream}: {sent}"
        );
        assert_eq!(
            sent["messages"][2]["content"][0]["type"], "tool_result",
            "{sent}"
        );
    }

    // 529 overloaded_error → 503 service_unavailable, the Anthropic type kept as the code.
    for stream in [false, true] {
        let r = chat(&gw, text_request("overloaded", stream));
        assert_eq!(r.status, 503, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "service_unavailable_error", "{e}");
        assert_eq!(e["code"], "overloaded_error", "{e}");
    }
}

/// Mistral end to end: the request the mock received is Mistral's (its key as a bearer token,
/// `random_seed` for `seed`, `"any"` for a required tool choice, no `stream_options`), and the
/// answers come back in OpenAI's shape (tool calls typed `function`, content null beside them),
/// whole and streamed.
#[test]
fn mistral_through_the_gateway() {
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: mi\n    litellm_params:\n      model: mistral/up-mock-tool\n      api_base: {}/v1\n      api_key: sk-e2e-mistral\n",
        mock.base()
    ));
    let mut req = tool_request("mi", false);
    req["seed"] = json!(7);
    req["tool_choice"] = json!("required");
    let r = chat(&gw, req);
    assert_eq!(r.status, 200, "{}", r.text());
    let (body, headers) = mock_last_request(&mock);
    assert_eq!(
        headers["authorization"], "Bearer sk-e2e-mistral",
        "{headers}"
    );
    assert_eq!(body["model"], "up-mock-tool");
    assert_eq!(body["random_seed"], 7, "{body}");
    assert!(body.get("seed").is_none(), "{body}");
    assert_eq!(body["tool_choice"], "any", "{body}");
    let message = &r.json()["choices"][0]["message"];
    assert_eq!(message["tool_calls"][0]["type"], "function", "{message}");
    assert!(message["content"].is_null(), "{message}");

    let r = chat(&gw, tool_request("mi", true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("[DONE]"), "{}", r.text());
    let (body, _) = mock_last_request(&mock);
    assert_eq!(body["stream"], true);
    assert!(body.get("stream_options").is_none(), "{body}");
    let calls: Vec<Value> = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .flatten()
        .collect();
    assert!(!calls.is_empty(), "{}", r.text());
    assert!(calls.iter().any(|c| c["type"] == "function"), "{calls:?}");
}

/// Ollama end to end (`/api/chat`, NDJSON streams), from a deployment without a key: the mock
/// receives Ollama's request and no authorization header; answers come back in OpenAI's shape.
#[test]
fn ollama_chat_through_the_gateway_without_a_key() {
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: ol\n    litellm_params:\n      model: ollama_chat/up-mock-chunks-3\n      api_base: {}\n  - model_name: ol-tool\n    litellm_params:\n      model: ollama_chat/up-mock-tool\n      api_base: {}\n",
        mock.base(),
        mock.base()
    ));
    let r = chat(&gw, text_request("ol", false));
    assert_eq!(r.status, 200, "{}", r.text());
    let (body, headers) = mock_last_request(&mock);
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert_eq!(body["model"], "up-mock-chunks-3");
    assert_eq!(body["stream"], false, "{body}");
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .is_some_and(|c| c.starts_with("mock")));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");

    let r = chat(&gw, text_request("ol", true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("[DONE]"), "{}", r.text());
    assert_eq!(mock_last_request(&mock).0["stream"], true);
    let text: String = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(text.starts_with("mock"), "{}", r.text());

    let r = chat(&gw, tool_request("ol-tool", false));
    assert_eq!(r.status, 200, "{}", r.text());
    let call = &r.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function", "{call}");
    assert_eq!(
        call["function"]["arguments"], "{\"city\":\"Paris\"}",
        "{call}"
    );
}

#[test]
fn a_fake_stream_provider_answers_a_stream_request_from_one_whole_call() {
    let mock = Mock::start();
    let dir = TempDir::new("fakestream");
    let pdir = dir.0.join("providers");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("replayed.llmux"),
        r#"provider replayed {
  base_url "https://unused.test"
  url "/chat/completions"
  fake_stream
  request { model = ctx.model; messages = req.messages; stream = ctx.stream }
  response passthrough { }
}
"#,
    )
    .unwrap();
    let cfg = format!(
        "model_list:\n  - model_name: r\n    litellm_params: {{ model: replayed/up-mock-chunks-3, api_base: {}/v1, api_key: k }}\nllmux:\n  providers_dir: {}\n",
        mock.base(),
        pdir.display()
    );
    let gw = Gateway::start(&cfg);
    let r = chat(
        &gw,
        json!({"model": "r", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream")));
    let events = data_events(&r.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["model"], "r", "the model group asked for");
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["content"],
        "mock word1 word2"
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[2]["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // One whole upstream call, not a stream.
    let (sent, _) = mock_last_request(&mock);
    assert_eq!(sent["stream"], false, "{sent}");
}

// ---- cloud credentials (issue 12): SigV4 checked by the mock, tokens from local fakes ----

use common::hostile::{self, Hostile};

/// `YYYY-MM-DDTHH:MM:SSZ` of a UNIX time (STS and container credentials' `Expiration`).
fn iso8601(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bedrock_config(mock: &Mock, model: &str, creds: &str) -> String {
    format!(
        "model_list:\n  - model_name: br\n    litellm_params:\n      model: bedrock/{model}\n      api_base: {}\n      aws_region_name: us-west-2\n{creds}",
        mock.base()
    )
}

#[test]
fn bedrock_requests_are_signed_with_sigv4_and_streams_arrive_as_an_event_stream() {
    let mock = Mock::start_with_env(&[("LLMUX_MOCK_AWS_KEYS", "AKIDE2ETEST:e2e-secret-key")]);
    let cfg = bedrock_config(
        &mock,
        "anthropic.claude-3-5-sonnet-mock-chunks-3",
        "      aws_access_key_id: AKIDE2ETEST\n      aws_secret_access_key: e2e-secret-key\n  - model_name: wrong\n    litellm_params:\n      model: bedrock/anthropic.claude-x\n      api_base: BASE\n      aws_region_name: us-west-2\n      aws_access_key_id: AKIDE2ETEST\n      aws_secret_access_key: not-the-secret\n",
    )
    .replace("BASE", &mock.base());
    let gw = Gateway::start(&cfg);
    let r = chat(
        &gw,
        json!({"model": "br", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"], "mock word1 word2",
        "{v}"
    );
    assert_eq!(v["model"], "br");
    let (sent, headers) = mock_last_request(&mock);
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hi", "{sent}");
    assert!(
        headers["authorization"].as_str().is_some_and(|a| a
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDE2ETEST/")
            && a.contains("/us-west-2/bedrock/aws4_request")),
        "{headers}"
    );
    assert_eq!(mock.stats()["sigv4_valid"], 1);

    // ConverseStream: binary event-stream frames in, OpenAI chunks out.
    let r = chat(
        &gw,
        json!({"model": "br", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let events = data_events(&r.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "mock word1 word2");
    assert!(events.iter().any(|e| e.contains("\"usage\"")), "{events:?}");
    assert_eq!(mock.stats()["sigv4_valid"], 2);

    // A wrong secret: AWS's 403 comes back as an authentication error, without the secret.
    let r = chat(
        &gw,
        json!({"model": "wrong", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert!(matches!(r.status, 401 | 403), "{} {}", r.status, r.text());
    assert!(r.text().contains("signature"), "{}", r.text());
    assert!(!gw.proc.output().contains("e2e-secret-key"));
    assert!(!r.text().contains("not-the-secret"));
}

#[test]
fn assumed_role_credentials_are_refreshed_before_they_expire_without_a_failed_request() {
    // The fake STS hands out a new key pair per call, each valid for 6 s.
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sts = {
        let issued = issued.clone();
        Hostile::start(move |req| {
            assert!(
                String::from_utf8_lossy(&req.body).contains("Action=AssumeRole"),
                "{}",
                String::from_utf8_lossy(&req.body)
            );
            let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let xml = format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>ASIAROLE{n}</AccessKeyId><SecretAccessKey>role-secret-{n}</SecretAccessKey><SessionToken>role-token-{n}</SessionToken><Expiration>{}</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>",
                iso8601(now_unix() + 6)
            );
            hostile::response(200, "text/xml", xml.as_bytes())
        })
    };
    let keys: Vec<String> = (1..=40)
        .map(|n| format!("ASIAROLE{n}:role-secret-{n}"))
        .collect();
    let mock = Mock::start_with_env(&[("LLMUX_MOCK_AWS_KEYS", &keys.join(","))]);
    let cfg = bedrock_config(
        &mock,
        "anthropic.claude-3-5-sonnet",
        &format!(
            "      aws_access_key_id: AKIDBASE\n      aws_secret_access_key: base-secret\n      aws_role_name: arn:aws:iam::123456789012:role/e2e\n      aws_session_name: e2e\n      aws_sts_endpoint: {}\n",
            sts.base()
        ),
    );
    let gw = Gateway::start(&cfg);
    let body = json!({"model": "br", "messages": [{"role": "user", "content": "hi"}]});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut sent = 0;
    // Traffic until the role's credentials have been renewed and used, every answer a 200.
    while mock.stats()["sigv4_keys"].as_array().map_or(0, Vec::len) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewal in 60 s: {} issued\n{}",
            issued.load(std::sync::atomic::Ordering::SeqCst),
            gw.proc.output()
        );
        let r = chat(&gw, body.clone());
        assert_eq!(r.status, 200, "request {sent}: {}", r.text());
        sent += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, headers) = mock_last_request(&mock);
    assert!(
        headers["x-amz-security-token"]
            .as_str()
            .is_some_and(|t| t.starts_with("role-token-")),
        "{headers}"
    );
    assert!(
        !gw.proc.output().contains("role-secret-"),
        "secrets stay out of the logs"
    );
}

#[test]
fn vertex_gets_an_access_token_for_its_service_account_from_the_token_endpoint() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/credentials/google");
    let key = std::fs::read_to_string(fixtures.join("TEST-ONLY-rsa-private-key.pem")).unwrap();
    let token = Hostile::start(|req| {
        let form = String::from_utf8_lossy(&req.body);
        if !form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
            || !form.contains("assertion=")
        {
            return hostile::response(400, "application/json", br#"{"error":"invalid_grant"}"#);
        }
        hostile::response(
            200,
            "application/json",
            br#"{"access_token":"ya29.e2e-access-token","expires_in":3600,"token_type":"Bearer"}"#,
        )
    });
    let dir = TempDir::new("vertex-sa");
    let sa = json!({
        "type": "service_account", "project_id": "e2e-project", "private_key_id": "k1",
        "private_key": key, "client_email": "e2e@e2e-project.iam.gserviceaccount.com",
        "token_uri": format!("{}/token", token.base()),
    });
    let sa_path = dir.0.join("sa.json");
    std::fs::write(&sa_path, sa.to_string()).unwrap();
    let mock = Mock::start();
    let cfg = format!(
        "model_list:\n  - model_name: vx\n    litellm_params:\n      model: vertex_ai/gemini-2.5-flash-mock-chunks-2\n      api_base: {}\n      vertex_project: e2e-project\n      vertex_location: us-central1\n      vertex_credentials: {}\n",
        mock.base(),
        sa_path.display()
    );
    let gw = Gateway::start(&cfg);
    let r = chat(
        &gw,
        json!({"model": "vx", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "mock word1");
    let (_, headers) = mock_last_request(&mock);
    assert_eq!(
        headers["authorization"], "Bearer ya29.e2e-access-token",
        "{headers}"
    );
    assert_eq!(token.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!gw.proc.output().contains("ya29.e2e-access-token"));
}

#[test]
fn watsonx_exchanges_its_api_key_at_the_iam_endpoint() {
    let iam = Hostile::start(|req| {
        let form = String::from_utf8_lossy(&req.body);
        if form.contains("apikey=wx-e2e-key")
            && form.contains("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey")
        {
            hostile::response(
                200,
                "application/json",
                br#"{"access_token":"iam-e2e-token","expires_in":3600,"token_type":"Bearer"}"#,
            )
        } else {
            hostile::response(400, "application/json", br#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found."}"#)
        }
    });
    let mock = Mock::start();
    let cfg = format!(
        "model_list:\n  - model_name: wx\n    litellm_params:\n      model: watsonx/ibm/granite-3-8b-instruct\n      api_base: {}\n      api_key: wx-e2e-key\n      project_id: e2e-project\n      watsonx_token_url: {}/identity/token\n",
        mock.base(),
        iam.base()
    );
    let gw = Gateway::start(&cfg);
    let r = chat(
        &gw,
        json!({"model": "wx", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (sent, headers) = mock_last_request(&mock);
    assert_eq!(
        headers["authorization"], "Bearer iam-e2e-token",
        "{headers}"
    );
    assert_eq!(sent["project_id"], "e2e-project", "{sent}");
    assert!(!gw.proc.output().contains("wx-e2e-key"));
}

/// A Python with botocore: the system's, else a virtualenv under target/tools made for it.
fn python_with_botocore() -> String {
    let has = |py: &str| {
        std::process::Command::new(py)
            .args(["-c", "import botocore"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("python3") {
        return "python3".into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/botocore-venv");
    let py = venv.join("bin/python3").display().to_string();
    if !has(&py) {
        let made = std::process::Command::new("python3")
            .args(["-m", "venv", &venv.display().to_string()])
            .status()
            .expect("python3 -m venv");
        assert!(made.success(), "cannot make a virtualenv for botocore");
        let pip = std::process::Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "botocore"])
            .status()
            .expect("pip install botocore");
        assert!(pip.success(), "cannot install botocore from PyPI");
    }
    py
}

#[test]
fn sigv4_signatures_agree_with_botocore_over_the_bytes_received() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/credentials/botocore_sigv4_fake.py");
    let mut cmd = std::process::Command::new(python_with_botocore());
    cmd.arg(&script)
        .args(["AKIDBOTOCORE", "botocore-secret/with+chars"]);
    let fake = Proc::spawn_command(cmd);
    let port = fake
        .wait_line("listening on", std::time::Duration::from_secs(30))
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let cfg = format!(
        "model_list:
  - model_name: plain
    litellm_params: {{ model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0, api_base: http://127.0.0.1:{port}, aws_region_name: eu-west-3, aws_access_key_id: AKIDBOTOCORE, aws_secret_access_key: botocore-secret/with+chars }}
  - model_name: arn
    litellm_params: {{ model: 'bedrock/converse/arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0', api_base: http://127.0.0.1:{port}, aws_region_name: eu-west-3, aws_access_key_id: AKIDBOTOCORE, aws_secret_access_key: botocore-secret/with+chars, aws_session_token: session/token=with+chars }}
  - model_name: wrong
    litellm_params: {{ model: bedrock/anthropic.claude-x, api_base: http://127.0.0.1:{port}, aws_region_name: eu-west-3, aws_access_key_id: AKIDBOTOCORE, aws_secret_access_key: another-secret }}
"
    );
    let gw = Gateway::start(&cfg);
    for (group, model) in [
        ("plain", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        (
            "arn",
            "arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
        ),
    ] {
        let r = chat(
            &gw,
            json!({"model": group, "messages": [{"role": "user", "content": "héllo \"quoted\" ☃"}]}),
        );
        assert_eq!(r.status, 200, "{group}: {}\n{}", r.text(), fake.output());
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            format!("botocore agrees: {model}"),
            "{group}"
        );
    }
    // And botocore does refuse a signature made with another secret.
    let r = chat(
        &gw,
        json!({"model": "wrong", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert!(matches!(r.status, 401 | 403), "{} {}", r.status, r.text());
}
