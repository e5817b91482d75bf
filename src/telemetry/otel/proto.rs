//! Spans written straight into OTLP's protobuf (`opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`), on the shard, as they end.
//!
//! Why not the OpenTelemetry SDK's span data and `opentelemetry-otlp`'s encoder: measured
//! under load (BENCHMARKS.md, "Traces"), turning the SDK's data into the generated protobuf
//! structs and encoding those cost about 24k instructions per request (two spans), with a key
//! `String` allocated per attribute and every nested length computed at every level; the
//! attributes as `KeyValue`s cost the shard most of another 13k. Written here, a span is one
//! buffer: every length is known before its bytes are written (attribute values are small and
//! their sizes are computed, not back-patched), and an export request is the spans' bytes
//! concatenated under a resource and a scope written once.
//!
//! Only what the gateway's spans use is here: scalar and string-array attribute values, a
//! status, no events or links. The unit tests decode what is written with the official
//! generated types (`opentelemetry-proto`).

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes};

/// A protobuf wire type.
#[derive(Clone, Copy)]
enum Wire {
    Varint = 0,
    Fixed64 = 1,
    Len = 2,
    Fixed32 = 5,
}

const fn tag(field: u32, wire: Wire) -> u8 {
    // Every field written here has a number below 16: its tag is one byte.
    ((field << 3) | wire as u32) as u8
}

fn varint_len(v: u64) -> usize {
    // 1 + floor(log128(v)), without a loop.
    (((64 - (v | 1).leading_zeros()) * 9 + 64) / 64) as usize
}

/// A run of a span's bytes written straight into the spare capacity of the buffer it goes to,
/// reserved once for the whole run (`append!`): each tag, length and scalar is one store,
/// where a `Vec` push checks the capacity and updates the length every time (a span's
/// attributes are mostly such runs of 2 to 12 bytes between their strings).
struct Run<'a> {
    room: &'a mut [MaybeUninit<u8>],
    /// Bytes written: the first `n` of `room` are initialised.
    n: usize,
}

impl Run<'_> {
    #[inline(always)]
    fn byte(&mut self, x: u8) {
        self.room[self.n].write(x);
        self.n += 1;
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn len_header(&mut self, field: u32, payload: usize) {
        self.byte(tag(field, Wire::Len));
        self.varint(payload as u64);
    }

    #[inline(always)]
    fn bytes(&mut self, x: &[u8]) {
        self.room[self.n..self.n + x.len()].write_copy_of_slice(x);
        self.n += x.len();
    }

    /// An attribute's key field: its padded bytes as one constant-size copy (a run-time
    /// length would be a call to `memcpy`), then only its length counted. The run's room
    /// has [`KEY_FIELD_MAX`] bytes to spare for it.
    #[inline(always)]
    fn key(&mut self, key: &Key) {
        self.room[self.n..self.n + KEY_FIELD_MAX].write_copy_of_slice(&key.padded);
        self.n += usize::from(key.len);
    }
}

/// Appends what `$body` writes in a [`Run`] `$r` of at most `$max` bytes to `$out`. A macro,
/// not a function taking a closure: the closure of an attribute's write was not inlined (a
/// call per attribute, and its value's kind no longer known where it was written).
macro_rules! append {
    ($out:expr, $max:expr, |$r:ident| $body:expr) => {{
        let out: &mut Vec<u8> = $out;
        let max: usize = $max;
        out.reserve(max);
        let len = out.len();
        let mut run = Run {
            room: &mut out.spare_capacity_mut()[..max],
            n: 0,
        };
        let $r = &mut run;
        $body;
        let n = run.n;
        // SAFETY: a `Run` counts only bytes it has written (`n` never passes a byte it did
        // not store), so the first `n` bytes of the spare capacity are initialised; `n <= max`
        // and `max` bytes were reserved.
        unsafe { out.set_len(len + n) };
    }};
}

/// The most bytes a varint takes.
const VARINT_MAX: usize = 10;

