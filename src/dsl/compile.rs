//! AST → compiled program: resolves `extends`, names, paths, tables and
//! functions, and rejects what would otherwise be a run-time surprise. All
//! errors of all files are collected.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::ast::*;
use super::builtins::{self, Builtin};
use super::error::{ErrorClass, LoadError};
use super::framing::Framing;
use super::ir::FetchImages;
use super::ir::*;
use super::params;
use super::schema::{self, CtxField};

/// Where an expression is compiled; decides which roots it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cx {
    /// Request body, headers, query parameters, URL conditions: `req`, `extra`, `ctx`.
    Request,
    /// Response mapping: `res`, `status`, `ctx`.
    Response,
    /// Initial values of stream state: `ctx`.
    StreamInit,
    /// Stream handlers: `ev`, `event`, `ctx` and the state variables.
    Stream,
    /// Error rules: `status`, `res`, `text`.
    Errors,
    /// `fn` bodies: their parameters and `ctx`.
    Fn,
}

impl Cx {
    fn roots(self) -> &'static str {
        match self {
            Cx::Request => "req.<field>, extra.<field>, ctx.<field>",
            Cx::Response => "res, status, headers, ctx.<field>",
            Cx::StreamInit => "ctx.<field>",
            Cx::Stream => "ev, event, headers, ctx.<field> and state variables",
            Cx::Errors => "status, res, text, headers",
            Cx::Fn => "the function's parameters and ctx.<field>",
        }
    }
}

#[derive(Default)]
struct Scope {
    vars: Vec<(String, usize)>,
    next: usize,
}

impl Scope {
    fn push(&mut self, name: &str) -> usize {
        let slot = self.next;
        self.next += 1;
        self.vars.push((name.to_string(), slot));
        slot
    }
    fn get(&self, name: &str) -> Option<usize> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }
}

