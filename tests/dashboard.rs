//! The Grafana dashboard shipped with the chart (`helm/llmux/dashboards/llmux.json`) queries
//! only series the server really exports: traffic first produces every kind — a priced answer,
//! a stream, a retry, a fallback, a rate-limit rejection, a breaker opening, a cooldown — then
//! every metric name in the dashboard's queries must be in `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/llmux/dashboards/llmux.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file")).expect("JSON")
}

/// Every query expression of the dashboard (panels and template variables).
fn expressions(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// PromQL without label matchers (`{...}`) and grouping lists (`by (...)`, `without (...)`),
/// where label names (some starting with `gen_ai_`) appear.
fn without_labels(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            rest = after.split_once('}').map_or("", |(_, r)| r);
        } else if let Some(after) = ["by (", "without ("]
            .iter()
            .find_map(|k| rest.strip_prefix(k))
        {
            rest = after.split_once(')').map_or("", |(_, r)| r);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The metric names an expression reads (identifiers starting with `llmux_` or `gen_ai_`).
fn metric_names(expr: &str) -> Vec<String> {
    let expr = &without_labels(expr);
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (expr[i..].starts_with("llmux_") || expr[i..].starts_with("gen_ai_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            names.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_series_the_dashboard_queries_exists() {
    let mock = Mock::start();
    let dep = |group: &str, model: &str, extra: &str| {
        format!(
            "  - model_name: {group}\n    litellm_params:\n      model: openai/{model}\n      api_base: {}/v1\n      api_key: sk-test-key-123456\n{extra}",
            mock.base()
        )
    };
    let cfg = format!(
        "model_list:\n{}{}{}\
router_settings:\n  num_retries: 1\n  allowed_fails: 1\n  fallbacks: [{{\"flaky\": [\"ok\"]}}]\n\
llmux:\n  router:\n    retry: {{ backoff_base: 0.01, backoff_max: 0.02 }}\n    breaker: {{ enabled: true, consecutive_failures: 2 }}\n",
        dep("ok", "gpt-4o-mock-chunks-3", "    model_info: { base_model: gpt-4o }\n"),
        dep("flaky", "bad-mock-status-500", ""),
        dep("limited", "lim", "      rpm: 1\n"),
    );
    let gw = Gateway::start(&cfg);
    let chat = |model: &str, stream: bool| {
        gw.chat(
            &serde_json::json!({
                "model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]
            })
            .to_string(),
        )
    };
    assert_eq!(chat("ok", false).status, 200);
    assert_eq!(chat("ok", true).status, 200);
    // The failing deployment: an attempt and a retry fail, the breaker opens, it cools down,
    // and the request falls back to `ok`.
    let r = chat("flaky", false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-llmux-fallback-from"), Some("flaky"));
    // Lines logged during a request carry its request and trace ids.
    let events = ["circuit breaker opened", "deployment cooling down"];
    let mut out = String::new();
    assert!(
        eventually(WAIT, || {
            out = gw.proc.output();
            events.iter().all(|e| out.contains(e))
        }),
        "{out}"
    );
    for event in events {
        let line = out.lines().find(|l| l.contains(event)).unwrap_or_default();
        assert!(
            line.contains("request_id=") && line.contains("trace_id="),
            "{event}: {out}"
        );
    }
    // A second request in the same calendar minute is held back at `rpm: 1` (three tries: a
    // minute may turn between two of them).
    let statuses: Vec<u16> = (0..3).map(|_| chat("limited", false).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");

    let mut text = String::new();
    let positive = |text: &str, series: &str| metric(text, series).is_some_and(|v| v > 0.0);
    let produced = [
        r#"llmux_retries_total{model_group="flaky"}"#,
        r#"llmux_fallbacks_total{fallback_group="ok",model_group="flaky"}"#,
        r#"llmux_deployment_rejections_total{deployment="limited/2",limit="rate_limit",model_group="limited"}"#,
        r#"llmux_deployment_breaker_transitions_total{deployment="flaky/1",model_group="flaky",to="open"}"#,
        r#"llmux_deployment_cooldowns_total{deployment="flaky/1",model_group="flaky"}"#,
        r#"llmux_spend_usd_total{deployment="ok/0",model_group="ok"}"#,
        r#"llmux_time_per_output_token_seconds_count{model_group="ok"}"#,
    ];
    let seen = eventually(WAIT, || {
        text = gw.metrics();
        produced.iter().all(|s| positive(&text, s))
    });
    assert!(
        seen,
        "missing: {:?}\n{text}",
        produced
            .iter()
            .filter(|s| !positive(&text, s))
            .collect::<Vec<_>>()
    );

    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut queried = BTreeSet::new();
    for e in expressions(&dashboard()) {
        queried.extend(metric_names(&e));
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| exported.contains(base))
            .unwrap_or(name);
        assert!(
            exported.contains(family),
            "the dashboard queries `{name}`, which /metrics does not export"
        );
    }
}

#[test]
fn the_name_scanner_reads_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, gen_ai_token_type) (rate(llmux_request_duration_seconds_bucket{gen_ai_request_model=~"$g"}[5m]))) / gen_ai_client_token_usage_count"#
        ),
        vec![
            "llmux_request_duration_seconds_bucket",
            "gen_ai_client_token_usage_count"
        ]
    );
    assert!(metric_names("sum(x_llmux_total)").is_empty());
}
