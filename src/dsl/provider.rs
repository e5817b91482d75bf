//! The run-time face of a compiled provider: build the upstream request, map
//! the response, each stream event and each error.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::builtins::truthy;
use super::error::{ErrorClass, MappedError, TranslateError};
use super::framing::Framing;
use super::interp::{Arena, Env, Flow, RtError, Sink};
use super::ir::{Auth, CHandler, Program, RequestReads, TmplPart};
use super::key_order::SourceOrder;
use super::memo::Memo;
use super::out::{self, Out};
use super::passthrough;
use super::schema::CtxField;

/// Per-request facts from the deployment and the gateway. The gateway lends the deployment's
/// and the request's text (`Cow::Borrowed`: no copy per request); tests and tools may own it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCtx<'a> {
    /// Upstream model (or deployment) name, the provider prefix already stripped.
    pub model: Cow<'a, str>,
    /// Deployment `api_base`; replaces the file's `base_url`.
    pub api_base: Option<Cow<'a, str>>,
    pub api_key: Option<Cow<'a, str>>,
    /// Deployment `api_version`; the file's `api_version` is the default.
    pub api_version: Option<Cow<'a, str>>,
    pub drop_params: bool,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// From the price table, where it knows the model.
    pub max_output_tokens: Option<u64>,
    /// The deployment's values of the parameters the file declares (`ctx.params.NAME`),
    /// `os.environ/` references already resolved.
    pub params: Cow<'a, std::collections::BTreeMap<String, Value>>,
    /// Seeds generated ids (`new_id`), so they are unique per request and
    /// reproducible in tests.
    pub request_id: Cow<'a, str>,
    /// Unix time in seconds (`now()`).
    pub now: u64,
}

/// A header name or value, or a method, of an upstream request: the constant ones (a standard
/// method, `content-type: application/json`, `authorization`) are borrowed, not allocated for
/// every request.
pub type RequestText = Cow<'static, str>;

/// A fully built upstream HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub method: RequestText,
    pub url: String,
    pub headers: Vec<(RequestText, RequestText)>,
    pub body: Vec<u8>,
}

/// The method as static text when it is a standard one (as every provider's is).
fn method_text(method: &str) -> RequestText {
    const STANDARD: [&str; 5] = ["POST", "GET", "PUT", "PATCH", "DELETE"];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => RequestText::Borrowed(m),
        None => RequestText::Owned(method.to_owned()),
    }
}

/// A mapped upstream response: the OpenAI ChatCompletion as JSON text, ready to send. The
/// mapping writes it directly, without building a `Value` tree first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub body: Vec<u8>,
}

/// What the caller does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamControl {
    Continue,
    /// The stream is complete; send `data: [DONE]` and stop reading.
    Done,
}

/// The verdict on a stream whose upstream body has ended (EOF), from
/// [`Provider::finish_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The stream reached `done` (an event, `data: [DONE]` or the file's `on end` hook said so):
    /// send the chunks given, then `data: [DONE]`.
    Complete,
    /// The stream stopped before its end: the upstream closed early (a dropped connection, a
    /// proxy timeout, a crashed backend), so what the client has is partial. Send the chunks
    /// given, then an OpenAI-format error event, and never `data: [DONE]`.
    Cut,
}

/// Per-stream variables, created by [`Provider::stream_state`].
#[derive(Debug, Clone)]
pub struct StreamState<'a> {
    vars: Vec<Value>,
    id_counter: u64,
    ctx: RequestCtx<'a>,
    usage: Option<Value>,
    /// The upstream response's headers, when the file reads them.
    headers: Vec<(String, String)>,
    /// The stream reached its end (`done`, `data: [DONE]`).
    done: bool,
    /// The stream stopped without reaching its end: a `raise`, or [`Provider::finish_stream`]
    /// judged it cut. Kept apart from `done` so that a failed stream is never reported complete.
    failed: bool,
}

impl StreamState<'_> {
    /// The upstream response's headers, for a file that reads them
    /// ([`Provider::reads_headers`]).
    pub fn set_headers(&mut self, headers: Vec<(String, String)>) {
        self.headers = headers;
    }

    /// The last usage the stream reported (for cost and metrics), whether or
    /// not it was sent to the client.
    pub fn usage(&self) -> Option<&Value> {
        self.usage.as_ref()
    }

    /// True once the stream has reached its end: a handler said `done`, the upstream sent
    /// `data: [DONE]`, or the `on end` hook said `done`. False for a stream that failed
    /// (`raise`) or was cut.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Current value of a state variable (for tests and debugging).
    pub fn var(&self, program: &Provider, name: &str) -> Option<&Value> {
        let i = program.prog.stream.names.iter().position(|n| n == name)?;
        self.vars.get(i)
    }
}

/// A compiled provider adapter. Cheap to share (`Arc<ProviderSet>`); all
/// methods take `&self`.
#[derive(Debug, Clone)]
pub struct Provider {
    pub(crate) prog: Program,
    /// Some expression reads `headers`: callers pass the upstream's response headers.
    reads_headers: bool,
    /// What of the client's request the program reads.
    request_reads: RequestReads,
    /// The name its errors carry (`<label>Exception`): `error_name`, else the dispatching
    /// provider's name (set by the provider set), else its own.
    label: String,
    /// Deepest JSON nesting accepted in upstream bodies and events and in `parse_json`.
    max_json_depth: usize,
}

