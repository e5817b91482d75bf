//! End-to-end tests of the gateway against the mock upstream, through the real binary.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::hostile;
use common::*;

/// How long a test waits for an event before it fails. Generous: the wait ends as soon as the
/// event happens, and a loaded machine must not turn a slow event into a failure.
const WAIT: Duration = Duration::from_secs(30);

const HI: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn chat_body(model: &str, stream: bool, usage: bool) -> String {
    let mut v = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    if stream {
        v["stream"] = true.into();
    }
    if usage {
        v["stream_options"] = serde_json::json!({"include_usage": true});
    }
    v.to_string()
}

fn non_stream(driver: &str) {
    let mock = Mock::start();
    let gw = Gateway::start_on(&config_for(&mock, &[("m", "up-model")], ""), driver);
    assert!(
        gw.proc.output().contains(&format!(
            "io_driver=\"{}\"",
            if driver == "epoll" {
                "epoll"
            } else {
                "io_uring"
            }
        )) || driver == "auto",
        "{}",
        gw.proc.output()
    );
    let before = mock.stats();
    let r = gw.chat(HI);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    // The answer names the group asked for (as LiteLLM's do); the upstream got its own name.
    assert_eq!(v["model"], "m");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("mock"));
    assert!(r.header("x-request-id").is_some());
    // Keep-alive: several requests on one connection.
    let mut s = connect(&gw.addr);
    let mut rd = BufReader::new(s.try_clone().unwrap());
    for _ in 0..3 {
        write_request(
            &mut s,
            "POST",
            "/v1/chat/completions",
            &[("x-request-id", "my-id-1")],
            HI.as_bytes(),
        );
        let r = read_response(&mut rd);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id"), Some("my-id-1"));
    }
    // Upstream keep-alive: the four requests reuse pooled connections, at most one per shard.
    // (`connections` counts every accept, the ones asking for the stats included.)
    let after = mock.stats();
    assert_eq!(after["requests"], 4, "{after}");
    let opened =
        after["connections"].as_u64().unwrap() - before["connections"].as_u64().unwrap() - 1;
    assert!((1..=2).contains(&opened), "{before} -> {after}");
    let sent: serde_json::Value =
        serde_json::from_slice(&request(&mock.addr, "GET", "/mock/last-request", &[], b"").body)
            .unwrap();
    assert_eq!(
        sent["model"], "up-model",
        "the upstream model name is sent upstream"
    );
}

fn stream(driver: &str) {
    let mock = Mock::start();
    let gw = Gateway::start_on(&config_for(&mock, &[("m", "up-mock-chunks-7")], ""), driver);
    let r = gw.chat(&chat_body("m", true, false));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = data_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "mock word1 word2 word3 word4 word5 word6");
}

/// Streams are relayed event by event: the first event reaches the client while the upstream
/// is still holding back the rest (it waits for the test's go), and then the whole stream
/// arrives intact.
// The test's upstream thread waits on the go signal behind a lock: test code, not the data plane.
#[allow(clippy::disallowed_types)]
fn stream_is_not_buffered(driver: &str) {
    use std::sync::{mpsc, Mutex};
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let up = hostile::Hostile::start_writing(move |_, conn| {
        let chunk = |i: usize| {
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n"
            )
        };
        let _ = conn.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{}",
                chunk(0)
            )
            .as_bytes(),
        );
        // Held until the client has seen the first event.
        let _ = go_rx.lock().expect("go").recv();
        for i in 1..4 {
            let _ = conn.write_all(chunk(i).as_bytes());
        }
        let _ = conn.write_all(b"data: [DONE]\n\n");
    });
    let gw = Gateway::start_on(
        &format!(
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n",
            up.base()
        ),
        driver,
    );
    // Returns once the first event has arrived: the upstream has sent nothing else yet.
    let (_s, mut rd, _) = gw.open_stream(&chat_body("m", true, false));
    go_tx.send(()).expect("upstream waiting");
    // The rest, up to the chunked terminator (the connection stays open: keep-alive).
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    while !rest.ends_with(b"0\r\n\r\n") {
        let n = rd.read(&mut buf).expect("the rest of the stream");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&rest);
    for i in 1..4 {
        assert!(rest.contains(&format!("w{i} ")), "{rest}");
    }
    assert!(rest.contains("data: [DONE]"), "{rest}");
}

