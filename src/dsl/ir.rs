//! The compiled form of a provider: every name, path, function and table is
//! resolved to an index or a pre-built key, so the interpreter never looks
//! anything up by name on the request path.

use std::collections::HashMap;

use serde_json::Value;

use super::ast::{BinOp, Span};
use super::builtins::Builtin;
use super::error::ErrorClass;
use super::framing::Framing;
use super::schema::CtxField;

#[derive(Debug, Clone)]
pub enum CExpr {
    Const(Value),
    Omit,
    /// Top-level request field by id (honours dropped parameters).
    Req(u8),
    /// A non-OpenAI field of the request body (`extra.top_k`; `extra.<OpenAI field>` is
    /// compiled to `Omit`).
    Extra(String),
    Ctx(CtxField),
    /// `ctx.params.NAME`: a declared deployment parameter, by its index in `Program::params`.
    CtxParam(usize),
    /// The upstream response's headers, an object of lowercase names (`headers["retry-after"]`).
    Headers,
    Res,
    Ev,
    /// SSE event name of the current stream event.
    Event,
    Status,
    Text,
    Local(usize),
    State(usize),
    /// `base.a.b[0]` with constant segments, walked in one go.
    Path(Box<CExpr>, Vec<Seg>),
    Index(Box<CExpr>, Box<CExpr>),
    Builtin(Builtin, Vec<CExpr>, Span),
    UserFn(usize, Vec<CExpr>),
    Lambda(usize, Box<CExpr>),
    FnRef(usize),
    TableRef(usize),
    Neg(Box<CExpr>),
    Not(Box<CExpr>),
    Bin(BinOp, Box<CExpr>, Box<CExpr>, Span),
    If(Box<CExpr>, Box<CExpr>, Option<Box<CExpr>>),
    Match(Box<CExpr>, Vec<(Vec<CPattern>, CExpr)>),
    Object(Vec<CObj>),
    Array(Vec<CArr>),
    /// A call whose value is the deployment's, kept in its `Memo` slot (see `memo`).
    Memo(usize, Box<CExpr>),
}

