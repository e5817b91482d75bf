//! A request's spans as the shard records them: one server span for the request and one
//! client span per upstream attempt, with the OpenTelemetry GenAI attributes (semantic
//! conventions v1.41, `gen_ai.*`). They are plain data: the exporter thread turns them into the
//! SDK's span data, so a shard pays only for the attributes of the requests it samples.

use std::time::SystemTime;

use opentelemetry::trace::SpanKind;
use opentelemetry::{Array, KeyValue, StringValue, Value};

use super::response::ResponseMeta;
use crate::telemetry::trace_context::{new_span_id, TraceContext};
use crate::usage::Usage;

/// One ended span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub parent_is_remote: bool,
    pub kind: SpanKind,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// The span's status is an error, described by this.
    pub error: Option<String>,
}

/// What the client asked for, as the GenAI conventions name it.
#[derive(Debug, Clone, Default)]
pub struct RequestParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub choices: Option<i64>,
    pub seed: Option<i64>,
}

impl RequestParams {
    pub fn from_body(body: &serde_json::Value) -> Self {
        let int = |k: &str| body.get(k).and_then(serde_json::Value::as_i64);
        let float = |k: &str| body.get(k).and_then(serde_json::Value::as_f64);
        Self {
            max_tokens: int("max_completion_tokens").or_else(|| int("max_tokens")),
            temperature: float("temperature"),
            top_p: float("top_p"),
            choices: int("n").filter(|n| *n != 1),
            seed: int("seed"),
        }
    }

    fn push(&self, a: &mut Vec<KeyValue>) {
        if let Some(v) = self.max_tokens {
            a.push(KeyValue::new("gen_ai.request.max_tokens", v));
        }
        if let Some(v) = self.temperature {
            a.push(KeyValue::new("gen_ai.request.temperature", v));
        }
        if let Some(v) = self.top_p {
            a.push(KeyValue::new("gen_ai.request.top_p", v));
        }
        if let Some(v) = self.choices {
            a.push(KeyValue::new("gen_ai.request.choice.count", v));
        }
        if let Some(v) = self.seed {
            a.push(KeyValue::new("gen_ai.request.seed", v));
        }
    }
}

/// How an attempt ended, for its client span.
pub struct AttemptReport<'a> {
    pub deployment: &'a str,
    /// `gen_ai.provider.name` (the provider file's `genai_provider`, or its name).
    pub provider: &'a str,
    pub upstream_model: &'a str,
    /// The upstream's status (0: none came).
    pub status: u16,
    /// Why it failed, if it did (`error.type`).
    pub error_type: Option<&'a str>,
    /// The answer, when this attempt's went to the client.
    pub answer: Option<AnswerReport<'a>>,
}

/// What an answer carried.
pub struct AnswerReport<'a> {
    pub meta: &'a ResponseMeta,
    pub usage: &'a Usage,
    /// Seconds from the request's arrival to the answer's first chunk (streams).
    pub time_to_first_chunk: Option<f64>,
}

/// How the request ended, for its server span.
pub struct RequestReport<'a> {
    pub request_id: &'a str,
    pub status: u16,
    pub error_type: Option<&'a str>,
    pub answer: Option<AnswerReport<'a>>,
    pub cost_usd: Option<f64>,
    pub retries: u32,
    pub fallback_group: Option<&'a str>,
    /// Messages (`gen_ai.input.messages`, already redacted), when content is captured.
    pub input_messages: Option<String>,
    pub output_messages: Option<String>,
}

/// The spans of one sampled request, built as it goes.
pub struct RequestSpans {
    trace_id: [u8; 16],
    /// The client's span, when it sent a `traceparent`.
    remote_parent: Option<[u8; 8]>,
    pub server_span_id: [u8; 8],
    start: SystemTime,
    model_group: String,
    stream: bool,
    params: RequestParams,
    attempt: Option<OpenAttempt>,
    /// Ended spans (the attempts', then the request's).
    pub ended: Vec<SpanRecord>,
}

struct OpenAttempt {
    span_id: [u8; 8],
    start: SystemTime,
    address: String,
    port: u16,
}

impl RequestSpans {
    pub fn begin(
        trace: &TraceContext,
        model_group: &str,
        stream: bool,
        body: &serde_json::Value,
    ) -> Self {
        Self {
            trace_id: trace.trace_id,
            remote_parent: trace.parent_span_id,
            server_span_id: new_span_id(),
            start: SystemTime::now(),
            model_group: model_group.to_owned(),
            stream,
            params: RequestParams::from_body(body),
            attempt: None,
            ended: Vec::with_capacity(2),
        }
    }

    /// An upstream call starts in span `span_id` (the one its `traceparent` names).
    pub fn attempt_started(&mut self, span_id: [u8; 8], address: &str, port: u16) {
        self.attempt = Some(OpenAttempt {
            span_id,
            start: SystemTime::now(),
            address: address.to_owned(),
            port,
        });
    }

