//! Logs: personal data masked when `llmux.logging.redact_pii` is on (and only then), and the
//! log filter (per module) changed at run time by a config reload.

mod common;

use std::time::Duration;

use common::hostile::{self, Hostile};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

const PII_EMAIL: &str = "jane.doe@example.com";
const PII_CARD: &str = "4111 1111 1111 1111";

/// An upstream whose error echoes personal data from the prompt (as some do).
fn echoing_upstream() -> Hostile {
    Hostile::start(|_| {
        let body = format!(
            r#"{{"error":{{"message":"invalid request for {PII_EMAIL}, card {PII_CARD}","type":"invalid_request_error"}}}}"#
        );
        hostile::response(400, "application/json", body.as_bytes())
    })
}

fn config(upstream: &Hostile, logging: &str) -> String {
    format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_base: {}/v1\n      api_key: sk-test-key-123456\nllmux:\n  logging: {logging}\n",
        upstream.base()
    )
}

const HI: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn personal_data_is_masked_in_logs_when_enabled() {
    let upstream = echoing_upstream();
    let gw = Gateway::start(&config(&upstream, "{ redact_pii: true }"));
    let r = gw.chat(HI);
    assert_eq!(r.status, 400);
    let line = gw.proc.wait_line("llmux::access", WAIT);
    assert!(
        line.contains("[EMAIL]") && line.contains("[CARD]"),
        "{line}"
    );
    assert!(
        !line.contains(PII_EMAIL) && !line.contains(PII_CARD),
        "{line}"
    );
    // The client's own answer is not the log: it carries the upstream's words.
    assert!(r.text().contains(PII_EMAIL), "{}", r.text());
}

#[test]
fn personal_data_is_logged_as_is_when_not_enabled() {
    let upstream = echoing_upstream();
    let gw = Gateway::start(&config(&upstream, "{ level: info }"));
    gw.chat(HI);
    let line = gw.proc.wait_line("llmux::access", WAIT);
    assert!(line.contains(PII_EMAIL), "{line}");
}

#[test]
fn the_log_filter_changes_on_reload_per_module() {
    let mock = Mock::start();
    let base = config_for(&mock, &[("m", "up")], "");
    // Access lines off (per module), everything else at info.
    // The tests' LLMUX_LOG would override the config's level: cleared here.
    let gw = Gateway::start_with(
        &format!("{base}llmux:\n  logging: {{ level: \"info,llmux::access=warn\" }}\n"),
        GatewayOpts {
            env: vec![("LLMUX_LOG", "")],
            ..Default::default()
        },
    );
    assert_eq!(gw.chat(HI).status, 200);
    // The next request's access line would come before this marker if it were logged.
    std::fs::write(
        &gw.config,
        format!("{base}llmux:\n  logging: {{ level: info }}\n"),
    )
    .unwrap();
    gw.proc.wait_line("config reloaded", WAIT);
    assert_eq!(gw.chat(HI).status, 200);
    gw.proc.wait_line("llmux::access", WAIT);
    let out = gw.proc.output();
    assert_eq!(
        out.matches("llmux::access").count(),
        1,
        "only the request after the reload is logged:\n{out}"
    );
}

/// A header of a request head, case-insensitively.
fn head_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

#[test]
fn the_clients_trace_goes_on_to_the_upstream_and_into_the_log() {
    let upstream = Hostile::start(|_| {
        hostile::response(
            200,
            "application/json",
            br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        )
    });
    let gw = Gateway::start(&config(&upstream, "{ level: info }"));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut s = connect(&gw.addr);
    write_request(
        &mut s,
        "POST",
        "/v1/chat/completions",
        &[
            ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        HI.as_bytes(),
    );
    let got = upstream.next_request();
    let tp = head_value(&got.head, "traceparent").expect("traceparent forwarded");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"), "{tp}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the attempt has a span of its own"
    );
    assert_eq!(
        head_value(&got.head, "tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );
    let line = gw.proc.wait_line("llmux::access", WAIT);
    assert!(line.contains(&format!("trace_id={trace}")), "{line}");

    // Without one, a new trace: forwarded, unsampled, and logged.
    assert_eq!(gw.chat(HI).status, 200);
    let got = upstream.next_request();
    let tp = head_value(&got.head, "traceparent").expect("traceparent forwarded");
    let new_trace = tp.split('-').nth(1).expect("trace id").to_owned();
    assert!(
        tp.starts_with("00-") && tp.ends_with("-00") && new_trace != trace,
        "{tp}"
    );
    let line = gw.proc.wait_line("llmux::access", WAIT);
    assert!(line.contains(&format!("trace_id={new_trace}")), "{line}");
}
