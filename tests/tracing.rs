//! OpenTelemetry traces: the spans of a request reach an OTLP/HTTP collector (an in-process
//! receiver here) with the GenAI attributes, the client's trace is continued and forwarded to
//! the upstream, sampling is parent-based, content is recorded only when asked for and then
//! redacted, and a dead or stuck collector costs the requests nothing.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use common::hostile::{self, Hostile};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const WAIT: Duration = Duration::from_secs(30);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const API_KEY: &str = "sk-test-key-123456";

/// An OTLP/HTTP collector: every export request it receives, decoded.
fn collector() -> Hostile {
    Hostile::start(|_| hostile::response(200, "application/x-protobuf", b""))
}

/// Spans received until `done` says the set is complete.
fn spans_until(c: &Hostile, mut done: impl FnMut(&[Span]) -> bool) -> Vec<Span> {
    let mut spans = Vec::new();
    while !done(&spans) {
        let req = c.next_request();
        assert!(req.path().ends_with("/v1/traces"), "{}", req.head);
        assert!(
            req.head
                .to_ascii_lowercase()
                .contains("application/x-protobuf"),
            "{}",
            req.head
        );
        let export = ExportTraceServiceRequest::decode(&req.body[..]).expect("OTLP protobuf");
        for rs in export.resource_spans {
            let resource = rs.resource.expect("resource");
            assert!(
                resource
                    .attributes
                    .iter()
                    .any(|kv| kv.key == "service.name" && text(kv.value.as_ref()) == "llmux-test"),
                "{:?}",
                resource.attributes
            );
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    spans
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| text(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

fn attrs(s: &Span) -> HashMap<String, String> {
    s.attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OpenAI-shaped upstream answering one completion.
fn upstream() -> Hostile {
    Hostile::start(|_| {
        hostile::response(
            200,
            "application/json",
            br#"{"id":"chatcmpl-42","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        )
    })
}

fn config(upstream: &str, tracing: &str) -> String {
    format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {upstream}/v1\n      api_key: {API_KEY}\nllmux:\n  tracing: {tracing}\n"
    )
}

fn chat_with(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &all,
        body.as_bytes(),
    )
}

#[test]
fn a_request_s_spans_reach_the_collector_with_the_genai_attributes() {
    let c = collector();
    let up = upstream();
    let gw = Gateway::start(&config(
        &up.base(),
        &format!(
            "{{ enabled: true, endpoint: \"{}\", service_name: llmux-test, capture_content: true }}",
            c.base()
        ),
    ));
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let r = chat_with(
        &gw,
        &format!(
            r#"{{"model":"m","max_tokens":64,"temperature":0.5,"top_p":0.9,"messages":[{{"role":"user","content":"my key is {API_KEY}, mail jane.doe@example.com"}}]}}"#
        ),
        &[("traceparent", &traceparent)],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // The upstream got the trace, in the client span's id, sampled.
    let sent = up.next_request();
    let forwarded = sent
        .head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .expect("traceparent forwarded")
        .trim()
        .to_owned();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts[1], TRACE_ID);
    assert_eq!(parts[3], "01");

    let spans = spans_until(&c, |s| s.len() >= 2);
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");
    // The client's trace continued: server span under the client's, client span under ours.
    assert_eq!(hex(&server.trace_id), TRACE_ID);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        hex(&client.span_id),
        parts[2],
        "the forwarded span id is the client span's"
    );
    assert_eq!(client.name, "chat gpt-4o");
    assert_eq!(server.name, "chat m");

    let a = attrs(client);
    for (k, v) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.system", "openai"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.response.model", "gpt-4o-2024-08-06"),
        ("gen_ai.response.id", "chatcmpl-42"),
        ("gen_ai.response.finish_reasons", "stop"),
        ("gen_ai.request.max_tokens", "64"),
        ("gen_ai.request.temperature", "0.5"),
        ("gen_ai.request.top_p", "0.9"),
        ("gen_ai.request.stream", "false"),
        ("gen_ai.usage.input_tokens", "11"),
        ("gen_ai.usage.output_tokens", "3"),
        ("gen_ai.usage.cache_read.input_tokens", "4"),
        ("server.address", "127.0.0.1"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} in {a:?}");
    }
    let a = attrs(server);
    assert_eq!(a.get("gen_ai.request.model").map(String::as_str), Some("m"));
    // The usage is the answering attempt's (on its client span) only: back ends that add up
    // a trace's `gen_ai.usage.*` would count it twice.
    assert_eq!(a.get("gen_ai.usage.input_tokens"), None, "{a:?}");
    assert_eq!(
        a.get("http.request.method").map(String::as_str),
        Some("POST")
    );
    assert_eq!(
        a.get("http.route").map(String::as_str),
        Some("/v1/chat/completions")
    );
    assert!(a.contains_key("llmux.request_id"), "{a:?}");
    // Content was asked for: recorded, with the key and the e-mail address masked.
    let input = a
        .get("gen_ai.input.messages")
        .expect("input messages recorded");
    assert!(input.contains("my key is"), "{input}");
    assert!(
        !input.contains(API_KEY) && !input.contains("jane.doe@example.com"),
        "{input}"
    );
    let output = a
        .get("gen_ai.output.messages")
        .expect("output messages recorded");
    assert!(output.contains("Hello there"), "{output}");
}

#[test]
fn a_stream_s_client_span_has_time_to_first_chunk_and_usage() {
    let c = collector();
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "{}llmux:\n  tracing: {{ enabled: true, endpoint: \"{}\", service_name: llmux-test }}\n",
        config_for(&mock, &[("m", "gpt-4o-mini")], ""),
        c.base()
    ));
    let r = gw.chat(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200);
    let spans = spans_until(&c, |s| s.len() >= 2);
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");
    let a = attrs(client);
    assert_eq!(
        a.get("gen_ai.request.stream").map(String::as_str),
        Some("true")
    );
    assert!(
        a.contains_key("gen_ai.response.time_to_first_chunk"),
        "{a:?}"
    );
    assert!(a.contains_key("gen_ai.response.id"), "{a:?}");
    assert_eq!(
        a.get("gen_ai.response.finish_reasons").map(String::as_str),
        Some("stop"),
        "{a:?}"
    );
    assert!(a.contains_key("gen_ai.usage.output_tokens"), "{a:?}");
    // Content is opt-in.
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert!(!attrs(server).contains_key("gen_ai.input.messages"));
    // A new trace (no traceparent from the client): a root span.
    assert!(
        server.parent_span_id.is_empty(),
        "{:?}",
        server.parent_span_id
    );
}

