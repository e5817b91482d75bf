//! pest grammar binding and the conversion of its parse tree into the AST.

use pest::iterators::Pair;
use pest::Parser;
use serde_json::Value;

use super::ast::*;
use super::error::LoadError;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/provider.pest"]
struct ProviderParser;

/// Parse one file. A syntax error stops at its first problem (pest cannot
/// resynchronise), so the result holds at most one error per file.
pub fn parse_file(name: &str, source: &str) -> Result<File, LoadError> {
    let mut pairs =
        ProviderParser::parse(Rule::file, source).map_err(|e| syntax_error(name, source, e))?;
    let file_pair = pairs
        .next()
        .ok_or_else(|| LoadError::file(name, "empty parse"))?;
    check_nesting(name, source, &file_pair)?;
    let mut providers = Vec::new();
    for p in file_pair.into_inner() {
        if p.as_rule() == Rule::provider {
            providers.push(provider(p));
        }
    }
    Ok(File {
        name: name.to_string(),
        source: source.to_string(),
        providers,
    })
}

/// Deepest nesting a file may have: parse-tree levels plus the length of each operator
/// chain (`a + b + ...`, `x.a.b...`, `x | f | g`, `not not ...`), since every link of a
/// chain is one more level of the AST. The AST conversion, the compiler and the
/// interpreter all recurse on that depth, and pest itself parses as deep as the stack
/// allows, so without this bound a deeply nested file overflows the stack (and aborts the
/// process, e.g. on hot reload) instead of failing to load. The shipped providers need
/// well under a quarter of it.
pub(crate) const MAX_NESTING: usize = 1000;

/// Rejects a parse tree deeper than [`MAX_NESTING`]; iterative, so it cannot overflow.
fn check_nesting(name: &str, source: &str, root: &Pair<Rule>) -> Result<(), LoadError> {
    let mut stack = vec![(root.clone(), 0usize)];
    while let Some((p, depth)) = stack.pop() {
        let chain = matches!(
            p.as_rule(),
            Rule::coalesce
                | Rule::or_expr
                | Rule::and_expr
                | Rule::not_expr
                | Rule::pipe_expr
                | Rule::add_expr
                | Rule::mul_expr
                | Rule::unary
                | Rule::postfix
        );
        let inner = p.clone().into_inner();
        let depth = depth + 1 + if chain { inner.clone().count() } else { 0 };
        if depth > MAX_NESTING {
            return Err(LoadError::at(
                name,
                source,
                span_of(&p),
                format!("nested too deeply (the limit is {MAX_NESTING} levels)"),
            ));
        }
        stack.extend(inner.map(|c| (c, depth)));
    }
    Ok(())
}

fn syntax_error(name: &str, source: &str, e: pest::error::Error<Rule>) -> LoadError {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let found = source
        .get(pos.min(source.len())..)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|w| format!("`{}`", w.chars().take(24).collect::<String>()))
        .unwrap_or_else(|| "end of file".to_string());
    let msg = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<String> = positives.iter().map(|r| rule_name(*r)).collect();
            names.sort();
            names.dedup();
            match names.len() {
                0 => format!("syntax error: unexpected {found}"),
                1..=6 => format!(
                    "syntax error: expected {}, found {found}",
                    names.join(" or ")
                ),
                _ => format!("syntax error: unexpected {found}"),
            }
        }
        pest::error::ErrorVariant::CustomError { message } => format!("syntax error: {message}"),
    };
    LoadError::at(name, source, Span::new(pos, pos + 1), msg)
}

const AUTH_FORMS: &str = "an auth scheme (bearer, header \"NAME\", query \"NAME\", none, aws_sigv4 \"SERVICE\", google_oauth [\"PARAM\"], token_exchange \"URL\" grant \"TYPE\" key \"FIELD\")";

/// The keywords that start an auth scheme (pest reports them one by one).
const AUTH_KEYWORDS: &[&str] = &[
    "bearer",
    "none",
    "aws_sigv4",
    "google_oauth",
    "token_exchange",
];

const ITEM_KEYWORDS: &[&str] = &[
    "param",
    "base_url",
    "url",
    "method",
    "auth",
    "header",
    "query",
    "api_version",
    "framing",
    "fetch_images",
    "genai_provider",
    "fake_stream",
    "error_name",
    "dispatch",
    "table",
    "fn",
    "request",
    "response",
    "stream",
    "errors",
];
const STMT_KEYWORDS: &[&str] = &["let", "if", "unsupported", "emit", "done", "raise"];