impl Provider {
    pub(crate) fn new(mut prog: Program) -> Self {
        super::interp::fold_constants(&mut prog);
        super::interp::lambdas_for_fn_refs(&mut prog);
        prog.memo_slots = super::memo::memoize(&mut prog);
        for f in &mut prog.fns {
            f.depth = super::recursion::depth(&f.body);
        }
        let mut reads_headers = false;
        for (_, exprs) in prog.frames() {
            for e in exprs {
                reads_headers |= super::ir::mentions_headers(e);
            }
        }
        let request_reads = RequestReads::of(&mut prog);
        let label = prog.error_name.clone().unwrap_or_else(|| prog.name.clone());
        Provider {
            prog,
            reads_headers,
            request_reads,
            label,
            max_json_depth: crate::json::DEFAULT_MAX_DEPTH,
        }
    }

    /// Sets the JSON nesting bound (`llmux.server.max_json_depth`).
    pub fn set_max_json_depth(&mut self, depth: usize) {
        self.max_json_depth = depth;
    }

    pub fn max_json_depth(&self) -> usize {
        self.max_json_depth
    }

    /// An interpreter environment for this program.
    fn env<'a, 's>(
        &'a self,
        arena: &'a Arena,
        state: &'s mut Vec<Value>,
        ids: &'s mut u64,
    ) -> Env<'a, 's> {
        let mut env = Env::new(&self.prog, arena, state, ids);
        env.max_json_depth = self.max_json_depth;
        env
    }

    /// Parses an upstream document within the nesting bound.
    fn parse_upstream(&self, bytes: &[u8]) -> Result<Value, crate::json::JsonError> {
        crate::json::parse(bytes, self.max_json_depth)
    }

    pub fn name(&self) -> &str {
        &self.prog.name
    }

    /// The name in its error messages (`litellm.RateLimitError: <label>Exception - ...`).
    pub fn error_label(&self) -> &str {
        &self.label
    }

    /// A dispatch target without an `error_name` of its own is labelled as the prefix the
    /// client's config names (`bedrock`, not `bedrock_converse`).
    pub(crate) fn label_as(&mut self, dispatcher: &str) {
        if self.prog.error_name.is_none() {
            self.label = dispatcher.to_owned();
        }
    }

    /// How requests authenticate. For the cloud schemes (`aws_sigv4` without an `api_key`,
    /// `google_oauth`, `token_exchange`) the caller adds the credential after
    /// [`Provider::build_request`].
    pub fn auth(&self) -> &Auth {
        &self.prog.auth
    }

    /// The token endpoint of `auth token_exchange`, filled from the deployment.
    pub fn token_url(&self, ctx: &RequestCtx) -> Result<Option<String>, TranslateError> {
        let Auth::TokenExchange { url, .. } = &self.prog.auth else {
            return Ok(None);
        };
        let mut out = String::new();
        self.fill_template(&mut out, url, ctx)?;
        Ok(Some(out))
    }

    /// The provider cannot stream (`fake_stream`): build stream requests as whole ones and
    /// replay the answer to the client as chunks.
    pub fn fake_stream(&self) -> bool {
        self.prog.fake_stream
    }

    /// A dispatching provider's rules (empty for one that serves requests itself).
    pub fn dispatch(&self) -> &[super::ir::DispatchRoute] {
        &self.prog.dispatch
    }

    /// Whether the file reads the upstream's response headers (`headers[...]`), so that the
    /// caller collects them for [`Provider::parse_response_with_headers`] and friends.
    pub fn reads_headers(&self) -> bool {
        self.reads_headers
    }

    /// The OpenTelemetry GenAI name of the provider (`gen_ai.provider.name`).
    pub fn genai_name(&self) -> &str {
        self.prog
            .genai_provider
            .as_deref()
            .unwrap_or(&self.prog.name)
    }

    /// How the upstream frames its stream.
    pub fn framing(&self) -> Framing {
        self.prog.framing
    }

    /// True when requests are forwarded as the client's bytes with overrides.
    pub fn is_passthrough(&self) -> bool {
        self.prog.request_passthrough
    }

    /// Which image URLs the gateway must fetch and inline before translating a request.
    pub fn fetch_images(&self) -> super::ir::FetchImages {
        self.prog.fetch_images
    }

    /// The file's default base URL (empty when the deployment must give `api_base`).
    pub fn base_url(&self) -> &str {
        &self.prog.base_url
    }

    /// The deployment parameters the file declares, in name order.
    pub fn params(&self) -> &[super::ir::Param] {
        &self.prog.params
    }

    /// The parameters every deployment must give (`param NAME required`).
    pub fn required_params(&self) -> impl Iterator<Item = &str> {
        self.prog
            .params
            .iter()
            .filter(|p| p.default.is_none())
            .map(|p| p.name.as_str())
    }

    /// True when the file has no `response` block: a successful upstream body is already an
    /// OpenAI ChatCompletion and can be relayed byte for byte.
    pub fn response_is_identity(&self) -> bool {
        self.prog.response.is_none()
    }

    /// True when the stream block is exactly `on _ { emit ev }` over SSE: upstream events are
    /// already OpenAI chunks and can be relayed verbatim, without parsing each one. A block
    /// with an `on end` hook is not: the hook may need state the events set, and its verdict
    /// at EOF needs [`Provider::finish_stream`].
    pub fn stream_is_identity(&self) -> bool {
        use super::ir::{CExpr, CStmt};
        self.prog.framing == Framing::Sse
            && self.prog.stream.end_handlers.is_empty()
            && matches!(self.prog.stream.handlers.as_slice(),
                [h] if h.event.is_none()
                    && h.cond.is_none()
                    && matches!(h.body.stmts.as_slice(), [CStmt::EmitChunk(CExpr::Ev)]))
    }