#[test]
fn sampling_is_parent_based() {
    let c = collector();
    let up = upstream();
    let gw = Gateway::start(&config(
        &up.base(),
        &format!(
            "{{ enabled: true, endpoint: \"{}\", service_name: llmux-test, sampling_ratio: 0 }}",
            c.base()
        ),
    ));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    // Ratio 0 and no parent: not recorded, and the upstream is told so.
    assert_eq!(chat_with(&gw, body, &[]).status, 200);
    let unsampled = up.next_request();
    assert!(unsampled.head.contains("-00\r\n"), "{}", unsampled.head);
    // A client whose trace is sampled: recorded whatever the ratio.
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    assert_eq!(
        chat_with(&gw, body, &[("traceparent", &traceparent)]).status,
        200
    );
    let spans = spans_until(&c, |s| s.len() >= 2);
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == TRACE_ID),
        "only the sampled trace"
    );
    assert_eq!(spans.len(), 2);
    // Nothing else arrives: the count of export requests stays at what was read.
    let m = gw.metrics();
    assert!(
        eventually(WAIT, || metric(
            &gw.metrics(),
            "llmux_otel_spans_exported_total"
        ) == Some(2.0)),
        "{m}"
    );
}

#[test]
fn a_dead_collector_costs_the_requests_nothing() {
    // Nothing listens here.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "{}llmux:\n  tracing: {{ enabled: true, endpoint: \"http://127.0.0.1:{port}\", timeout: 1 }}\n",
        config_for(&mock, &[("m", "up")], "")
    ));
    for _ in 0..20 {
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.status, 200);
    }
    assert!(
        eventually(WAIT, || {
            let m = gw.metrics();
            metric(&m, "llmux_otel_export_failures_total").unwrap_or(0.0) >= 1.0
                && metric(&m, "llmux_otel_spans_dropped_total").unwrap_or(0.0) >= 1.0
        }),
        "{}",
        gw.metrics()
    );
    // The exporter thread runs below the shards' priority (nice 10), so a busy machine does not
    // preempt a shard for it.
    let task = std::path::PathBuf::from(format!("/proc/{}/task", gw.proc.pid()));
    let nice_of = |name: &str| {
        std::fs::read_dir(&task).ok()?.flatten().find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // Field 19 of stat, counted after the parenthesised command name.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().nth(16)?.parse::<i32>().ok()
        })
    };
    assert_eq!(nice_of("llmux-otel"), Some(10));
    assert_eq!(nice_of("llmux-shard-0"), Some(0));
}

