//! Golden cases: `providers/tests/<provider>/*.yaml`. Each file holds one case
//! (a mapping) or several (a list). Used by `cargo test` and `llmux providers test`.
//!
//! A case has input and the expected output of one of four kinds:
//! - `request` (OpenAI body) → `expect: {method, url, headers, body}` or `expect_error`;
//! - `response: {status, body}` → `expect` (OpenAI response) or `expect_error`;
//! - `stream` (the raw upstream transcript) → `expect_chunks`, `expect_done`,
//!   `expect_usage`, `expect_error`;
//! - `error: {status, body}` → `expect_error`.
//!
//! A stream transcript is mapped event by event until an event says `Done` or fails; if
//! none did, the transcript's end is the upstream's EOF and the verdict comes from
//! [`Provider::finish_stream`](super::Provider::finish_stream), as in the gateway (the `on
//! end` hook may emit chunks, say `done` or `raise`). `expect_done: true` means the stream
//! ended complete (`done` reached by an event, `data: [DONE]` or the end hook);
//! `expect_done: false` means it was cut (the client would get an error event and no
//! `[DONE]`). A stream case must state one of `expect_done` or `expect_error`, so that
//! every transcript's ending is checked. There is deliberately no `expect_cut` spelling:
//! one key for one fact, and "cut" is exactly "not done" now that EOF never counts as done.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{FrameDecoder, ProviderSet, RequestCtx, StreamControl, StreamEnd};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaseCtx {
    pub model: Option<String>,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    #[serde(default)]
    pub drop_params: bool,
    pub stream: Option<bool>,
    #[serde(default)]
    pub include_usage: bool,
    pub max_output_tokens: Option<u64>,
    /// The deployment's declared parameters (`ctx.params.NAME`).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default = "ok_status")]
    pub status: u16,
    /// JSON (as YAML) or, when a string, the raw body text.
    pub body: Value,
    /// Response headers the file may read (`headers[...]`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn header_pairs(h: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn ok_status() -> u16 {
    200
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: Option<String>,
    /// Defaults to the name of the directory holding the file.
    pub provider: Option<String>,
    #[serde(default)]
    pub ctx: CaseCtx,
    pub request: Option<Value>,
    /// For passthrough providers: the exact client bytes (parsed for `request`
    /// when `request` is not given).
    pub raw_request: Option<String>,
    pub response: Option<Upstream>,
    pub error: Option<Upstream>,
    pub stream: Option<String>,
    /// A binary stream (`framing aws_eventstream`) as a list of messages the harness encodes:
    /// `{ event: NAME, data: ... }` or `{ exception: TYPE, data: ... }` (data: an object, or a
    /// string used as the payload's text).
    pub stream_frames: Option<Vec<FrameCase>>,
    /// The stream response's headers.
    #[serde(default)]
    pub stream_headers: std::collections::BTreeMap<String, String>,
    /// A model a dispatching provider routes (`dispatch`): `expect_route` says to which
    /// provider and with which model name.
    pub route: Option<String>,
    pub expect_route: Option<RouteCase>,
    pub expect: Option<Value>,
    pub expect_chunks: Option<Vec<Value>>,
    pub expect_done: Option<bool>,
    pub expect_usage: Option<Value>,
    pub expect_error: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCase {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameCase {
    pub event: Option<String>,
    pub exception: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// The bytes of a `stream_frames` list in the provider's binary framing.
fn encode_frames(p: &super::Provider, frames: &[FrameCase]) -> Result<Vec<u8>, String> {
    if p.framing() != super::Framing::AwsEventStream {
        return Err("`stream_frames` is for `framing aws_eventstream`; write `stream` text".into());
    }
    let mut out = Vec::new();
    for f in frames {
        let payload = body_bytes(&f.data);
        match (&f.event, &f.exception) {
            (Some(e), None) => out.extend(super::eventstream::encode_event(e, &payload)),
            (None, Some(x)) => out.extend(super::eventstream::encode_exception(x, &payload)),
            _ => return Err("a stream frame has `event` or `exception`, not both".into()),
        }
    }
    Ok(out)
}

/// A case with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub path: PathBuf,
    pub name: String,
    pub provider: String,
    pub case: Case,
    /// The file could not be read as cases: reported as this case's failure, so one
    /// malformed file does not stop the others.
    pub problem: Option<String>,
}

/// Whether a failing case shows the whole expected and actual objects after the paths that
/// differ (`llmux providers test --objects`; the cargo test harness turns it on).
static SHOW_OBJECTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn show_objects(on: bool) {
    SHOW_OBJECTS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The cases of one file (a mapping or a list of them).
fn read_cases(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if doc.is_sequence() {
        serde_yaml::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        Ok(vec![
            serde_yaml::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))?
        ])
    }
}