    fn terr(&self, e: RtError) -> TranslateError {
        let provider = self.prog.name.clone();
        match e {
            RtError::Invalid(message) => TranslateError::InvalidRequest { provider, message },
            RtError::Mapping(message) => TranslateError::Mapping { provider, message },
        }
    }

    /// Build the upstream request from the parsed OpenAI body. In passthrough
    /// mode the body is re-serialised from `req`; use [`Provider::build_request_raw`]
    /// to forward the client's bytes instead.
    pub fn build_request(
        &self,
        ctx: &RequestCtx,
        req: &Value,
    ) -> Result<UpstreamRequest, TranslateError> {
        self.build(ctx, None, RequestInput::Tree(req, None))
    }

    /// Like [`Provider::build_request`], but a passthrough provider copies `raw`
    /// (the client's body bytes, already parsed into `req`) and only rewrites the
    /// fields its `request passthrough { ... }` block names.
    pub fn build_request_raw(
        &self,
        ctx: &RequestCtx,
        req: &Value,
        raw: &[u8],
    ) -> Result<UpstreamRequest, TranslateError> {
        self.build(ctx, None, RequestInput::Tree(req, Some(raw)))
    }

    /// Like [`Provider::build_request_raw`], keeping the values of the calls that depend only
    /// on the deployment in `memo` (one per deployment, from [`Provider::new_memo`]; see
    /// `dsl::memo`).
    pub fn build_request_memo(
        &self,
        ctx: &RequestCtx,
        memo: &Memo,
        req: &Value,
        raw: Option<&[u8]>,
    ) -> Result<UpstreamRequest, TranslateError> {
        self.build(ctx, Some(memo), RequestInput::Tree(req, raw))
    }

    /// Like [`Provider::build_request_memo`], from the client's checked body bytes: a
    /// passthrough program that reads only OpenAI fields (`req.*`) gets just those members
    /// parsed, and the rest of the body is copied as bytes; anything else asks `doc` for the
    /// whole tree. `fields`: the OpenAI request fields at the body's top level, bit per id
    /// (`schema::REQUEST_FIELDS`; all bits when unknown): a body with none the program reads
    /// is not walked at all.
    pub fn build_request_doc(
        &self,
        ctx: &RequestCtx,
        memo: Option<&Memo>,
        doc: &crate::json::LazyDoc<'_>,
        fields: u64,
    ) -> Result<UpstreamRequest, TranslateError> {
        self.build(ctx, memo, RequestInput::Doc(doc, fields))
    }

    /// Whether building a request reads the client's whole tree: a mapped provider (its
    /// `request` block builds a new body), or one that reads non-OpenAI fields (`extra.*`).
    /// Otherwise the body's bytes are forwarded and only the fields read are parsed.
    pub fn reads_request_tree(&self) -> bool {
        !self.prog.request_passthrough || self.request_reads.extra
    }

    /// The memo of one deployment of this provider.
    pub fn new_memo(&self) -> Memo {
        Memo::new(self.prog.memo_slots)
    }