    /// The upstream call that started last has ended.
    pub fn attempt_ended(&mut self, r: &AttemptReport<'_>) {
        let Some(open) = self.attempt.take() else {
            return;
        };
        let mut a = Vec::with_capacity(24);
        a.push(KeyValue::new("gen_ai.operation.name", "chat"));
        a.push(KeyValue::new("gen_ai.provider.name", r.provider.to_owned()));
        // The name before v1.37, still what many back ends key on.
        a.push(KeyValue::new("gen_ai.system", r.provider.to_owned()));
        a.push(KeyValue::new(
            "gen_ai.request.model",
            r.upstream_model.to_owned(),
        ));
        a.push(KeyValue::new("gen_ai.request.stream", self.stream));
        self.params.push(&mut a);
        a.push(KeyValue::new("server.address", open.address));
        a.push(KeyValue::new("server.port", i64::from(open.port)));
        a.push(KeyValue::new("llmux.deployment", r.deployment.to_owned()));
        if r.status > 0 {
            a.push(KeyValue::new(
                "http.response.status_code",
                i64::from(r.status),
            ));
        }
        if let Some(e) = r.error_type {
            a.push(KeyValue::new("error.type", e.to_owned()));
        }
        if let Some(ans) = &r.answer {
            // The answer's first chunk is timed from the request's arrival; the span's own
            // time to first chunk starts with the attempt.
            let offset = open
                .start
                .duration_since(self.start)
                .map_or(0.0, |d| d.as_secs_f64());
            push_answer(&mut a, ans, offset);
        }
        self.ended.push(SpanRecord {
            trace_id: self.trace_id,
            span_id: open.span_id,
            parent: Some(self.server_span_id),
            parent_is_remote: false,
            kind: SpanKind::Client,
            name: ["chat ", r.upstream_model].concat(),
            start: open.start,
            end: SystemTime::now(),
            attributes: a,
            error: r.error_type.map(str::to_owned),
        });
    }

    /// The request has ended: its server span closes the set.
    pub fn finish(mut self, r: RequestReport<'_>) -> Vec<SpanRecord> {
        // The inference attributes (parameters, response, cache split, time to first chunk)
        // are the client spans'; the request's span says what was asked of the gateway and
        // what the whole request used and cost.
        let mut a = Vec::with_capacity(16);
        a.push(KeyValue::new("gen_ai.operation.name", "chat"));
        a.push(KeyValue::new(
            "gen_ai.request.model",
            self.model_group.clone(),
        ));
        a.push(KeyValue::new("gen_ai.request.stream", self.stream));
        a.push(KeyValue::new("http.request.method", "POST"));
        a.push(KeyValue::new("http.route", "/v1/chat/completions"));
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(r.status),
        ));
        a.push(KeyValue::new("llmux.request_id", r.request_id.to_owned()));
        if r.retries > 0 {
            a.push(KeyValue::new("llmux.retries", i64::from(r.retries)));
        }
        if let Some(g) = r.fallback_group {
            a.push(KeyValue::new("llmux.fallback_group", g.to_owned()));
        }
        if let Some(c) = r.cost_usd {
            a.push(KeyValue::new("llmux.usage.cost_usd", c));
        }
        if let Some(e) = r.error_type {
            a.push(KeyValue::new("error.type", e.to_owned()));
        }
        if let Some(ans) = &r.answer {
            push_usage(&mut a, ans.usage);
        }
        if let Some(m) = r.input_messages {
            a.push(KeyValue::new("gen_ai.input.messages", m));
        }
        if let Some(m) = r.output_messages {
            a.push(KeyValue::new("gen_ai.output.messages", m));
        }
        self.ended.push(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.server_span_id,
            parent: self.remote_parent,
            parent_is_remote: self.remote_parent.is_some(),
            kind: SpanKind::Server,
            name: ["chat ", self.model_group.as_str()].concat(),
            start: self.start,
            end: SystemTime::now(),
            attributes: a,
            error: r.error_type.map(str::to_owned),
        });
        self.ended
    }
}

fn push_answer(a: &mut Vec<KeyValue>, ans: &AnswerReport<'_>, started_after: f64) {
    let m = ans.meta;
    if let Some(id) = &m.id {
        a.push(KeyValue::new("gen_ai.response.id", id.clone()));
    }
    if let Some(model) = &m.model {
        a.push(KeyValue::new("gen_ai.response.model", model.clone()));
    }
    let reasons: Vec<StringValue> = m
        .reasons()
        .map(|r| StringValue::from(r.to_owned()))
        .collect();
    if !reasons.is_empty() {
        a.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(reasons)),
        ));
    }
    push_usage(a, ans.usage);
    if let Some(t) = ans.time_to_first_chunk {
        a.push(KeyValue::new(
            "gen_ai.response.time_to_first_chunk",
            (t - started_after).max(0.0),
        ));
    }
}

fn push_usage(a: &mut Vec<KeyValue>, u: &Usage) {
    if !u.is_empty() {
        a.push(KeyValue::new("gen_ai.usage.input_tokens", u.prompt as i64));
        a.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            u.completion as i64,
        ));
        if u.cached > 0 {
            a.push(KeyValue::new(
                "gen_ai.usage.cache_read.input_tokens",
                u.cached as i64,
            ));
        }
        if u.cache_write > 0 {
            a.push(KeyValue::new(
                "gen_ai.usage.cache_creation.input_tokens",
                u.cache_write as i64,
            ));
        }
        if u.estimated {
            a.push(KeyValue::new("llmux.usage.estimated", true));
        }
    }
}