/// Every case under `tests_dir` (`<tests_dir>/<provider>/*.yaml`). A file that cannot be
/// read as cases is one case whose `problem` says why.
pub fn discover(tests_dir: &Path) -> Result<Vec<LoadedCase>, String> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tests_dir)
        .map_err(|e| format!("{}: {e}", tests_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let provider = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let cases = match read_cases(&path) {
                Ok(c) => c,
                Err(problem) => {
                    out.push(LoadedCase {
                        path: path.clone(),
                        name: format!("{stem} (unreadable)"),
                        provider: provider.clone(),
                        case: Case::default(),
                        problem: Some(problem),
                    });
                    continue;
                }
            };
            let many = cases.len() > 1;
            for (i, case) in cases.into_iter().enumerate() {
                let name = match (&case.name, many) {
                    (Some(n), _) => format!("{stem}: {n}"),
                    (None, true) => format!("{stem}#{i}"),
                    (None, false) => stem.clone(),
                };
                out.push(LoadedCase {
                    path: path.clone(),
                    name,
                    provider: case.provider.clone().unwrap_or_else(|| provider.clone()),
                    case,
                    problem: None,
                });
            }
        }
    }
    Ok(out)
}

fn ctx_of(c: &CaseCtx, stream_default: bool) -> RequestCtx<'_> {
    RequestCtx {
        model: c.model.as_deref().unwrap_or("test-model").into(),
        api_base: c.api_base.as_deref().map(Into::into),
        // `api_key: ""` states that the deployment has no key (a keyless local server).
        api_key: match c.api_key.as_deref() {
            None => Some("sk-test".into()),
            Some("") => None,
            Some(k) => Some(k.into()),
        },
        api_version: c.api_version.as_deref().map(Into::into),
        drop_params: c.drop_params,
        stream: c.stream.unwrap_or(stream_default),
        include_usage: c.include_usage,
        max_output_tokens: c.max_output_tokens,
        params: std::borrow::Cow::Borrowed(&c.params),
        request_id: "golden".into(),
        now: 1_700_000_000,
    }
}

fn body_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn mismatch(what: &str, want: &Value, got: &Value) -> String {
    let mut paths = Vec::new();
    diff_paths(want, got, &mut String::from("$"), &mut paths);
    let mut msg = format!("{what} differs at:\n");
    for p in &paths {
        msg.push_str("  ");
        msg.push_str(p);
        msg.push('\n');
    }
    if SHOW_OBJECTS.load(std::sync::atomic::Ordering::Relaxed) {
        msg.push_str(&format!(
            "--- expected\n{}\n--- got\n{}",
            pretty(want),
            pretty(got)
        ));
    } else {
        msg.push_str("(--objects shows both objects)");
    }
    msg
}

/// The JSON paths where `got` differs from `want` (at most 20), each with both values.
fn diff_paths(want: &Value, got: &Value, at: &mut String, out: &mut Vec<String>) {
    const MAX: usize = 20;
    if out.len() >= MAX || want == got {
        return;
    }
    let short = |v: &Value| {
        let t = v.to_string();
        if t.len() > 120 {
            format!("{}…", &t[..t.floor_char_boundary(120)])
        } else {
            t
        }
    };
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let len = at.len();
                at.push('.');
                at.push_str(k);
                match g.get(k) {
                    Some(gv) => diff_paths(wv, gv, at, out),
                    None => out.push(format!("{at}: expected {}, missing", short(wv))),
                }
                at.truncate(len);
            }
            for (k, gv) in g {
                if !w.contains_key(k) && out.len() < MAX {
                    out.push(format!("{at}.{k}: not expected, got {}", short(gv)));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                diff_paths(wv, gv, at, out);
                at.truncate(len);
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            out.push(format!("{at}: expected {} items, got {}", w.len(), g.len()))
        }
        _ => out.push(format!(
            "{at}: expected {}, got {}",
            short(want),
            short(got)
        )),
    }
}