    fn build(
        &self,
        ctx: &RequestCtx,
        memo: Option<&Memo>,
        input: RequestInput<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        let prog = &self.prog;
        let raw = input.raw();
        // Declared before the environment that borrows them.
        let picked: Vec<(u8, Value)>;
        let mut no_state = Vec::new();
        let mut ids = 0u64;
        let arena = Arena::default();
        let mut env = self.env(&arena, &mut no_state, &mut ids);
        match input {
            RequestInput::Tree(req, _) => env.set_request(req),
            RequestInput::Doc(doc, fields) => {
                let reads = self.request_reads;
                if self.reads_request_tree() || doc.is_parsed() {
                    env.set_request(doc.tree());
                } else if fields & reads.fields != 0 {
                    match pick_members(doc, reads, self.max_json_depth) {
                        Some(p) => {
                            picked = p;
                            env.set_request_fields(&picked);
                        }
                        None => env.set_request(doc.tree()),
                    }
                }
                // Else none of the fields the program reads is in the body: it reads nothing.
            }
        }
        env.ctx = Some(ctx);
        env.memo = memo;
        env.passthrough = prog.request_passthrough;
        let mut sink = Sink {
            // Mostly one top-level field per statement: no regrowing as they are set.
            obj: Vec::with_capacity(prog.request.stmts.len()),
            ..Sink::default()
        };
        match env
            .run_block(&prog.request, &mut sink)
            .map_err(|e| self.terr(e))?
        {
            Flow::Unsupported(param) => {
                return Err(TranslateError::UnsupportedParam {
                    provider: prog.name.clone(),
                    param,
                })
            }
            Flow::Normal | Flow::Done | Flow::Raise(_) => {}
        }

        let body = if prog.request_passthrough {
            let patched = raw.and_then(|r| {
                passthrough::patch_top_level(r, input.members(), &sink.obj, &sink.removed)
            });
            match patched {
                Some(b) => b,
                None => {
                    let set = out::into_map(std::mem::take(&mut sink.obj));
                    let mut obj = match input.tree() {
                        Value::Object(m) => m.clone(),
                        _ => Map::new(),
                    };
                    for k in &sink.removed {
                        obj.remove(k);
                    }
                    obj.extend(set);
                    super::to_json_vec(&Value::Object(obj))
                }
            }
        } else {
            // Sized from the client's body so the buffer rarely regrows.
            let mut out = Vec::with_capacity(raw.map_or(512, |r| r.len() + r.len() / 2));
            out::write_fields(&mut out, &sink.obj);
            out
        };

        // URL: the deployment's api_base, else the file's (the first conditional base whose
        // condition holds, else `base_url`); then the first template whose condition holds.
        let mut url = String::with_capacity(prog.base_url.len() + 64);
        match ctx.api_base.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => url.push_str(b.trim_end_matches('/')),
            None => {
                let mut base = &prog.base_tmpl;
                for b in &prog.bases {
                    let holds = match &b.cond {
                        None => true,
                        Some(c) => truthy(env.eval_top(c).map_err(|e| self.terr(e))?.get()),
                    };
                    if holds {
                        base = &b.parts;
                        break;
                    }
                }
                self.fill_template(&mut url, base, ctx)?;
            }
        }
        if url.is_empty() {
            return Err(TranslateError::Config {
                provider: prog.name.clone(),
                message: "api_base is required".into(),
            });
        }
        // The config loader rejects deployments without a required parameter; this guards
        // callers that build a context by hand (golden cases, benchmarks).
        if ctx.api_version.is_none() && self.required_params().any(|p| p == "api_version") {
            return Err(TranslateError::Config {
                provider: prog.name.clone(),
                message: "api_version is required".into(),
            });
        }
        let mut chosen = None;
        for u in &prog.urls {
            let ok = match &u.cond {
                None => true,
                Some(c) => truthy(env.eval_top(c).map_err(|e| self.terr(e))?.get()),
            };
            if ok {
                chosen = Some(u);
                break;
            }
        }
        if let Some(u) = chosen {
            self.fill_template(&mut url, &u.parts, ctx)?;
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        for (name, top) in &prog.queries {
            // Read in place: the text is the only copy needed.
            let v = env.eval_top(top).map_err(|e| self.terr(e))?;
            if let Some(v) = v.get() {
                query.push((name, scalar_text(v)));
            }
        }
        if let (Auth::Query(name), Some(key)) = (&prog.auth, &ctx.api_key) {
            query.push((name, key.to_string()));
        }
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 && !url.contains('?') {
                '?'
            } else {
                '&'
            });
            encode_into(&mut url, k, true);
            url.push('=');
            encode_into(&mut url, v, true);
        }

        let mut headers: Vec<(RequestText, RequestText)> =
            Vec::with_capacity(prog.headers.len() + 2);
        headers.push(("content-type".into(), "application/json".into()));
        match (&prog.auth, &ctx.api_key) {
            // A Bedrock API key is a bearer token; without one the gateway signs.
            (Auth::Bearer | Auth::AwsSigV4 { .. }, Some(key)) => {
                // Not `format!`: its machinery cost more than the copy, every request.
                let mut value = String::with_capacity(7 + key.len());
                value.push_str("Bearer ");
                value.push_str(key);
                headers.push(("authorization".into(), value.into()))
            }
            (Auth::Header(name), Some(key)) => {
                headers.push((name.clone().into(), key.to_string().into()))
            }
            _ => {}
        }
        for (name, top) in &prog.headers {
            let v = env.eval_top(top).map_err(|e| self.terr(e))?;
            if let Some(v) = v.get() {
                let text = scalar_text(v);
                if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(TranslateError::InvalidRequest {
                        provider: prog.name.clone(),
                        message: format!("header `{name}` would contain a line break"),
                    });
                }
                headers.push((name.clone().into(), text.into()));
            }
        }
        if headers
            .iter()
            .any(|(_, v)| v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
        {
            return Err(TranslateError::Config {
                provider: prog.name.clone(),
                message: "api_key contains a line break".into(),
            });
        }
        Ok(UpstreamRequest {
            method: method_text(&prog.method),
            url,
            headers,
            body,
        })
    }

    /// Map an upstream response. A status >= 400, an `error` the file detects
    /// (`raise`), or a body that is not JSON come back as a [`MappedError`].
    pub fn parse_response(
        &self,
        status: u16,
        body: &[u8],
        ctx: &RequestCtx,
    ) -> Result<Completion, MappedError> {
        self.parse_response_with_headers(status, &[], body, ctx)
    }

    /// [`Provider::parse_response`] with the upstream's response headers (`headers` in the
    /// `response` block and the error rules).
    pub fn parse_response_with_headers(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        ctx: &RequestCtx,
    ) -> Result<Completion, MappedError> {
        if status >= 400 {
            return Err(self.map_error_with_headers(status, headers, body));
        }
        let parsed: Value = self.parse_upstream(body).map_err(|e| {
            MappedError::bad_upstream(
                &self.label,
                status,
                format!("upstream returned an unreadable body: {e}"),
            )
        })?;
        let Some(block) = &self.prog.response else {
            return Ok(Completion {
                body: super::to_json_vec(&parsed),
            });
        };
        let prog = &self.prog;
        let mut no_state = Vec::new();
        let mut ids = 0u64;
        let arena = Arena::default();
        let mut env = self.env(&arena, &mut no_state, &mut ids);
        env.res = Some(&parsed);
        env.source = Some(SourceOrder::new(body, Some(&parsed)));
        env.headers = headers;
        env.status = status;
        env.ctx = Some(ctx);
        let mut sink = Sink {
            obj: Vec::with_capacity(block.stmts.len()),
            ..Sink::default()
        };
        if prog.response_passthrough {
            if let Value::Object(m) = &parsed {
                sink.obj = m.iter().map(|(k, v)| (k.as_str(), Out::Ref(v))).collect();
            }
            env.passthrough = true;
        }
        let flow = env
            .run_block(block, &mut sink)
            .map_err(|e| self.rt_mapped(status, e))?;
        if let Flow::Raise(st) = flow {
            let st = raised_status(st.as_ref(), status);
            let text = String::from_utf8_lossy(body);
            return Err(self.classify(st, headers, Some(&parsed), &text));
        }
        // The mapped body is about the size of the upstream one.
        let mut out = Vec::with_capacity(body.len() + 64);
        out::write_fields(&mut out, &sink.obj);
        Ok(Completion { body: out })
    }

    /// Appends a URL template with its holes filled from `ctx`, percent-encoded as path
    /// text (`{+name}` keeps `/`).
    fn fill_template(
        &self,
        url: &mut String,
        parts: &[TmplPart],
        ctx: &RequestCtx,
    ) -> Result<(), TranslateError> {
        let prog = &self.prog;
        for part in parts {
            let (text, name, raw) = match part {
                TmplPart::Lit(s) => {
                    url.push_str(s);
                    continue;
                }
                TmplPart::Ctx(f, raw) => (ctx_text(ctx, prog, *f), ctx_name(*f), *raw),
                TmplPart::Param(i, raw) => {
                    let Some(p) = prog.params.get(*i) else {
                        continue;
                    };
                    let text = match p.name.as_str() {
                        "api_base" => ctx.api_base.as_deref().map(Cow::Borrowed),
                        "api_version" => ctx.api_version.as_deref().map(Cow::Borrowed),
                        _ => ctx.params.get(&p.name).map(|v| match v {
                            Value::String(s) => Cow::Borrowed(s.as_str()),
                            other => Cow::Owned(other.to_string()),
                        }),
                    }
                    .or_else(|| p.default.as_deref().map(Cow::Borrowed));
                    (text, p.name.as_str(), *raw)
                }
            };
            let text = text.ok_or_else(|| TranslateError::Config {
                provider: prog.name.clone(),
                message: format!("the URL needs `{name}`, which this deployment does not set"),
            })?;
            if raw {
                encode_path_into(url, &text);
            } else {
                encode_into(url, &text, false);
            }
        }
        Ok(())
    }

    fn rt_mapped(&self, status: u16, e: RtError) -> MappedError {
        let msg = match e {
            RtError::Invalid(m) | RtError::Mapping(m) => m,
        };
        MappedError::new(
            &self.label,
            status,
            ErrorClass::Internal,
            format!("could not map upstream response: {msg}"),
        )
    }

    /// Translate an upstream error response.
    pub fn map_error(&self, status: u16, body: &[u8]) -> MappedError {
        self.map_error_with_headers(status, &[], body)
    }

    /// [`Provider::map_error`] with the upstream's response headers.
    pub fn map_error_with_headers(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> MappedError {
        let parsed = match self.parse_upstream(body) {
            Ok(v) => Some(v),
            // An error body that nests past the bound is not read at all: its text could be
            // anything, and the status alone says too little to relay it as that class.
            Err(e @ crate::json::JsonError::TooDeep { .. }) => {
                return MappedError::bad_upstream(
                    &self.label,
                    status,
                    format!("upstream returned status {status} with an unreadable body: {e}"),
                )
            }
            Err(_) => None,
        };
        let text = String::from_utf8_lossy(body);
        self.classify(status, headers, parsed.as_ref(), &text)
    }

    fn classify(
        &self,
        status: u16,
        headers: &[(String, String)],
        res: Option<&Value>,
        text: &str,
    ) -> MappedError {
        let prog = &self.prog;
        let mut no_state = Vec::new();
        let mut ids = 0u64;
        let arena = Arena::default();
        let mut env = self.env(&arena, &mut no_state, &mut ids);
        env.res = res;
        env.status = status;
        env.headers = headers;
        env.text = text;
        let mut hit = None;
        for rule in &prog.errors.rules {
            // A rule that fails to evaluate does not match.
            if env.eval_top(&rule.cond).is_ok_and(|v| truthy(v.get())) {
                hit = Some(rule);
                break;
            }
        }
        let class = hit.map_or_else(|| ErrorClass::from_status(status), |r| r.class);
        let declared = prog
            .errors
            .message
            .as_ref()
            .and_then(|m| env.eval_top(m).ok())
            .and_then(|v| v.into_value());
        // `message = { message: ..., code: ..., param: ..., innererror: ... }`: the OpenAI
        // error object's fields; `message = EXPR` otherwise: the message alone.
        let (message, fields) = match declared {
            Some(Value::Object(mut m)) => {
                let message = m.remove("message").filter(|v| !v.is_null());
                (message, Some(m))
            }
            other => (other, None),
        };
        let message = message
            .map(|v| scalar_text(&v))
            .unwrap_or_else(|| default_message(status, res, text));
        let mut e = MappedError::new(&self.label, status, class, message);
        if let Some(fields) = fields {
            e.keep_fields(fields);
        }
        if let Some(r) = hit {
            if let Some(x) = r.retry {
                e.retryable = x;
            }
            if let Some(x) = r.fallback {
                e.fallback = x;
            }
        }
        e
    }

    /// Fresh per-stream state (ids, model, counters declared with `state`).
    pub fn stream_state<'a>(&self, ctx: &RequestCtx<'a>) -> StreamState<'a> {
        let prog = &self.prog;
        let mut vars = Vec::with_capacity(prog.stream.init.len());
        let mut ids = 0u64;
        {
            let mut scratch = Vec::new();
            let arena = Arena::default();
            let mut env = self.env(&arena, &mut scratch, &mut ids);
            env.ctx = Some(ctx);
            for init in &prog.stream.init {
                let v = env.eval_top(init).ok().and_then(|v| v.into_value());
                vars.push(v.unwrap_or(Value::Null));
            }
        }
        StreamState {
            vars,
            id_counter: ids,
            // Borrowed text stays borrowed: a pointer copy, not a copy of the text.
            ctx: ctx.clone(),
            usage: None,
            headers: Vec::new(),
            done: false,
            failed: false,
        }
    }

    /// True when the stream block has an `on end` hook, i.e. the file says what the
    /// upstream's EOF means for a stream that has not reached `done`.
    pub fn has_end_hook(&self) -> bool {
        !self.prog.stream.end_handlers.is_empty()
    }

    /// Map one framed stream event (`event_name` is the SSE `event:` value, if
    /// any; `data` the payload). Chunks to send are appended to `out`.
    ///
    /// Once the stream has ended (`done`, or a `raise` returned as an error) later events are
    /// not mapped and the answer is `Done`: the caller has already stopped reading.
    pub fn map_event(
        &self,
        state: &mut StreamState<'_>,
        event_name: Option<&str>,
        data: &[u8],
        out: &mut Vec<Value>,
    ) -> Result<StreamControl, MappedError> {
        if state.done || state.failed {
            return Ok(StreamControl::Done);
        }
        let trimmed = data.trim_ascii();
        if trimmed == b"[DONE]" {
            state.done = true;
            return Ok(StreamControl::Done);
        }
        let ev: Option<Value> = if trimmed.is_empty() {
            None
        } else {
            Some(self.parse_upstream(trimmed).map_err(|e| {
                MappedError::bad_upstream(
                    &self.label,
                    0,
                    format!("upstream sent an unreadable stream event: {e}"),
                )
            })?)
        };
        let flow = self.run_handler(
            &self.prog.stream.handlers,
            state,
            ev.as_ref().map(|v| (v, trimmed)),
            event_name,
            out,
        )?;
        match flow {
            Some(Flow::Done) => {
                state.done = true;
                Ok(StreamControl::Done)
            }
            Some(Flow::Raise(st)) => {
                state.failed = true;
                let st = raised_status(st.as_ref(), 500);
                let text = String::from_utf8_lossy(data);
                Err(self.classify(st, &state.headers, ev.as_ref(), &text))
            }
            None | Some(Flow::Normal | Flow::Unsupported(_)) => Ok(StreamControl::Continue),
        }
    }

    /// Maps one decoded frame: an event as [`Provider::map_event`]; a frame the framing marked
    /// as the upstream's error (an event-stream exception) is classified by the error rules,
    /// with the frame's name as `headers[":exception-type"]`, its payload as `res` and
    /// `text`, and status 500 unless a rule says otherwise.
    pub fn map_frame(
        &self,
        state: &mut StreamState<'_>,
        frame: &super::Frame,
        out: &mut Vec<Value>,
    ) -> Result<StreamControl, MappedError> {
        if !frame.exception {
            return self.map_event(state, frame.event.as_deref(), &frame.data, out);
        }
        if state.done || state.failed {
            return Ok(StreamControl::Done);
        }
        state.failed = true;
        let parsed = self.parse_upstream(frame.data.trim_ascii()).ok();
        let mut headers = state.headers.clone();
        headers.push((
            ":exception-type".to_owned(),
            frame.event.clone().unwrap_or_default(),
        ));
        let text = String::from_utf8_lossy(&frame.data);
        Err(self.classify(500, &headers, parsed.as_ref(), &text))
    }

    /// The verdict on a stream whose upstream body has ended (EOF), to call once when the
    /// body ends and no event returned [`StreamControl::Done`] or an error.
    ///
    /// - Already done (`done`, `data: [DONE]`): `Ok(Complete)`; nothing runs.
    /// - Already failed (a `raise`, or an earlier call found it cut): `Ok(Cut)`; nothing runs.
    /// - Otherwise the first `on end` hook whose `when` holds runs like an event handler, with
    ///   `ev` and `event` absent: `done` → `Ok(Complete)`; `raise STATUS` → `Err`, classified by
    ///   the `errors` rules (with `res` absent and `text` saying the stream ended early);
    ///   finishing without either, or no hook at all → `Ok(Cut)`.
    ///
    /// Chunks the hook emits are appended to `out` when the answer is `Ok` (a cut stream may
    /// still carry them before its error event); on `Err` they are dropped, so that a failing
    /// stream never shows a final finish or usage chunk before its error. Usage the hook emits
    /// is recorded in `state` either way.
    pub fn finish_stream(
        &self,
        state: &mut StreamState<'_>,
        out: &mut Vec<Value>,
    ) -> Result<StreamEnd, MappedError> {
        if state.done {
            return Ok(StreamEnd::Complete);
        }
        if state.failed {
            return Ok(StreamEnd::Cut);
        }
        let start = out.len();
        let hook = self.run_handler(&self.prog.stream.end_handlers, state, None, None, out);
        let verdict = match hook {
            Ok(Some(Flow::Done)) => Ok(StreamEnd::Complete),
            Ok(Some(Flow::Raise(st))) => {
                let st = raised_status(st.as_ref(), 500);
                Err(self.classify(st, &state.headers, None, ENDED_EARLY))
            }
            Ok(None | Some(Flow::Normal | Flow::Unsupported(_))) => Ok(StreamEnd::Cut),
            Err(e) => Err(e),
        };
        // The hook runs once: later calls answer from the state (Complete, or Cut after a cut
        // or an error) without running it again.
        match verdict {
            Ok(StreamEnd::Complete) => state.done = true,
            Ok(StreamEnd::Cut) => state.failed = true,
            Err(_) => {
                state.failed = true;
                out.truncate(start);
            }
        }
        verdict
    }

    /// Runs the first of `handlers` whose event name and `when` match, appending its chunks
    /// to `out` and recording its usage in `state`; `None` when no handler matches. The
    /// caller decides what the flow means (events and the end hook differ).
    fn run_handler(
        &self,
        handlers: &[CHandler],
        state: &mut StreamState<'_>,
        ev: Option<(&Value, &[u8])>,
        event_name: Option<&str>,
        out: &mut Vec<Value>,
    ) -> Result<Option<Flow>, MappedError> {
        let StreamState {
            vars,
            id_counter,
            ctx,
            usage,
            headers,
            ..
        } = state;
        let arena = Arena::default();
        let mut env = self.env(&arena, vars, id_counter);
        env.ev = ev.map(|(v, _)| v);
        env.headers = headers;
        env.source = ev.map(|(v, raw)| SourceOrder::new(raw, Some(v)));
        env.event = event_name;
        env.ctx = Some(&*ctx);
        let mut chosen = None;
        for h in handlers {
            if let Some(name) = &h.event {
                if event_name != Some(name.as_str()) {
                    continue;
                }
            }
            let ok = match &h.cond {
                None => true,
                Some(c) => {
                    let v = env
                        .eval_with_slots(c, h.body.slots)
                        .map_err(|e| self.rt_mapped(0, e))?;
                    truthy(v.get())
                }
            };
            if ok {
                chosen = Some(h);
                break;
            }
        }
        let Some(h) = chosen else {
            return Ok(None);
        };
        let mut sink = Sink {
            include_usage: ctx.include_usage,
            ..Sink::default()
        };
        let flow = env
            .run_block(&h.body, &mut sink)
            .map_err(|e| self.rt_mapped(0, e))?;
        out.append(&mut sink.chunks);
        if sink.usage.is_some() {
            *usage = sink.usage;
        }
        Ok(Some(flow))
    }
}

