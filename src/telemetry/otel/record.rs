//! A request's spans as the shard records them: one server span for the request and one
//! client span per upstream attempt, with the OpenTelemetry GenAI attributes (semantic
//! conventions v1.41, `gen_ai.*`). Each is written as OTLP protobuf as it ends ([`proto`]),
//! so a shard pays only for the requests it samples, and the exporter only concatenates.

use std::time::SystemTime;

use super::proto::{key, AttrValue, SpanIds, SpanKind, SpanWriter};
use super::response::ResponseMeta;
use super::shard::ShardSpans;
use crate::telemetry::trace_context::{new_span_id, TraceContext};
use crate::usage::Usage;

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

    fn write(&self, a: &mut SpanWriter<'_>) {
        if let Some(v) = self.max_tokens {
            a.int(key!("gen_ai.request.max_tokens"), v);
        }
        if let Some(v) = self.temperature {
            a.float(key!("gen_ai.request.temperature"), v);
        }
        if let Some(v) = self.top_p {
            a.float(key!("gen_ai.request.top_p"), v);
        }
        if let Some(v) = self.choices {
            a.int(key!("gen_ai.request.choice.count"), v);
        }
        if let Some(v) = self.seed {
            a.int(key!("gen_ai.request.seed"), v);
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

    /// The upstream call that started last has ended: its span goes to the shard's buffer.
    pub fn attempt_ended(&mut self, shard: &ShardSpans, r: &AttemptReport<'_>) {
        let Some(open) = self.attempt.take() else {
            return;
        };
        let ids = SpanIds {
            trace_id: self.trace_id,
            span_id: open.span_id,
            parent: Some(self.server_span_id),
            parent_is_remote: false,
        };
        let mut scratch = shard.scratch();
        let mut a = SpanWriter::begin(
            &mut scratch,
            &ids,
            SpanKind::Client,
            "chat",
            r.upstream_model,
        );
        a.str(key!("gen_ai.operation.name"), "chat")
            .str(key!("gen_ai.provider.name"), r.provider)
            // The name before v1.37, still what many back ends key on.
            .str(key!("gen_ai.system"), r.provider)
            .str(key!("gen_ai.request.model"), r.upstream_model)
            .bool(key!("gen_ai.request.stream"), self.stream);
        self.params.write(&mut a);
        a.str(key!("server.address"), &open.address)
            .int(key!("server.port"), i64::from(open.port))
            .str(key!("llmux.deployment"), r.deployment);
        if r.status > 0 {
            a.int(key!("http.response.status_code"), i64::from(r.status));
        }
        if let Some(e) = r.error_type {
            a.str(key!("error.type"), e);
        }
        if let Some(ans) = &r.answer {
            // The answer's first chunk is timed from the request's arrival; the span's own
            // time to first chunk starts with the attempt.
            let offset = open
                .start
                .duration_since(self.start)
                .map_or(0.0, |d| d.as_secs_f64());
            write_answer(&mut a, ans, offset);
        }
        a.end(open.start, SystemTime::now(), r.error_type);
        shard.push(&scratch);
    }

    /// The request has ended: its server span closes the set.
    pub fn finish(self, shard: &ShardSpans, r: RequestReport<'_>) {
        // The inference attributes (parameters, response, cache split, time to first chunk)
        // are the client spans'; the request's span says what was asked of the gateway and
        // what the whole request used and cost.
        let ids = SpanIds {
            trace_id: self.trace_id,
            span_id: self.server_span_id,
            parent: self.remote_parent,
            parent_is_remote: self.remote_parent.is_some(),
        };
        let mut scratch = shard.scratch();
        let mut a = SpanWriter::begin(
            &mut scratch,
            &ids,
            SpanKind::Server,
            "chat",
            &self.model_group,
        );
        a.str(key!("gen_ai.operation.name"), "chat")
            .str(key!("gen_ai.request.model"), &self.model_group)
            .bool(key!("gen_ai.request.stream"), self.stream)
            .str(key!("http.request.method"), "POST")
            .str(key!("http.route"), "/v1/chat/completions")
            .int(key!("http.response.status_code"), i64::from(r.status))
            .str(key!("llmux.request_id"), r.request_id);
        if r.retries > 0 {
            a.int(key!("llmux.retries"), i64::from(r.retries));
        }
        if let Some(g) = r.fallback_group {
            a.str(key!("llmux.fallback_group"), g);
        }
        if let Some(c) = r.cost_usd {
            a.float(key!("llmux.usage.cost_usd"), c);
        }
        if let Some(e) = r.error_type {
            a.str(key!("error.type"), e);
        }
        if let Some(ans) = &r.answer {
            write_usage(&mut a, ans.usage);
        }
        if let Some(m) = &r.input_messages {
            a.str(key!("gen_ai.input.messages"), m);
        }
        if let Some(m) = &r.output_messages {
            a.str(key!("gen_ai.output.messages"), m);
        }
        a.end(self.start, SystemTime::now(), r.error_type);
        shard.push(&scratch);
    }
}

fn write_answer(a: &mut SpanWriter<'_>, ans: &AnswerReport<'_>, started_after: f64) {
    let m = ans.meta;
    if let Some(id) = &m.id {
        a.str(key!("gen_ai.response.id"), id);
    }
    if let Some(model) = &m.model {
        a.str(key!("gen_ai.response.model"), model);
    }
    // One per choice: rarely more than a few.
    let mut reasons = [""; 8];
    let mut n = 0;
    for (slot, r) in reasons.iter_mut().zip(m.reasons()) {
        *slot = r;
        n += 1;
    }
    if n > 0 {
        a.attr(
            key!("gen_ai.response.finish_reasons"),
            AttrValue::Strs(&reasons[..n]),
        );
    }
    write_usage(a, ans.usage);
    if let Some(t) = ans.time_to_first_chunk {
        a.float(
            key!("gen_ai.response.time_to_first_chunk"),
            (t - started_after).max(0.0),
        );
    }
}

fn write_usage(a: &mut SpanWriter<'_>, u: &Usage) {
    if !u.is_empty() {
        a.int(key!("gen_ai.usage.input_tokens"), u.prompt as i64)
            .int(key!("gen_ai.usage.output_tokens"), u.completion as i64);
        if u.cached > 0 {
            a.int(
                key!("gen_ai.usage.cache_read.input_tokens"),
                u.cached as i64,
            );
        }
        if u.cache_write > 0 {
            a.int(
                key!("gen_ai.usage.cache_creation.input_tokens"),
                u.cache_write as i64,
            );
        }
        if u.estimated {
            a.bool(key!("llmux.usage.estimated"), true);
        }
    }
}
