//! Issue 7, items 3 and 10–12: hostile or broken upstreams. An upstream that echoes the
//! request head never gets the deployment's key to the client or the log; a broken stream or
//! body becomes a 502 / an error event, never a 200 that looks complete; oversized events end
//! the stream with an error event and their memory is given back.

use std::io::BufReader;
use std::sync::atomic::Ordering;

use crate::common::hostile::{self, Hostile};
use crate::common::*;

const OPENAI_KEY: &str = "sk-live-openai-0123456789abcdef";
const ANTHROPIC_KEY: &str = "sk-ant-api03-secret-abcdefghijkl";
/// Azure keys are 32 hex digits: no pattern finds them, only their exact value.
const AZURE_KEY: &str = "0123456789abcdef0123456789abcdef";
const GEMINI_KEY: &str = "AIzaSyD-gemini-secret-0123456789";

fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]
    })
    .to_string()
}

fn deployment(group: &str, model: &str, base: &str, key: &str, extra: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params:\n      model: {model}\n      api_base: {base}\n      api_key: {key}\n{extra}"
    )
}

/// Sends a chat request with its own request id, and waits until the gateway has logged that
/// request's access line, so that a check of the log afterwards sees everything it wrote.
fn chat_logged(gw: &Gateway, body: &str, id: &str) -> Response {
    let r = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-request-id", id)],
        body.as_bytes(),
    );
    gw.proc.wait_line(id, std::time::Duration::from_secs(20));
    r
}

#[test]
fn an_upstream_that_echoes_the_request_head_leaks_no_key() {
    // Error bodies of every shape: JSON with the head in the message, plain text, and an
    // error event inside an OpenAI stream.
    let up = Hostile::start(|req| {
        let head = req.head.clone();
        let model = req.model();
        if model.contains("text") || req.path().contains("text") {
            return hostile::response(401, "text/plain", head.as_bytes());
        }
        if model.contains("stream") {
            let event = serde_json::json!({"error": {"message": head, "type": "server_error"}});
            return hostile::sse(format!("data: {event}\n\n").as_bytes());
        }
        let body = serde_json::json!({"error": {"message": format!("bad request: {head}"), "type": "invalid_request_error"}});
        hostile::response(400, "application/json", body.to_string().as_bytes())
    });
    let base = up.base();
    let mut yaml = String::from("model_list:\n");
    for (group, model, api_base, key, extra) in [
        (
            "openai-json",
            "openai/json",
            format!("{base}/v1"),
            OPENAI_KEY,
            "",
        ),
        (
            "openai-text",
            "openai/text",
            format!("{base}/v1"),
            OPENAI_KEY,
            "",
        ),
        (
            "openai-stream",
            "openai/stream",
            format!("{base}/v1"),
            OPENAI_KEY,
            "",
        ),
        (
            "anthropic-json",
            "anthropic/json",
            base.clone(),
            ANTHROPIC_KEY,
            "",
        ),
        (
            "anthropic-text",
            "anthropic/text",
            base.clone(),
            ANTHROPIC_KEY,
            "",
        ),
        (
            "azure-json",
            "azure/json",
            base.clone(),
            AZURE_KEY,
            "      api_version: \"2024-10-21\"\n",
        ),
        (
            "azure-text",
            "azure/text",
            base.clone(),
            AZURE_KEY,
            "      api_version: \"2024-10-21\"\n",
        ),
        (
            "gemini-json",
            "gemini/json",
            format!("{base}/v1beta"),
            GEMINI_KEY,
            "",
        ),
    ] {
        yaml.push_str(&deployment(group, model, &api_base, key, extra));
    }
    let gw = Gateway::start_with(
        &yaml,
        GatewayOpts {
            extra_args: vec!["--log-format", "json"],
            ..Default::default()
        },
    );
    let groups = [
        ("openai-json", false),
        ("openai-text", false),
        ("openai-stream", true),
        ("anthropic-json", false),
        ("anthropic-text", false),
        ("azure-json", false),
        ("azure-text", false),
        ("gemini-json", false),
    ];
    for (i, (group, stream)) in groups.iter().enumerate() {
        let r = chat_logged(&gw, &chat(group, *stream), &format!("echo-test-{i}"));
        let echoed = up.next_request();
        // The upstream really did receive the key: the test would catch a leak.
        let key = [OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY, GEMINI_KEY]
            .into_iter()
            .find(|k| echoed.head.contains(k))
            .unwrap_or_else(|| panic!("{group}: no key in {}", echoed.head));
        let client_bytes = String::from_utf8_lossy(&r.body);
        assert!(
            r.status >= 400 || *stream,
            "{group}: {} {client_bytes}",
            r.status
        );
        assert!(
            !client_bytes.contains(key),
            "{group}: the key reached the client: {client_bytes}"
        );
        assert!(
            client_bytes.contains("[REDACTED]") || client_bytes.contains("****"),
            "{group}: the echoed head was relayed with the key masked: {client_bytes}"
        );
    }
    let log = gw.proc.output();
    for key in [OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY, GEMINI_KEY] {
        assert!(!log.contains(key), "a key reached the log:\n{log}");
    }
}

