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
}

/// A URL template: literal text and `{placeholder}` holes.
#[derive(Debug, Clone)]
pub enum TmplPart {
    Lit(String),
    Ctx(CtxField),
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

/// Everything the interpreter needs for one provider.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub base_url: String,
    pub urls: Vec<CUrl>,
    pub method: String,
    pub auth: Auth,
    pub headers: Vec<(String, CTop)>,
    pub queries: Vec<(String, CTop)>,
    pub api_version: Option<String>,
    pub framing: Framing,
    pub fetch_images: FetchImages,
    pub tables: Vec<Table>,
    pub fns: Vec<CFn>,
    pub request: CBlock,
    pub request_passthrough: bool,
    pub response: Option<CBlock>,
    pub response_passthrough: bool,
    pub stream: CStream,
    pub errors: CErrors,
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