fn disconnect_closes_upstream(driver: &str) {
    let mock = Mock::start();
    let gw = Gateway::start_on(
        &config_for(
            &mock,
            &[("m", "up-mock-chunks-200-mock-chunk-delay-50")],
            "",
        ),
        driver,
    );
    let (s, rd, _) = gw.open_stream(&chat_body("m", true, false));
    drop(rd);
    drop(s);
    // 200 chunks at 50 ms take 10 s: the mock must see the gateway hang up before the stream
    // could have completed.
    assert!(
        eventually(WAIT, || mock.stats()["disconnects"].as_u64() == Some(1)),
        "mock stats: {}",
        mock.stats()
    );
    assert_eq!(mock.stats()["completed_streams"].as_u64(), Some(0));
    // The gateway counted the aborted request as 499 (a 4xx).
    assert!(
        eventually(WAIT, || {
            metric(
                &gw.metrics(),
                r#"llmux_requests_total{deployment="m/0",model_group="m",provider="openai",status_class="4xx"}"#,
            ) == Some(1.0)
        }),
        "{}",
        gw.metrics()
    );
}

fn many_connections(driver: &str) {
    raise_nofile();
    let mock = Mock::start();
    let gw = Gateway::start_on(&config_for(&mock, &[("m", "up-model")], ""), driver);
    const N: usize = 1000;
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(connect(&gw.addr));
    }
    for s in conns.iter_mut() {
        write_request(s, "POST", "/v1/chat/completions", &[], HI.as_bytes());
    }
    let mut ok = 0;
    for s in conns {
        let mut rd = BufReader::new(s);
        let r = read_response(&mut rd);
        if r.status == 200 && r.json()["object"] == "chat.completion" {
            ok += 1;
        }
    }
    assert_eq!(ok, N);
    let mut m = gw.metrics();
    eventually(WAIT, || {
        m = gw.metrics();
        metric(
            &m,
            r#"llmux_requests_total{deployment="m/0",model_group="m",provider="openai",status_class="2xx"}"#,
        ) == Some(N as f64)
    });
    assert_eq!(
        metric(
            &m,
            r#"llmux_requests_total{deployment="m/0",model_group="m",provider="openai",status_class="2xx"}"#
        ),
        Some(N as f64)
    );
}

fn raise_nofile() {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The core scenarios run on both I/O drivers.
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn io_uring() {
                super::$name("uring");
            }
            #[test]
            fn epoll() {
                super::$name("epoll");
            }
        })*
    };
}

on_both_drivers!(
    non_stream,
    stream,
    stream_is_not_buffered,
    disconnect_closes_upstream,
    many_connections
);

#[test]
fn stream_with_include_usage_counts_tokens() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up-mock-chunks-3")], ""));
    let r = gw.chat(&chat_body("m", true, true));
    let events = data_events(&r.body);
    let usage_event = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(usage_event["usage"]["completion_tokens"], 3);
    let prompt = usage_event["usage"]["prompt_tokens"].as_f64().unwrap();
    let mut m = gw.metrics();
    eventually(WAIT, || {
        m = gw.metrics();
        metric(
            &m,
            r#"llmux_time_to_first_token_seconds_count{model_group="m"}"#,
        ) == Some(1.0)
    });
    assert_eq!(
        metric(
            &m,
            r#"llmux_tokens_total{estimated="false",model_group="m",type="completion"}"#
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"llmux_tokens_total{estimated="false",model_group="m",type="prompt"}"#
        ),
        Some(prompt)
    );
    assert_eq!(
        metric(
            &m,
            r#"llmux_time_to_first_token_seconds_count{model_group="m"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn upstream_errors_are_relayed_with_their_status() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "up-mock-status-429"), ("bad", "up-mock-status-503")],
        "",
    ));
    let r = gw.chat(HI);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = gw.chat(&chat_body("bad", false, false));
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"].is_string());
}

#[test]
fn upstream_timeout_is_504_and_unreachable_is_502() {
    let mock = Mock::start();
    let cfg = format!(
        "model_list:
  - model_name: slow
    litellm_params:
      model: openai/up-mock-delay-3000
      api_base: {}/v1
      timeout: 0.3
  - model_name: slowstream
    litellm_params:
      model: openai/up-mock-delay-3000
      api_base: {}/v1
      stream_timeout: 0.3
  - model_name: down
    litellm_params:
      model: openai/x
      api_base: http://127.0.0.1:1/v1
",
        mock.base(),
        mock.base()
    );
    let gw = Gateway::start(&cfg);
    // The mock would answer after 3 s: a 504 means the 0.3 s timeout fired first.
    let r = gw.chat(&chat_body("slow", false, false));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "timeout");
    let r = gw.chat(&chat_body("slowstream", true, false));
    assert_eq!(r.status, 504, "{}", r.text());
    let r = gw.chat(&chat_body("down", false, false));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
}

