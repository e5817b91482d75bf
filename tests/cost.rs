//! Prices, cost and usage end to end: the cost headers, spend and token metrics, the access
//! log for a model without a price, usage asked for in every OpenAI stream (and hidden from
//! clients that did not ask), estimated usage for a cut stream, and a LiteLLM price file.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello there, how are you today?"}]
    })
    .to_string()
}

/// One deployment of `group` serving `upstream` on the mock, with a `model_info` block.
fn deployment(mock: &Mock, group: &str, upstream: &str, model_info: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params:\n      model: openai/{upstream}\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n{model_info}",
        mock.base()
    )
}

fn cost_header(r: &Response) -> Option<f64> {
    let ours = r.header("x-llmux-response-cost")?;
    assert_eq!(
        r.header("x-litellm-response-cost"),
        Some(ours),
        "both cost headers agree"
    );
    Some(ours.parse().expect("a number"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

fn usage_of(r: &Response) -> (f64, f64) {
    let u = &r.json()["usage"];
    (
        u["prompt_tokens"].as_f64().expect("prompt_tokens"),
        u["completion_tokens"].as_f64().expect("completion_tokens"),
    )
}

#[test]
fn priced_answers_carry_their_cost_and_add_to_spend() {
    let mock = Mock::start();
    let mut cfg = String::from("model_list:\n");
    // Priced by the config (model_info), and by the shipped table (gpt-4o: $2.50 / $10 per M).
    cfg += &deployment(
        &mock,
        "own",
        "my-model",
        "    model_info: { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002 }\n",
    );
    cfg += &deployment(&mock, "table", "gpt-4o", "");
    let gw = Gateway::start(&cfg);

    let r = gw.chat(&body("own", false));
    assert_eq!(r.status, 200, "{}", r.text());
    let (p, c) = usage_of(&r);
    let want_own = p * 1e-6 + c * 2e-6;
    let got = cost_header(&r).expect("a cost header");
    assert!(close(got, want_own), "{got} != {want_own}");

    let r = gw.chat(&body("table", false));
    let (p, c) = usage_of(&r);
    let want_table = p * 2.5e-6 + c * 1e-5;
    let got = cost_header(&r).expect("a cost header");
    assert!(close(got, want_table), "{got} != {want_table}");

    // Both requests' records, which may be on different shards, are waited for.
    let mut m = String::new();
    let spent =
        |m: &str, series: &str, want: f64| metric(m, series).is_some_and(|v| close(v, want));
    let own = r#"llmux_spend_usd_total{deployment="own/0",model_group="own"}"#;
    let table = r#"llmux_spend_usd_total{deployment="table/1",model_group="table"}"#;
    assert!(
        eventually(WAIT, || {
            m = gw.metrics();
            spent(&m, own, want_own) && spent(&m, table, want_table)
        }),
        "{m}"
    );
}

#[test]
fn a_model_without_a_price_has_no_cost_and_its_log_line_says_so() {
    let mock = Mock::start();
    let cfg = format!(
        "model_list:\n{}",
        deployment(&mock, "free", "unpriced-model", "")
    );
    let gw = Gateway::start(&cfg);
    let r = gw.chat(&body("free", false));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmux-response-cost"), None);
    assert_eq!(r.header("x-litellm-response-cost"), None);
    let line = gw.proc.wait_line("llmux::access", WAIT);
    assert!(
        line.contains(r#"cost="unknown""#) || line.contains(r#""cost":"unknown""#),
        "{line}"
    );
    assert!(!line.contains("cost_usd"), "{line}");
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"llmux_spend_usd_total{deployment="free/0",model_group="free"}"#
        )
        .unwrap_or(0.0),
        0.0,
        "no spend for an unknown price: {m}"
    );
}

#[test]
fn streams_ask_the_upstream_for_usage_and_hide_it_from_clients_that_did_not() {
    let mock = Mock::start();
    let cfg = format!(
        "model_list:\n{}",
        deployment(
            &mock,
            "s",
            "gpt-4o-mock-chunks-4",
            "    model_info: { base_model: gpt-4o }\n"
        )
    );
    let gw = Gateway::start(&cfg);
    let r = gw.chat(&body("s", true));
    assert_eq!(r.status, 200);
    let events = data_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        assert!(
            v["choices"].as_array().is_some_and(|c| !c.is_empty()),
            "a chunk without choices reached a client that did not ask for usage: {e}"
        );
    }
    // The usage the upstream sent is counted as reported, not estimated, and priced.
    let mut m = String::new();
    assert!(
        eventually(WAIT, || {
            m = gw.metrics();
            // The series of one record are written one after another: wait for the last.
            metric(
                &m,
                r#"llmux_tokens_total{estimated="false",model_group="s",type="completion"}"#,
            ) == Some(4.0)
                && metric(
                    &m,
                    r#"gen_ai_client_operation_duration_seconds_count{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="s"}"#,
                ) == Some(1.0)
        }),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"llmux_tokens_total{estimated="true",model_group="s",type="completion"}"#
        )
        .unwrap_or(0.0),
        0.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"llmux_spend_usd_total{deployment="s/0",model_group="s"}"#
        )
        .is_some_and(|v| v > 0.0),
        "{m}"
    );
    // Time per output token, and OpenTelemetry's GenAI metrics under their Prometheus names.
    assert_eq!(
        metric(
            &m,
            r#"llmux_time_per_output_token_seconds_count{model_group="s"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="s",gen_ai_token_type="output"}"#
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"gen_ai_client_operation_duration_seconds_count{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="s"}"#
        ),
        Some(1.0),
        "{m}"
    );
    // A client that asks sees the usage chunk, as before.
    let mut asked: serde_json::Value = serde_json::from_str(&body("s", true)).unwrap();
    asked["stream_options"] = serde_json::json!({"include_usage": true});
    let r = gw.chat(&asked.to_string());
    let usage_chunks = data_events(&r.body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter(|e| {
            serde_json::from_str::<serde_json::Value>(e).unwrap()["usage"]["completion_tokens"] == 4
        })
        .count();
    assert_eq!(usage_chunks, 1);
}