/// The `text` an `on end` hook's `raise` is classified with (and the default message): there
/// is no event body to quote.
const ENDED_EARLY: &str = "the upstream stream ended before it was complete";

fn raised_status(v: Option<&Value>, default: u16) -> u16 {
    v.and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s))
        .unwrap_or(default)
}

/// The provider's own message: `error.message`, `message`, a string `error`,
/// else the raw body, else the status.
fn default_message(status: u16, res: Option<&Value>, text: &str) -> String {
    if let Some(r) = res {
        let candidates = [
            r.pointer("/error/message"),
            r.get("message"),
            r.get("error"),
            r.get("detail"),
        ];
        for c in candidates.into_iter().flatten() {
            if let Value::String(s) = c {
                return s.clone();
            }
        }
    }
    let t = text.trim();
    if t.is_empty() {
        return format!("upstream returned status {status}");
    }
    t.chars().take(2000).collect()
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ctx_name(f: CtxField) -> &'static str {
    CtxField::NAMES
        .iter()
        .copied()
        .find(|n| CtxField::parse(n) == Some(f))
        .unwrap_or("?")
}

/// A context field as URL text: borrowed where it is text already.
fn ctx_text<'c>(ctx: &'c RequestCtx<'_>, prog: &'c Program, f: CtxField) -> Option<Cow<'c, str>> {
    let flag = |b: bool| Some(Cow::Borrowed(if b { "true" } else { "false" }));
    match f {
        CtxField::Model => Some(Cow::Borrowed(&*ctx.model)).filter(|m| !m.is_empty()),
        CtxField::ApiVersion => (ctx.api_version.as_deref())
            .or(prog.api_version.as_deref())
            .map(Cow::Borrowed),
        CtxField::ApiBase => ctx.api_base.as_deref().map(Cow::Borrowed),
        CtxField::Stream => flag(ctx.stream),
        CtxField::IncludeUsage => flag(ctx.include_usage),
        CtxField::DropParams => flag(ctx.drop_params),
        CtxField::MaxOutputTokens => ctx.max_output_tokens.map(|n| Cow::Owned(n.to_string())),
        CtxField::ApiKey => ctx.api_key.as_deref().map(Cow::Borrowed),
    }
}

