//! Issue 9: routing and resilience end to end, through the server, against `llmux mock` (with
//! injected errors, switched on and off at run time through `POST /mock/faults`) and scripted
//! upstreams. Every wait is on the state the gateway reports (`/health/deployments`), a response,
//! or an upstream's request: never on a time window.

mod common;

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::hostile::{self, Hostile};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]
    })
    .to_string()
}

/// One `model_list` entry against the mock: `upstream` selects the mock's behaviour.
fn dep(mock: &Mock, group: &str, id: &str, upstream: &str, params: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params:\n      model: openai/{upstream}\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n{params}    model_info:\n      id: {id}\n",
        mock.base()
    )
}

fn set_fault(mock: &Mock, upstream: &str, status: Option<u16>) {
    let body = serde_json::json!({"model": upstream, "status": status}).to_string();
    let r = request(&mock.addr, "POST", "/mock/faults", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The gateway's view of one deployment, summed over its shards.
fn view(gw: &Gateway, id: &str) -> serde_json::Value {
    let r = gw.get("/health/deployments");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deployments"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["deployment"] == id).cloned())
        .unwrap_or_else(|| panic!("no deployment {id} in {}", r.text()))
}

fn wait_view(gw: &Gateway, id: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let mut last = serde_json::Value::Null;
    let seen = eventually(WAIT, || {
        last = view(gw, id);
        ok(&last)
    });
    assert!(seen, "{id}: waited for {what}; last view: {last}");
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
}

/// A keep-alive connection.
struct Conn {
    s: TcpStream,
    rd: BufReader<TcpStream>,
}

impl Conn {
    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        write_request(&mut self.s, method, path, &[], body);
        read_response(&mut self.rd)
    }

    fn chat(&mut self, model: &str) -> Response {
        self.send(
            "POST",
            "/v1/chat/completions",
            chat(model, false).as_bytes(),
        )
    }
}

/// One keep-alive connection on each shard (the answering shard is in the request id:
/// `<8 hex digits><shard, 2 hex digits><counter>`). SO_REUSEPORT spreads new connections
/// over the shards; connections are opened until every shard has one.
fn conn_per_shard(gw: &Gateway, shards: usize) -> Vec<Conn> {
    let mut found: Vec<Option<Conn>> = (0..shards).map(|_| None).collect();
    for _ in 0..1_000 {
        let s = connect(&gw.addr);
        let mut c = Conn {
            rd: BufReader::new(s.try_clone().expect("clone")),
            s,
        };
        let r = c.send("GET", "/health/live", b"");
        let id = header(&r, "x-request-id");
        let shard = usize::from_str_radix(&id[8..10], 16).expect("shard in request id");
        if shard < shards && found[shard].is_none() {
            found[shard] = Some(c);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("no connection reached every shard");
}

#[test]
fn retries_move_to_another_deployment_on_retryable_failures_only() {
    let mock = Mock::start();
    // The failing deployment has priority (order 1): every request tries it first.
    let mut yaml = String::from("model_list:\n");
    for (group, upstream, params) in [
        ("r500", "f-mock-status-500", ""),
        ("r429", "f-mock-status-429", ""),
        ("rtimeout", "f-mock-delay-5000", "      timeout: 0.3\n"),
        ("rcut", "f-mock-cut-0", ""),
        ("r400", "f-mock-status-400", ""),
        (
            "rquota",
            "f-mock-status-429-mock-error-insufficient_quota",
            "",
        ),
    ] {
        yaml += &dep(
            &mock,
            group,
            &format!("{group}-bad"),
            upstream,
            &format!("      order: 1\n{params}"),
        );
        yaml += &dep(
            &mock,
            group,
            &format!("{group}-ok"),
            "ok",
            "      order: 2\n",
        );
    }
    let gw = Gateway::start(&yaml);
    for group in ["r500", "r429", "rtimeout"] {
        let r = gw.chat(&chat(group, false));
        assert_eq!(r.status, 200, "{group}: {}", r.text());
        assert_eq!(header(&r, "x-llmux-deployment"), format!("{group}-ok"));
        assert_eq!(header(&r, "x-litellm-model-id"), format!("{group}-ok"));
        assert_eq!(header(&r, "x-llmux-attempts"), "2", "{group}");
        assert_eq!(header(&r, "x-litellm-attempted-retries"), "1", "{group}");
        assert_eq!(header(&r, "x-litellm-attempted-fallbacks"), "0", "{group}");
    }
    // A stream whose upstream hangs up before its first event is retried elsewhere.
    let r = gw.chat(&chat("rcut", true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "x-llmux-deployment"), "rcut-ok");
    assert_eq!(header(&r, "x-llmux-attempts"), "2");
    assert!(data_events(&r.body).iter().any(|e| e == "[DONE]"));
    // The client's own bad request, and a quota error the provider file marks non-retryable.
    for (group, status) in [("r400", 400), ("rquota", 429)] {
        let r = gw.chat(&chat(group, false));
        assert_eq!(r.status, status, "{group}: {}", r.text());
        assert_eq!(header(&r, "x-llmux-attempts"), "1", "{group}");
        assert_eq!(header(&r, "x-llmux-deployment"), format!("{group}-bad"));
    }
    // The access log lists every attempt.
    let log = gw.proc.wait_line("r500-bad 500/internal", WAIT);
    assert!(log.contains("r500-ok 200"), "{log}");
}

/// `llmux.routing_headers: false`: answers and failures keep deployment ids and attempt counts
/// to themselves (the access log still lists them); `retry-after` still goes out.
#[test]
fn routing_headers_can_be_left_out() {
    let mock = Mock::start();
    let mut yaml = String::from("model_list:\n");
    yaml += &dep(
        &mock,
        "quiet",
        "quiet-bad",
        "q-mock-status-500",
        "      order: 1\n",
    );
    yaml += &dep(&mock, "quiet", "quiet-ok", "ok", "      order: 2\n");
    yaml += &dep(
        &mock,
        "busy",
        "busy-0",
        "b-mock-status-429-mock-retry-after-7",
        "      max_retries: 0\n",
    );
    yaml += "router_settings:\n  num_retries: 1\nllmux:\n  routing_headers: false\n";
    let gw = Gateway::start(&yaml);
    let routing = [
        "x-llmux-deployment",
        "x-llmux-attempts",
        "x-llmux-fallback-from",
        "x-litellm-model-id",
        "x-litellm-attempted-retries",
        "x-litellm-attempted-fallbacks",
    ];
    for stream in [false, true] {
        let r = gw.chat(&chat("quiet", stream));
        assert_eq!(r.status, 200, "{}", r.text());
        for name in routing {
            assert_eq!(r.header(name), None, "{name} in {:?}", r.headers);
        }
    }
    let log = gw.proc.wait_line("quiet-bad 500/internal", WAIT);
    assert!(log.contains("quiet-ok 200"), "{log}");
    let r = gw.chat(&chat("busy", false));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "retry-after"), "7");
    for name in routing {
        assert_eq!(r.header(name), None, "{name} in {:?}", r.headers);
    }
}

#[test]
fn retry_after_is_honoured_and_passed_on() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n{}router_settings:\n  num_retries: 1\n",
        dep(
            &mock,
            "slow",
            "slow-0",
            "x-mock-status-429-mock-retry-after-1",
            ""
        )
    );
    let gw = Gateway::start(&yaml);
    let started = Instant::now();
    let r = gw.chat(&chat("slow", false));
    let took = started.elapsed();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(header(&r, "x-llmux-attempts"), "2");
    assert_eq!(header(&r, "retry-after"), "1");
    // The retry on the same deployment waited at least what the upstream asked for.
    assert!(took >= Duration::from_secs(1), "retried after {took:?}");
    assert_eq!(mock.stats()["requests"], 2);
}