/// Friendly names for the rules pest reports as "expected".
fn rule_name(r: Rule) -> String {
    let dbg = format!("{r:?}");
    if let Some(word) = dbg.strip_prefix("kw_") {
        if AUTH_KEYWORDS.contains(&word) {
            return AUTH_FORMS.into();
        }
        if ITEM_KEYWORDS.contains(&word) {
            return "a provider item (base_url, url, auth, header, request, ...)".into();
        }
        if STMT_KEYWORDS.contains(&word) {
            return "a statement".into();
        }
        return format!("`{word}`");
    }
    rule_label(r).to_string()
}

fn rule_label(r: Rule) -> &'static str {
    match r {
        Rule::EOI => "end of file",
        Rule::provider => "`provider`",
        Rule::ident => "a name",
        Rule::field_name => "a field name",
        Rule::string | Rule::string_inner | Rule::string_char => "a string",
        Rule::number | Rule::signed_number => "a number",
        Rule::expr
        | Rule::coalesce
        | Rule::or_expr
        | Rule::and_expr
        | Rule::not_expr
        | Rule::not_op
        | Rule::cmp_expr
        | Rule::pipe_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary
        | Rule::neg
        | Rule::postfix
        | Rule::literal
        | Rule::call
        | Rule::callee
        | Rule::lambda
        | Rule::object
        | Rule::array
        | Rule::if_expr
        | Rule::match_expr
        | Rule::omit => "an expression",
        Rule::cmp_op | Rule::not_in => "a comparison",
        Rule::add_op | Rule::mul_op | Rule::pipe => "an operator",
        Rule::pipe_target => "a function after `|`",
        Rule::field_access | Rule::index_access => "`.field` or `[index]`",
        Rule::block => "`{`",
        Rule::assign_stmt | Rule::target | Rule::key => "a field name",
        Rule::let_stmt
        | Rule::if_stmt
        | Rule::unsupported_stmt
        | Rule::emit_stmt
        | Rule::done_stmt
        | Rule::super_stmt
        | Rule::raise_stmt => "a statement",
        Rule::param_item
        | Rule::base_url_item
        | Rule::url_item
        | Rule::method_item
        | Rule::auth_item
        | Rule::header_item
        | Rule::query_item
        | Rule::api_version_item
        | Rule::framing_item
        | Rule::fetch_images_item
        | Rule::genai_provider_item
        | Rule::dispatch_item
        | Rule::fake_stream_item
        | Rule::error_name_item
        | Rule::table_item
        | Rule::fn_item
        | Rule::request_item
        | Rule::response_item
        | Rule::stream_item
        | Rule::errors_item => "a provider item (base_url, url, auth, header, request, ...)",
        Rule::param_required | Rule::param_default => "`required` or `default \"...\"`",
        Rule::auth_bearer
        | Rule::auth_header
        | Rule::auth_query
        | Rule::auth_none
        | Rule::auth_sigv4
        | Rule::auth_google
        | Rule::auth_exchange => AUTH_FORMS,
        Rule::table_entry | Rule::table_key => "a table entry (`\"key\" => value`)",
        Rule::const_value => "a constant",
        Rule::state_decl => "`state`",
        Rule::handler | Rule::end_handler => "`on`",
        Rule::message_decl => "`message`",
        Rule::error_rule => "`when`",
        Rule::error_flag => "retry, no_retry, fallback or no_fallback",
        Rule::match_arm | Rule::pattern | Rule::type_pattern => "a match arm",
        Rule::obj_entry => "an object field (`name: value`)",
        Rule::arr_entry => "a list item",
        Rule::spread => "`...`",
        Rule::wildcard => "`_`",
        Rule::extends => "`extends`",
        Rule::passthrough => "`passthrough`",
        _ => "a token",
    }
}

fn span_of(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(&p),
    }
}

/// Unescape a string token (the grammar only admits JSON escapes).
fn string(p: Pair<Rule>) -> Str {
    let span = span_of(&p);
    let value = serde_json::from_str::<String>(p.as_str())
        .unwrap_or_else(|_| p.as_str().trim_matches('"').to_string());
    Str { value, span }
}