/// Percent-encode for several path segments: as a segment, but `/` stays (`{+name}`: a
/// Cloudflare model `@cf/meta/llama-3`, a Replicate `owner/name`). Dot segments are encoded so
/// that a value cannot climb out of the path the file wrote.
fn encode_path_into(out: &mut String, s: &str) {
    for (i, seg) in s.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg {
            "." => out.push_str("%2E"),
            ".." => out.push_str("%2E%2E"),
            _ => encode_into(out, seg, false),
        }
    }
}

/// Percent-encode for a path segment (`query == false`) or a query component.
/// Unreserved characters stay; in paths `:` and `@` stay too (Gemini's
/// `models/x:generateContent`), but `/` is encoded so a model name cannot add
/// path segments.
fn encode_into(out: &mut String, s: &str, query: bool) {
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (!query && matches!(b, b':' | b'@'));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The client's request as `build` is given it.
#[derive(Clone, Copy)]
enum RequestInput<'r> {
    /// The parsed body, and its bytes when a passthrough program should copy them.
    Tree(&'r Value, Option<&'r [u8]>),
    /// The checked bytes, parsed only as far as the program needs, and the OpenAI fields at
    /// their top level (bit per id).
    Doc(&'r crate::json::LazyDoc<'r>, u64),
}

impl<'r> RequestInput<'r> {
    fn raw(&self) -> Option<&'r [u8]> {
        match self {
            RequestInput::Tree(_, raw) => *raw,
            RequestInput::Doc(doc, _) => Some(doc.bytes()),
        }
    }

    fn tree(&self) -> &'r Value {
        match self {
            RequestInput::Tree(req, _) => req,
            RequestInput::Doc(doc, _) => doc.tree(),
        }
    }

    /// Where the top-level members of [`RequestInput::raw`] are, when the check noted it.
    fn members(&self) -> Option<&'r crate::json::TopMembers> {
        match self {
            RequestInput::Tree(..) => None,
            RequestInput::Doc(doc, _) => doc.members(),
        }
    }
}

