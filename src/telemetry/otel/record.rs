//! A request's spans as the shard records them: one server span for the request and one
//! client span per upstream attempt, with the OpenTelemetry GenAI attributes (semantic
//! conventions v1.41, `gen_ai.*`). Each is written as OTLP protobuf as it ends ([`proto`]),
//! so a shard pays only for the requests it samples, and the exporter only concatenates.

use std::sync::LazyLock;
use std::time::Instant;

use super::proto::{key, AttrValue, Attributes, SpanIds, SpanKind, SpanWriter};
use super::response::ResponseMeta;
use super::shard::ShardSpans;
use crate::telemetry::trace_context::{new_span_id, TraceContext};
use crate::usage::Usage;
use crate::util::clock::unix_nanos_at;

/// What the client asked for, as the GenAI conventions name it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub choices: Option<i64>,
    pub seed: Option<i64>,
}

impl RequestParams {
    /// Read in one pass over the body's members (a lookup per parameter compared keys about
    /// twenty times).
    pub fn from_body(body: &serde_json::Value) -> Self {
        let mut p = Self::default();
        let Some(members) = body.as_object() else {
            return p;
        };
        let mut max_completion_tokens = None;
        for (k, v) in members {
            match k.as_str() {
                "max_completion_tokens" => max_completion_tokens = v.as_i64(),
                "max_tokens" => p.max_tokens = v.as_i64(),
                "temperature" => p.temperature = v.as_f64(),
                "top_p" => p.top_p = v.as_f64(),
                "n" => p.choices = v.as_i64().filter(|n| *n != 1),
                "seed" => p.seed = v.as_i64(),
                _ => {}
            }
        }
        p.max_tokens = max_completion_tokens.or(p.max_tokens);
        p
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

/// The client span's attributes that depend only on the deployment, written once per
/// deployment (`Deployment::trace_attributes`) and copied into each of its spans.
pub fn deployment_attributes(deployment: &str, provider: &str, upstream_model: &str) -> Attributes {
    Attributes::encode(&[
        (key!("gen_ai.operation.name"), AttrValue::Str("chat")),
        (key!("gen_ai.provider.name"), AttrValue::Str(provider)),
        // The name before v1.37, still what many back ends key on.
        (key!("gen_ai.system"), AttrValue::Str(provider)),
        (key!("gen_ai.request.model"), AttrValue::Str(upstream_model)),
        (key!("llmux.deployment"), AttrValue::Str(deployment)),
    ])
}

/// The server span's attributes that never change.
static SERVER_ATTRIBUTES: LazyLock<Attributes> = LazyLock::new(|| {
    Attributes::encode(&[
        (key!("gen_ai.operation.name"), AttrValue::Str("chat")),
        (key!("http.request.method"), AttrValue::Str("POST")),
        (key!("http.route"), AttrValue::Str("/v1/chat/completions")),
    ])
});

/// How an attempt ended, for its client span.
pub struct AttemptReport<'a> {
    /// The deployment's own attributes ([`deployment_attributes`]).
    pub deployment: &'a Attributes,
    pub upstream_model: &'a str,
    /// The upstream's status (0: none came).
    pub status: u16,
    /// Why it failed, if it did (`error.type`).
    pub error_type: Option<&'a str>,
    /// The answer, when this attempt's went to the client.
    pub answer: Option<AnswerReport<'a>>,
    /// When the attempt ended.
    pub ended: Instant,
}

/// What an answer carried.
pub struct AnswerReport<'a> {
    pub meta: &'a ResponseMeta,
    pub usage: &'a Usage,
    /// Seconds from the request's arrival to the answer's first chunk (streams).
    pub time_to_first_chunk: Option<f64>,
}

/// How the request ended, for its server span. The answer's usage is on the answering
/// attempt's client span only: back ends that add up the `gen_ai.usage.*` of a trace's spans
/// would count it twice.
pub struct RequestReport<'a> {
    pub model_group: &'a str,
    pub request_id: &'a str,
    pub status: u16,
    pub error_type: Option<&'a str>,
    pub cost_usd: Option<f64>,
    pub retries: u32,
    pub fallback_group: Option<&'a str>,
    /// Messages (`gen_ai.input.messages`, already redacted), when content is captured.
    pub input_messages: Option<String>,
    pub output_messages: Option<String>,
    /// When the request ended.
    pub ended: Instant,
}