#[test]
fn a_cut_stream_gets_estimated_usage_never_zero() {
    let mock = Mock::start();
    let cfg = format!(
        "model_list:\n{}",
        deployment(
            &mock,
            "cut",
            "gpt-4o-mock-chunks-6-mock-cut-3",
            "    model_info: { base_model: gpt-4o }\n"
        )
    );
    let gw = Gateway::start(&cfg);
    let r = gw.chat(&body("cut", true));
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        !text.contains("[DONE]"),
        "a cut stream never looks complete: {text}"
    );
    // Prompt and completion estimated (the events relayed before the cut are counted), and
    // priced: waited for together, as one record's series are written one after another.
    let series = [
        r#"llmux_tokens_total{estimated="true",model_group="cut",type="prompt"}"#,
        r#"llmux_tokens_total{estimated="true",model_group="cut",type="completion"}"#,
        r#"llmux_spend_usd_total{deployment="cut/0",model_group="cut"}"#,
    ];
    let mut m = String::new();
    assert!(
        eventually(WAIT, || {
            m = gw.metrics();
            series
                .iter()
                .all(|s| metric(&m, s).is_some_and(|v| v > 0.0))
        }),
        "{m}"
    );
    let line = gw.proc.wait_line("usage_estimated", WAIT);
    assert!(line.contains("llmux::access"), "{line}");
}

#[test]
fn a_litellm_price_file_loads_and_overrides_the_shipped_table() {
    let mock = Mock::start();
    let dir = TempDir::new("prices");
    let prices = dir.0.join("model_prices_and_context_window.json");
    std::fs::write(
        &prices,
        r#"{
          "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of LiteLLM's providers"},
          "gpt-4o": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002,
                     "litellm_provider": "openai", "mode": "chat", "max_input_tokens": 128000},
          "my-org/house-model": {"input_cost_per_token": 0.0005, "output_cost_per_token": 0.0005,
                     "litellm_provider": "openai_compatible", "mode": "chat"}
        }"#,
    )
    .unwrap();
    let cfg = format!(
        "model_list:\n{}{}llmux:\n  pricing:\n    file: {}\n",
        deployment(&mock, "table", "gpt-4o", ""),
        deployment(
            &mock,
            "house",
            "house-model",
            "    model_info: { base_model: my-org/house-model }\n"
        ),
        prices.display()
    );
    let gw = Gateway::start(&cfg);
    let r = gw.chat(&body("table", false));
    let (p, c) = usage_of(&r);
    let got = cost_header(&r).expect("a cost header");
    assert!(
        close(got, p * 0.001 + c * 0.002),
        "the file's gpt-4o wins: {got}"
    );
    let r = gw.chat(&body("house", false));
    let (p, c) = usage_of(&r);
    let got = cost_header(&r).expect("a cost header");
    assert!(close(got, (p + c) * 0.0005), "{got}");
}

#[test]
fn a_broken_price_file_is_a_config_error_with_its_place() {
    let dir = TempDir::new("prices-bad");
    let prices = dir.0.join("prices.json");
    std::fs::write(
        &prices,
        "{\n  \"gpt-4o\": {\"input_cost_per_token\": 1e-6,,}\n}\n",
    )
    .unwrap();
    let cfg = dir.0.join("llmux.yaml");
    std::fs::write(
        &cfg,
        format!(
            "model_list: []\nllmux:\n  pricing:\n    file: {}\n",
            prices.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("llmux.pricing.file"), "{text}");
    assert!(text.contains(&format!("{}:2:", prices.display())), "{text}");
}