fn key(p: Pair<Rule>) -> Str {
    // key = { ident | field_name | string }
    match p.clone().into_inner().next() {
        Some(inner) if inner.as_rule() == Rule::string => string(inner),
        Some(inner) => Str {
            value: inner.as_str().to_string(),
            span: span_of(&inner),
        },
        None => Str {
            value: p.as_str().to_string(),
            span: span_of(&p),
        },
    }
}

fn number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn const_value(p: Pair<Rule>) -> Value {
    let inner = p.into_inner().next();
    match inner {
        Some(i) => match i.as_rule() {
            Rule::string => Value::String(string(i).value),
            Rule::signed_number | Rule::number => number(i.as_str()),
            Rule::kw_true => Value::Bool(true),
            Rule::kw_false => Value::Bool(false),
            _ => Value::Null,
        },
        None => Value::Null,
    }
}

fn provider(p: Pair<Rule>) -> ProviderDecl {
    let span = span_of(&p);
    let mut name = None;
    let mut extends = None;
    let mut items = Vec::new();
    for c in p.into_inner() {
        match c.as_rule() {
            Rule::ident => name = Some(ident(c)),
            Rule::extends => {
                extends = c
                    .into_inner()
                    .find(|x| x.as_rule() == Rule::ident)
                    .map(ident)
            }
            Rule::kw_provider => {}
            _ => {
                if let Some(item) = item(c) {
                    items.push(item);
                }
            }
        }
    }
    ProviderDecl {
        name: name.unwrap_or(Ident {
            name: String::new(),
            span,
        }),
        extends,
        items,
        span,
    }
}

/// Children of `p` without keyword tokens.
fn parts(p: Pair<Rule>) -> Vec<Pair<Rule>> {
    p.into_inner()
        .filter(|c| !is_keyword(c.as_rule()))
        .collect()
}

fn is_keyword(r: Rule) -> bool {
    format!("{r:?}").starts_with("kw_")
}