/// The spans of one sampled request, built as it goes.
pub struct RequestSpans {
    trace_id: [u8; 16],
    /// The client's span, when it sent a `traceparent`.
    remote_parent: Option<[u8; 8]>,
    pub server_span_id: [u8; 8],
    /// When the request arrived: the instant the request path read (span times are converted
    /// from instants it reads anyway, see `util::clock::unix_nanos_at`).
    start: Instant,
    stream: bool,
    params: RequestParams,
    attempt: Option<OpenAttempt>,
}

struct OpenAttempt {
    span_id: [u8; 8],
    start: Instant,
    address: String,
    port: u16,
}

impl RequestSpans {
    pub fn begin(
        trace: &TraceContext,
        stream: bool,
        body: &serde_json::Value,
        start: Instant,
    ) -> Self {
        Self {
            trace_id: trace.trace_id,
            remote_parent: trace.parent_span_id,
            server_span_id: new_span_id(),
            start,
            stream,
            params: RequestParams::from_body(body),
            attempt: None,
        }
    }

    /// An upstream call started at `start` in span `span_id` (the one its `traceparent`
    /// names).
    pub fn attempt_started(&mut self, span_id: [u8; 8], address: &str, port: u16, start: Instant) {
        self.attempt = Some(OpenAttempt {
            span_id,
            start,
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
        shard.write(|spans| {
            let mut a = SpanWriter::begin(spans, &ids, SpanKind::Client, "chat", r.upstream_model);
            a.attributes(r.deployment)
                .bool(key!("gen_ai.request.stream"), self.stream);
            self.params.write(&mut a);
            a.str(key!("server.address"), &open.address)
                .int(key!("server.port"), i64::from(open.port));
            if r.status > 0 {
                a.int(key!("http.response.status_code"), i64::from(r.status));
            }
            if let Some(e) = r.error_type {
                a.str(key!("error.type"), e);
            }
            if let Some(ans) = &r.answer {
                // The answer's first chunk is timed from the request's arrival; the span's
                // own time to first chunk starts with the attempt.
                let offset = open
                    .start
                    .saturating_duration_since(self.start)
                    .as_secs_f64();
                write_answer(&mut a, ans, offset);
            }
            a.end(
                unix_nanos_at(open.start),
                unix_nanos_at(r.ended),
                r.error_type,
            );
        });
    }

    /// The request has ended: its server span closes the set.
    pub fn finish(self, shard: &ShardSpans, r: RequestReport<'_>) {
        // The inference attributes (parameters, response, usage, time to first chunk) are the
        // client spans'; the request's span says what was asked of the gateway and what the
        // whole request cost.
        let ids = SpanIds {
            trace_id: self.trace_id,
            span_id: self.server_span_id,
            parent: self.remote_parent,
            parent_is_remote: self.remote_parent.is_some(),
        };
        shard.write(|spans| {
            let mut a = SpanWriter::begin(spans, &ids, SpanKind::Server, "chat", r.model_group);
            a.attributes(&SERVER_ATTRIBUTES)
                .str(key!("gen_ai.request.model"), r.model_group)
                .bool(key!("gen_ai.request.stream"), self.stream)
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
            if let Some(m) = &r.input_messages {
                a.str(key!("gen_ai.input.messages"), m);
            }
            if let Some(m) = &r.output_messages {
                a.str(key!("gen_ai.output.messages"), m);
            }
            a.end(
                unix_nanos_at(self.start),
                unix_nanos_at(r.ended),
                r.error_type,
            );
        });
    }
}

fn write_answer(a: &mut SpanWriter<'_>, ans: &AnswerReport<'_>, started_after: f64) {
    let m = ans.meta;
    if let Some(id) = m.id() {
        a.str(key!("gen_ai.response.id"), id);
    }
    if let Some(model) = m.model() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parameters_are_read_in_one_pass() {
        let p = RequestParams::from_body(&serde_json::json!({
            "model": "m", "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5,
            "top_p": 1, "n": 3, "seed": -4, "messages": []
        }));
        assert_eq!(
            p,
            RequestParams {
                // The newer name wins whichever order the keys come in.
                max_tokens: Some(20),
                temperature: Some(0.5),
                top_p: Some(1.0),
                choices: Some(3),
                seed: Some(-4),
            }
        );
        let p = RequestParams::from_body(
            &serde_json::json!({"max_tokens": 7, "n": 1, "temperature": "hot"}),
        );
        assert_eq!(
            p,
            RequestParams {
                max_tokens: Some(7),
                ..RequestParams::default()
            }
        );
        assert_eq!(
            RequestParams::from_body(&serde_json::json!([1])),
            RequestParams::default()
        );
    }
}