/// The longest `KeyValue.key` field (tag, length, text) a [`Key`] holds: keys up to 46 bytes.
const KEY_FIELD_MAX: usize = 48;

/// An attribute's key as its `KeyValue.key` field (tag, length, text), laid out at compile
/// time by [`key!`] and zero-padded to a constant size: written with the bytes around it as
/// one constant-size copy (a key of run-time length would cost a `memcpy` call).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    padded: [u8; KEY_FIELD_MAX],
    len: u8,
}

impl Key {
    /// The field's bytes.
    pub fn field(&self) -> &[u8] {
        &self.padded[..usize::from(self.len)]
    }
}

/// The [`Key`] of `key` (at most 46 bytes: checked when compiling).
pub const fn key_field(key: &str) -> Key {
    let k = key.as_bytes();
    assert!(k.len() + 2 <= KEY_FIELD_MAX);
    let mut padded = [0u8; KEY_FIELD_MAX];
    padded[0] = tag(1, Wire::Len);
    padded[1] = k.len() as u8;
    let mut i = 0;
    while i < k.len() {
        padded[i + 2] = k[i];
        i += 1;
    }
    Key {
        padded,
        len: (k.len() + 2) as u8,
    }
}

/// A [`Key`] for an attribute name known when compiling.
macro_rules! key {
    ($k:literal) => {{
        const KEY: $crate::telemetry::otel::proto::Key =
            $crate::telemetry::otel::proto::key_field($k);
        KEY
    }};
}
pub(crate) use key;

/// A length-delimited field's size on the wire: tag, length, payload.
fn len_field(payload: usize) -> usize {
    1 + varint_len(payload as u64) + payload
}

fn put_len_header(out: &mut Vec<u8>, field: u32, payload: usize) {
    append!(out, 1 + VARINT_MAX, |r| r.len_header(field, payload));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    append!(out, 1 + VARINT_MAX + b.len(), |r| {
        r.len_header(field, b.len());
        r.bytes(b);
    });
}

/// `Span.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// An attribute's value (`AnyValue`), as the gateway's spans use them.
#[derive(Debug, Clone, Copy)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An array of strings (`ArrayValue` of `string_value`s).
    Strs(&'a [&'a str]),
}

impl AttrValue<'_> {
    /// The `AnyValue` message's size.
    #[inline(always)]
    fn size(&self) -> usize {
        match *self {
            AttrValue::Str(s) => len_field(s.len()),
            AttrValue::Int(i) => 1 + varint_len(i as u64),
            AttrValue::Float(_) => 1 + 8,
            AttrValue::Bool(_) => 2,
            AttrValue::Strs(v) => len_field(array_size(v)),
        }
    }

    /// Writes the `AnyValue`'s fields (`size` bytes).
    #[inline(always)]
    fn put(&self, r: &mut Run<'_>) {
        match *self {
            AttrValue::Str(s) => {
                r.len_header(1, s.len());
                r.bytes(s.as_bytes());
            }
            AttrValue::Bool(b) => {
                r.byte(tag(2, Wire::Varint));
                r.byte(u8::from(b));
            }
            AttrValue::Int(i) => {
                r.byte(tag(3, Wire::Varint));
                // int64: two's complement, ten bytes for a negative number.
                r.varint(i as u64);
            }
            AttrValue::Float(f) => {
                r.byte(tag(4, Wire::Fixed64));
                r.bytes(&f.to_le_bytes());
            }
            AttrValue::Strs(v) => {
                r.len_header(5, array_size(v));
                for s in v {
                    // ArrayValue.values: AnyValue { string_value }.
                    r.len_header(1, len_field(s.len()));
                    r.len_header(1, s.len());
                    r.bytes(s.as_bytes());
                }
            }
        }
    }
}

/// `ArrayValue { values: [AnyValue { string_value }] }`'s size.
fn array_size(v: &[&str]) -> usize {
    v.iter().map(|s| len_field(len_field(s.len()))).sum()
}