/// The top-level members of the request object `raw` (a checked JSON document) that `reads`
/// names, each parsed alone (the last of a repeated name, as a parser keeps). `None` when the
/// walk cannot vouch for the answer (a member name with an escape, which only a parser reads
/// right; a walk that did not cross the whole object): the caller then parses the whole body.
fn pick_members(
    doc: &crate::json::LazyDoc<'_>,
    reads: RequestReads,
    max_depth: usize,
) -> Option<Vec<(u8, Value)>> {
    let mut picked: Vec<(u8, Value)> = Vec::new();
    // Stopping the walk (an escaped name, a value that does not parse) leaves it incomplete.
    let complete = doc.for_each_member(|quoted, value| {
        let name = &quoted[1..quoted.len() - 1];
        if name.contains(&b'\\') {
            return false;
        }
        let Some(id) = super::schema::request_field_bytes(name).filter(|id| reads.reads(*id))
        else {
            return true;
        };
        let Some(v) = member_value(value, max_depth) else {
            return false;
        };
        // A repeated name: the last one stands.
        match picked.iter_mut().find(|(seen, _)| *seen == id) {
            Some(slot) => slot.1 = v,
            None => picked.push((id, v)),
        }
        true
    });
    complete.then_some(picked)
}

/// A member's value: the literals directly (a flag such as `stream` is the usual read), the
/// rest by the parser.
fn member_value(bytes: &[u8], max_depth: usize) -> Option<Value> {
    match bytes {
        b"true" => Some(Value::Bool(true)),
        b"false" => Some(Value::Bool(false)),
        b"null" => Some(Value::Null),
        _ => crate::json::parse(bytes, max_depth).ok(),
    }
}