/// An OpenAI-format deployment whose upstream answers with `body` (raw HTTP).
fn passthrough_gateway(up: &Hostile, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "model_list:\n{}{extra}",
        deployment(
            "m",
            "openai/x",
            &format!("{}/v1", up.base()),
            OPENAI_KEY,
            ""
        )
    ))
}

/// The stream's events; asserts it ends with an error event and has no `[DONE]`.
fn ends_with_error_event(body: &[u8], what: &str) -> serde_json::Value {
    let events = data_events(body);
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "{what}: a broken stream must not end with [DONE]: {events:?}"
    );
    let last = events.last().unwrap_or_else(|| panic!("{what}: no events"));
    let v: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{what}: last event is not JSON ({e}): {last}"));
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    v
}

/// A stream that fails before its first byte reached the client is not a stream: the client
/// gets the failure as an error body (after the router's retries).
fn failed_before_first_byte(r: &Response, what: &str) -> serde_json::Value {
    assert_eq!(r.status, 502, "{what}: {}", r.text());
    let v = r.json();
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    v
}

/// An upstream that sends `first`, waits for the test's go, sends `rest` and closes.
fn gated_upstream(first: String, rest: Vec<u8>) -> (Hostile, std::sync::Arc<hostile::Gate>) {
    let gate = hostile::Gate::new();
    let up = Hostile::start_writing({
        let gate = gate.clone();
        move |_, conn| {
            use std::io::Write;
            let _ = conn.write_all(&hostile::sse(first.as_bytes()));
            gate.wait();
            let _ = conn.write_all(&rest);
        }
    });
    (up, gate)
}

/// Opens a stream, lets the upstream go on once the first event arrived, and returns the
/// rest of the stream.
fn rest_after_first_event(gw: &Gateway, gate: &hostile::Gate, group: &str) -> String {
    let (_s, mut rd, _) = gw.open_stream(&chat(group, true));
    gate.go();
    read_stream_rest(&mut rd)
}

#[test]
fn broken_passthrough_streams_end_with_an_error_event() {
    let good = r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ok"}}]}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"data: {not json\n\n".to_vec()),
        ("invalid utf-8", b"data: {\"a\":\"\xff\xfe\"}\n\n".to_vec()),
        ("cut mid-object", b"data: {\"id\":\"c\",\"choi".to_vec()),
        ("two values in one event", b"data: {}{}\n\n".to_vec()),
    ];
    for (what, bad) in cases {
        // Broken before anything reached the client: retried (1 + num_retries 2), then a 502.
        let up = Hostile::start({
            let bad = bad.clone();
            move |_| hostile::sse(&bad)
        });
        let gw = passthrough_gateway(&up, "");
        let v = failed_before_first_byte(&gw.chat(&chat("m", true)), what);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("invalid event")),
            "{what}: {v}"
        );
        assert_eq!(up.requests.load(Ordering::Relaxed), 3, "{what}: retried");

        // Broken after the first event went out: an error event ends the stream.
        let (up, gate) = gated_upstream(format!("{good}\n\n"), bad.clone());
        let gw = passthrough_gateway(&up, "");
        let rest = rest_after_first_event(&gw, &gate, "m");
        let v = ends_with_error_event(rest.as_bytes(), what);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("invalid event")),
            "{what}: {v}"
        );
        assert_eq!(
            up.requests.load(Ordering::Relaxed),
            1,
            "{what}: not retried"
        );
    }
}

#[test]
fn broken_non_stream_bodies_are_502() {
    for (what, body) in [
        ("cut", &br#"{"id": "broken"#[..]),
        ("html", b"<html>oops</html>"),
        ("empty", b""),
        ("deep", hostile::nested(5000).leak().as_bytes()),
    ] {
        let up = Hostile::start(move |_| hostile::response(200, "application/json", body));
        let gw = passthrough_gateway(&up, "");
        let r = gw.chat(&chat("m", false));
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "api_connection_error", "{what}");
    }
}