#[test]
fn fallbacks_of_every_kind() {
    let mock = Mock::start();
    let mut yaml = String::from("model_list:\n");
    yaml += &dep(&mock, "a", "a-0", "a-mock-status-500", "");
    yaml += &dep(&mock, "b", "b-0", "ok", "");
    yaml += &dep(
        &mock,
        "c",
        "c-0",
        "c-mock-error-context_length_exceeded",
        "",
    );
    yaml += &dep(&mock, "c-long", "c-long-0", "ok", "");
    yaml += &dep(
        &mock,
        "c2",
        "c2-0",
        "c2-mock-error-context_length_exceeded",
        "",
    );
    yaml += &dep(
        &mock,
        "p",
        "p-0",
        "p-mock-error-content_policy_violation",
        "",
    );
    yaml += &dep(&mock, "d", "d-0", "d-mock-status-503", "");
    yaml += "router_settings:\n  num_retries: 0\n  fallbacks: [{\"a\": [\"b\"]}, {\"c2\": [\"b\"]}]\n  context_window_fallbacks: [{\"c\": [\"c-long\"]}]\n  content_policy_fallbacks: [{\"p\": [\"b\"]}]\n  default_fallbacks: [\"b\"]\n";
    let gw = Gateway::start(&yaml);
    for (group, to) in [("a", "b-0"), ("c", "c-long-0"), ("p", "b-0"), ("d", "b-0")] {
        let r = gw.chat(&chat(group, false));
        assert_eq!(r.status, 200, "{group}: {}", r.text());
        assert_eq!(header(&r, "x-llmux-deployment"), to, "{group}");
        assert_eq!(header(&r, "x-llmux-fallback-from"), group);
        assert_eq!(header(&r, "x-litellm-attempted-fallbacks"), "1", "{group}");
        assert_eq!(header(&r, "x-llmux-attempts"), "2", "{group}");
    }
    // A prompt too long is not sent to a general fallback: only to the context-window ones.
    let r = gw.chat(&chat("c2", false));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("x-llmux-fallback-from").is_none());
    assert!(r.text().contains("ContextWindowExceeded"), "{}", r.text());
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"llmux_fallbacks_total{fallback_group="b",model_group="a"}"#
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn fallback_loops_are_refused_at_load() {
    let dir = TempDir::new("loop");
    let path = dir.0.join("llmux.yaml");
    std::fs::write(
        &path,
        "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/x\n      api_key: k\n  - model_name: b\n    litellm_params:\n      model: openai/y\n      api_key: k\nrouter_settings:\n  fallbacks: [{\"a\": [\"b\"]}, {\"b\": [\"a\"]}]\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["config", "check", path.to_str().expect("path")])
        .output()
        .expect("run llmux check");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("the fallbacks loop"), "{text}");
    assert!(text.contains("llmux.yaml:"), "file:line:col: {text}");
}