#[cfg(test)]
mod pick_tests {
    use super::*;

    fn reads(names: &[&str]) -> RequestReads {
        let mut r = RequestReads::default();
        for n in names {
            r.fields |= 1 << super::super::schema::request_field(n).unwrap();
        }
        r
    }

    /// What the walk picks; what the check's notes pick must be the same.
    fn picked(raw: &str, names: &[&str]) -> Option<Vec<(String, Value)>> {
        let cell = std::cell::OnceCell::new();
        let doc = crate::json::LazyDoc::new(raw.as_bytes(), &cell, 32);
        let p = pick_members(&doc, reads(names), 32);
        let mut notes = crate::json::TopMembers::new();
        let noted = crate::json::members::for_each_member_forward(raw.as_bytes(), |name, _| {
            std::str::from_utf8(name).is_ok_and(|n| notes.note(raw.as_bytes(), n))
        });
        if noted {
            let from_notes = pick_members(&doc.with_members(Some(&notes)), reads(names), 32);
            assert_eq!(from_notes, p, "{raw}");
        }
        let p = p?;
        let mut named: Vec<(String, Value)> = p
            .into_iter()
            .map(|(id, v)| {
                (
                    super::super::schema::REQUEST_FIELDS[usize::from(id)].to_owned(),
                    v,
                )
            })
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Some(named)
    }

    #[test]
    fn picks_only_the_fields_read_the_last_of_a_repeat() {
        let got = picked(
            r#" { "model":"m", "stream":false, "messages":[{"role":"user","content":"{\"stream\":1}"}],
                 "stream":true, "temperature":0.5 } "#,
            &["stream", "max_tokens"],
        );
        assert_eq!(got, Some(vec![("stream".to_owned(), Value::Bool(true))]));
        assert_eq!(picked("{}", &["stream"]), Some(vec![]));
        assert_eq!(picked(" { } ", &["stream"]), Some(vec![]));
    }

    #[test]
    fn leaves_what_only_a_parser_reads_right_to_the_parser() {
        // An escaped name may be a field read.
        assert_eq!(picked(r#"{"stre\u0061m":true}"#, &["stream"]), None);
        // Not an object (the bytes were checked as JSON, not as a request).
        assert_eq!(picked("[1]", &["stream"]), None);
        assert_eq!(picked("null", &["stream"]), None);
        assert_eq!(picked(r#"{"a":1,}"#, &["stream"]), None);
        assert_eq!(picked(r#"{"a":1} x"#, &["stream"]), None);
    }

    #[test]
    fn a_program_reads_what_its_expressions_and_rules_name() {
        let set = crate::dsl::load_str(
            "p.llmux",
            r#"provider p {
  base_url "https://x.test/v1"
  url "/chat"
  request passthrough {
    if req.stream == true { stream_options = req.stream_options }
    unsupported temperature when ctx.model == "x"
  }
}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let p = set.get("p").unwrap_or_else(|| panic!("no provider"));
        assert_eq!(
            p.request_reads,
            reads(&["stream", "stream_options", "temperature"])
        );
        let set = crate::dsl::load_str(
            "q.llmux",
            r#"provider q {
  base_url "https://x.test/v1"
  url "/chat"
  request passthrough { top_k = extra.top_k }
}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let q = set.get("q").unwrap_or_else(|| panic!("no provider"));
        assert!(q.request_reads.extra);
    }
}
