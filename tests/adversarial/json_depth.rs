//! Issue 7, items 1–2: JSON nested far past the bound, from a client and from an upstream, on
//! both I/O drivers. Every case gets a clear error, the process is the same process
//! afterwards, and the next request on a new connection is served.

use crate::common::hostile::{self, Hostile};
use crate::common::*;

const DEPTHS: [usize; 3] = [1_000, 10_000, 100_000];

fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]
    })
    .to_string()
}

/// The scripted upstream: what it sends depends on the upstream model name,
/// `<case>-<depth>`, and on the format the gateway speaks (path). The `late` case sends its
/// first event, then waits for `gate` before the deep one.
fn deep_upstream(gate: std::sync::Arc<hostile::Gate>) -> Hostile {
    Hostile::start_writing(move |req, conn| {
        use std::io::Write;
        let model = req.model();
        if let Some(depth) = model.strip_prefix("late-") {
            let deep = hostile::nested(depth.parse().expect("depth"));
            let _ = conn.write_all(&hostile::sse(MESSAGE_START.as_bytes()));
            gate.wait();
            let _ = conn.write_all(deep_delta(&deep).as_bytes());
            return;
        }
        let _ = conn.write_all(&answer(req, &model));
    })
}

const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n";

fn deep_delta(deep: &str) -> String {
    format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"x\"}},\"extra\":{deep}}}\n\n\
         event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    )
}

fn answer(req: &hostile::Received, model: &str) -> Vec<u8> {
    {
        let (case, depth) = model.rsplit_once('-').expect("case-depth");
        let depth: usize = depth.parse().expect("depth");
        let deep = hostile::nested(depth);
        let anthropic = req.path().starts_with("/v1/messages");
        match case {
            "ok" if anthropic => hostile::response(
                200,
                "application/json",
                format!(
                    r#"{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{{"type":"text","text":"x"}}],"stop_reason":"end_turn","usage":{{"input_tokens":1,"output_tokens":1}},"extra":{deep}}}"#
                )
                .as_bytes(),
            ),
            // The deep event first: the stream fails before anything reached the client.
            "stream" => hostile::sse(deep_delta(&deep).as_bytes()),
            "err" => hostile::response(
                500,
                "application/json",
                format!(r#"{{"error":{{"message":"boom","extra":{deep}}}}}"#).as_bytes(),
            ),
            other => panic!("unexpected case {other} at {}", req.path()),
        }
    }
}

fn config(up: &Hostile) -> String {
    let mut yaml = String::from("model_list:\n");
    for depth in DEPTHS {
        for (group, model) in [
            (
                format!("claude-ok-{depth}"),
                format!("anthropic/ok-{depth}"),
            ),
            (
                format!("claude-stream-{depth}"),
                format!("anthropic/stream-{depth}"),
            ),
            (
                format!("claude-err-{depth}"),
                format!("anthropic/err-{depth}"),
            ),
            (format!("gpt-err-{depth}"), format!("openai/err-{depth}")),
            (
                format!("claude-late-{depth}"),
                format!("anthropic/late-{depth}"),
            ),
        ] {
            let base = if model.starts_with("openai/") {
                format!("{}/v1", up.base())
            } else {
                up.base()
            };
            yaml.push_str(&format!(
                "  - model_name: {group}\n    litellm_params:\n      model: {model}\n      api_base: {base}\n      api_key: sk-test-key-123456\n"
            ));
        }
    }
    yaml
}

/// The gateway is still the same process and serves a request on a fresh connection.
fn still_serving(gw: &mut Gateway, pid: i32) {
    assert_eq!(gw.proc.pid(), pid);
    assert!(
        gw.proc.child.try_wait().expect("wait").is_none(),
        "the gateway exited: {}",
        gw.proc.output()
    );
    assert_eq!(gw.get("/health/live").status, 200, "{}", gw.proc.output());
}

fn deep_json(driver: &str) {
    let gate = hostile::Gate::new();
    let up = deep_upstream(gate.clone());
    let mut gw = Gateway::start_on(&config(&up), driver);
    let pid = gw.proc.pid();
    for depth in DEPTHS {
        // From the client: 400 before anything is parsed or sent.
        let body = format!(
            r#"{{"model":"claude-ok-{depth}","messages":[{{"role":"user","content":{}}}]}}"#,
            hostile::nested(depth)
        );
        let before = up.requests.load(std::sync::atomic::Ordering::Relaxed);
        let r = gw.chat(&body);
        assert_eq!(r.status, 400, "{}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("deeper than the limit of 128")),
            "{e}"
        );
        assert_eq!(
            up.requests.load(std::sync::atomic::Ordering::Relaxed),
            before,
            "nothing was sent upstream"
        );
        still_serving(&mut gw, pid);

        // An Anthropic success body: 502.
        let r = gw.chat(&chat(&format!("claude-ok-{depth}"), false));
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("deeper than the limit"), "{}", r.text());
        still_serving(&mut gw, pid);

        // An Anthropic stream whose first event is deep: nothing went out yet, so a 502.
        let r = gw.chat(&chat(&format!("claude-stream-{depth}"), true));
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("deeper than the limit"), "{}", r.text());
        still_serving(&mut gw, pid);

        // A deep event after the first one went out: an error event, and no [DONE].
        let (_s, mut rd, _) = gw.open_stream(&chat(&format!("claude-late-{depth}"), true));
        gate.go();
        let rest = read_stream_rest(&mut rd);
        let events = data_events(rest.as_bytes());
        let last = events.last().expect("events");
        let v: serde_json::Value = serde_json::from_str(last).expect("error event is JSON");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("deeper than the limit")),
            "{events:?}"
        );
        assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
        still_serving(&mut gw, pid);

        // Error bodies of both formats: 502.
        for group in [format!("claude-err-{depth}"), format!("gpt-err-{depth}")] {
            let r = gw.chat(&chat(&group, false));
            assert_eq!(r.status, 502, "{group}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "502");
            still_serving(&mut gw, pid);
        }
    }
    // The request that should work still does, end to end.
    let r = gw.chat(&chat("claude-ok-1000", false));
    assert_eq!(r.status, 502);
    assert_eq!(gw.proc.pid(), pid);
}

#[test]
fn deep_json_io_uring() {
    deep_json("uring");
}

#[test]
fn deep_json_epoll() {
    deep_json("epoll");
}