#[test]
fn a_failing_deployment_cools_down_and_comes_back() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n{}{}router_settings:\n  allowed_fails: 1\n  cooldown_time: 1\n",
        dep(&mock, "g", "flaky", "flaky", "      order: 1\n"),
        dep(&mock, "g", "steady", "steady", "      order: 2\n"),
    );
    let gw = Gateway::start(&yaml);
    set_fault(&mock, "flaky", Some(500));
    let mut c = conn_per_shard(&gw, 1).remove(0);
    // Each request tries `flaky` first and is retried on `steady`; the second failure in the
    // minute (more than allowed_fails: 1) cools `flaky` down.
    for _ in 0..2 {
        let r = c.chat("g");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(header(&r, "x-llmux-deployment"), "steady");
    }
    let v = view(&gw, "flaky");
    assert_eq!(v["state"], 2, "complete outage while cooling down: {v}");
    assert_eq!(v["health"], "complete_outage");
    // While it cools down, requests go straight to `steady`.
    let r = c.chat("g");
    assert_eq!(header(&r, "x-llmux-attempts"), "1");
    assert_eq!(header(&r, "x-llmux-deployment"), "steady");
    let health = gw.get("/health").json();
    assert_eq!(health["unhealthy_count"], 1, "{health}");
    assert_eq!(health["unhealthy_endpoints"][0]["model_id"], "flaky");
    // Repaired, and back once its cooldown is over.
    set_fault(&mock, "flaky", None);
    wait_view(&gw, "flaky", "the end of the cooldown", |v| v["state"] == 0);
    let r = c.chat("g");
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "x-llmux-deployment"), "flaky");
    let m = gw.metrics();
    assert!(
        metric(
            &m,
            r#"llmux_deployment_cooldowns_total{deployment="flaky",model_group="g"}"#
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
}

#[test]
fn breaker_opens_half_opens_closes_and_opens_again() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n{}router_settings:\n  num_retries: 0\n  disable_cooldowns: true\nllmux:\n  router:\n    breaker:\n      consecutive_failures: 2\n      open_for: 1\n      half_open_probes: 1\n",
        dep(&mock, "brk", "brk-0", "brk", ""),
    );
    let gw = Gateway::start(&yaml);
    let mut c = conn_per_shard(&gw, 1).remove(0);
    set_fault(&mock, "brk", Some(500));
    for _ in 0..2 {
        assert_eq!(c.chat("brk").status, 500);
    }
    assert_eq!(view(&gw, "brk-0")["breaker"], "open");
    // Open: answered at once, without a call upstream.
    let before = mock.stats()["requests"].as_u64();
    let r = c.chat("brk");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("circuit breaker is open"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64(), before);
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"llmux_deployment_state{deployment="brk-0",model_group="brk"}"#
        ),
        Some(2.0),
        "{m}"
    );
    // Half-open once its time is up; a successful probe closes it.
    wait_view(&gw, "brk-0", "half-open", |v| v["breaker"] == "half_open");
    set_fault(&mock, "brk", None);
    assert_eq!(c.chat("brk").status, 200);
    assert_eq!(view(&gw, "brk-0")["breaker"], "closed");
    // Failing again: open, half-open, and a failed probe opens it at once.
    set_fault(&mock, "brk", Some(500));
    for _ in 0..2 {
        assert_eq!(c.chat("brk").status, 500);
    }
    assert_eq!(view(&gw, "brk-0")["breaker"], "open");
    wait_view(&gw, "brk-0", "half-open", |v| v["breaker"] == "half_open");
    assert_eq!(c.chat("brk").status, 500);
    assert_eq!(view(&gw, "brk-0")["breaker"], "open");
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"llmux_deployment_breaker_transitions_total{deployment="brk-0",model_group="brk",to="open"}"#
        ),
        Some(3.0),
        "{m}"
    );
}