#[test]
fn bad_requests_get_openai_errors() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "up")],
        "llmux:\n  server:\n    max_request_body_bytes: 2048\n",
    ));
    let r = gw.chat("{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = gw.chat(r#"{"messages":[{"role":"user","content":"x"}]}"#);
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("model"))
    );
    let r = gw.chat(r#"{"model":"m"}"#);
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("messages"))
    );
    let r = gw.chat(r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#);
    assert_eq!(r.status, 404);
    let e = r.json();
    assert_eq!(e["error"]["code"], "model_not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains("nope"));
    assert!(
        !e["error"]["message"].as_str().unwrap().contains("`m`"),
        "never lists other groups"
    );
    // Body over the limit.
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    let r = gw.chat(&big);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // Unknown path and wrong method.
    assert_eq!(gw.get("/v2/nothing").status, 404);
    let r = gw.get("/v1/chat/completions");
    assert_eq!(r.status, 405);
    assert!(r.json()["error"]["message"].is_string());
    // Malformed HTTP: 400 with a JSON body, then the connection is closed.
    let mut s = connect(&gw.addr);
    s.write_all(b"THIS IS NOT HTTP\r\n\x01\x02\r\n\r\n")
        .unwrap();
    let mut rd = BufReader::new(s);
    let r = read_response(&mut rd);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_object());
    let mut rest = Vec::new();
    assert_eq!(
        rd.read_to_end(&mut rest).unwrap(),
        0,
        "connection closed after malformed HTTP"
    );
    // Chunked request bodies are accepted.
    let mut s = connect(&gw.addr);
    let body = HI.as_bytes();
    let half = body.len() / 2;
    let mut req =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    req.extend_from_slice(format!("{:x}\r\n", half).as_bytes());
    req.extend_from_slice(&body[..half]);
    req.extend_from_slice(format!("\r\n{:x}\r\n", body.len() - half).as_bytes());
    req.extend_from_slice(&body[half..]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    s.write_all(&req).unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn master_key_is_required_when_configured() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "up")],
        "general_settings:\n  master_key: sk-master-abcdef\n",
    ));
    let r = gw.chat(HI);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-wrong-key-xxxx")],
        HI.as_bytes(),
    );
    assert_eq!(r.status, 401);
    let r = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer sk-master-abcdef"),
            ("x-request-id", "master-key-last"),
        ],
        HI.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("/v1/models").status, 401);
    assert_eq!(gw.get("/health/live").status, 200, "probes need no key");
    // Everything the requests logged is in once the last one's access line is.
    gw.proc.wait_line("master-key-last", WAIT);
    assert!(
        !gw.proc.output().contains("sk-master-abcdef"),
        "the key never reaches a log line"
    );
}

#[test]
fn health_models_and_metrics() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up"), ("second", "up2")], ""));
    for p in [
        "/health/live",
        "/health/liveliness",
        "/health/ready",
        "/health/readiness",
    ] {
        assert_eq!(gw.get(p).status, 200, "{p}");
    }
    let models = gw.get("/v1/models").json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["m", "second"]);
    for _ in 0..5 {
        assert_eq!(gw.chat(HI).status, 200);
    }
    let _ = gw.chat(r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#);
    // Metrics are recorded just after the response is written: wait for the last one to land.
    let mut text = gw.metrics();
    eventually(WAIT, || {
        text = gw.metrics();
        metric(
            &text,
            r#"llmux_http_requests_total{route="chat_completions",status_class="4xx"}"#,
        ) == Some(1.0)
            && metric(
                &text,
                r#"llmux_tokens_total{estimated="false",model_group="m",type="completion"}"#,
            ) == Some(25.0)
            && metric(&text, "llmux_inflight_requests") == Some(1.0)
    });
    // Every sample line parses as `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "unparsable sample: {line}");
    }
    assert_eq!(
        metric(
            &text,
            r#"llmux_requests_total{deployment="m/0",model_group="m",provider="openai",status_class="2xx"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"llmux_request_duration_seconds_count{model_group="m",provider="openai"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"llmux_upstream_duration_seconds_count{deployment="m/0",provider="openai"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"llmux_http_requests_total{route="chat_completions",status_class="4xx"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"llmux_tokens_total{estimated="false",model_group="m",type="completion"}"#
        ),
        Some(25.0)
    );
    assert!(metric(&text, "llmux_io_driver{driver=").is_some());
    assert_eq!(
        metric(&text, "llmux_inflight_requests"),
        Some(1.0),
        "only the scrape itself is in flight"
    );
}