/// Writes one attribute (`KeyValue`) of a span (`Span.attributes`, field 9) in one run: its
/// header, key, value header and value.
#[inline(always)]
fn put_attribute(out: &mut Vec<u8>, key: &Key, value: AttrValue<'_>) {
    let any = value.size();
    let kv = usize::from(key.len) + len_field(any);
    // The key's constant-size copy may write past the attribute's end.
    append!(out, len_field(kv) + KEY_FIELD_MAX, |r| {
        r.len_header(9, kv);
        r.key(key);
        r.len_header(2, any);
        value.put(r);
    });
}

/// Writes one `KeyValue` whose key field (`key`) was laid out at run time, as field `field`
/// of the enclosing message (`Resource.attributes` is 1).
fn put_key_value(out: &mut Vec<u8>, field: u32, key: &[u8], value: AttrValue<'_>) {
    let any = value.size();
    let kv = key.len() + len_field(any);
    append!(out, len_field(kv), |r| {
        r.len_header(field, kv);
        r.bytes(key);
        r.len_header(2, any);
        value.put(r);
    });
}

/// The `KeyValue.key` field of a key known only at run time.
fn dynamic_key_field(key: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(key.len() + 11);
    put_bytes(&mut f, 1, key.as_bytes());
    f
}

/// Attributes written once and copied into every span that carries them (those that depend
/// only on a deployment, or on nothing): one copy instead of an encoding per attribute.
#[derive(Debug, Clone, Default)]
pub struct Attributes(Box<[u8]>);

impl Attributes {
    pub fn encode(attributes: &[(Key, AttrValue<'_>)]) -> Self {
        let mut out = Vec::new();
        for (key, value) in attributes {
            put_attribute(&mut out, key, *value);
        }
        Self(out.into_boxed_slice())
    }
}

/// The identity of a span being written.
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub parent_is_remote: bool,
}

/// One `Span` message being written straight into a batch ([`EncodedSpans`]), framed as a
/// `ScopeSpans.spans` entry: its identity first, then its attributes, then
/// [`SpanWriter::end`], which writes the frame's length. (Written in a buffer of its own and
/// copied into the batch, a span cost a copy of its bytes and a second length header.)
pub struct SpanWriter<'b> {
    spans: &'b mut EncodedSpans,
    /// Where the span's own bytes begin, after its frame's tag and length.
    start: usize,
}