/// Every key of `want` must be present in `got` with an equal value.
fn check_subset(what: &str, want: &Value, got: &Value) -> Result<(), String> {
    let Value::Object(w) = want else {
        return if want == got {
            Ok(())
        } else {
            Err(mismatch(what, want, got))
        };
    };
    for (k, wv) in w {
        let gv = got.get(k).unwrap_or(&Value::Null);
        if k == "message_contains" {
            let msg = got
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let needle = wv.as_str().unwrap_or_default();
            if !msg.contains(needle) {
                return Err(format!(
                    "{what}: message {msg:?} does not contain {needle:?}"
                ));
            }
            continue;
        }
        if gv != wv {
            return Err(mismatch(&format!("{what}.{k}"), wv, gv));
        }
    }
    Ok(())
}

/// Run one case; `Err` describes the first difference.
pub fn run_case(set: &ProviderSet, lc: &LoadedCase) -> Result<(), String> {
    if let Some(problem) = &lc.problem {
        return Err(problem.clone());
    }
    let p = set
        .get(&lc.provider)
        .ok_or_else(|| format!("no provider `{}`", lc.provider))?;
    let c = &lc.case;
    let mut ran = false;

    if let Some(model) = &c.route {
        ran = true;
        let want = c
            .expect_route
            .as_ref()
            .ok_or("a `route` case needs `expect_route`")?;
        match set.resolve(&lc.provider, model) {
            Some((provider, sent)) if provider == want.provider && sent == want.model => {}
            Some((provider, sent)) => {
                return Err(format!(
                    "`{model}` routes to {provider} as `{sent}`, expected {} as `{}`",
                    want.provider, want.model
                ))
            }
            None => {
                return Err(format!(
                    "no `dispatch` rule of `{}` matches `{model}`",
                    lc.provider
                ))
            }
        }
    }

    if c.request.is_some() || c.raw_request.is_some() {
        ran = true;
        let ctx = ctx_of(&c.ctx, c.stream.is_some());
        let req: Value = match (&c.request, &c.raw_request) {
            (Some(r), _) => r.clone(),
            (None, Some(raw)) => {
                serde_json::from_str(raw).map_err(|e| format!("raw_request: {e}"))?
            }
            (None, None) => Value::Null,
        };
        let raw = c.raw_request.as_deref().map(str::as_bytes);
        let built = match raw {
            Some(raw) => p.build_request_raw(&ctx, &req, raw),
            None => p.build_request(&ctx, &req),
        };
        // The deployment's kept values (`dsl::memo`) change nothing: neither the first
        // request, which keeps them, nor the next, which reads them.
        let memo = p.new_memo();
        for pass in ["keeping", "reading"] {
            let again = p.build_request_memo(&ctx, &memo, &req, raw);
            same_request(
                &built,
                again,
                &format!("with the deployment's memo ({pass} it)"),
            )?;
        }
        // From the body's bytes (as the gateway builds it), parsed only as far as the program
        // reads: the same request.
        if let Some(raw) = raw {
            let tree = std::cell::OnceCell::new();
            let doc = crate::json::LazyDoc::new(raw, &tree, crate::json::DEFAULT_MAX_DEPTH);
            // Which OpenAI fields the body has, as the gateway's check reports them.
            let fields = req.as_object().map_or(0, |o| {
                o.keys()
                    .filter_map(|k| super::schema::request_field(k))
                    .fold(0u64, |m, id| m | 1 << id)
            });
            let from_doc = p.build_request_doc(&ctx, Some(&memo), &doc, fields);
            same_request(&built, from_doc, "from the body's bytes")?;
        }
        match (built, &c.expect_error) {
            (Ok(up), None) => {
                let want = c.expect.as_ref().ok_or("request case without `expect`")?;
                let body: Value = serde_json::from_slice(&up.body)
                    .map_err(|e| format!("upstream body is not JSON: {e}"))?;
                let headers: serde_json::Map<String, Value> = up
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.to_string())))
                    .collect();
                if let Some(m) = want.get("method") {
                    check_subset("method", m, &json!(up.method))?;
                }
                if let Some(u) = want.get("url") {
                    check_subset("url", u, &json!(up.url))?;
                }
                if let Some(Value::Object(h)) = want.get("headers") {
                    for (k, v) in h {
                        let got = headers.get(&k.to_ascii_lowercase()).unwrap_or(&Value::Null);
                        if got != v {
                            return Err(mismatch(&format!("header {k}"), v, got));
                        }
                    }
                }
                if let Some(b) = want.get("body") {
                    if *b != body {
                        return Err(mismatch("body", b, &body));
                    }
                }
                if let Some(raw) = want.get("body_raw") {
                    let got = Value::String(String::from_utf8_lossy(&up.body).into_owned());
                    if *raw != got {
                        return Err(mismatch("body_raw", raw, &got));
                    }
                }
            }
            (Ok(up), Some(_)) => {
                return Err(format!(
                    "expected an error, got a request to {} with body {}",
                    up.url,
                    String::from_utf8_lossy(&up.body)
                ))
            }
            (Err(e), Some(want)) => {
                let got =
                    json!({"status": e.status(), "param": e.param(), "message": e.to_string()});
                check_subset("error", want, &got)?;
            }
            (Err(e), None) => return Err(format!("request translation failed: {e}")),
        }
    }

    if let Some(r) = c.response.as_ref().or(c.error.as_ref()) {
        ran = true;
        let ctx = ctx_of(&c.ctx, false);
        let bytes = body_bytes(&r.body);
        let headers = header_pairs(&r.headers);
        let result = if c.error.is_some() {
            Err(p.map_error_with_headers(r.status, &headers, &bytes))
        } else {
            p.parse_response_with_headers(r.status, &headers, &bytes, &ctx)
        };
        match (result, &c.expect_error) {
            (Ok(done), None) => {
                let want = c.expect.as_ref().ok_or("response case without `expect`")?;
                let v: Value = serde_json::from_slice(&done.body)
                    .map_err(|e| format!("the mapped response is not JSON: {e}"))?;
                if *want != v {
                    return Err(mismatch("response", want, &v));
                }
            }
            (Ok(done), Some(_)) => {
                return Err(format!(
                    "expected an error, got {}",
                    String::from_utf8_lossy(&done.body)
                ))
            }
            (Err(e), Some(want)) => check_subset("error", want, &mapped_json(&e))?,
            (Err(e), None) => return Err(format!("response mapping failed: {e}")),
        }
    }

    let transcript = match (&c.stream, &c.stream_frames) {
        (Some(t), None) => Some(t.as_bytes().to_vec()),
        (None, Some(frames)) => Some(encode_frames(p, frames)?),
        (None, None) => None,
        (Some(_), Some(_)) => return Err("a case has `stream` or `stream_frames`, not both".into()),
    };
    if let Some(transcript) = &transcript {
        ran = true;
        let ctx = ctx_of(&c.ctx, true);
        let bytes = transcript.as_slice();
        // The same transcript, cut at every size: framing must not matter.
        let mut first: Option<StreamResult> = None;
        for step in [bytes.len().max(1), 1, 7, 64] {
            let got = run_stream(p, &ctx, &header_pairs(&c.stream_headers), bytes, step)?;
            match &first {
                None => first = Some(got),
                Some(f) if *f != got => {
                    return Err(format!("stream output depends on read size (step {step})"));
                }
                Some(_) => {}
            }
        }
        if c.expect_done.is_none() && c.expect_error.is_none() {
            return Err(
                "a stream case must say how the stream ends: `expect_done: true` (complete), \
                 `expect_done: false` (cut) or `expect_error`"
                    .into(),
            );
        }
        let (chunks, done, usage, err) = first.unwrap_or_default();
        if let Some(want) = &c.expect_chunks {
            let got = Value::Array(chunks.clone());
            let want = Value::Array(want.clone());
            if want != got {
                return Err(mismatch("chunks", &want, &got));
            }
        }
        if let Some(want) = c.expect_done {
            if want != done {
                return Err(format!("expected done = {want}, got {done}"));
            }
        }
        if let Some(want) = &c.expect_usage {
            let got = usage.clone().unwrap_or(Value::Null);
            if *want != got {
                return Err(mismatch("usage", want, &got));
            }
        }
        match (&c.expect_error, err) {
            (Some(want), Some(got)) => check_subset("stream error", want, &got)?,
            (Some(_), None) => return Err("expected a stream error, got none".into()),
            (None, Some(got)) => return Err(format!("unexpected stream error: {}", pretty(&got))),
            (None, None) => {}
        }
    }

    if !ran {
        return Err("case has no input (request, response, error or stream)".into());
    }
    Ok(())
}