#[test]
fn a_stream_request_answered_without_a_stream_is_502() {
    let up = Hostile::start(|req| {
        let body = if req.path().starts_with("/v1/messages") {
            r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#
        } else {
            r#"{"id":"c","object":"chat.completion","choices":[]}"#
        };
        hostile::response(200, "application/json", body.as_bytes())
    });
    let yaml = format!(
        "model_list:\n{}{}",
        deployment("claude", "anthropic/c", &up.base(), ANTHROPIC_KEY, ""),
        deployment(
            "gpt",
            "openai/g",
            &format!("{}/v1", up.base()),
            OPENAI_KEY,
            ""
        )
    );
    let gw = Gateway::start(&yaml);
    for group in ["claude", "gpt"] {
        let r = gw.chat(&chat(group, true));
        assert_eq!(r.status, 502, "{group}: {}", r.text());
        assert!(
            r.text().contains("instead of an event stream"),
            "{}",
            r.text()
        );
    }
}

#[test]
fn oversized_events_end_the_stream_with_an_error_event() {
    let big = format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(200_000)
    );
    let big_claude = big.replace("data: ", "event: content_block_delta\ndata: ");
    let bound = |v: &serde_json::Value| {
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("65536") && m.contains("max_stream_event_bytes"))
    };
    let yaml = |up: &Hostile| {
        format!(
            "model_list:\n{}{}llmux:\n  upstream:\n    max_stream_event_bytes: 65536\n",
            deployment("claude", "anthropic/c", &up.base(), ANTHROPIC_KEY, ""),
            deployment(
                "gpt",
                "openai/g",
                &format!("{}/v1", up.base()),
                OPENAI_KEY,
                ""
            )
        )
    };
    // The first event is over the bound: nothing went out, the client gets a 502.
    let up = Hostile::start({
        let (big, big_claude) = (big.clone(), big_claude.clone());
        move |req| {
            if req.path().starts_with("/v1/messages") {
                hostile::sse(big_claude.as_bytes())
            } else {
                hostile::sse(big.as_bytes())
            }
        }
    });
    let gw = Gateway::start(&yaml(&up));
    for group in ["gpt", "claude"] {
        let v = failed_before_first_byte(&gw.chat(&chat(group, true)), group);
        assert!(bound(&v), "{group}: {v}");
    }
    // A later event is over the bound: an error event ends the stream.
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n";
    let first_gpt =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
    for (group, first, rest) in [
        ("gpt", first_gpt.to_owned(), big.clone()),
        ("claude", start.to_owned(), big_claude.clone()),
    ] {
        let (up, gate) = gated_upstream(first, rest.into_bytes());
        let gw = Gateway::start(&yaml(&up));
        let rest = rest_after_first_event(&gw, &gate, group);
        let v = ends_with_error_event(rest.as_bytes(), group);
        assert!(bound(&v), "{group}: {v}");
        // The connection is fine afterwards.
        assert_eq!(gw.get("/health/live").status, 200);
    }
}

/// Ten concurrent streams each send one 15 MB line: every one is refused at the event bound,
/// and the memory that buffering took is given back once the burst is over.
#[test]
fn a_burst_of_huge_events_does_not_stay_resident() {
    const LINE: usize = 15 * 1024 * 1024;
    let line = std::sync::Arc::new({
        let mut l = b"data: {\"x\":\"".to_vec();
        l.resize(LINE, b'a');
        l.extend_from_slice(b"\"}\n\n");
        l
    });
    let up = Hostile::start({
        let line = line.clone();
        move |_| hostile::sse(&line)
    });
    // Each stream fails before its first byte; retries would only repeat the burst.
    let gw = passthrough_gateway(&up, "router_settings:\n  num_retries: 0\n");
    let baseline = gw.proc.rss_kib();
    assert!(baseline > 0, "RSS of the gateway cannot be read");
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = gw.addr.clone();
            std::thread::spawn(move || {
                let mut s = connect(&addr);
                write_request(
                    &mut s,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    chat("m", true).as_bytes(),
                );
                let mut rd = BufReader::new(s);
                read_response(&mut rd)
            })
        })
        .collect();
    for c in clients {
        let r = c.join().expect("client thread");
        let v = failed_before_first_byte(&r, "huge line");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("exceeds")),
            "{v}"
        );
    }
    assert_eq!(up.requests.load(Ordering::Relaxed), 10);
    // Every stream has ended (each client read its error event and the terminator): the
    // gateway holds nothing for them any more. Its RSS must come back under 64 MiB.
    let limit_kib = 64 * 1024;
    let mut rss = gw.proc.rss_kib();
    let back = eventually(std::time::Duration::from_secs(5), || {
        rss = gw.proc.rss_kib();
        assert!(rss > 0, "RSS of the gateway cannot be read");
        rss < limit_kib
    });
    assert!(
        back,
        "RSS {rss} KiB after the burst (baseline {baseline} KiB, limit {limit_kib} KiB)"
    );
}