/// An upstream that holds every answer until the test lets one go.
fn held_upstream() -> (Hostile, std::sync::Arc<hostile::Gate>) {
    let gate = hostile::Gate::new();
    let up = Hostile::start_writing({
        let gate = gate.clone();
        move |_, conn| {
            use std::io::Write;
            gate.wait();
            let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
            let _ = conn.write_all(&hostile::response(200, "application/json", body));
        }
    });
    (up, gate)
}

fn one_slot_config(up: &Hostile, queue: &str) -> String {
    format!(
        "model_list:\n  - model_name: one\n    litellm_params:\n      model: openai/x\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n      max_parallel_requests: 1\n    model_info:\n      id: one-0\nllmux:\n  router:\n    queue:\n{queue}",
        up.base()
    )
}

#[test]
fn max_parallel_requests_one_holds_across_shards() {
    let (up, gate) = held_upstream();
    let gw = Gateway::start(&one_slot_config(
        &up,
        "      max_waiting: 10\n      timeout: 0.3\n",
    ));
    let mut conns = conn_per_shard(&gw, 2);
    // Shard 0's request takes the only slot and is held upstream.
    let (mut c0, mut c1) = (conns.remove(0), conns.remove(0));
    write_request(
        &mut c0.s,
        "POST",
        "/v1/chat/completions",
        &[],
        chat("one", false).as_bytes(),
    );
    up.next_request();
    // Shard 1's request finds no slot for the whole process and gives up after its wait.
    let r = c1.chat("one");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("max_parallel_requests"), "{}", r.text());
    assert_eq!(up.requests.load(Ordering::Relaxed), 1);
    gate.go();
    assert_eq!(read_response(&mut c0.rd).status, 200);
    // The slot is free again.
    gate.go();
    assert_eq!(c1.chat("one").status, 200);
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"llmux_deployment_rejections_total{deployment="one-0",limit="max_parallel",model_group="one"}"#
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn the_bulkhead_queue_is_bounded_and_a_leaving_client_frees_its_place() {
    let (up, gate) = held_upstream();
    let gw = Gateway::start(&one_slot_config(
        &up,
        "      max_waiting: 1\n      timeout: 60\n",
    ));
    let mut holder = conn_per_shard(&gw, 1).remove(0);
    write_request(
        &mut holder.s,
        "POST",
        "/v1/chat/completions",
        &[],
        chat("one", false).as_bytes(),
    );
    up.next_request();
    // The queue (one place per shard) fills: a waiting request on each shard.
    let mut waiting = conn_per_shard(&gw, 2);
    for c in &mut waiting {
        write_request(
            &mut c.s,
            "POST",
            "/v1/chat/completions",
            &[],
            chat("one", false).as_bytes(),
        );
    }
    wait_view(&gw, "one-0", "two waiting", |v| v["waiting"] == 2);
    // Full on every shard: refused at once.
    let mut extra = conn_per_shard(&gw, 2);
    for c in &mut extra {
        let r = c.chat("one");
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.text().contains("waiting"), "{}", r.text());
    }
    // A waiting client goes away: its place is free at once.
    drop(waiting.remove(0));
    wait_view(&gw, "one-0", "one waiting", |v| v["waiting"] == 1);
    // The held request ends; the one still waiting gets the slot, then the next one.
    gate.go();
    assert_eq!(read_response(&mut holder.rd).status, 200);
    gate.go();
    assert_eq!(read_response(&mut waiting[0].rd).status, 200);
    assert_eq!(up.requests.load(Ordering::Relaxed), 2);
}