/// `Span.flags`: the W3C trace flags (always sampled: only sampled spans are written) and
/// whether the parent is known to be remote (the `SPAN_FLAGS_CONTEXT_*` bits).
fn span_flags(parent_is_remote: bool) -> u32 {
    const SAMPLED: u32 = 0x01;
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    SAMPLED | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

/// Room left for a span's frame length before its bytes: two bytes, a length of 128 to
/// 16,383 (every span the gateway writes without message content). Others are moved to fit.
const FRAME_LEN_ROOM: usize = 2;

impl<'b> SpanWriter<'b> {
    /// Starts a span named `{operation} {target}` (as the GenAI conventions name spans) at the
    /// end of `spans`.
    pub fn begin(
        spans: &'b mut EncodedSpans,
        ids: &SpanIds,
        kind: SpanKind,
        operation: &str,
        target: &str,
    ) -> Self {
        let name = operation.len() + 1 + target.len();
        let out = &mut spans.bytes;
        let start = out.len() + 1 + FRAME_LEN_ROOM;
        append!(out, 1 + FRAME_LEN_ROOM + 64 + VARINT_MAX + name, |r| {
            // `ScopeSpans.spans`; the length is written by `end`.
            r.byte(tag(2, Wire::Len));
            r.bytes(&[0; FRAME_LEN_ROOM]);
            r.len_header(1, 16);
            r.bytes(&ids.trace_id);
            r.len_header(2, 8);
            r.bytes(&ids.span_id);
            if let Some(p) = &ids.parent {
                r.len_header(4, 8);
                r.bytes(p);
            }
            r.len_header(5, name);
            r.bytes(operation.as_bytes());
            r.byte(b' ');
            r.bytes(target.as_bytes());
            r.byte(tag(6, Wire::Varint));
            r.byte(kind as u8);
            // Field 16 needs a two-byte tag.
            r.varint((16 << 3) | Wire::Fixed32 as u64);
            r.bytes(&span_flags(ids.parent_is_remote).to_le_bytes());
        });
        Self { spans, start }
    }

    /// Adds attributes written before.
    pub fn attributes(&mut self, attributes: &Attributes) -> &mut Self {
        self.spans.bytes.extend_from_slice(&attributes.0);
        self
    }

    #[inline(always)]
    pub fn attr(&mut self, key: Key, value: AttrValue<'_>) -> &mut Self {
        put_attribute(&mut self.spans.bytes, &key, value);
        self
    }

    #[inline(always)]
    pub fn str(&mut self, key: Key, value: &str) -> &mut Self {
        self.attr(key, AttrValue::Str(value))
    }

    #[inline(always)]
    pub fn int(&mut self, key: Key, value: i64) -> &mut Self {
        self.attr(key, AttrValue::Int(value))
    }

    #[inline(always)]
    pub fn float(&mut self, key: Key, value: f64) -> &mut Self {
        self.attr(key, AttrValue::Float(value))
    }

    #[inline(always)]
    pub fn bool(&mut self, key: Key, value: bool) -> &mut Self {
        self.attr(key, AttrValue::Bool(value))
    }

    /// Ends the span: its times (nanoseconds since the Unix epoch) and, when it failed, an
    /// error status described by `error`; then its frame's length.
    pub fn end(self, start: u64, end: u64, error: Option<&str>) {
        let out = &mut self.spans.bytes;
        let status = error.map_or(0, |m| len_field(len_field(m.len()) + 2));
        append!(out, 18 + status + VARINT_MAX, |r| {
            r.byte(tag(7, Wire::Fixed64));
            r.bytes(&start.to_le_bytes());
            r.byte(tag(8, Wire::Fixed64));
            r.bytes(&end.to_le_bytes());
            if let Some(message) = error {
                // Status { message = 2; code = 3 (STATUS_CODE_ERROR = 2) }.
                r.len_header(15, len_field(message.len()) + 2);
                r.len_header(2, message.len());
                r.bytes(message.as_bytes());
                r.byte(tag(3, Wire::Varint));
                r.byte(2);
            }
        });
        frame(out, self.start);
        self.spans.count += 1;
    }
}

/// Writes the length of the span that starts at `start` (and runs to the end of `out`) in
/// the [`FRAME_LEN_ROOM`] bytes before it, moving the span when its length takes more or
/// fewer bytes.
fn frame(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    let need = varint_len(len as u64);
    if need < FRAME_LEN_ROOM {
        out.copy_within(start.., start - 1);
        out.truncate(out.len() - 1);
    } else if need > FRAME_LEN_ROOM {
        let grow = need - FRAME_LEN_ROOM;
        out.resize(out.len() + grow, 0);
        out.copy_within(start..start + len, start + grow);
    }
    let at = start - FRAME_LEN_ROOM;
    let mut v = len as u64;
    for (i, slot) in out[at..at + need].iter_mut().enumerate() {
        *slot = (v as u8 & 0x7f) | if i + 1 < need { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// Ended spans, each framed as a `ScopeSpans.spans` entry, ready to be concatenated into an
/// export request.
#[derive(Debug, Default, Clone)]
pub struct EncodedSpans {
    bytes: Vec<u8>,
    count: usize,
}

impl EncodedSpans {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Adds a span (a `Span` message) written elsewhere.
    pub fn push(&mut self, span: &[u8]) {
        put_bytes(&mut self.bytes, 2, span);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Room for `bytes` more bytes of spans without growing.
    pub fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    pub fn byte_capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Keeps the first `n` spans.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.count {
            return;
        }
        let mut at = 0;
        for _ in 0..n {
            at = self.frame_end(at);
        }
        self.bytes.truncate(at);
        self.count = n;
    }

    /// Where the frame starting at `at` ends (frames are only ever written by `push`).
    fn frame_end(&self, at: usize) -> usize {
        let mut len = 0u64;
        let mut shift = 0;
        let mut i = at + 1;
        while let Some(&b) = self.bytes.get(i) {
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b < 0x80 {
                break;
            }
        }
        (i + len as usize).min(self.bytes.len())
    }
}

/// The part of every export request that does not change: the resource (`service.name` and
/// the other resource attributes) and the instrumentation scope.
pub struct ExportHead {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl ExportHead {
    pub fn new(resource: &[(&str, &str)], scope_name: &str, scope_version: &str) -> Self {
        let mut r = Vec::new();
        for (k, v) in resource {
            put_key_value(&mut r, 1, &dynamic_key_field(k), AttrValue::Str(v));
        }
        let mut s = Vec::new();
        put_bytes(&mut s, 1, scope_name.as_bytes());
        put_bytes(&mut s, 2, scope_version.as_bytes());
        Self {
            resource: r,
            scope: s,
        }
    }

    /// An `ExportTraceServiceRequest` carrying `batches`' spans under one resource and scope.
    pub fn request(&self, batches: Vec<EncodedSpans>) -> ExportBody {
        let spans: usize = batches.iter().map(EncodedSpans::byte_len).sum();
        let scope_spans = len_field(self.scope.len()) + spans;
        let resource_spans = len_field(self.resource.len()) + len_field(scope_spans);
        let mut head = Vec::with_capacity(len_field(resource_spans) - spans);
        put_len_header(&mut head, 1, resource_spans);
        put_bytes(&mut head, 1, &self.resource);
        put_len_header(&mut head, 2, scope_spans);
        put_bytes(&mut head, 1, &self.scope);
        let mut pieces = VecDeque::with_capacity(batches.len() + 1);
        pieces.push_back(Bytes::from(head));
        pieces.extend(
            batches
                .into_iter()
                .filter(|b| !b.bytes.is_empty())
                .map(|b| Bytes::from(b.bytes)),
        );
        let remaining = pieces.iter().map(Bytes::len).sum();
        ExportBody { pieces, remaining }
    }
}

/// An export request as the pieces it was written in: its head (the resource and the scope,
/// with the lengths of what follows), then each hand-off's spans as the shard wrote them. It
/// goes out in one vectored write; copying the pieces into one buffer first cost the exporter
/// a copy of every span.
#[derive(Debug, Clone, Default)]
pub struct ExportBody {
    /// Never an empty one.
    pieces: VecDeque<Bytes>,
    remaining: usize,
}

impl Buf for ExportBody {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, cnt: usize) {
        let mut cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.pieces.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.pieces.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(&self.pieces) {
            *slot = std::io::IoSlice::new(piece);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use prost::Message;

    fn span(
        spans: &mut EncodedSpans,
        parent: Option<[u8; 8]>,
        remote: bool,
        error: Option<&str>,
        attrs: &[(&str, AttrValue<'_>)],
    ) {
        let ids = SpanIds {
            trace_id: *b"0123456789abcdef",
            span_id: *b"spanid01",
            parent,
            parent_is_remote: remote,
        };
        let mut w = SpanWriter::begin(spans, &ids, SpanKind::Client, "chat", "gpt-4o");
        for (k, v) in attrs {
            w.attr(Key::from_field(&dynamic_key_field(k)), *v);
        }
        let start = 1_700_000_000_123_456_789;
        w.end(start, start + 250_000_000, error);
    }

    fn decode(head: &ExportHead, spans: &[EncodedSpans]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(head.request(spans.to_vec())).expect("decodes")
    }

    #[test]
    fn spans_decode_as_the_official_types_read_them() {
        let long = "x".repeat(300);
        let reasons = ["stop", "length"];
        let mut spans = EncodedSpans::default();
        span(
            &mut spans,
            Some(*b"parent01"),
            true,
            Some("timeout"),
            &[
                ("gen_ai.request.model", AttrValue::Str("gpt-4o")),
                ("long", AttrValue::Str(&long)),
                ("empty", AttrValue::Str("")),
                ("gen_ai.usage.input_tokens", AttrValue::Int(1234567)),
                ("negative", AttrValue::Int(-5)),
                ("zero", AttrValue::Int(0)),
                ("gen_ai.request.temperature", AttrValue::Float(0.7)),
                ("gen_ai.request.stream", AttrValue::Bool(true)),
                ("off", AttrValue::Bool(false)),
                ("gen_ai.response.finish_reasons", AttrValue::Strs(&reasons)),
                ("none", AttrValue::Strs(&[])),
            ],
        );
        span(&mut spans, None, false, None, &[]);
        let head = ExportHead::new(
            &[
                ("service.name", "llmux-test"),
                ("deployment.environment", "ci"),
            ],
            "llmux",
            "1.2.3",
        );
        let req = decode(&head, &[spans]);
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let resource = rs.resource.as_ref().expect("resource");
        let keys: Vec<_> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "deployment.environment"]);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("llmux", "1.2.3")
        );
        assert_eq!(ss.spans.len(), 2);

        let s = &ss.spans[0];
        assert_eq!(s.trace_id, b"0123456789abcdef");
        assert_eq!(s.span_id, b"spanid01");
        assert_eq!(s.parent_span_id, b"parent01");
        assert_eq!(s.name, "chat gpt-4o");
        assert_eq!(s.kind, ProtoKind::Client as i32);
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 250_000_000);
        let status = s.status.as_ref().expect("status");
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "timeout");
        let value = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.as_ref())
                .and_then(|v| v.value.clone())
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(
            value("gen_ai.request.model"),
            Value::StringValue("gpt-4o".into())
        );
        assert_eq!(value("long"), Value::StringValue(long.clone()));
        assert_eq!(value("empty"), Value::StringValue(String::new()));
        assert_eq!(value("gen_ai.usage.input_tokens"), Value::IntValue(1234567));
        assert_eq!(value("negative"), Value::IntValue(-5));
        assert_eq!(value("zero"), Value::IntValue(0));
        assert_eq!(value("gen_ai.request.temperature"), Value::DoubleValue(0.7));
        assert_eq!(value("gen_ai.request.stream"), Value::BoolValue(true));
        assert_eq!(value("off"), Value::BoolValue(false));
        let Value::ArrayValue(a) = value("gen_ai.response.finish_reasons") else {
            panic!("not an array")
        };
        let got: Vec<_> = a
            .values
            .iter()
            .map(|v| v.value.clone().expect("value"))
            .collect();
        assert_eq!(
            got,
            [
                Value::StringValue("stop".into()),
                Value::StringValue("length".into())
            ]
        );
        let Value::ArrayValue(a) = value("none") else {
            panic!("not an array")
        };
        assert!(a.values.is_empty());
        assert_eq!(s.attributes.len(), 11);

        let root = &ss.spans[1];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.flags, 0x101);
        assert!(root.status.is_none());
        assert!(root.attributes.is_empty());
    }

    impl Key {
        fn from_field(field: &[u8]) -> Key {
            let mut padded = [0u8; KEY_FIELD_MAX];
            padded[..field.len()].copy_from_slice(field);
            Key {
                padded,
                len: field.len() as u8,
            }
        }
    }

    #[test]
    fn keys_laid_out_when_compiling_equal_those_of_run_time() {
        assert_eq!(
            key!("gen_ai.usage.input_tokens").field(),
            dynamic_key_field("gen_ai.usage.input_tokens")
        );
        assert_eq!(key!("").field(), dynamic_key_field(""));
        // The longest key a `Key` holds (a longer one does not compile).
        let longest = key!("gen_ai.usage.cache_creation.input_tokens.xxxxx");
        assert_eq!(longest.field().len(), KEY_FIELD_MAX);
    }

    #[test]
    fn varint_sizes_agree_with_the_encoding() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 35,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            append!(&mut out, VARINT_MAX, |r| r.varint(v));
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn batches_concatenate_and_truncate_at_span_boundaries() {
        let mut a = EncodedSpans::default();
        let mut b = EncodedSpans::default();
        for i in 0..5 {
            let big = "y".repeat(i * 100);
            span(&mut a, None, false, None, &[("i", AttrValue::Str(&big))]);
        }
        span(&mut b, None, false, None, &[]);
        let head = ExportHead::new(&[("service.name", "s")], "llmux", "0");
        let req = decode(&head, &[a.clone(), b.clone()]);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 6);

        let mut c = a.clone();
        span(&mut c, None, false, None, &[]);
        assert_eq!(c.len(), 6);
        c.truncate(3);
        assert_eq!(c.len(), 3);
        let req = decode(&head, &[c]);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 3);
        assert_eq!(
            spans[2].attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone()),
            Some(Value::StringValue("y".repeat(200)))
        );
        let mut d = a;
        d.truncate(0);
        assert!(d.is_empty());
        assert_eq!(d.byte_len(), 0);
    }

    /// A span's frame length is written after it, in the two bytes left for it: spans whose
    /// length takes one byte or three are moved to fit, between spans that are not.
    #[test]
    fn spans_of_every_frame_length_size_decode_in_sequence() {
        let sizes = [0, 5_000, 20_000, 0, 70, 300_000, 10];
        let mut spans = EncodedSpans::default();
        for n in sizes {
            let text = "z".repeat(n);
            let attrs: &[(&str, AttrValue<'_>)] = if n == 0 {
                &[]
            } else {
                &[("t", AttrValue::Str(&text))]
            };
            span(&mut spans, None, false, None, attrs);
        }
        assert_eq!(spans.len(), sizes.len());
        let head = ExportHead::new(&[("service.name", "s")], "llmux", "0");
        let req = decode(&head, &[spans.clone()]);
        let got = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(got.len(), sizes.len());
        for (s, n) in got.iter().zip(sizes) {
            assert_eq!(s.name, "chat gpt-4o");
            assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 250_000_000);
            let text = s.attributes.first().and_then(|a| a.value.clone());
            let len = match text.and_then(|v| v.value) {
                Some(Value::StringValue(t)) => t.len(),
                _ => 0,
            };
            assert_eq!(len, n);
        }
        // Frames are found again where they were written.
        spans.truncate(4);
        let req = decode(&head, &[spans]);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 4);
    }

    #[test]
    fn attributes_written_before_decode_with_the_span_own() {
        let block = Attributes::encode(&[
            (key!("gen_ai.provider.name"), AttrValue::Str("acme")),
            (key!("server.port"), AttrValue::Int(443)),
        ]);
        let ids = SpanIds {
            trace_id: [7; 16],
            span_id: [8; 8],
            parent: None,
            parent_is_remote: false,
        };
        let mut spans = EncodedSpans::default();
        let mut w = SpanWriter::begin(&mut spans, &ids, SpanKind::Server, "chat", "m");
        w.attributes(&block)
            .str(key!("llmux.request_id"), "r-1")
            .attributes(&Attributes::default());
        w.end(1, 2, None);
        let head = ExportHead::new(&[("service.name", "s")], "llmux", "0");
        let req = decode(&head, &[spans]);
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        let attrs: Vec<_> = s
            .attributes
            .iter()
            .map(|a| {
                (
                    a.key.as_str(),
                    a.value.as_ref().and_then(|v| v.value.clone()),
                )
            })
            .collect();
        assert_eq!(
            attrs,
            [
                (
                    "gen_ai.provider.name",
                    Some(Value::StringValue("acme".into()))
                ),
                ("server.port", Some(Value::IntValue(443))),
                ("llmux.request_id", Some(Value::StringValue("r-1".into()))),
            ]
        );
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (1, 2));
    }
}