impl CExpr {
    /// Calls `f` on each direct sub-expression.
    pub fn for_each_child<'s>(&'s mut self, f: &mut impl FnMut(&'s mut CExpr)) {
        match self {
            CExpr::Const(_)
            | CExpr::Omit
            | CExpr::Req(_)
            | CExpr::Extra(_)
            | CExpr::Ctx(_)
            | CExpr::CtxParam(_)
            | CExpr::Res
            | CExpr::Ev
            | CExpr::Event
            | CExpr::Status
            | CExpr::Headers
            | CExpr::Text
            | CExpr::Local(_)
            | CExpr::State(_)
            | CExpr::FnRef(_)
            | CExpr::TableRef(_) => {}
            CExpr::Path(x, _)
            | CExpr::Neg(x)
            | CExpr::Not(x)
            | CExpr::Lambda(_, x)
            | CExpr::Memo(_, x) => f(x),
            CExpr::Index(a, b) | CExpr::Bin(_, a, b, _) => {
                f(a);
                f(b);
            }
            CExpr::Builtin(_, args, _) | CExpr::UserFn(_, args) => args.iter_mut().for_each(f),
            CExpr::If(c, t, e) => {
                f(c);
                f(t);
                if let Some(e) = e {
                    f(e);
                }
            }
            CExpr::Match(x, arms) => {
                f(x);
                arms.iter_mut().for_each(|(_, v)| f(v));
            }
            CExpr::Object(entries) => entries.iter_mut().for_each(|en| match en {
                CObj::Field(_, v) | CObj::Spread(v) => f(v),
            }),
            CExpr::Array(entries) => entries.iter_mut().for_each(|en| match en {
                CArr::Item(v) | CArr::Spread(v) => f(v),
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Seg {
    Key(String),
    Idx(usize),
}

#[derive(Debug, Clone)]
pub enum CPattern {
    Const(Value),
    String,
    Number,
    Boolean,
    Array,
    Object,
    Absent,
    Any,
}

#[derive(Debug, Clone)]
pub enum CObj {
    Field(String, CExpr),
    Spread(CExpr),
}

#[derive(Debug, Clone)]
pub enum CArr {
    Item(CExpr),
    Spread(CExpr),
}

#[derive(Debug, Clone)]
pub enum CStmt {
    Let(usize, CExpr),
    /// Set a (nested) field of the output object.
    Set(Vec<String>, CExpr),
    /// Set a stream state variable, or a field inside it.
    SetState(usize, Vec<String>, CExpr),
    If(CExpr, Vec<CStmt>, Vec<CStmt>),
    /// `unsupported a, b when cond`: (field id, field name) pairs.
    Unsupported(Vec<(u8, String)>, Option<CExpr>),
    EmitDelta(CExpr, Option<CExpr>),
    EmitUsage(CExpr),
    EmitChunk(CExpr),
    Done,
    Raise(CExpr),
    /// `super`: run `Program::supers[i]` in a frame of its own, into the same output.
    Super(usize),
    /// `super` in a stream handler: the first handler of `CStream::parents[level]` that
    /// matches the event (its end hooks when `end`).
    SuperStream {
        level: usize,
        end: bool,
    },
}

impl CStmt {
    /// Calls `f` on each expression of the statement, those of nested statements included.
    pub fn for_each_expr<'s>(&'s mut self, f: &mut impl FnMut(&'s mut CExpr)) {
        match self {
            CStmt::Let(_, e)
            | CStmt::Set(_, e)
            | CStmt::SetState(_, _, e)
            | CStmt::EmitUsage(e)
            | CStmt::EmitChunk(e)
            | CStmt::Raise(e) => f(e),
            CStmt::If(c, t, e) => {
                f(c);
                for s in t.iter_mut().chain(e) {
                    s.for_each_expr(f);
                }
            }
            CStmt::Unsupported(_, c) => {
                if let Some(c) = c {
                    f(c);
                }
            }
            CStmt::EmitDelta(d, fin) => {
                f(d);
                if let Some(fin) = fin {
                    f(fin);
                }
            }
            CStmt::Done | CStmt::Super(_) | CStmt::SuperStream { .. } => {}
        }
    }
}

/// A statement list with the number of local slots its frame needs.
#[derive(Debug, Clone, Default)]
pub struct CBlock {
    pub stmts: Vec<CStmt>,
    pub slots: usize,
}

/// A stand-alone expression with its frame size.
#[derive(Debug, Clone)]
pub struct CTop {
    pub expr: CExpr,
    pub slots: usize,
}

#[derive(Debug, Clone)]
pub struct CFn {
    pub name: String,
    pub params: usize,
    pub slots: usize,
    pub body: CExpr,
    /// Evaluation levels the body takes (`recursion::depth`), charged per call against the
    /// interpreter's stack budget; set once the program's passes are done.
    pub depth: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub name: String,
    pub map: HashMap<String, Value>,
    pub default: Option<Value>,
}

impl Table {
    /// Tables are keyed by the text of a scalar: strings by their content,
    /// numbers and booleans by their JSON spelling.
    pub fn key_of(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn get(&self, key: &Value) -> Option<&Value> {
        let hit = match key {
            Value::String(s) => self.map.get(s.as_str()),
            other => Self::key_of(other).and_then(|k| self.map.get(&k)),
        };
        hit.or(self.default.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Bearer,
    Header(String),
    Query(String),
    None,
    /// AWS Signature V4 for this service, over the exact body; a deployment with an
    /// `api_key` (a Bedrock API key) is sent it as a bearer token instead.
    AwsSigV4 {
        service: String,
    },
    /// A Google OAuth2 access token (service account, metadata server) as a bearer token;
    /// `credentials_param` names the parameter holding a service-account JSON or its path.
    GoogleOAuth {
        credentials_param: Option<String>,
    },
    /// The deployment's `api_key` exchanged at `url` (a template over `ctx` fields and
    /// parameters) for a bearer token: a form with this `grant_type` and the key in `key_field`.
    TokenExchange {
        url: Vec<TmplPart>,
        grant: String,
        key_field: String,
    },
}

/// A URL template: literal text and `{placeholder}` holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmplPart {
    Lit(String),
    /// `{field}`, or `{+field}` (`raw`: keeps `/`).
    Ctx(CtxField, bool),
    /// `{name}` / `{+name}` of a declared parameter, by its index in `Program::params`.
    Param(usize, bool),
}

#[derive(Debug, Clone)]
pub struct CUrl {
    pub cond: Option<CTop>,
    pub parts: Vec<TmplPart>,
}

#[derive(Debug, Clone)]
pub struct CHandler {
    pub event: Option<String>,
    pub cond: Option<CExpr>,
    pub body: CBlock,
}

#[derive(Debug, Clone, Default)]
pub struct CStream {
    /// Initial values of the state variables, in slot order. Slots 0..3 are the
    /// built-in `id`, `model` and `created`.
    pub init: Vec<CTop>,
    pub names: Vec<String>,
    pub handlers: Vec<CHandler>,
    /// `on end` hooks, tried in order at the upstream's EOF (`event` is always `None`).
    pub end_handlers: Vec<CHandler>,
    /// Ancestors' stream blocks, root first, that `super` in a handler runs: the handler of
    /// the level below that matches the same event (an end hook's `super`: its end hooks).
    pub parents: Vec<(Vec<CHandler>, Vec<CHandler>)>,
}

#[derive(Debug, Clone)]
pub struct CRule {
    pub cond: CTop,
    pub class: ErrorClass,
    pub retry: Option<bool>,
    pub fallback: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct CErrors {
    pub message: Option<CTop>,
    pub rules: Vec<CRule>,
}

/// A deployment parameter a provider file declares (`param NAME required|default "TEXT"`, or
/// the older spellings `base_url` and `api_version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// `None`: every deployment must give it.
    pub default: Option<String>,
    /// `default` as a JSON string, for `ctx.params.NAME` to borrow.
    pub default_value: Option<serde_json::Value>,
}

/// Everything the interpreter needs for one provider.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    /// Declared deployment parameters, in name order. `base_url` and `api_version` below are
    /// the defaults of `api_base` and `api_version` taken from them.
    pub params: Vec<Param>,
    pub base_url: String,
    /// `base_url` as a template (`{name}` placeholders); empty when there is none.
    pub base_tmpl: Vec<TmplPart>,
    /// `base_url when COND "..."`: the first whose condition holds is the base when the
    /// deployment gives no `api_base`.
    pub bases: Vec<CUrl>,
    pub urls: Vec<CUrl>,
    pub method: String,
    pub auth: Auth,
    pub headers: Vec<(String, CTop)>,
    pub queries: Vec<(String, CTop)>,
    pub api_version: Option<String>,
    pub framing: Framing,
    pub fetch_images: FetchImages,
    /// `gen_ai.provider.name` when it is not the provider's name.
    pub genai_provider: Option<String>,
    pub tables: Vec<Table>,
    pub fns: Vec<CFn>,
    pub request: CBlock,
    /// Ancestors' `request` and `response` blocks that a `super` runs.
    pub supers: Vec<CBlock>,
    pub request_passthrough: bool,
    pub response: Option<CBlock>,
    pub response_passthrough: bool,
    pub stream: CStream,
    pub errors: CErrors,
    /// `error_name "NAME"`: the label of its errors (`NAMEException`).
    pub error_name: Option<String>,
    /// `fake_stream`: streams are one whole upstream call replayed as chunks.
    pub fake_stream: bool,
    /// A dispatching provider's rules (and nothing else is used).
    pub dispatch: Vec<DispatchRoute>,
    /// Slots of a deployment's `Memo` (`CExpr::Memo`), set by `memo::memoize`.
    pub memo_slots: usize,
}

/// One `dispatch` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRoute {
    pub pattern: String,
    pub target: String,
    pub strip: Option<String>,
}

impl DispatchRoute {
    /// The target and the model it receives, when `model` matches.
    pub fn route<'m>(&self, model: &'m str) -> Option<(&str, &'m str)> {
        if !glob_match(&self.pattern, model) {
            return None;
        }
        let model = match &self.strip {
            Some(p) => model.strip_prefix(p.as_str()).unwrap_or(model),
            None => model,
        };
        Some((self.target.as_str(), model))
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Program {
    /// Every frame of the program (`fn` bodies, blocks, handlers, whose `when` shares the
    /// handler's frame, and stand-alone expressions) as its slot count and the expressions
    /// evaluated in it.
    pub fn frames(&mut self) -> Vec<(&mut usize, Vec<&mut CExpr>)> {
        fn block<'s>(
            b: &'s mut CBlock,
            first: Option<&'s mut CExpr>,
        ) -> (&'s mut usize, Vec<&'s mut CExpr>) {
            let mut exprs: Vec<&'s mut CExpr> = first.into_iter().collect();
            for s in &mut b.stmts {
                s.for_each_expr(&mut |e| exprs.push(e));
            }
            (&mut b.slots, exprs)
        }
        fn top(t: &mut CTop) -> (&mut usize, Vec<&mut CExpr>) {
            (&mut t.slots, vec![&mut t.expr])
        }
        let mut out: Vec<_> = (self.fns.iter_mut())
            .map(|f| (&mut f.slots, vec![&mut f.body]))
            .collect();
        out.push(block(&mut self.request, None));
        for b in &mut self.supers {
            out.push(block(b, None));
        }
        out.extend(self.response.as_mut().map(|b| block(b, None)));
        for h in (self.stream.handlers.iter_mut()).chain(self.stream.end_handlers.iter_mut()) {
            out.push(block(&mut h.body, h.cond.as_mut()));
        }
        for (hs, ends) in &mut self.stream.parents {
            for h in hs.iter_mut().chain(ends.iter_mut()) {
                out.push(block(&mut h.body, h.cond.as_mut()));
            }
        }
        out.extend(self.stream.init.iter_mut().map(top));
        out.extend(self.errors.message.as_mut().map(top));
        out.extend(self.errors.rules.iter_mut().map(|r| top(&mut r.cond)));
        out.extend((self.headers.iter_mut().chain(self.queries.iter_mut())).map(|(_, t)| top(t)));
        out.extend(
            (self.urls.iter_mut().chain(self.bases.iter_mut()))
                .filter_map(|u| u.cond.as_mut())
                .map(top),
        );
        out
    }
}

/// Image URLs in the request that the gateway must download and inline (as `data:` URLs)
/// before the request is translated, because the provider cannot take them by reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FetchImages {
    /// The provider takes image URLs as they are.
    #[default]
    None,
    /// Only `http://` URLs (the provider fetches `https://` itself).
    Http,
    /// Every `http://` and `https://` URL.
    All,
}

impl FetchImages {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "http" => Some(Self::Http),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Whether a URL with this scheme must be fetched.
    pub fn wants(self, url: &str) -> bool {
        let lower = url
            .get(..8)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match self {
            Self::None => false,
            Self::Http => lower.starts_with("http://"),
            Self::All => lower.starts_with("http://") || lower.starts_with("https://"),
        }
    }
}

/// Whether `e` reads the response headers anywhere.
pub fn mentions_headers(e: &mut CExpr) -> bool {
    if matches!(e, CExpr::Headers) {
        return true;
    }
    let mut found = false;
    e.for_each_child(&mut |c| found |= mentions_headers(c));
    found
}

/// What a program reads of the client's request: top-level OpenAI fields by id (`req.*`, and
/// those an `unsupported` rule checks), and whether it reads any other member (`extra.*`).
/// With no `extra` read, the fields in `fields` are all the request it sees: the rest of the
/// body need not be parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestReads {
    pub fields: u64,
    pub extra: bool,
}

impl RequestReads {
    /// Every expression and `unsupported` rule of `prog` (the expressions of every frame, so
    /// a read anywhere counts, whatever block it is in).
    pub fn of(prog: &mut Program) -> Self {
        fn expr(e: &CExpr, r: &mut RequestReads) {
            match e {
                CExpr::Req(id) => r.fields |= 1 << id,
                CExpr::Extra(_) => r.extra = true,
                _ => {}
            }
            super::recursion::for_each_child(e, |c| expr(c, r));
        }
        fn stmts(s: &[CStmt], r: &mut RequestReads) {
            for s in s {
                match s {
                    CStmt::Unsupported(params, _) => {
                        for (id, _) in params {
                            r.fields |= 1 << id;
                        }
                    }
                    CStmt::If(_, t, e) => {
                        stmts(t, r);
                        stmts(e, r);
                    }
                    _ => {}
                }
            }
        }
        let mut r = RequestReads::default();
        stmts(&prog.request.stmts, &mut r);
        for b in &prog.supers {
            stmts(&b.stmts, &mut r);
        }
        for (_, exprs) in prog.frames() {
            for e in exprs {
                expr(e, &mut r);
            }
        }
        r
    }

    pub fn reads(&self, id: u8) -> bool {
        id < 64 && self.fields & (1 << id) != 0
    }
}