#[test]
fn rpm_and_tpm_hold_across_shards() {
    let mock = Mock::start();
    let long_prompt = "word ".repeat(40);
    let yaml = format!(
        "model_list:\n{}{}",
        dep(&mock, "rpm3", "rpm3-0", "ok", "      rpm: 3\n"),
        dep(&mock, "tpm", "tpm-0", "ok", "      tpm: 90\n"),
    );
    let gw = Gateway::start(&yaml);
    let mut conns = conn_per_shard(&gw, 2);
    let first_minute = minute();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..6 {
        let r = conns[i % 2].chat("rpm3");
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
            }
            s => panic!("status {s}: {}", r.text()),
        }
    }
    // Three per calendar minute: the first three pass, and three more only if a new minute
    // began meanwhile.
    let minutes = minute() - first_minute + 1;
    assert!(ok >= 3, "{ok} passed");
    assert!(ok <= 3 * minutes, "{ok} passed in {minutes} minute(s)");
    assert_eq!(ok + limited, 6);
    // tpm: about 60 tokens estimated for this prompt (its bytes / 4): the first request fits
    // the 90 of a minute; the second, on the other shard, does not.
    let body =
        serde_json::json!({"model": "tpm", "messages": [{"role": "user", "content": long_prompt}]})
            .to_string();
    let first_minute = minute();
    let first = conns[0].send("POST", "/v1/chat/completions", body.as_bytes());
    assert_eq!(first.status, 200, "{}", first.text());
    let second = conns[1].send("POST", "/v1/chat/completions", body.as_bytes());
    if minute() == first_minute {
        assert_eq!(second.status, 429, "{}", second.text());
        assert!(second.text().contains("rpm/tpm"), "{}", second.text());
    }
}

/// The calendar minute (rpm and tpm count per calendar minute, as LiteLLM's do).
fn minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60
}