/// Provider items after `extends` has been applied, each tagged with the file it came from.
#[derive(Default)]
struct Merged<'a> {
    /// `param`, `base_url` and `api_version` items (see `params`).
    params: params::Merged<'a>,
    urls: Vec<(usize, Option<&'a Expr>, &'a Str)>,
    /// `base_url when COND "..."` items.
    bases: Vec<(usize, &'a Expr, &'a Str)>,
    method: Option<&'a Ident>,
    auth: Option<&'a AuthDecl>,
    /// The file the `auth` item is in.
    auth_file: usize,
    headers: Vec<(usize, &'a Str, &'a Expr)>,
    queries: Vec<(usize, &'a Str, &'a Expr)>,
    framing: Option<(usize, &'a Ident)>,
    fetch_images: Option<(usize, &'a Ident)>,
    /// Only the compiled provider's own (a child of `openai` is not OpenAI).
    genai_provider: Option<&'a Str>,
    tables: Vec<(usize, &'a TableDecl)>,
    fns: Vec<(usize, &'a FnDecl)>,
    request: Option<(usize, bool, &'a [Stmt])>,
    response: Option<(usize, bool, &'a [Stmt])>,
    /// Every `stream` block of the chain, root first (for `super` in handlers).
    stream_chain: Vec<(usize, &'a StreamDecl)>,
    /// Every `request` / `response` block of the chain, root first (for `super`).
    request_chain: Vec<(usize, bool, &'a [Stmt])>,
    response_chain: Vec<(usize, bool, &'a [Stmt])>,
    stream: Option<(usize, &'a StreamDecl)>,
    /// Child first: a child's rules are tried before its parent's.
    errors: Vec<(usize, &'a ErrorsDecl)>,
    dispatch: Option<(usize, &'a [DispatchRule])>,
    fake_stream: bool,
    /// Only the compiled provider's own.
    error_name: Option<&'a Str>,
}

pub struct Compiler<'a> {
    files: &'a [File],
    errors: Vec<LoadError>,
}

/// Compile every provider of every file.
pub fn compile_files(files: &[File]) -> (Vec<Program>, Vec<LoadError>) {
    let mut c = Compiler {
        files,
        errors: Vec::new(),
    };
    let programs = c.run();
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    // Parent items are compiled once per child; report each problem once.
    for e in c.errors {
        if seen.insert(e.to_string()) {
            errors.push(e);
        }
    }
    (programs, errors)
}

impl<'a> Compiler<'a> {
    fn err(&mut self, file: usize, span: Span, msg: impl Into<String>) {
        let f = &self.files[file];
        self.errors
            .push(LoadError::at(&f.name, &f.source, span, msg));
    }

    fn run(&mut self) -> Vec<Program> {
        let mut decls: HashMap<&'a str, (usize, &'a ProviderDecl)> = HashMap::new();
        let mut order = Vec::new();
        let files = self.files;
        for (fi, f) in files.iter().enumerate() {
            for p in &f.providers {
                if let Some((pf, prev)) = decls.get(p.name.name.as_str()) {
                    let prev_pos = {
                        let pf = &files[*pf];
                        let e = LoadError::at(&pf.name, &pf.source, prev.name.span, "");
                        format!("{}:{}:{}", e.file, e.line, e.col)
                    };
                    self.err(
                        fi,
                        p.name.span,
                        format!(
                            "provider `{}` is already defined at {prev_pos}",
                            p.name.name
                        ),
                    );
                    continue;
                }
                decls.insert(&p.name.name, (fi, p));
                order.push(p.name.name.as_str());
            }
        }
        self.check_dispatchers(&decls);
        let mut out = Vec::new();
        for name in order {
            let Some(chain) = self.chain(name, &decls) else {
                continue;
            };
            let merged = self.merge(&chain);
            if let Some(p) = self.compile_provider(name, chain[chain.len() - 1].0, &merged) {
                out.push(p);
            }
        }
        out
    }

    /// A dispatching provider has its `dispatch` only, no parent, and rules naming providers
    /// that exist and do not dispatch themselves.
    fn check_dispatchers(&mut self, decls: &HashMap<&'a str, (usize, &'a ProviderDecl)>) {
        let dispatches = |d: &ProviderDecl| d.items.iter().any(|i| matches!(i, Item::Dispatch(..)));
        let mut names: Vec<&&str> = decls.keys().collect();
        names.sort();
        for name in names {
            let (fi, d) = decls[*name];
            let Some((rules, span)) = d.items.iter().find_map(|i| match i {
                Item::Dispatch(r, s) => Some((r, *s)),
                _ => None,
            }) else {
                continue;
            };
            if d.items.len() > 1 || d.extends.is_some() {
                self.err(
                    fi,
                    span,
                    format!(
                        "provider `{name}` dispatches: it can have no `extends` and no other items (they belong in the providers it dispatches to)"
                    ),
                );
            }
            if rules.is_empty() {
                self.err(fi, span, "`dispatch` needs at least one rule");
            }
            let known: Vec<&str> = decls.keys().copied().collect();
            for r in rules {
                match decls.get(r.target.name.as_str()) {
                    None => self.err(
                        fi,
                        r.target.span,
                        format!(
                            "unknown provider `{}`{}",
                            r.target.name,
                            suggest(&r.target.name, &known)
                        ),
                    ),
                    Some((_, t)) if dispatches(t) => self.err(
                        fi,
                        r.target.span,
                        format!(
                            "`{}` dispatches too: a rule must name a provider that serves requests",
                            r.target.name
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    /// The provider and its ancestors, root first.
    fn chain(
        &mut self,
        name: &str,
        decls: &HashMap<&'a str, (usize, &'a ProviderDecl)>,
    ) -> Option<Vec<(usize, &'a ProviderDecl)>> {
        let mut chain = Vec::new();
        let mut cur = *decls.get(name)?;
        loop {
            if chain
                .iter()
                .any(|(_, p): &(usize, &ProviderDecl)| p.name.name == cur.1.name.name)
            {
                self.err(
                    cur.0,
                    cur.1.name.span,
                    format!("`extends` cycle through `{}`", cur.1.name.name),
                );
                return None;
            }
            chain.push(cur);
            match &cur.1.extends {
                None => break,
                Some(parent) => match decls.get(parent.name.as_str()) {
                    Some(p) => cur = *p,
                    None => {
                        let known: Vec<&str> = decls.keys().copied().collect();
                        let msg = format!(
                            "unknown provider `{}`{}",
                            parent.name,
                            suggest(&parent.name, &known)
                        );
                        self.err(cur.0, parent.span, msg);
                        return None;
                    }
                },
            }
        }
        chain.reverse();
        Some(chain)
    }

    fn merge(&mut self, chain: &[(usize, &'a ProviderDecl)]) -> Merged<'a> {
        let mut m = Merged::default();
        for &(fi, decl) in chain {
            let mut seen_single: HashSet<&'static str> = HashSet::new();
            let mut own_urls = Vec::new();
            let mut own_bases = Vec::new();
            let mut own_errors = None;
            let mut own_names: HashSet<(&str, &str)> = HashSet::new();
            let mut own_params = params::Own::default();
            m.genai_provider = None;
            m.error_name = None;
            for item in &decl.items {
                let mut problems = Vec::new();
                let is_param =
                    m.params
                        .declare(fi, &decl.name.name, item, &mut own_params, &mut problems);
                for (f, span, msg) in problems {
                    self.err(f, span, msg);
                }
                if is_param {
                    continue;
                }
                let single = |k: &'static str,
                              span: Span,
                              this: &mut Self,
                              seen: &mut HashSet<&'static str>| {
                    if !seen.insert(k) {
                        this.err(
                            fi,
                            span,
                            format!("`{k}` is declared twice in `{}`", decl.name.name),
                        );
                    }
                };
                match item {
                    // Taken in by `m.params.declare` above.
                    Item::Param(_) | Item::BaseUrl(_) | Item::ApiVersion(_) => {}
                    Item::Url { cond, template } => own_urls.push((fi, cond.as_ref(), template)),
                    Item::BaseUrlWhen { cond, template } => own_bases.push((fi, cond, template)),
                    Item::Method(i) => {
                        single("method", i.span, self, &mut seen_single);
                        m.method = Some(i);
                    }
                    Item::Auth(a, span) => {
                        single("auth", *span, self, &mut seen_single);
                        m.auth = Some(a);
                        m.auth_file = fi;
                    }
                    Item::Header { name, value } => {
                        let lname = name.value.to_ascii_lowercase();
                        m.headers
                            .retain(|(_, n, _)| n.value.to_ascii_lowercase() != lname);
                        m.headers.push((fi, name, value));
                    }
                    Item::Query { name, value } => {
                        m.queries.retain(|(_, n, _)| n.value != name.value);
                        m.queries.push((fi, name, value));
                    }
                    Item::Framing(i) => {
                        single("framing", i.span, self, &mut seen_single);
                        m.framing = Some((fi, i));
                    }
                    Item::FetchImages(i) => {
                        single("fetch_images", i.span, self, &mut seen_single);
                        m.fetch_images = Some((fi, i));
                    }
                    Item::GenaiProvider(s) => {
                        single("genai_provider", s.span, self, &mut seen_single);
                        m.genai_provider = Some(s);
                    }
                    Item::ErrorName(s) => {
                        single("error_name", s.span, self, &mut seen_single);
                        m.error_name = Some(s);
                    }
                    Item::FakeStream(span) => {
                        single("fake_stream", *span, self, &mut seen_single);
                        m.fake_stream = true;
                    }
                    Item::Table(t) => {
                        if !own_names.insert(("table", t.name.name.as_str())) {
                            self.err(
                                fi,
                                t.name.span,
                                format!("table `{}` is declared twice", t.name.name),
                            );
                        }
                        m.tables.retain(|(_, x)| x.name.name != t.name.name);
                        m.tables.push((fi, t));
                    }
                    Item::Fn(f) => {
                        if !own_names.insert(("fn", f.name.name.as_str())) {
                            self.err(
                                fi,
                                f.name.span,
                                format!("fn `{}` is declared twice", f.name.name),
                            );
                        }
                        m.fns.retain(|(_, x)| x.name.name != f.name.name);
                        m.fns.push((fi, f));
                    }
                    Item::Request {
                        passthrough,
                        body,
                        span,
                    } => {
                        single("request", *span, self, &mut seen_single);
                        m.request = Some((fi, *passthrough, body));
                        m.request_chain.push((fi, *passthrough, body));
                    }
                    Item::Response {
                        passthrough,
                        body,
                        span,
                    } => {
                        single("response", *span, self, &mut seen_single);
                        m.response = Some((fi, *passthrough, body));
                        m.response_chain.push((fi, *passthrough, body));
                    }
                    Item::Stream(s) => {
                        single("stream", s.span, self, &mut seen_single);
                        m.stream = Some((fi, s));
                        m.stream_chain.push((fi, s));
                    }
                    Item::Dispatch(rules, _) => m.dispatch = Some((fi, rules)),
                    Item::Errors(e) => {
                        single("errors", e.span, self, &mut seen_single);
                        own_errors = Some((fi, e));
                    }
                }
            }
            // A child that declares any `url` replaces the parent's list.
            if !own_urls.is_empty() {
                m.urls = own_urls;
            }
            // Likewise for conditional bases.
            if !own_bases.is_empty() {
                m.bases = own_bases;
            }
            if let Some(e) = own_errors {
                m.errors.insert(0, e);
            }
        }
        m
    }

    fn compile_provider(&mut self, name: &str, fi: usize, m: &Merged<'a>) -> Option<Program> {
        let before = self.errors.len();
        let (params, problems) = m.params.compile();
        for (f, span, msg) in problems {
            self.err(f, span, msg);
        }
        let mut pc = ProviderCx {
            tables: HashMap::new(),
            fns: HashMap::new(),
            state: Vec::new(),
            params: params.iter().map(|p| p.name.clone()).collect(),
        };
        let mut tables = Vec::new();
        for (tfi, t) in &m.tables {
            let mut table = Table {
                name: t.name.name.clone(),
                ..Table::default()
            };
            for (k, v, span) in &t.entries {
                match k {
                    None => {
                        if table.default.replace(v.clone()).is_some() {
                            self.err(*tfi, *span, "table has two `_` entries");
                        }
                    }
                    Some(k) => match Table::key_of(k) {
                        Some(key) => {
                            if table.map.insert(key.clone(), v.clone()).is_some() {
                                self.err(*tfi, *span, format!("duplicate table key `{key}`"));
                            }
                        }
                        None => self.err(
                            *tfi,
                            *span,
                            "table keys must be strings, numbers or booleans",
                        ),
                    },
                }
            }
            pc.tables.insert(t.name.name.clone(), tables.len());
            tables.push(table);
        }
        for (i, (_, f)) in m.fns.iter().enumerate() {
            if builtins::lookup(&f.name.name).is_some() {
                self.err(
                    m.fns[i].0,
                    f.name.span,
                    format!("fn `{}` would hide the built-in of that name", f.name.name),
                );
            }
            pc.fns.insert(f.name.name.clone(), (i, f.params.len()));
        }
        let mut fns = Vec::new();
        for (ffi, f) in &m.fns {
            let mut ex = ExprCx {
                c: self,
                pc: &pc,
                file: *ffi,
                cx: Cx::Fn,
                scope: Scope::default(),
                sup: Super::None,
            };
            for p in &f.params {
                if ex.scope.get(&p.name).is_some() {
                    ex.c.err(
                        *ffi,
                        p.span,
                        format!("parameter `{}` is listed twice", p.name),
                    );
                }
                ex.scope.push(&p.name);
            }
            let body = ex.expr(&f.body);
            let slots = ex.scope.next;
            fns.push(CFn {
                name: f.name.name.clone(),
                params: f.params.len(),
                slots,
                body,
                depth: 0,
            });
        }
        for cycle in super::recursion::endless(&fns) {
            let (ffi, f) = m.fns[cycle[0]];
            let names: Vec<&str> = cycle.iter().map(|&i| fns[i].name.as_str()).collect();
            self.err(
                ffi,
                f.name.span,
                format!(
                    "fn `{}` calls itself on every path ({}), so it can never return: \
                     give the recursion a condition that ends it",
                    f.name.name,
                    names.join(" → ")
                ),
            );
        }

        let base_url = params::default_of(&params, "api_base")
            .map(|s| s.trim_end_matches('/').to_string())
            .unwrap_or_default();
        let base_tmpl = match m.params.api_base_default() {
            Some((bfi, s)) if !s.value.is_empty() => {
                let mut parts = self.template(bfi, s, &pc.params);
                trim_end_slash(&mut parts);
                parts
            }
            _ => Vec::new(),
        };
        let mut bases = Vec::new();
        for (bfi, cond, tmpl) in &m.bases {
            let cond = Some(self.top(&pc, *bfi, Cx::Request, cond));
            let mut parts = self.template(*bfi, tmpl, &pc.params);
            trim_end_slash(&mut parts);
            bases.push(CUrl { cond, parts });
        }
        let mut urls = Vec::new();
        for (ufi, cond, tmpl) in &m.urls {
            let cond = cond.map(|e| self.top(&pc, *ufi, Cx::Request, e));
            let parts = self.template(*ufi, tmpl, &pc.params);
            urls.push(CUrl { cond, parts });
        }
        if urls.is_empty() {
            urls.push(CUrl {
                cond: None,
                parts: Vec::new(),
            });
        }
        let method = match m.method {
            Some(i) => {
                let up = i.name.to_ascii_uppercase();
                if !matches!(up.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                    self.err(fi, i.span, format!("unknown HTTP method `{}`", i.name));
                }
                up
            }
            None => "POST".to_string(),
        };
        let auth = match m.auth {
            None | Some(AuthDecl::Bearer) => Auth::Bearer,
            Some(AuthDecl::Header(s)) => Auth::Header(s.value.clone()),
            Some(AuthDecl::Query(s)) => Auth::Query(s.value.clone()),
            Some(AuthDecl::None) => Auth::None,
            Some(AuthDecl::AwsSigV4(s)) => Auth::AwsSigV4 {
                service: s.value.clone(),
            },
            Some(AuthDecl::GoogleOAuth(param)) => {
                if let Some(p) = param {
                    if !pc.params.contains(&p.value) {
                        self.err(
                            m.auth_file,
                            p.span,
                            format!(
                                "`google_oauth` reads parameter `{}`, which the provider does not declare (`param {} default \"\"`)",
                                p.value, p.value
                            ),
                        );
                    }
                }
                Auth::GoogleOAuth {
                    credentials_param: param.as_ref().map(|p| p.value.clone()),
                }
            }
            Some(AuthDecl::TokenExchange { url, grant, key }) => {
                let afi = m.auth_file;
                Auth::TokenExchange {
                    url: self.template(afi, url, &pc.params),
                    grant: grant.value.clone(),
                    key_field: key.value.clone(),
                }
            }
        };
        let headers = m
            .headers
            .iter()
            .map(|(hfi, n, e)| (n.value.clone(), self.top(&pc, *hfi, Cx::Request, e)))
            .collect();
        let queries = m
            .queries
            .iter()
            .map(|(qfi, n, e)| (n.value.clone(), self.top(&pc, *qfi, Cx::Request, e)))
            .collect();
        let fetch_images = match m.fetch_images {
            None => FetchImages::None,
            Some((ffi, i)) => match FetchImages::parse(&i.name) {
                Some(f) => f,
                None => {
                    self.err(
                        ffi,
                        i.span,
                        format!("unknown fetch_images `{}` (none, http, all)", i.name),
                    );
                    FetchImages::None
                }
            },
        };
        let framing = match m.framing {
            None => Framing::Sse,
            Some((ffi, i)) => match Framing::parse(&i.name) {
                Some(f) => f,
                None => {
                    self.err(
                        ffi,
                        i.span,
                        format!("unknown framing `{}` (sse, ndjson, json_array)", i.name),
                    );
                    Framing::Sse
                }
            },
        };

        let mut supers = Vec::new();
        let (request, request_passthrough) =
            match self.block_chain(&pc, &m.request_chain, Cx::Request, &mut supers) {
                Some((b, pt)) => (b, pt),
                None => (CBlock::default(), true),
            };
        let (response, response_passthrough) =
            match self.block_chain(&pc, &m.response_chain, Cx::Response, &mut supers) {
                Some((b, pt)) => (Some(b), pt),
                None => (None, true),
            };
        let stream = if m.stream_chain.is_empty() {
            CStream {
                init: builtin_state_init(),
                names: builtin_state_names(),
                handlers: Vec::new(),
                end_handlers: Vec::new(),
                parents: Vec::new(),
            }
        } else {
            self.stream(&mut pc, &m.stream_chain)
        };
        let mut errors = CErrors::default();
        for (efi, e) in &m.errors {
            if errors.message.is_none() {
                if let Some(msg) = &e.message {
                    errors.message = Some(self.top(&pc, *efi, Cx::Errors, msg));
                }
            }
            for r in &e.rules {
                let cond = self.top(&pc, *efi, Cx::Errors, &r.cond);
                let class = match ErrorClass::parse(&r.class.name) {
                    Some(c) => c,
                    None => {
                        let names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
                        let msg = format!(
                            "unknown error class `{}`{}",
                            r.class.name,
                            suggest(&r.class.name, &names)
                        );
                        self.err(*efi, r.class.span, msg);
                        ErrorClass::Internal
                    }
                };
                let mut retry = None;
                let mut fallback = None;
                for (flag, _) in &r.flags {
                    match flag.as_str() {
                        "retry" => retry = Some(true),
                        "no_retry" => retry = Some(false),
                        "fallback" => fallback = Some(true),
                        _ => fallback = Some(false),
                    }
                }
                errors.rules.push(CRule {
                    cond,
                    class,
                    retry,
                    fallback,
                });
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Program {
            name: name.to_string(),
            api_version: params::default_of(&params, "api_version").map(str::to_owned),
            params,
            base_url,
            base_tmpl,
            bases,
            urls,
            method,
            auth,
            headers,
            queries,
            framing,
            fetch_images,
            genai_provider: m.genai_provider.map(|s| s.value.clone()),
            tables,
            fns,
            request,
            supers,
            request_passthrough,
            response,
            response_passthrough,
            stream,
            errors,
            fake_stream: m.fake_stream,
            memo_slots: 0,
            error_name: m.error_name.map(|s| s.value.clone()),
            dispatch: m
                .dispatch
                .map(|(_, rules)| {
                    rules
                        .iter()
                        .map(|r| DispatchRoute {
                            pattern: r.pattern.value.clone(),
                            target: r.target.name.clone(),
                            strip: r.strip.as_ref().map(|s| s.value.clone()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// `{name}` holes: a `ctx` field or a declared parameter (`{+name}` keeps `/`).
    fn template(&mut self, fi: usize, s: &Str, params: &[String]) -> Vec<TmplPart> {
        let mut parts = Vec::new();
        let mut rest = s.value.as_str();
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TmplPart::Lit(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                self.err(fi, s.span, "unclosed `{` in URL template");
                return parts;
            };
            let name = &rest[open + 1..open + close];
            // +1 for the opening quote of the string token.
            let hole = Span::new(
                s.span.start + 1 + offset + open,
                s.span.start + 2 + offset + open + close,
            );
            let (raw, bare) = match name.strip_prefix('+') {
                Some(n) => (true, n),
                None => (false, name),
            };
            if let Some(f) = CtxField::parse(bare) {
                parts.push(TmplPart::Ctx(f, raw));
            } else if let Some(i) = params.iter().position(|p| p == bare) {
                parts.push(TmplPart::Param(i, raw));
            } else {
                let mut known: Vec<&str> = CtxField::NAMES.to_vec();
                known.extend(params.iter().map(String::as_str));
                self.err(
                    fi,
                    hole,
                    format!(
                        "unknown placeholder `{{{name}}}`{}; use a ctx field ({}) or a parameter the file declares with `param {bare} ...`",
                        suggest(bare, &known),
                        CtxField::NAMES.join(", ")
                    ),
                );
            }
            offset += open + close + 1;
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TmplPart::Lit(rest.to_string()));
        }
        parts
    }

    fn top(&mut self, pc: &ProviderCx, fi: usize, cx: Cx, e: &Expr) -> CTop {
        let mut ex = ExprCx {
            c: self,
            pc,
            file: fi,
            cx,
            scope: Scope::default(),
            sup: Super::None,
        };
        let expr = ex.expr(e);
        CTop {
            expr,
            slots: ex.scope.next,
        }
    }

    /// The last block of `chain` (the provider's own or inherited one), each block compiled
    /// with its parent's as the target of `super` (kept in `supers`).
    fn block_chain(
        &mut self,
        pc: &ProviderCx,
        chain: &[(usize, bool, &[Stmt])],
        cx: Cx,
        supers: &mut Vec<CBlock>,
    ) -> Option<(CBlock, bool)> {
        let mut parent: Option<(usize, bool)> = None;
        let mut last = None;
        for (i, &(fi, pt, body)) in chain.iter().enumerate() {
            let sup = match parent {
                None => Super::None,
                Some((at, ppt)) if ppt == pt => Super::Block(at),
                Some(_) => Super::Mismatch,
            };
            let block = self.block_with(pc, fi, cx, body, sup);
            if i + 1 < chain.len() {
                supers.push(block);
                parent = Some((supers.len() - 1, pt));
            } else {
                last = Some((block, pt));
            }
        }
        last
    }

    fn block_with(
        &mut self,
        pc: &ProviderCx,
        fi: usize,
        cx: Cx,
        body: &[Stmt],
        sup: Super,
    ) -> CBlock {
        let mut ex = ExprCx {
            c: self,
            pc,
            file: fi,
            cx,
            scope: Scope::default(),
            sup,
        };
        let stmts = ex.stmts(body);
        CBlock {
            stmts,
            slots: ex.scope.next,
        }
    }

    /// The provider's stream block (the last of `chain`). Its state variables are those of
    /// every block of the chain (a child's declaration of a parent's name gives its initial
    /// value), so that the ancestors' handlers a `super` runs find theirs.
    fn stream(&mut self, pc: &mut ProviderCx, chain: &[(usize, &StreamDecl)]) -> CStream {
        let mut names = builtin_state_names();
        let mut init = builtin_state_init();
        let mut inherited = names.len();
        for &(fi, s) in chain {
            for (name, e) in &s.state {
                let top = self.top(pc, fi, Cx::StreamInit, e);
                match names.iter().position(|n| *n == name.name) {
                    Some(i) if i < 3 || i < inherited => init[i] = top,
                    Some(_) => self.err(
                        fi,
                        name.span,
                        format!("state `{}` is declared twice", name.name),
                    ),
                    None => {
                        names.push(name.name.clone());
                        init.push(top);
                    }
                }
            }
            inherited = names.len();
        }
        pc.state = names.clone();
        // An `on end` hook compiles like any handler: the same roots and statements; at run
        // time its `ev` and `event` are absent.
        let mut parents = Vec::new();
        let mut last = (Vec::new(), Vec::new());
        for (level, &(fi, s)) in chain.iter().enumerate() {
            let sup = |end| {
                if level == 0 {
                    Super::None
                } else {
                    Super::Stream {
                        level: level - 1,
                        end,
                    }
                }
            };
            let handlers = (s.handlers.iter())
                .map(|h| self.handler(pc, fi, h, sup(false)))
                .collect();
            let end_handlers = (s.end_handlers.iter())
                .map(|h| self.handler(pc, fi, h, sup(true)))
                .collect();
            if level + 1 < chain.len() {
                parents.push((handlers, end_handlers));
            } else {
                last = (handlers, end_handlers);
            }
        }
        pc.state.clear();
        CStream {
            init,
            names,
            handlers: last.0,
            end_handlers: last.1,
            parents,
        }
    }

    fn handler(&mut self, pc: &ProviderCx, fi: usize, h: &Handler, sup: Super) -> CHandler {
        let mut ex = ExprCx {
            c: self,
            pc,
            file: fi,
            cx: Cx::Stream,
            scope: Scope::default(),
            sup,
        };
        let cond = h.cond.as_ref().map(|c| ex.expr(c));
        let stmts = ex.stmts(&h.body);
        let slots = ex.scope.next;
        CHandler {
            event: h.event.as_ref().map(|e| e.value.clone()),
            cond,
            body: CBlock { stmts, slots },
        }
    }
}

fn builtin_state_names() -> Vec<String> {
    vec!["id".into(), "model".into(), "created".into()]
}

fn builtin_state_init() -> Vec<CTop> {
    let top = |expr| CTop { expr, slots: 0 };
    vec![
        top(CExpr::Builtin(
            Builtin::NewId,
            vec![CExpr::Const(Value::String("chatcmpl-".into()))],
            Span::default(),
        )),
        top(CExpr::Ctx(CtxField::Model)),
        top(CExpr::Builtin(Builtin::Now, Vec::new(), Span::default())),
    ]
}

struct ProviderCx {
    /// Declared deployment parameters, in `Program::params` order.
    params: Vec<String>,
    tables: HashMap<String, usize>,
    /// name → (index, arity)
    fns: HashMap<String, (usize, usize)>,
    /// Stream state names while compiling handlers.
    state: Vec<String>,
}

/// What a `super` statement in the block being compiled runs.
#[derive(Debug, Clone, Copy)]
enum Super {
    /// No ancestor has a block of this kind (or this is not a request or response block).
    None,
    /// `Program::supers[i]`.
    Block(usize),
    /// The ancestor's block is `passthrough` and this one is not, or the other way round.
    Mismatch,
    /// In a stream handler: the handlers of `CStream::parents[level]`.
    Stream { level: usize, end: bool },
}

struct ExprCx<'c, 'a> {
    sup: Super,
    c: &'c mut Compiler<'a>,
    pc: &'c ProviderCx,
    file: usize,
    cx: Cx,
    scope: Scope,
}

impl ExprCx<'_, '_> {
    fn err(&mut self, span: Span, msg: impl Into<String>) {
        self.c.err(self.file, span, msg);
    }

    fn stmts(&mut self, body: &[Stmt]) -> Vec<CStmt> {
        let mark = self.scope.vars.len();
        let out = body.iter().filter_map(|s| self.stmt(s)).collect();
        self.scope.vars.truncate(mark);
        out
    }

    fn stmt(&mut self, s: &Stmt) -> Option<CStmt> {
        Some(match s {
            Stmt::Let { name, value } => {
                let v = self.expr(value);
                let slot = self.scope.push(&name.name);
                CStmt::Let(slot, v)
            }
            Stmt::Assign {
                target,
                value,
                span,
            } => {
                let v = self.expr(value);
                let path: Vec<String> = target.iter().map(|k| k.value.clone()).collect();
                if self.cx == Cx::Stream {
                    let head = &path[0];
                    match self.pc.state.iter().position(|n| n == head) {
                        Some(i) => CStmt::SetState(i, path[1..].to_vec(), v),
                        None => {
                            self.err(
                                target[0].span,
                                format!("`{head}` is not a state variable; declare it with `state {head} = ...` or use `let`"),
                            );
                            return None;
                        }
                    }
                } else {
                    if path.iter().any(|k| k.is_empty()) {
                        self.err(*span, "empty field name");
                    }
                    CStmt::Set(path, v)
                }
            }
            Stmt::If { cond, then, els } => {
                let c = self.expr(cond);
                let t = self.stmts(then);
                let e = self.stmts(els);
                CStmt::If(c, t, e)
            }
            Stmt::Unsupported { params, cond, span } => {
                if self.cx != Cx::Request {
                    self.err(*span, "`unsupported` is only allowed in `request`");
                }
                let mut ids = Vec::new();
                for p in params {
                    if p.name == "stream" {
                        // Dropping `stream` under drop_params would answer a stream request
                        // with a whole body the client cannot read as a stream.
                        self.err(
                            p.span,
                            "`stream` cannot be `unsupported`: the client would still expect a stream; a provider without streaming must answer streams some other way",
                        );
                        continue;
                    }
                    match schema::request_field(&p.name) {
                        Some(id) => ids.push((id, p.name.clone())),
                        None => {
                            let msg = format!(
                                "`{}` is not an OpenAI chat-completions request field{}",
                                p.name,
                                suggest(&p.name, schema::REQUEST_FIELDS)
                            );
                            self.err(p.span, msg);
                        }
                    }
                }
                let c = cond.as_ref().map(|c| self.expr(c));
                CStmt::Unsupported(ids, c)
            }
            Stmt::Emit(e, span) => {
                if self.cx != Cx::Stream {
                    self.err(*span, "`emit` is only allowed in stream handlers");
                }
                match e {
                    Emit::Delta { delta, finish } => {
                        let d = self.expr(delta);
                        let f = finish.as_ref().map(|f| self.expr(f));
                        CStmt::EmitDelta(d, f)
                    }
                    Emit::Finish(f) => {
                        let f = self.expr(f);
                        CStmt::EmitDelta(CExpr::Object(Vec::new()), Some(f))
                    }
                    Emit::Usage(u) => CStmt::EmitUsage(self.expr(u)),
                    Emit::Chunk(c) => CStmt::EmitChunk(self.expr(c)),
                }
            }
            Stmt::Super(span) => match self.sup {
                Super::Block(i) => CStmt::Super(i),
                Super::Stream { level, end } => CStmt::SuperStream { level, end },
                Super::None => {
                    self.err(
                        *span,
                        "`super` runs the parent provider's block of the same kind (`request`, `response`, or a stream handler), and no ancestor has one",
                    );
                    return None;
                }
                Super::Mismatch => {
                    self.err(
                        *span,
                        "`super` needs the parent's block to be `passthrough` exactly when this one is",
                    );
                    return None;
                }
            },
            Stmt::Done(span) => {
                if self.cx != Cx::Stream {
                    self.err(*span, "`done` is only allowed in stream handlers");
                }
                CStmt::Done
            }
            Stmt::Raise(e, span) => {
                if !matches!(self.cx, Cx::Stream | Cx::Response) {
                    self.err(
                        *span,
                        "`raise` is only allowed in `response` and stream handlers",
                    );
                }
                CStmt::Raise(self.expr(e))
            }
        })
    }

    fn root_allowed(&mut self, root: &str, span: Span) -> bool {
        let ok = match root {
            "req" | "extra" => self.cx == Cx::Request,
            "ctx" => self.cx != Cx::Errors,
            "res" => matches!(self.cx, Cx::Response | Cx::Errors),
            "status" => matches!(self.cx, Cx::Response | Cx::Errors),
            "headers" => matches!(self.cx, Cx::Response | Cx::Errors | Cx::Stream),
            "ev" | "event" => self.cx == Cx::Stream,
            "text" => self.cx == Cx::Errors,
            _ => true,
        };
        if !ok {
            let roots = self.cx.roots();
            self.err(
                span,
                format!("`{root}` is not available here; this context can read {roots}"),
            );
        }
        ok
    }

    fn is_root_var(&self, e: &Expr, root: &str) -> bool {
        matches!(&e.kind, ExprKind::Var(n) if n == root) && self.scope.get(root).is_none()
    }

    pub fn expr(&mut self, e: &Expr) -> CExpr {
        match &e.kind {
            ExprKind::Lit(v) => CExpr::Const(v.clone()),
            ExprKind::Omit => CExpr::Omit,
            ExprKind::Var(name) => self.var(name, e.span),
            ExprKind::Field(base, name) => {
                if self.is_root_var(base, "req") {
                    if !self.root_allowed("req", base.span) {
                        return CExpr::Omit;
                    }
                    return match schema::request_field(name) {
                        Some(id) => CExpr::Req(id),
                        None => {
                            let msg = format!(
                                "`req.{name}` is not an OpenAI chat-completions request field{}; read provider-specific fields with `extra.{name}`",
                                suggest(name, schema::REQUEST_FIELDS)
                            );
                            self.err(e.span, msg);
                            CExpr::Omit
                        }
                    };
                }
                if self.is_root_var(base, "extra") {
                    if !self.root_allowed("extra", base.span) {
                        return CExpr::Omit;
                    }
                    // A provider-specific field never shadows an OpenAI one.
                    return match schema::request_field(name) {
                        Some(_) => CExpr::Omit,
                        None => CExpr::Extra(name.clone()),
                    };
                }
                if let ExprKind::Field(inner, group) = &base.kind {
                    if group == "params" && self.is_root_var(inner, "ctx") {
                        if !self.root_allowed("ctx", inner.span) {
                            return CExpr::Omit;
                        }
                        return match self.pc.params.iter().position(|p| p == name) {
                            Some(i) => CExpr::CtxParam(i),
                            None => {
                                let known: Vec<&str> =
                                    self.pc.params.iter().map(String::as_str).collect();
                                let msg = format!(
                                    "`ctx.params.{name}` is not declared{}: add `param {name} required` (or `default \"...\"`) to the provider",
                                    suggest(name, &known)
                                );
                                self.err(e.span, msg);
                                CExpr::Omit
                            }
                        };
                    }
                }
                if self.is_root_var(base, "ctx") {
                    if !self.root_allowed("ctx", base.span) {
                        return CExpr::Omit;
                    }
                    if name == "params" {
                        self.err(
                            e.span,
                            "`ctx.params` is read by name: `ctx.params.NAME` of a declared `param NAME`",
                        );
                        return CExpr::Omit;
                    }
                    return match CtxField::parse(name) {
                        Some(f) => CExpr::Ctx(f),
                        None => {
                            let msg = format!(
                                "unknown context field `ctx.{name}`{}",
                                suggest(name, CtxField::NAMES)
                            );
                            self.err(e.span, msg);
                            CExpr::Omit
                        }
                    };
                }
                let b = self.expr(base);
                push_seg(b, Seg::Key(name.clone()))
            }
            ExprKind::Index(base, idx) => {
                let b = self.expr(base);
                match &idx.kind {
                    ExprKind::Lit(Value::Number(n)) if n.as_u64().is_some() => {
                        push_seg(b, Seg::Idx(n.as_u64().unwrap_or_default() as usize))
                    }
                    ExprKind::Lit(Value::String(s)) => push_seg(b, Seg::Key(s.clone())),
                    _ => {
                        let i = self.expr(idx);
                        CExpr::Index(Box::new(b), Box::new(i))
                    }
                }
            }
            ExprKind::Call { name, args } => self.call(name, args, e.span),
            ExprKind::Lambda { .. } => {
                self.err(e.span, "a lambda (`x -> ...`) can only be an argument of map, filter, find, any, all, ...");
                CExpr::Omit
            }
            ExprKind::Unary(op, x) => {
                let v = self.expr(x);
                if let (UnOp::Neg, CExpr::Const(c)) = (op, &v) {
                    if !c.is_number() {
                        self.err(
                            e.span,
                            format!("cannot negate a {}", builtins::type_name(Some(c))),
                        );
                    }
                }
                match op {
                    UnOp::Neg => CExpr::Neg(Box::new(v)),
                    UnOp::Not => CExpr::Not(Box::new(v)),
                }
            }
            ExprKind::Binary(op, a, b) => {
                let ca = self.expr(a);
                let cb = self.expr(b);
                self.check_binary(*op, &ca, &cb, e.span);
                CExpr::Bin(*op, Box::new(ca), Box::new(cb), e.span)
            }
            ExprKind::If { cond, then, els } => {
                let c = self.expr(cond);
                let t = self.expr(then);
                let f = els.as_ref().map(|x| Box::new(self.expr(x)));
                CExpr::If(Box::new(c), Box::new(t), f)
            }
            ExprKind::Match { scrutinee, arms } => {
                let s = self.expr(scrutinee);
                let mut out = Vec::new();
                for arm in arms {
                    let pats = arm
                        .patterns
                        .iter()
                        .map(|(p, _)| match p {
                            Pattern::Const(v) => CPattern::Const(v.clone()),
                            Pattern::Type(t) => match t.as_str() {
                                "string" => CPattern::String,
                                "number" => CPattern::Number,
                                "boolean" => CPattern::Boolean,
                                "array" => CPattern::Array,
                                _ => CPattern::Object,
                            },
                            Pattern::Absent => CPattern::Absent,
                            Pattern::Wildcard => CPattern::Any,
                        })
                        .collect();
                    let v = self.expr(&arm.value);
                    out.push((pats, v));
                }
                CExpr::Match(Box::new(s), out)
            }
            ExprKind::Object(entries) => {
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                for en in entries {
                    match en {
                        ObjEntry::Field(k, v) => {
                            if !seen.insert(k.value.clone()) {
                                self.err(k.span, format!("field `{}` appears twice", k.value));
                            }
                            out.push(CObj::Field(k.value.clone(), self.expr(v)));
                        }
                        ObjEntry::Spread(v) => out.push(CObj::Spread(self.expr(v))),
                    }
                }
                CExpr::Object(out)
            }
            ExprKind::Array(entries) => CExpr::Array(
                entries
                    .iter()
                    .map(|en| match en {
                        ArrEntry::Item(v) => CArr::Item(self.expr(v)),
                        ArrEntry::Spread(v) => CArr::Spread(self.expr(v)),
                    })
                    .collect(),
            ),
        }
    }

    fn var(&mut self, name: &str, span: Span) -> CExpr {
        if let Some(slot) = self.scope.get(name) {
            return CExpr::Local(slot);
        }
        if self.cx == Cx::Stream {
            if let Some(i) = self.pc.state.iter().position(|n| n == name) {
                return CExpr::State(i);
            }
        }
        match name {
            "req" | "extra" | "ctx" => {
                if self.root_allowed(name, span) {
                    self.err(
                        span,
                        format!("`{name}` must be followed by a field name, e.g. `{name}.model`"),
                    );
                }
                CExpr::Omit
            }
            "res" | "ev" | "event" | "status" | "text" | "headers" => {
                if !self.root_allowed(name, span) {
                    return CExpr::Omit;
                }
                match name {
                    "res" => CExpr::Res,
                    "ev" => CExpr::Ev,
                    "event" => CExpr::Event,
                    "status" => CExpr::Status,
                    "headers" => CExpr::Headers,
                    _ => CExpr::Text,
                }
            }
            _ => {
                if self.pc.tables.contains_key(name) {
                    self.err(
                        span,
                        format!("table `{name}` can only be used as `lookup({name}, key)`"),
                    );
                } else if self.pc.fns.contains_key(name) {
                    self.err(span, format!("fn `{name}` must be called: `{name}(...)`"));
                } else {
                    let mut known: Vec<&str> =
                        self.scope.vars.iter().map(|(n, _)| n.as_str()).collect();
                    if self.cx == Cx::Stream {
                        known.extend(self.pc.state.iter().map(String::as_str));
                    }
                    let msg = format!("unknown name `{name}`{}", suggest(name, &known));
                    self.err(span, msg);
                }
                CExpr::Omit
            }
        }
    }

    fn call(&mut self, name: &Ident, args: &[Expr], span: Span) -> CExpr {
        if let Some(&(idx, arity)) = self.pc.fns.get(&name.name) {
            if args.len() != arity {
                self.err(
                    span,
                    format!(
                        "fn `{}` takes {arity} argument(s), {} given",
                        name.name,
                        args.len()
                    ),
                );
            }
            let a = args.iter().map(|x| self.expr(x)).collect();
            return CExpr::UserFn(idx, a);
        }
        let Some(spec) = builtins::lookup(&name.name) else {
            let mut known: Vec<&str> = builtins::SPECS.iter().map(|s| s.name).collect();
            known.extend(self.pc.fns.keys().map(String::as_str));
            let msg = format!(
                "unknown function `{}`{}",
                name.name,
                suggest(&name.name, &known)
            );
            self.err(name.span, msg);
            return CExpr::Omit;
        };
        if args.len() < spec.min || args.len() > spec.max {
            let want = if spec.min == spec.max {
                spec.min.to_string()
            } else if spec.max == usize::MAX {
                format!("at least {}", spec.min)
            } else {
                format!("{} to {}", spec.min, spec.max)
            };
            self.err(
                span,
                format!(
                    "`{}` takes {want} argument(s), {} given ({})",
                    spec.name,
                    args.len(),
                    spec.doc
                ),
            );
            return CExpr::Omit;
        }
        let mut out = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            if spec.table_arg && i == 0 {
                match &a.kind {
                    ExprKind::Var(t) if self.pc.tables.contains_key(t) => {
                        out.push(CExpr::TableRef(self.pc.tables[t]));
                    }
                    ExprKind::Var(t) => {
                        let known: Vec<&str> = self.pc.tables.keys().map(String::as_str).collect();
                        let msg = format!("unknown table `{t}`{}", suggest(t, &known));
                        self.err(a.span, msg);
                        out.push(CExpr::Omit);
                    }
                    _ => {
                        self.err(
                            a.span,
                            format!("the first argument of `{}` must be a table name", spec.name),
                        );
                        out.push(CExpr::Omit);
                    }
                }
                continue;
            }
            if spec.lambda_arg == Some(i) {
                match &a.kind {
                    ExprKind::Lambda { param, body } => {
                        let mark = self.scope.vars.len();
                        let slot = self.scope.push(&param.name);
                        let b = self.expr(body);
                        self.scope.vars.truncate(mark);
                        out.push(CExpr::Lambda(slot, Box::new(b)));
                    }
                    ExprKind::Var(f)
                        if self.pc.fns.contains_key(f) && self.scope.get(f).is_none() =>
                    {
                        let (idx, arity) = self.pc.fns[f];
                        if arity != 1 {
                            self.err(
                                a.span,
                                format!(
                                    "fn `{f}` takes {arity} arguments; `{}` passes one",
                                    spec.name
                                ),
                            );
                        }
                        out.push(CExpr::FnRef(idx));
                    }
                    _ => {
                        self.err(
                            a.span,
                            format!(
                                "argument {} of `{}` must be a function: `x -> ...` or a fn name",
                                i + 1,
                                spec.name
                            ),
                        );
                        out.push(CExpr::Omit);
                    }
                }
                continue;
            }
            if matches!(a.kind, ExprKind::Lambda { .. }) {
                self.err(
                    a.span,
                    format!(
                        "argument {} of `{}` is a value, not a function",
                        i + 1,
                        spec.name
                    ),
                );
                out.push(CExpr::Omit);
                continue;
            }
            let ca = self.expr(a);
            out.push(ca);
        }
        self.check_call_types(spec.builtin, &out, args, span);
        CExpr::Builtin(spec.builtin, out, span)
    }

    /// Type misuse that is visible from constants.
    fn check_call_types(&mut self, b: Builtin, out: &[CExpr], args: &[Expr], span: Span) {
        let want_string: &[usize] = match b {
            Builtin::Join => &[1],
            Builtin::StartsWith | Builtin::EndsWith => &[0, 1],
            Builtin::MergeAdjacent => &[1, 2],
            Builtin::NewId | Builtin::Invalid => &[0],
            Builtin::Split => &[1],
            Builtin::Replace => &[1, 2],
            _ => &[],
        };
        let want_number: &[usize] = match b {
            Builtin::Clamp => &[1, 2],
            _ => &[],
        };
        for &i in want_string {
            if let Some(CExpr::Const(v)) = out.get(i) {
                if !v.is_string() {
                    let s = args.get(i).map_or(span, |a| a.span);
                    self.err(
                        s,
                        format!(
                            "expected a string here, found a {}",
                            builtins::type_name(Some(v))
                        ),
                    );
                }
            }
        }
        for &i in want_number {
            if let Some(CExpr::Const(v)) = out.get(i) {
                if !v.is_number() {
                    let s = args.get(i).map_or(span, |a| a.span);
                    self.err(
                        s,
                        format!(
                            "expected a number here, found a {}",
                            builtins::type_name(Some(v))
                        ),
                    );
                }
            }
        }
    }

    fn check_binary(&mut self, op: BinOp, a: &CExpr, b: &CExpr, span: Span) {
        use BinOp::*;
        let (CExpr::Const(x), CExpr::Const(y)) = (a, b) else {
            if let (In | NotIn, CExpr::Const(y)) = (op, b) {
                if !(y.is_array() || y.is_string() || y.is_object()) {
                    self.err(
                        span,
                        "the right side of `in` must be a list, string or object",
                    );
                }
            }
            return;
        };
        let bad = match op {
            Add => !(x.is_number() && y.is_number() || x.is_string() && y.is_string()),
            Sub | Mul | Div | Rem => !(x.is_number() && y.is_number()),
            Lt | Le | Gt | Ge => {
                !(x.is_number() && y.is_number() || x.is_string() && y.is_string())
            }
            Like => !(x.is_string() && y.is_string()),
            In | NotIn => !(y.is_array() || y.is_string() || y.is_object()),
            _ => false,
        };
        if bad {
            self.err(
                span,
                format!(
                    "operator cannot combine a {} and a {}",
                    builtins::type_name(Some(x)),
                    builtins::type_name(Some(y))
                ),
            );
        }
    }
}

fn push_seg(base: CExpr, seg: Seg) -> CExpr {
    match base {
        CExpr::Path(b, mut segs) => {
            segs.push(seg);
            CExpr::Path(b, segs)
        }
        other => CExpr::Path(Box::new(other), vec![seg]),
    }
}

/// ` (did you mean `x`?)` when a known name is close.
fn suggest(name: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < name.len().max(1))
        .min();
    match best {
        Some((_, k)) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A base URL's template without a trailing `/` (URL templates start with one).
fn trim_end_slash(parts: &mut [TmplPart]) {
    if let Some(TmplPart::Lit(s)) = parts.last_mut() {
        let n = s.trim_end_matches('/').len();
        s.truncate(n);
    }
}