#[test]
fn hot_reload_applies_good_files_and_keeps_serving_on_bad_ones() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up")], ""));
    assert_eq!(gw.chat(&chat_body("new", false, false)).status, 404);
    std::fs::write(
        &gw.config,
        config_for(&mock, &[("m", "up"), ("new", "up-new")], ""),
    )
    .unwrap();
    assert!(
        eventually(WAIT, || gw.chat(&chat_body("new", false, false)).status
            == 200),
        "{}",
        gw.proc.output()
    );
    // A broken file: the old snapshot keeps serving and the error is counted.
    std::fs::write(&gw.config, "model_list:\n  - model_name: [oops\n").unwrap();
    assert!(eventually(WAIT, || {
        metric(
            &gw.metrics(),
            r#"llmux_config_reloads_total{result="error"}"#,
        )
        .unwrap_or(0.0)
            >= 1.0
    }));
    assert_eq!(gw.chat(&chat_body("new", false, false)).status, 200);
    gw.proc.wait_line("config reload failed", WAIT);
    // SIGHUP reloads too.
    std::fs::write(&gw.config, config_for(&mock, &[("m", "up")], "")).unwrap();
    gw.proc.signal(libc::SIGHUP);
    assert!(eventually(WAIT, || gw
        .chat(&chat_body("new", false, false))
        .status
        == 404));
}

#[test]
fn sigterm_lets_streams_finish_then_exits_zero() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&config_for(
        &mock,
        &[("m", "up-mock-chunks-15-mock-chunk-delay-60")],
        // A drain delay far longer than the test: readiness is certain to be 503 while the
        // listener is open, and a second SIGTERM ends the delay.
        "llmux:\n  server:\n    shutdown_delay: 120\n    shutdown_timeout: 30\n",
    ));
    let (_s, mut rd, _) = gw.open_stream(&chat_body("m", true, false));
    gw.proc.signal(libc::SIGTERM);
    gw.proc.wait_line("shutdown requested: draining", WAIT);
    // Draining, the listener still open: readiness says 503, liveness 200.
    assert_eq!(try_status(&gw.addr, "/health/ready"), Some(503));
    assert_eq!(try_status(&gw.addr, "/health/live"), Some(200));
    gw.proc.signal(libc::SIGTERM);
    gw.proc.wait_line("ending the drain delay early", WAIT);
    let mut rest = Vec::new();
    rd.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("data: [DONE]"),
        "the in-flight stream completed: {rest}"
    );
    gw.proc.wait_line("shutdown complete", WAIT);
    let status = gw.proc.child.wait().expect("the gateway exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn slow_reader_does_not_grow_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // 2,000 events of 16 KiB: 32 MiB that the gateway must not buffer for a client that
    // reads nothing. The upstream counts what it managed to write.
    const EVENTS: usize = 2_000;
    let event = format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(16 * 1024)
    );
    let total = EVENTS * event.len() + "data: [DONE]\n\n".len();
    let written = Arc::new(AtomicUsize::new(0));
    let up = hostile::Hostile::start_writing({
        let written = written.clone();
        move |_, conn| {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            );
            for _ in 0..EVENTS {
                if conn.write_all(event.as_bytes()).is_err() {
                    return;
                }
                written.fetch_add(event.len(), Ordering::Relaxed);
            }
            let _ = conn.write_all(b"data: [DONE]\n\n");
            written.fetch_add("data: [DONE]\n\n".len(), Ordering::Relaxed);
        }
    });
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n",
        up.base()
    ));
    let _ = gw.get("/health/live");
    let baseline = gw.proc.rss_kib();
    assert!(baseline > 0, "RSS of the gateway cannot be read");
    let mut s = connect(&gw.addr);
    write_request(
        &mut s,
        "POST",
        "/v1/chat/completions",
        &[],
        chat_body("m", true, false).as_bytes(),
    );
    // The upstream streams until every buffer on the way (the kernel's, and whatever the
    // gateway holds) is full, then stalls. Wait for that: some megabytes written, and then
    // no progress over consecutive checks.
    let mut last = 0;
    let mut still = 0;
    let deadline = Instant::now() + WAIT;
    while still < 10 {
        assert!(Instant::now() < deadline, "the upstream never stalled");
        std::thread::sleep(Duration::from_millis(100));
        let now = written.load(Ordering::Relaxed);
        still = if now == last && now >= 4 * 1024 * 1024 {
            still + 1
        } else {
            0
        };
        last = now;
    }
    assert!(
        last < total,
        "the whole stream ({total} bytes) went out to a client that reads nothing"
    );
    let stalled = gw.proc.rss_kib();
    assert!(stalled > 0, "RSS of the gateway cannot be read");
    assert!(
        stalled < baseline + 16 * 1024,
        "gateway RSS grew from {baseline} KiB to {stalled} KiB with a stalled reader ({last} bytes in flight)"
    );
    // Reading it all still works.
    let mut rd = BufReader::new(s);
    let r = read_response(&mut rd);
    assert_eq!(r.status, 200);
    assert_eq!(data_events(&r.body).len(), EVENTS + 1);
    assert!(
        r.text().ends_with("data: [DONE]\n\n"),
        "the stream is complete"
    );
}