type StreamResult = (Vec<Value>, bool, Option<Value>, Option<Value>);

fn run_stream(
    p: &super::Provider,
    ctx: &RequestCtx,
    headers: &[(String, String)],
    bytes: &[u8],
    step: usize,
) -> Result<StreamResult, String> {
    let mut dec = FrameDecoder::new(p.framing());
    let mut st = p.stream_state(ctx);
    st.set_headers(headers.to_vec());
    let mut frames = Vec::new();
    let mut chunks = Vec::new();
    let mut stop = Stop::Eof;
    for piece in bytes.chunks(step) {
        dec.feed(piece, &mut frames).map_err(|e| e.to_string())?;
        stop = drain(p, &mut st, &mut frames, &mut chunks);
        if stop != Stop::Eof {
            break;
        }
    }
    if stop == Stop::Eof {
        dec.finish(&mut frames).map_err(|e| e.to_string())?;
        stop = drain(p, &mut st, &mut frames, &mut chunks);
    }
    // The verdict goes through finish_stream whenever no event failed, also after `Done`
    // (then it must answer Complete without running anything).
    let (done, err) = match stop {
        Stop::Failed(e) => (false, Some(e)),
        Stop::Done | Stop::Eof => match p.finish_stream(&mut st, &mut chunks) {
            Ok(StreamEnd::Complete) => (true, None),
            Ok(StreamEnd::Cut) => (false, None),
            Err(e) => (false, Some(mapped_json(&e))),
        },
    };
    if done != st.is_done() {
        return Err(format!(
            "finish_stream says done = {done}, the state says {}",
            st.is_done()
        ));
    }
    Ok((chunks, done, st.usage().cloned(), err))
}