fn item(p: Pair<Rule>) -> Option<Item> {
    let span = span_of(&p);
    let rule = p.as_rule();
    let mut ps = parts(p).into_iter();
    Some(match rule {
        Rule::param_item => {
            let name = ident(ps.next()?);
            let how = ps.next()?;
            let default = match how.as_rule() {
                Rule::param_default => Some(string(parts(how).into_iter().next()?)),
                _ => None,
            };
            Item::Param(ParamDecl {
                name,
                default,
                span,
            })
        }
        Rule::base_url_item => {
            let a = ps.next()?;
            if a.as_rule() == Rule::expr {
                Item::BaseUrlWhen {
                    cond: expr(a),
                    template: string(ps.next()?),
                }
            } else {
                Item::BaseUrl(string(a))
            }
        }
        Rule::url_item => {
            let a = ps.next()?;
            if a.as_rule() == Rule::expr {
                Item::Url {
                    cond: Some(expr(a)),
                    template: string(ps.next()?),
                }
            } else {
                Item::Url {
                    cond: None,
                    template: string(a),
                }
            }
        }
        Rule::method_item => Item::Method(ident(ps.next()?)),
        Rule::auth_item => {
            let a = ps.next()?;
            let decl = match a.as_rule() {
                Rule::auth_bearer => AuthDecl::Bearer,
                Rule::auth_header => AuthDecl::Header(string(parts(a).into_iter().next()?)),
                Rule::auth_query => AuthDecl::Query(string(parts(a).into_iter().next()?)),
                Rule::auth_sigv4 => AuthDecl::AwsSigV4(string(parts(a).into_iter().next()?)),
                Rule::auth_google => AuthDecl::GoogleOAuth(parts(a).into_iter().next().map(string)),
                Rule::auth_exchange => {
                    let mut xs = parts(a).into_iter();
                    let url = string(xs.next()?);
                    let grant = string(xs.next()?);
                    let key = string(xs.next()?);
                    AuthDecl::TokenExchange { url, grant, key }
                }
                _ => AuthDecl::None,
            };
            Item::Auth(decl, span)
        }
        Rule::header_item => Item::Header {
            name: string(ps.next()?),
            value: expr(ps.next()?),
        },
        Rule::query_item => Item::Query {
            name: string(ps.next()?),
            value: expr(ps.next()?),
        },
        Rule::api_version_item => Item::ApiVersion(string(ps.next()?)),
        Rule::framing_item => Item::Framing(ident(ps.next()?)),
        Rule::fetch_images_item => Item::FetchImages(ident(ps.next()?)),
        Rule::genai_provider_item => Item::GenaiProvider(string(ps.next()?)),
        Rule::fake_stream_item => Item::FakeStream(span),
        Rule::error_name_item => Item::ErrorName(string(ps.next()?)),
        Rule::dispatch_item => {
            let mut rules = Vec::new();
            for r in ps {
                let mut rp = parts(r).into_iter();
                let pattern = string(rp.next()?);
                let target = ident(rp.next()?);
                let strip = rp.next().map(string);
                rules.push(DispatchRule {
                    pattern,
                    target,
                    strip,
                });
            }
            Item::Dispatch(rules, span)
        }
        Rule::table_item => {
            let name = ident(ps.next()?);
            let entries = ps
                .filter(|e| e.as_rule() == Rule::table_entry)
                .filter_map(|e| {
                    let espan = span_of(&e);
                    let mut it = e.into_inner();
                    let k = it.next()?;
                    let v = it.next()?;
                    let key = if k.as_rule() == Rule::wildcard {
                        None
                    } else {
                        Some(const_value(k))
                    };
                    Some((key, const_value(v), espan))
                })
                .collect();
            Item::Table(TableDecl { name, entries })
        }
        Rule::fn_item => {
            let name = ident(ps.next()?);
            let params = ps.next()?.into_inner().map(ident).collect();
            let body = expr(ps.next()?);
            Item::Fn(FnDecl { name, params, body })
        }
        Rule::request_item | Rule::response_item => {
            let mut passthrough = false;
            let mut body = Vec::new();
            for c in ps {
                match c.as_rule() {
                    Rule::passthrough => passthrough = true,
                    Rule::block => body = block(c),
                    _ => {}
                }
            }
            if rule == Rule::request_item {
                Item::Request {
                    passthrough,
                    body,
                    span,
                }
            } else {
                Item::Response {
                    passthrough,
                    body,
                    span,
                }
            }
        }
        Rule::stream_item => {
            let mut state = Vec::new();
            let mut handlers = Vec::new();
            let mut end_handlers = Vec::new();
            for c in ps {
                match c.as_rule() {
                    Rule::state_decl => {
                        let mut it = parts(c).into_iter();
                        if let (Some(n), Some(v)) = (it.next(), it.next()) {
                            state.push((ident(n), expr(v)));
                        }
                    }
                    Rule::handler => handlers.push(handler(c)),
                    // Same shape as a handler with no event name (`kw_end` is skipped).
                    Rule::end_handler => end_handlers.push(handler(c)),
                    _ => {}
                }
            }
            Item::Stream(StreamDecl {
                state,
                handlers,
                end_handlers,
                span,
            })
        }
        Rule::errors_item => {
            let mut message = None;
            let mut rules = Vec::new();
            for c in ps {
                match c.as_rule() {
                    Rule::message_decl => message = parts(c).into_iter().next().map(expr),
                    Rule::error_rule => {
                        let rspan = span_of(&c);
                        let mut it = parts(c).into_iter();
                        let cond = expr(it.next()?);
                        let class = ident(it.next()?);
                        let flags = it.map(|f| (f.as_str().to_string(), span_of(&f))).collect();
                        rules.push(ErrorRule {
                            cond,
                            class,
                            flags,
                            span: rspan,
                        });
                    }
                    _ => {}
                }
            }
            Item::Errors(ErrorsDecl {
                message,
                rules,
                span,
            })
        }
        _ => {
            return None;
        }
    })
}

fn handler(p: Pair<Rule>) -> Handler {
    let span = span_of(&p);
    let mut event = None;
    let mut cond = None;
    let mut body = Vec::new();
    for c in parts(p) {
        match c.as_rule() {
            Rule::string => event = Some(string(c)),
            Rule::expr => cond = Some(expr(c)),
            Rule::block => body = block(c),
            _ => {}
        }
    }
    Handler {
        event,
        cond,
        body,
        span,
    }
}

fn block(p: Pair<Rule>) -> Vec<Stmt> {
    p.into_inner().filter_map(stmt).collect()
}