#[test]
fn a_panicking_request_gets_500_and_the_next_is_served() {
    let mock = Mock::start();
    let gw = Gateway::start_with(
        &config_for(
            &mock,
            &[("m", "up")],
            "llmux:\n  server:\n    debug_routes: true\n",
        ),
        GatewayOpts {
            workers: 1,
            ..Default::default()
        },
    );
    for _ in 0..3 {
        let r = request(&gw.addr, "POST", "/debug/panic", &[], b"");
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["error"]["type"], "internal_server_error");
        assert_eq!(gw.chat(HI).status, 200, "the shard survived");
    }
    gw.proc.wait_line("panicked", WAIT);
}

#[test]
fn debug_routes_are_off_by_default() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up")], ""));
    for path in ["/debug/panic", "/debug/clock"] {
        let body = br#"{"advance_ms":60000}"#;
        assert_eq!(request(&gw.addr, "POST", path, &[], body).status, 404);
    }
}

#[test]
fn unix_socket_serves_the_same_api() {
    use std::os::unix::net::UnixStream;
    let mock = Mock::start();
    let dir = TempDir::new("uds");
    let sock = dir.0.join("llmux.sock");
    let gw = Gateway::start_with(
        &config_for(&mock, &[("m", "up")], ""),
        GatewayOpts {
            extra_args: vec!["--uds", sock.to_str().unwrap()],
            ..Default::default()
        },
    );
    let mut s = UnixStream::connect(&sock).unwrap();
    let req = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{HI}", HI.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("chat.completion"));
    drop(gw);
}

#[test]
fn config_check_reports_file_line_col() {
    let dir = TempDir::new("check");
    let bad = dir.0.join("bad.yaml");
    std::fs::write(&bad, "model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      rpm: lots\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:5:"), "{err}");
    let good = dir.0.join("good.yaml");
    std::fs::write(&good, "model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      api_key: k\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_access_log_has_the_request_fields_and_no_secrets() {
    let mock = Mock::start();
    let gw = Gateway::start_with(
        &config_for(&mock, &[("m", "up")], ""),
        GatewayOpts {
            extra_args: vec!["--log-format", "json"],
            ..Default::default()
        },
    );
    let r = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-request-id", "trace-me-42"),
            ("authorization", "Bearer sk-client-secret-999"),
        ],
        HI.as_bytes(),
    );
    assert_eq!(r.status, 200);
    let line = gw.proc.wait_line("trace-me-42", WAIT);
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["request_id"], "trace-me-42");
    assert_eq!(v["model_group"], "m");
    assert_eq!(v["deployment"], "m/0");
    assert_eq!(v["status"], 200);
    assert!(v["duration_ms"].is_u64());
    assert!(v["completion_tokens"].is_u64());
    let all = gw.proc.output();
    assert!(!all.contains("sk-test-key-123456"), "upstream key leaked");
    assert!(!all.contains("sk-client-secret-999"), "client key leaked");
}

#[test]
fn a_group_with_several_deployments_spreads_requests() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up-a"), ("m", "up-b")], ""));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let r = gw.chat(HI);
        assert_eq!(r.status, 200);
        seen.insert(r.header("x-llmux-deployment").unwrap().to_owned());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both deployments served: {seen:?}");
    let models = gw.get("/v1/models").json();
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "one group");
}