/// Where mapping the frames stopped.
#[derive(Debug, PartialEq)]
enum Stop {
    /// No event ended the stream: the frames ran out.
    Eof,
    /// An event said `Done`.
    Done,
    /// An event failed (the mapped error).
    Failed(Value),
}

/// Map the pending frames until one ends the stream.
fn drain(
    p: &super::Provider,
    st: &mut super::StreamState<'_>,
    frames: &mut Vec<super::Frame>,
    chunks: &mut Vec<Value>,
) -> Stop {
    for f in frames.drain(..) {
        match p.map_frame(st, &f, chunks) {
            Ok(StreamControl::Continue) => {}
            Ok(StreamControl::Done) => return Stop::Done,
            Err(e) => return Stop::Failed(mapped_json(&e)),
        }
    }
    Stop::Eof
}

fn mapped_json(e: &super::MappedError) -> Value {
    json!({
        "status": e.status,
        "upstream_status": e.upstream_status,
        "class": e.class.as_str(),
        "message": e.message,
        "retryable": e.retryable,
        "fallback": e.fallback,
        "body": e.to_openai_body(),
    })
}

/// The same upstream request (or the same error) as `built`, built another way (`how`).
fn same_request(
    built: &Result<super::UpstreamRequest, super::TranslateError>,
    other: Result<super::UpstreamRequest, super::TranslateError>,
    how: &str,
) -> Result<(), String> {
    let same = match (built, &other) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    };
    if same {
        return Ok(());
    }
    let body = |u: &super::UpstreamRequest| String::from_utf8_lossy(&u.body).into_owned();
    Err(format!(
        "{how}, the request differs: {:?} against {:?}",
        other.as_ref().map(body),
        built.as_ref().map(body),
    ))
}