#[test]
fn a_stream_cut_after_its_first_byte_ends_with_an_error_event() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n{}",
        dep(&mock, "cut", "cut-0", "x-mock-cut-2", "")
    );
    let gw = Gateway::start(&yaml);
    let r = gw.chat(&chat("cut", true));
    assert_eq!(r.status, 200);
    let events = data_events(&r.body);
    assert!(events.len() >= 2, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: serde_json::Value =
        serde_json::from_str(events.last().expect("events")).expect("JSON");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cut-0")),
        "{last}"
    );
    // Not retried: the client had its first byte.
    assert_eq!(header(&r, "x-llmux-attempts"), "1");
    assert_eq!(mock.stats()["requests"], 1);
}

#[test]
fn every_deployment_down_is_a_fast_clear_429() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n{}{}router_settings:\n  num_retries: 1\n  allowed_fails: 0\n  cooldown_time: 600\n",
        dep(&mock, "down", "down-0", "x-mock-status-500", ""),
        dep(&mock, "down", "down-1", "y-mock-status-500", ""),
    );
    let gw = Gateway::start(&yaml);
    let mut c = conn_per_shard(&gw, 1).remove(0);
    // Both fail once (each is then cooling down): the upstream's error.
    let r = c.chat("down");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(header(&r, "x-llmux-attempts"), "2");
    // Then no deployment is left: 429 at once, with when to come back.
    let r = c.chat("down");
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = header(&r, "retry-after").parse().expect("seconds");
    assert!(retry > 500 && retry <= 600, "{retry}");
    assert!(
        r.text().contains("No deployment of model group `down`"),
        "{}",
        r.text()
    );
    assert_eq!(mock.stats()["requests"], 2);
}

#[test]
fn health_deployments_needs_the_master_key() {
    let mock = Mock::start();
    let yaml = format!(
        "model_list:\n{}general_settings:\n  master_key: sk-master-123\n",
        dep(&mock, "g", "g-0", "ok", "")
    );
    let gw = Gateway::start(&yaml);
    assert_eq!(gw.get("/health/deployments").status, 401);
    let r = request(
        &gw.addr,
        "GET",
        "/health/deployments",
        &[("authorization", "Bearer sk-master-123")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d = &r.json()["deployments"][0];
    assert_eq!(d["deployment"], "g-0");
    assert_eq!(d["breaker"], "closed");
    assert_eq!(d["state"], 0);
}

/// Issue 10: a prompt longer than a deployment's context window (`model_info.max_input_tokens`)
/// is not sent to it when the group has context-window fallbacks; the fallback group answers.
/// Without such fallbacks the prompt is sent as it is (the upstream decides).
#[test]
fn context_window_preflight_falls_back_before_sending() {
    let mock = Mock::start();
    let window = "    model_info:\n      id: small-1\n      max_input_tokens: 50\n";
    let small = format!(
        "  - model_name: small\n    litellm_params:\n      model: openai/small-model\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n{window}",
        mock.base()
    );
    let cfg = format!(
        "model_list:\n{small}{}{}router_settings:\n  context_window_fallbacks: [{{small: [large]}}]\n",
        dep(&mock, "large", "large-1", "large-model", ""),
        small.replace("model_name: small", "model_name: alone").replace("small-1", "alone-1"),
    );
    let gw = Gateway::start(&cfg);
    let long = serde_json::json!({
        "model": "small",
        "messages": [{"role": "user", "content": "tell me about the weather today ".repeat(60)}]
    })
    .to_string();
    let r = gw.chat(&long);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "x-llmux-deployment"), "large-1");
    assert_eq!(header(&r, "x-llmux-fallback-from"), "small");
    assert_eq!(
        header(&r, "x-llmux-attempts"),
        "1",
        "the small deployment was not tried"
    );
    // A short prompt fits and stays.
    let r = gw.chat(&chat("small", false));
    assert_eq!(header(&r, "x-llmux-deployment"), "small-1");
    // No context-window fallbacks for `alone`: the long prompt goes to its deployment.
    let r = gw.chat(&long.replace("\"small\"", "\"alone\""));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "x-llmux-deployment"), "alone-1");
}