/// What the identity relay reads from each event (the usage, an error event, the `model` to
/// rename) is the same whether the structure check finds it (relayed JSON checked, the
/// default) or searches do (not checked): decoy names inside strings and nested objects
/// included.
#[test]
fn a_stream_s_usage_error_and_model_are_read_with_and_without_the_check() {
    let chunk = |extra: &str| {
        format!(
            r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","choices":[{{"index":0,"delta":{{"content":"\"usage\":{{\"prompt_tokens\":99}} \"error\":1","model":"inner"}},"finish_reason":null}}]{extra}}}"#
        ) + "\n\n"
    };
    let up = Hostile::start(move |req| {
        let mut events = chunk(r#","usage":null"#);
        if req.model().contains("err") {
            let error = serde_json::json!({"error": {"message": format!("bad key {OPENAI_KEY}"), "type": "server_error"}});
            events.push_str(&format!("data: {error}\n\n"));
        } else {
            events.push_str(r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#);
            events.push_str("\n\n");
        }
        events.push_str("data: [DONE]\n\n");
        hostile::sse(events.as_bytes())
    });
    for checked in [true, false] {
        let base = format!("{}/v1", up.base());
        let yaml = format!(
            "model_list:\n{}{}llmux:\n  upstream:\n    check_relayed_json: {checked}\n",
            deployment("g", "openai/plain", &base, OPENAI_KEY, ""),
            deployment("e", "openai/err", &base, OPENAI_KEY, ""),
        );
        let gw = Gateway::start(&yaml);
        let body = |group: &str, usage: bool| {
            serde_json::json!({
                "model": group, "stream": true,
                "stream_options": {"include_usage": usage},
                "messages": [{"role": "user", "content": "hi"}]
            })
            .to_string()
        };
        let events = |r: &Response| {
            data_events(&r.body)
                .into_iter()
                .filter(|e| e != "[DONE]")
                .map(|e| serde_json::from_str::<serde_json::Value>(&e).unwrap())
                .collect::<Vec<_>>()
        };
        // Asked for usage: both chunks, renamed; the usage counted as reported.
        let r = gw.chat(&body("g", true));
        assert_eq!(r.status, 200, "checked {checked}");
        let got = events(&r);
        assert_eq!(got.len(), 2, "checked {checked}: {got:?}");
        for v in &got {
            assert_eq!(v["model"], "g", "checked {checked}: {v}");
        }
        assert_eq!(got[0]["choices"][0]["delta"]["model"], "inner");
        assert_eq!(got[1]["usage"]["prompt_tokens"], 7);
        let counted = |kind: &str| {
            metric(
                &gw.metrics(),
                &format!(
                    r#"llmux_tokens_total{{estimated="false",model_group="g",type="{kind}"}}"#
                ),
            )
        };
        eventually(std::time::Duration::from_secs(30), || {
            counted("prompt") == Some(7.0)
        });
        assert_eq!(counted("completion"), Some(2.0), "checked {checked}");
        // Not asked for usage: the usage-only chunk is left out.
        let r = gw.chat(&body("g", false));
        let got = events(&r);
        assert_eq!(got.len(), 1, "checked {checked}: {got:?}");
        assert_eq!(got[0]["model"], "g");
        // An error event: relayed with the key redacted, and not renamed or taken for usage.
        let r = gw.chat(&body("e", true));
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains(OPENAI_KEY), "checked {checked}: {text}");
        let got = events(&r);
        assert_eq!(got.len(), 2, "checked {checked}: {got:?}");
        assert!(got[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("bad key"));
        assert_eq!(got[0]["model"], "e", "checked {checked}");
    }
}