fn stmt(p: Pair<Rule>) -> Option<Stmt> {
    let span = span_of(&p);
    let rule = p.as_rule();
    let mut ps = parts(p).into_iter();
    Some(match rule {
        Rule::let_stmt => Stmt::Let {
            name: ident(ps.next()?),
            value: expr(ps.next()?),
        },
        Rule::assign_stmt => {
            let target = ps.next()?.into_inner().map(key).collect();
            Stmt::Assign {
                target,
                value: expr(ps.next()?),
                span,
            }
        }
        Rule::if_stmt => {
            let cond = expr(ps.next()?);
            let then = block(ps.next()?);
            let els = match ps.next() {
                Some(e) if e.as_rule() == Rule::block => block(e),
                Some(e) => stmt(e).into_iter().collect(),
                None => Vec::new(),
            };
            Stmt::If { cond, then, els }
        }
        Rule::unsupported_stmt => {
            let mut params = Vec::new();
            let mut cond = None;
            for c in ps {
                match c.as_rule() {
                    Rule::ident => params.push(ident(c)),
                    Rule::expr => cond = Some(expr(c)),
                    _ => {}
                }
            }
            Stmt::Unsupported { params, cond, span }
        }
        Rule::emit_stmt => {
            let e = ps.next()?;
            let emit = match e.as_rule() {
                Rule::emit_delta => {
                    let mut it = parts(e).into_iter();
                    let delta = expr(it.next()?);
                    let finish = it.next().map(expr);
                    Emit::Delta { delta, finish }
                }
                Rule::emit_finish => Emit::Finish(expr(parts(e).into_iter().next()?)),
                Rule::emit_usage => Emit::Usage(expr(parts(e).into_iter().next()?)),
                _ => Emit::Chunk(expr(e)),
            };
            Stmt::Emit(emit, span)
        }
        Rule::done_stmt => Stmt::Done(span),
        Rule::super_stmt => Stmt::Super(span),
        Rule::raise_stmt => Stmt::Raise(expr(ps.next()?), span),
        _ => return None,
    })
}

fn mk(kind: ExprKind, span: Span) -> Expr {
    Expr { kind, span }
}

fn join(a: &Expr, b: &Expr) -> Span {
    Span::new(a.span.start, b.span.end)
}

/// Left-assoc chain `operand (op operand)*` where `op` maps a token to a BinOp.
fn binary_chain(p: Pair<Rule>, sub: fn(Pair<Rule>) -> Expr) -> Expr {
    let span = span_of(&p);
    let mut it = p.into_inner().peekable();
    let mut lhs = match it.next() {
        Some(first) => sub(first),
        None => return mk(ExprKind::Omit, span),
    };
    while let Some(op) = it.next() {
        let bop = match op.as_rule() {
            Rule::kw_or => BinOp::Or,
            Rule::kw_and => BinOp::And,
            Rule::add_op if op.as_str() == "+" => BinOp::Add,
            Rule::add_op => BinOp::Sub,
            Rule::mul_op => match op.as_str() {
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                _ => BinOp::Rem,
            },
            _ => {
                // `??` is an anonymous token, so `op` is already the next operand.
                let rhs = sub(op);
                let s = join(&lhs, &rhs);
                lhs = mk(
                    ExprKind::Binary(BinOp::Coalesce, Box::new(lhs), Box::new(rhs)),
                    s,
                );
                continue;
            }
        };
        let Some(r) = it.next() else { break };
        let rhs = sub(r);
        let s = join(&lhs, &rhs);
        lhs = mk(ExprKind::Binary(bop, Box::new(lhs), Box::new(rhs)), s);
    }
    lhs
}

/// Skips the precedence levels that hold a single operand (`expr` → `coalesce` → ... →
/// `postfix`, about ten per parenthesis): converting them is the identity, and recursing
/// through each one took so much stack per nesting level that a few dozen parentheses
/// overflowed a 2 MiB thread in an ASan build.
fn skip_single(mut p: Pair<Rule>) -> Pair<Rule> {
    while matches!(
        p.as_rule(),
        Rule::expr
            | Rule::coalesce
            | Rule::or_expr
            | Rule::and_expr
            | Rule::not_expr
            | Rule::cmp_expr
            | Rule::pipe_expr
            | Rule::add_expr
            | Rule::mul_expr
            | Rule::unary
            | Rule::postfix
    ) {
        let mut inner = p.clone().into_inner();
        match (inner.next(), inner.next()) {
            (Some(only), None) => p = only,
            _ => break,
        }
    }
    p
}