#[test]
fn the_collector_gets_the_configured_headers_and_a_refusal_counts_as_a_failure() {
    let c = Hostile::start(|_| hostile::response(503, "text/plain", b"overloaded"));
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "{}llmux:\n  tracing: {{ enabled: true, endpoint: \"{}\", headers: {{ x-collector-token: tok-4711 }} }}\n",
        config_for(&mock, &[("m", "up")], ""),
        c.base()
    ));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200);
    let req = c.next_request();
    assert!(
        req.head
            .to_ascii_lowercase()
            .contains("x-collector-token: tok-4711"),
        "{}",
        req.head
    );
    assert!(
        eventually(WAIT, || {
            let m = gw.metrics();
            metric(&m, "llmux_otel_export_failures_total").unwrap_or(0.0) >= 1.0
                && metric(&m, "llmux_otel_spans_dropped_total").unwrap_or(0.0) >= 2.0
                && metric(&m, "llmux_otel_spans_exported_total").unwrap_or(0.0) == 0.0
        }),
        "{}",
        gw.metrics()
    );
    // The header's value is a secret: never in a log line.
    assert!(
        !gw.proc.output().contains("tok-4711"),
        "{}",
        gw.proc.output()
    );
}

#[test]
fn a_stuck_collector_fills_a_bounded_queue_and_drops() {
    // Accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = stuck.local_addr().expect("addr");
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "{}llmux:\n  tracing: {{ enabled: true, endpoint: \"http://{addr}\", timeout: 600, max_queue_spans: 64 }}\n",
        config_for(&mock, &[("m", "up")], "")
    ));
    // 2 spans a request: far more than the queue holds while the first export hangs.
    for _ in 0..200 {
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.status, 200);
    }
    assert!(
        eventually(WAIT, || metric(
            &gw.metrics(),
            "llmux_otel_spans_dropped_total"
        )
        .unwrap_or(0.0)
            >= 1.0),
        "{}",
        gw.metrics()
    );
    drop(stuck);
}

/// An OTLP/gRPC collector on HTTP/2 (h2): each export request's path and decoded message.
fn grpc_collector() -> (
    String,
    std::sync::mpsc::Receiver<(String, ExportTraceServiceRequest)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((sock, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    // The connection is driven by `accept`; each request is served beside it.
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let path = req.uri().path().to_owned();
                            let mut body = req.into_body();
                            let mut buf = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                buf.extend_from_slice(&chunk);
                            }
                            // A gRPC message: a compression flag, a 4-byte length, the protobuf.
                            if let Some(msg) = buf.get(5..) {
                                if let Ok(m) = ExportTraceServiceRequest::decode(msg) {
                                    let _ = tx.send((path, m));
                                }
                            }
                            let head = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .expect("response");
                            if let Ok(mut send) = respond.send_response(head, false) {
                                let _ = send
                                    .send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                let _ = send.send_trailers(trailers);
                            }
                        });
                    }
                });
            }
        });
    });
    (addr, rx)
}

#[test]
fn spans_go_over_grpc_too() {
    let (addr, received) = grpc_collector();
    let up = upstream();
    let gw = Gateway::start(&config(
        &up.base(),
        &format!("{{ enabled: true, protocol: grpc, endpoint: \"http://{addr}\", service_name: llmux-test }}"),
    ));
    let r = chat_with(
        &gw,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    );
    assert_eq!(r.status, 200);
    let mut spans = Vec::new();
    while spans.len() < 2 {
        let (path, export) = received.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no export request over gRPC: {}\n{}",
                gw.proc.output(),
                gw.metrics()
                    .lines()
                    .filter(|l| l.starts_with("llmux_otel"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(
            path,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        for rs in export.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");
    assert_eq!(
        attrs(client)
            .get("gen_ai.provider.name")
            .map(String::as_str),
        Some("openai")
    );
}
