//! Syntax tree of a provider file, as written. Every node keeps its byte span so
//! that the compiler can point at the exact text when it rejects something.

use serde_json::Value;

/// Byte range in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

#[derive(Debug, Clone)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Str {
    pub value: String,
    pub span: Span,
}

/// One parsed `.llmux` file.
#[derive(Debug, Clone)]
pub struct File {
    pub name: String,
    pub source: String,
    pub providers: Vec<ProviderDecl>,
}

#[derive(Debug, Clone)]
pub struct ProviderDecl {
    pub name: Ident,
    pub extends: Option<Ident>,
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum AuthDecl {
    Bearer,
    Header(Str),
    Query(Str),
    None,
    /// `aws_sigv4 "SERVICE"`.
    AwsSigV4(Str),
    /// `google_oauth ["PARAM"]`: the parameter holding a service-account JSON (or its path).
    GoogleOAuth(Option<Str>),
    /// `token_exchange "URL" grant "TYPE" key "FIELD"`.
    TokenExchange {
        url: Str,
        grant: Str,
        key: Str,
    },
}

/// `param NAME required` or `param NAME default "TEXT"`.
#[derive(Debug, Clone)]
pub struct ParamDecl {
    pub name: Ident,
    /// `None` for `required`.
    pub default: Option<Str>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Item {
    /// A deployment parameter the provider needs (`api_base`, `api_version`).
    Param(ParamDecl),
    BaseUrl(Str),
    /// `base_url when COND "TEMPLATE"`.
    BaseUrlWhen {
        cond: Expr,
        template: Str,
    },
    Url {
        cond: Option<Expr>,
        template: Str,
    },
    Method(Ident),
    Auth(AuthDecl, Span),
    Header {
        name: Str,
        value: Expr,
    },
    Query {
        name: Str,
        value: Expr,
    },
    ApiVersion(Str),
    Framing(Ident),
    /// Which image URLs the gateway must download (and inline as data URLs) before translation.
    FetchImages(Ident),
    /// The provider's OpenTelemetry name (`gen_ai.provider.name`).
    GenaiProvider(Str),
    Table(TableDecl),
    Fn(FnDecl),
    Request {
        passthrough: bool,
        body: Vec<Stmt>,
        span: Span,
    },
    Response {
        passthrough: bool,
        body: Vec<Stmt>,
        span: Span,
    },
    Stream(StreamDecl),
    Errors(ErrorsDecl),
    /// `fake_stream`.
    FakeStream(Span),
    /// `error_name "NAME"`.
    ErrorName(Str),
    /// `dispatch { "pattern" => provider [strip "prefix"], ... }`.
    Dispatch(Vec<DispatchRule>, Span),
}

#[derive(Debug, Clone)]
pub struct DispatchRule {
    /// `*` matches any text (`claude-*`, `*`).
    pub pattern: Str,
    pub target: Ident,
    /// Taken off the front of the model before it reaches the target.
    pub strip: Option<Str>,
}

#[derive(Debug, Clone)]
pub struct TableDecl {
    pub name: Ident,
    /// `(key, value)`; the key is `None` for the `_` default entry.
    pub entries: Vec<(Option<Value>, Value, Span)>,
}

#[derive(Debug, Clone)]
pub struct FnDecl {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Expr,
}

#[derive(Debug, Clone)]
pub struct StreamDecl {
    pub state: Vec<(Ident, Expr)>,
    pub handlers: Vec<Handler>,
    /// `on end [when COND] { ... }` hooks, in source order (their `event` is `None`).
    pub end_handlers: Vec<Handler>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Handler {
    /// `None` for `on _`.
    pub event: Option<Str>,
    pub cond: Option<Expr>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct ErrorsDecl {
    pub message: Option<Expr>,
    pub rules: Vec<ErrorRule>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct ErrorRule {
    pub cond: Expr,
    pub class: Ident,
    pub flags: Vec<(String, Span)>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    Let {
        name: Ident,
        value: Expr,
    },
    Assign {
        target: Vec<Str>,
        value: Expr,
        span: Span,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Vec<Stmt>,
    },
    Unsupported {
        params: Vec<Ident>,
        cond: Option<Expr>,
        span: Span,
    },
    Emit(Emit, Span),
    Done(Span),
    Raise(Expr, Span),
    /// `super`: the parent's block of the same kind.
    Super(Span),
}

#[derive(Debug, Clone)]
pub enum Emit {
    Delta { delta: Expr, finish: Option<Expr> },
    Finish(Expr),
    Usage(Expr),
    Chunk(Expr),
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `a ~ b`: case-insensitive substring test.
    Like,
    In,
    NotIn,
    And,
    Or,
    Coalesce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone)]
pub enum Pattern {
    Const(Value),
    /// `string`, `number`, `boolean`, `array`, `object`.
    Type(String),
    Absent,
    Wildcard,
}

#[derive(Debug, Clone)]
pub struct MatchArm {
    pub patterns: Vec<(Pattern, Span)>,
    pub value: Expr,
}

#[derive(Debug, Clone)]
pub enum ObjEntry {
    Field(Str, Expr),
    Spread(Expr),
}

#[derive(Debug, Clone)]
pub enum ArrEntry {
    Item(Expr),
    Spread(Expr),
}

#[derive(Debug, Clone)]
pub enum ExprKind {
    Lit(Value),
    Omit,
    Var(String),
    Field(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
    Lambda {
        param: Ident,
        body: Box<Expr>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        els: Option<Box<Expr>>,
    },
    Match {
        scrutinee: Box<Expr>,
        arms: Vec<MatchArm>,
    },
    Object(Vec<ObjEntry>),
    Array(Vec<ArrEntry>),
}