pub(crate) fn expr(p: Pair<Rule>) -> Expr {
    let p = skip_single(p);
    match p.as_rule() {
        Rule::expr => match p.into_inner().next() {
            Some(c) => expr(c),
            None => mk(ExprKind::Omit, Span::default()),
        },
        Rule::coalesce => binary_chain(p, expr),
        Rule::or_expr => binary_chain(p, expr),
        Rule::and_expr => binary_chain(p, expr),
        Rule::add_expr => binary_chain(p, expr),
        Rule::mul_expr => binary_chain(p, expr),
        Rule::not_expr => {
            let span = span_of(&p);
            let mut nots = 0;
            let mut inner = None;
            for c in p.into_inner() {
                if c.as_rule() == Rule::not_op {
                    nots += 1;
                } else {
                    inner = Some(expr(c));
                }
            }
            let mut e = inner.unwrap_or(mk(ExprKind::Omit, span));
            for _ in 0..nots {
                e = mk(ExprKind::Unary(UnOp::Not, Box::new(e)), span);
            }
            e
        }
        Rule::cmp_expr => {
            let mut it = p.into_inner();
            let Some(first) = it.next() else {
                return mk(ExprKind::Omit, Span::default());
            };
            let lhs = expr(first);
            match (it.next(), it.next()) {
                (Some(op), Some(r)) => {
                    let bop = match op.as_str() {
                        "==" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "<=" => BinOp::Le,
                        ">=" => BinOp::Ge,
                        "<" => BinOp::Lt,
                        ">" => BinOp::Gt,
                        "~" => BinOp::Like,
                        "in" => BinOp::In,
                        _ => BinOp::NotIn,
                    };
                    let rhs = expr(r);
                    let s = join(&lhs, &rhs);
                    mk(ExprKind::Binary(bop, Box::new(lhs), Box::new(rhs)), s)
                }
                _ => lhs,
            }
        }
        Rule::pipe_expr => {
            let mut it = p.into_inner();
            let Some(first) = it.next() else {
                return mk(ExprKind::Omit, Span::default());
            };
            let mut lhs = expr(first);
            for c in it {
                if c.as_rule() != Rule::pipe_target {
                    continue;
                }
                let Some(t) = c.into_inner().next() else {
                    continue;
                };
                let tspan = span_of(&t);
                // `x | f(a, b)` is `f(x, a, b)`; `x | f` is `f(x)`.
                let (name, mut args) = if t.as_rule() == Rule::call {
                    match expr(t).kind {
                        ExprKind::Call { name, args } => (name, args),
                        _ => continue,
                    }
                } else {
                    (ident(t), Vec::new())
                };
                let s = Span::new(lhs.span.start, tspan.end);
                args.insert(0, lhs);
                lhs = mk(ExprKind::Call { name, args }, s);
            }
            lhs
        }
        Rule::unary => {
            let span = span_of(&p);
            let mut negs = 0;
            let mut inner = None;
            for c in p.into_inner() {
                if c.as_rule() == Rule::neg {
                    negs += 1;
                } else {
                    inner = Some(expr(c));
                }
            }
            let mut e = inner.unwrap_or(mk(ExprKind::Omit, span));
            for _ in 0..negs {
                e = match e.kind {
                    // Fold so that `-1` is a literal (usable in constant contexts).
                    ExprKind::Lit(Value::Number(n)) => {
                        let v = if let Some(i) = n.as_i64() {
                            Value::from(-i)
                        } else {
                            number(&format!("-{n}"))
                        };
                        mk(ExprKind::Lit(v), span)
                    }
                    kind => mk(
                        ExprKind::Unary(UnOp::Neg, Box::new(Expr { kind, span: e.span })),
                        span,
                    ),
                };
            }
            e
        }
        Rule::postfix => {
            let mut it = p.into_inner();
            let Some(first) = it.next() else {
                return mk(ExprKind::Omit, Span::default());
            };
            let mut e = expr(first);
            for c in it {
                let cspan = span_of(&c);
                let s = Span::new(e.span.start, cspan.end);
                match c.as_rule() {
                    Rule::field_access => {
                        let name = c
                            .into_inner()
                            .next()
                            .map(|f| f.as_str().to_string())
                            .unwrap_or_default();
                        e = mk(ExprKind::Field(Box::new(e), name), s);
                    }
                    Rule::index_access => {
                        let idx = c.into_inner().next().map(expr);
                        if let Some(idx) = idx {
                            e = mk(ExprKind::Index(Box::new(e), Box::new(idx)), s);
                        }
                    }
                    _ => {}
                }
            }
            e
        }
        Rule::literal => {
            let span = span_of(&p);
            let v = match p.into_inner().next() {
                Some(i) => match i.as_rule() {
                    Rule::string => Value::String(string(i).value),
                    Rule::number => number(i.as_str()),
                    Rule::kw_true => Value::Bool(true),
                    Rule::kw_false => Value::Bool(false),
                    _ => Value::Null,
                },
                None => Value::Null,
            };
            mk(ExprKind::Lit(v), span)
        }
        Rule::omit => mk(ExprKind::Omit, span_of(&p)),
        Rule::ident => {
            let span = span_of(&p);
            mk(ExprKind::Var(p.as_str().to_string()), span)
        }
        Rule::lambda => {
            let span = span_of(&p);
            let mut it = p.into_inner();
            match (it.next(), it.next()) {
                (Some(param), Some(body)) => mk(
                    ExprKind::Lambda {
                        param: ident(param),
                        body: Box::new(expr(body)),
                    },
                    span,
                ),
                _ => mk(ExprKind::Omit, span),
            }
        }
        Rule::call => {
            let span = span_of(&p);
            let mut it = p.into_inner();
            let name = it
                .next()
                .and_then(|callee| callee.into_inner().next())
                .map(ident)
                .unwrap_or(Ident {
                    name: String::new(),
                    span,
                });
            let args = it.map(expr).collect();
            mk(ExprKind::Call { name, args }, span)
        }
        Rule::if_expr => {
            let span = span_of(&p);
            let mut it = parts(p).into_iter().map(expr);
            let cond = it.next().unwrap_or(mk(ExprKind::Omit, span));
            let then = it.next().unwrap_or(mk(ExprKind::Omit, span));
            let els = it.next().map(Box::new);
            mk(
                ExprKind::If {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    els,
                },
                span,
            )
        }
        Rule::match_expr => {
            let span = span_of(&p);
            let mut it = parts(p).into_iter();
            let scrutinee = it.next().map(expr).unwrap_or(mk(ExprKind::Omit, span));
            let arms = it
                .filter(|a| a.as_rule() == Rule::match_arm)
                .map(match_arm)
                .collect();
            mk(
                ExprKind::Match {
                    scrutinee: Box::new(scrutinee),
                    arms,
                },
                span,
            )
        }
        Rule::object => {
            let span = span_of(&p);
            let entries = p
                .into_inner()
                .filter_map(|e| {
                    let mut it = e.into_inner();
                    let first = it.next()?;
                    if first.as_rule() == Rule::spread {
                        Some(ObjEntry::Spread(expr(first.into_inner().next()?)))
                    } else {
                        Some(ObjEntry::Field(key(first), expr(it.next()?)))
                    }
                })
                .collect();
            mk(ExprKind::Object(entries), span)
        }
        Rule::array => {
            let span = span_of(&p);
            let entries = p
                .into_inner()
                .filter_map(|e| {
                    let first = e.into_inner().next()?;
                    if first.as_rule() == Rule::spread {
                        Some(ArrEntry::Spread(expr(first.into_inner().next()?)))
                    } else {
                        Some(ArrEntry::Item(expr(first)))
                    }
                })
                .collect();
            mk(ExprKind::Array(entries), span)
        }
        _ => mk(ExprKind::Omit, span_of(&p)),
    }
}

fn match_arm(p: Pair<Rule>) -> MatchArm {
    let mut patterns = Vec::new();
    let mut value = None;
    for c in p.into_inner() {
        match c.as_rule() {
            Rule::pattern => {
                let pspan = span_of(&c);
                let pat = match c.into_inner().next() {
                    Some(i) => match i.as_rule() {
                        Rule::const_value => Pattern::Const(const_value(i)),
                        Rule::type_pattern => Pattern::Type(i.as_str().to_string()),
                        Rule::kw_absent => Pattern::Absent,
                        _ => Pattern::Wildcard,
                    },
                    None => Pattern::Wildcard,
                };
                patterns.push((pat, pspan));
            }
            _ => value = Some(expr(c)),
        }
    }
    MatchArm {
        patterns,
        value: value.unwrap_or(mk(ExprKind::Omit, Span::default())),
    }
}
