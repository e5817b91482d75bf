//! Tree-walking interpreter over the compiled form. Input documents are
//! borrowed, never copied, until a value is actually placed in the output.

use std::cell::OnceCell;

use serde_json::{Map, Value};

use super::ast::BinOp;
use super::builtins::{self as bi, Builtin};
use super::ir::*;
use super::key_order::{self, SourceOrder};
use super::out::{self, Fields, Out};
use super::schema::CtxField;
use super::RequestCtx;

/// Evaluation levels that `fn` calls may add on top of the expression being evaluated: each
/// call charges its body's depth. Mapping files do not recurse meaningfully, so hitting this
/// means a runaway recursion in a file. With the parser's nesting bound, this keeps the
/// interpreter's stack use within what a shard's stack holds, whatever the input.
const MAX_CALL_LEVELS: usize = 1024;

/// A value during evaluation. `Absent` is "no value" (a missing field, `omit`),
/// distinct from JSON `null`; reading a field whose value is `null` gives `Absent`.
#[derive(Debug)]
pub enum Val<'a> {
    Absent,
    Ref(&'a Value),
    Own(Value),
}

impl Clone for Val<'_> {
    // Reading a local clones its value, mostly a borrow: kept inline, not a call each time.
    #[inline(always)]
    fn clone(&self) -> Self {
        match self {
            Val::Absent => Val::Absent,
            Val::Ref(v) => Val::Ref(v),
            Val::Own(v) => Val::Own(v.clone()),
        }
    }
}

impl<'a> Val<'a> {
    pub fn get(&self) -> Option<&Value> {
        match self {
            Val::Absent => None,
            Val::Ref(v) => Some(v),
            Val::Own(v) => Some(v),
        }
    }

    pub fn into_value(self) -> Option<Value> {
        match self {
            Val::Absent => None,
            Val::Ref(v) => Some(v.clone()),
            Val::Own(v) => Some(v),
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self, Val::Absent)
    }

    fn is_nullish(&self) -> bool {
        matches!(self.get(), None | Some(Value::Null))
    }

    fn from_opt(v: Option<Value>) -> Self {
        v.map_or(Val::Absent, Val::Own)
    }
}

impl<'a> From<Val<'a>> for Out<'a> {
    fn from(v: Val<'a>) -> Self {
        match v {
            Val::Absent => Out::Absent,
            Val::Ref(v) => Out::Ref(v),
            Val::Own(v) => Out::Own(v),
        }
    }
}

/// Values per arena chunk. Few values are pinned (most bound values are borrowed from the
/// documents), and chunks are chained when more are.
const CHUNK: usize = 8;

/// Storage for owned values that are bound to a local, a `fn` parameter or a
/// lambda parameter. Moving such a value here once turns every later read into
/// a `Val::Ref` (a pointer copy) instead of a deep clone of the whole subtree.
/// Each cell is written once through `&self` (`OnceCell`) and chunks are
/// chained, never moved, so the borrows stay valid without `unsafe`. Lives as
/// long as one evaluation (a request, a response, a stream event).
pub struct Arena {
    first: Chunk,
}

struct Chunk {
    cells: [OnceCell<Value>; CHUNK],
    next: OnceCell<Box<Chunk>>,
}

impl Chunk {
    fn new() -> Self {
        Chunk {
            cells: std::array::from_fn(|_| OnceCell::new()),
            next: OnceCell::new(),
        }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            first: Chunk::new(),
        }
    }
}

/// A run-time failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtError {
    /// The client's request is unacceptable (400).
    Invalid(String),
    /// The mapping file did something impossible with the data (500).
    Mapping(String),
}

/// Control flow out of a statement list.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    Normal,
    Done,
    /// `raise <status>` with the evaluated status.
    Raise(Option<Value>),
    /// `unsupported` hit with `drop_params` off.
    Unsupported(String),
}

/// Where statements write.
#[derive(Debug, Default)]
pub struct Sink<'a> {
    pub obj: Fields<'a>,
    /// Top-level fields to remove (passthrough mode).
    pub removed: Vec<String>,
    pub chunks: Vec<Value>,
    pub usage: Option<Value>,
    pub include_usage: bool,
}

pub struct Env<'a, 's> {
    pub prog: &'a Program,
    pub req: Option<&'a Value>,
    /// Top-level request fields by id, filled once per request.
    pub req_fields: [Option<&'a Value>; 64],
    pub res: Option<&'a Value>,
    pub ev: Option<&'a Value>,
    pub event: Option<&'a str>,
    pub status: u16,
    /// The upstream response's headers (`headers`), names in lowercase.
    pub headers: &'a [(String, String)],
    /// `headers` as an object, built on first read.
    headers_val: Option<&'a Value>,
    pub text: &'a str,
    pub ctx: Option<&'a RequestCtx<'a>>,
    /// Bit per request-field id: dropped by an `unsupported` rule.
    pub dropped: u64,
    pub state: &'s mut Vec<Value>,
    pub id_counter: &'s mut u64,
    pub passthrough: bool,
    /// `ctx` fields already built (see `ctx_field`), by `CtxField` index.
    ctx_vals: [Option<&'a Value>; 8],
    /// Bound on JSON nesting for `parse_json` of request or response text.
    pub max_json_depth: usize,
    /// The deployment's kept values of `CExpr::Memo` calls; without one they are evaluated
    /// every time.
    pub memo: Option<&'a super::memo::Memo>,
    /// The raw text of `res` or `ev`, for `to_json` to keep the provider's key order.
    pub source: Option<SourceOrder<'a>>,
    stack: Vec<Val<'a>>,
    base: usize,
    depth: usize,
    /// Bump cursor into the arena: current chunk and cells used in it.
    chunk: &'a Chunk,
    used: usize,
}

/// Errors are boxed inside the interpreter: `Result<Val, Box<_>>` fits in the
/// 32 bytes of a `Val` (niche), where an inline `RtError` makes every returned
/// value 40 bytes. Errors are rare; results are moved on every evaluation.
type R<T> = Result<T, Box<RtError>>;

fn mapping<T>(msg: impl Into<String>) -> R<T> {
    Err(Box::new(RtError::Mapping(msg.into())))
}

impl<'a, 's> Env<'a, 's> {
    pub fn new(
        prog: &'a Program,
        arena: &'a Arena,
        state: &'s mut Vec<Value>,
        id_counter: &'s mut u64,
    ) -> Self {
        Env {
            prog,
            req: None,
            req_fields: [None; 64],
            res: None,
            ev: None,
            event: None,
            status: 0,
            headers: &[],
            headers_val: None,
            text: "",
            ctx: None,
            dropped: 0,
            state,
            id_counter,
            passthrough: false,
            ctx_vals: [None; 8],
            max_json_depth: crate::json::DEFAULT_MAX_DEPTH,
            memo: None,
            source: None,
            // Deep enough for the shipped files' nesting without regrowing.
            stack: Vec::with_capacity(64),
            base: 0,
            depth: 0,
            chunk: &arena.first,
            used: 0,
        }
    }

    /// Move an owned value into the arena and borrow it for the rest of the
    /// evaluation.
    fn keep(&mut self, v: Value) -> &'a Value {
        if self.used == CHUNK {
            self.chunk = self.chunk.next.get_or_init(|| Box::new(Chunk::new()));
            self.used = 0;
        }
        let chunk: &'a Chunk = self.chunk;
        let cell = &chunk.cells[self.used];
        self.used += 1;
        // The cursor only moves forward, so the cell is always empty here.
        cell.get_or_init(|| v)
    }

    /// A value about to be bound to a slot: owned data with heap parts goes to
    /// the arena so that reads of the slot borrow instead of cloning; scalars
    /// clone cheaply and stay as they are.
    #[inline]
    fn pin(&mut self, v: Val<'a>) -> Val<'a> {
        match v {
            Val::Own(x @ (Value::String(_) | Value::Array(_) | Value::Object(_))) => {
                Val::Ref(self.keep(x))
            }
            v => v,
        }
    }

    pub fn set_request(&mut self, req: &'a Value) {
        self.req = Some(req);
        if let Value::Object(m) = req {
            for (k, v) in m {
                if let Some(id) = super::schema::request_field(k) {
                    self.req_fields[id as usize] = Some(v);
                }
            }
        }
    }

    /// The request as some of its top-level OpenAI fields, by id (the program reads no
    /// others): `extra.*` reads nothing.
    pub fn set_request_fields(&mut self, fields: &'a [(u8, Value)]) {
        for (id, v) in fields {
            self.req_fields[usize::from(*id)] = Some(v);
        }
    }

    /// Evaluate a stand-alone expression in a fresh frame.
    pub fn eval_top(&mut self, top: &'a CTop) -> Result<Val<'a>, RtError> {
        let base = self.enter(top.slots);
        let r = self.eval(&top.expr);
        self.leave(base);
        r.map_err(|e| *e)
    }

    /// Evaluate an expression compiled into a block's scope (a handler's
    /// `when`), in a fresh frame of that block's size.
    pub fn eval_with_slots(&mut self, e: &'a CExpr, slots: usize) -> Result<Val<'a>, RtError> {
        let base = self.enter(slots);
        let r = self.eval(e);
        self.leave(base);
        r.map_err(|e| *e)
    }

    /// Run a block in a fresh frame.
    pub fn run_block(&mut self, block: &'a CBlock, sink: &mut Sink<'a>) -> Result<Flow, RtError> {
        let base = self.enter(block.slots);
        let r = self.exec(&block.stmts, sink);
        self.leave(base);
        r.map_err(|e| *e)
    }

    fn enter(&mut self, slots: usize) -> usize {
        let old = self.base;
        self.base = self.stack.len();
        self.stack.resize(self.base + slots, Val::Absent);
        old
    }

    fn leave(&mut self, old: usize) {
        self.stack.truncate(self.base);
        self.base = old;
    }

    fn exec(&mut self, stmts: &'a [CStmt], sink: &mut Sink<'a>) -> R<Flow> {
        for s in stmts {
            let flow = self.stmt(s, sink)?;
            if !matches!(flow, Flow::Normal) {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn stmt(&mut self, s: &'a CStmt, sink: &mut Sink<'a>) -> R<Flow> {
        match s {
            CStmt::Let(slot, e) => {
                let v = self.eval(e)?;
                self.stack[self.base + slot] = self.pin(v);
            }
            // `field = omit` written as such removes what an earlier statement (or `super`) set;
            // an expression that merely comes out absent leaves it.
            CStmt::Set(path, CExpr::Omit) if !self.passthrough => {
                out::remove_path(&mut sink.obj, path);
            }
            CStmt::Set(path, e) => match self.eval_out(e)? {
                Out::Absent => {
                    if let (true, [key]) = (self.passthrough, path.as_slice()) {
                        sink.obj.retain(|(k, _)| k != key);
                        sink.removed.push(key.clone());
                    }
                }
                v => self.set_out(&mut sink.obj, path, v),
            },
            CStmt::SetState(i, path, e) => {
                let v = self.eval(e)?.into_value();
                let slot = &mut self.state[*i];
                if path.is_empty() {
                    *slot = v.unwrap_or(Value::Null);
                } else if let Some(v) = v {
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    if let Value::Object(m) = slot {
                        set_path(m, path, v);
                    }
                }
            }
            CStmt::If(c, t, e) => {
                let cond = self.eval(c)?;
                let branch = if bi::truthy(cond.get()) { t } else { e };
                return self.exec(branch, sink);
            }
            CStmt::Unsupported(params, cond) => {
                let hit = match cond {
                    Some(c) => bi::truthy(self.eval(c)?.get()),
                    None => true,
                };
                if hit {
                    for (id, name) in params {
                        let present = self.req_fields[*id as usize].is_some_and(|v| !v.is_null())
                            && self.dropped & (1 << id) == 0;
                        if !present {
                            continue;
                        }
                        if self.ctx.is_some_and(|c| c.drop_params) {
                            self.dropped |= 1 << id;
                            sink.removed.push(name.clone());
                        } else {
                            return Ok(Flow::Unsupported(name.clone()));
                        }
                    }
                }
            }
            CStmt::EmitDelta(delta, finish) => {
                let d = self
                    .eval(delta)?
                    .into_value()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                let f = match finish {
                    Some(f) => self.eval(f)?.into_value().unwrap_or(Value::Null),
                    None => Value::Null,
                };
                let mut choice = Map::new();
                choice.insert("index".into(), Value::from(0));
                choice.insert("delta".into(), d);
                choice.insert("finish_reason".into(), f);
                let chunk = self.chunk(vec![Value::Object(choice)]);
                sink.chunks.push(chunk);
            }
            CStmt::EmitUsage(u) => {
                if let Some(u) = self.eval(u)?.into_value() {
                    if sink.include_usage {
                        let mut chunk = self.chunk(Vec::new());
                        if let Value::Object(m) = &mut chunk {
                            m.insert("usage".into(), u.clone());
                        }
                        sink.chunks.push(chunk);
                    }
                    sink.usage = Some(u);
                }
            }
            CStmt::EmitChunk(c) => {
                if let Some(v) = self.eval(c)?.into_value() {
                    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                        sink.usage = Some(u.clone());
                    }
                    sink.chunks.push(v);
                }
            }
            CStmt::Done => return Ok(Flow::Done),
            CStmt::SuperStream { level, end } => {
                let prog: &'a Program = self.prog;
                let Some((handlers, end_handlers)) = prog.stream.parents.get(*level) else {
                    return mapping("super without a parent stream block");
                };
                let list = if *end { end_handlers } else { handlers };
                for h in list {
                    if let Some(name) = &h.event {
                        if self.event != Some(name.as_str()) {
                            continue;
                        }
                    }
                    let base = self.enter(h.body.slots);
                    let ok = match &h.cond {
                        None => Ok(true),
                        Some(c) => self.eval(c).map(|v| bi::truthy(v.get())),
                    };
                    let r = match ok {
                        Ok(true) => self.exec(&h.body.stmts, sink),
                        Ok(false) => {
                            self.leave(base);
                            continue;
                        }
                        Err(e) => Err(e),
                    };
                    self.leave(base);
                    return r;
                }
                return Ok(Flow::Normal);
            }
            CStmt::Super(i) => {
                let prog: &'a Program = self.prog;
                let Some(block) = prog.supers.get(*i) else {
                    return mapping("super without a parent block");
                };
                let base = self.enter(block.slots);
                let r = self.exec(&block.stmts, sink);
                self.leave(base);
                return r;
            }
            CStmt::Raise(e) => {
                let v = self.eval(e)?.into_value();
                return Ok(Flow::Raise(v));
            }
        }
        Ok(Flow::Normal)
    }

    /// The OpenAI chunk envelope around `choices`, from the built-in state
    /// variables `id`, `model`, `created` (slots 0, 1, 2).
    fn chunk(&self, choices: Vec<Value>) -> Value {
        let mut m = Map::new();
        let st = |i: usize| self.state.get(i).cloned().unwrap_or(Value::Null);
        m.insert("id".into(), st(0));
        m.insert(
            "object".into(),
            Value::String("chat.completion.chunk".into()),
        );
        m.insert("created".into(), st(2));
        m.insert("model".into(), st(1));
        m.insert("choices".into(), Value::Array(choices));
        Value::Object(m)
    }

    /// Evaluate an expression. The frequent leaves (constants, locals, paths
    /// on a local or on `res`/`ev`) are handled here in a small stack frame;
    /// everything else goes to `eval_node`, whose frame is large because its
    /// arms are. Most evaluations are leaves, so this halves the per-call cost.
    pub fn eval(&mut self, e: &'a CExpr) -> R<Val<'a>> {
        match e {
            CExpr::Const(v) => Ok(Val::Ref(v)),
            CExpr::Local(slot) => Ok(self.stack[self.base + slot].clone()),
            CExpr::Path(base, segs) => match &**base {
                CExpr::Local(slot) => Ok(walk(self.stack[self.base + slot].clone(), segs)),
                CExpr::Res => Ok(walk(ref_or_absent(self.res), segs)),
                CExpr::Ev => Ok(walk(ref_or_absent(self.ev), segs)),
                _ => self.eval_node(e),
            },
            _ => self.eval_node(e),
        }
    }

    #[inline(never)]
    fn eval_node(&mut self, e: &'a CExpr) -> R<Val<'a>> {
        // Calls in tail position return their `Result` as is: unwrapping and
        // re-wrapping it copies the value through the (large) frame.
        let v = match e {
            CExpr::Const(v) => Val::Ref(v),
            CExpr::Omit => Val::Absent,
            CExpr::Req(id) => {
                if self.dropped & (1 << id) != 0 {
                    Val::Absent
                } else {
                    ref_or_absent(self.req_fields[*id as usize])
                }
            }
            CExpr::Extra(k) => ref_or_absent(self.req.and_then(|r| r.get(k))),
            CExpr::Ctx(f) => self.ctx_field(*f),
            CExpr::CtxParam(i) => self.ctx_param(*i),
            CExpr::Res => ref_or_absent(self.res),
            CExpr::Ev => ref_or_absent(self.ev),
            CExpr::Event => self
                .event
                .map_or(Val::Absent, |e| Val::Own(Value::String(e.to_string()))),
            CExpr::Status => Val::Own(Value::from(self.status)),
            CExpr::Headers => self.headers_value(),
            CExpr::Text => Val::Own(Value::String(self.text.to_string())),
            CExpr::Local(slot) => self.stack[self.base + slot].clone(),
            CExpr::State(i) => match self.state.get(*i) {
                Some(Value::Null) | None => Val::Absent,
                Some(v) => Val::Own(v.clone()),
            },
            CExpr::Path(base, segs) => {
                let b = self.eval(base)?;
                walk(b, segs)
            }
            CExpr::Index(base, idx) => {
                let b = self.eval(base)?;
                let i = self.eval(idx)?;
                let seg = match i.get() {
                    Some(Value::String(s)) => Seg::Key(s.clone()),
                    Some(Value::Number(n)) => match n.as_u64() {
                        Some(u) => Seg::Idx(u as usize),
                        None => return Ok(Val::Absent),
                    },
                    _ => return Ok(Val::Absent),
                };
                walk(b, std::slice::from_ref(&seg))
            }
            CExpr::Builtin(b, args, _) => return self.builtin(*b, args),
            CExpr::UserFn(idx, args) => {
                let top = self.push_args(args)?;
                return self.call_user(*idx, top, Self::eval);
            }
            CExpr::Lambda(..) | CExpr::FnRef(_) | CExpr::TableRef(_) => {
                return mapping("a function or table used as a value");
            }
            CExpr::Neg(x) => match self.eval(x)? {
                Val::Absent => Val::Absent,
                v => match v.get().and_then(Value::as_f64) {
                    Some(f) => Val::from_opt(bi::num(-f)),
                    None => return mapping(format!("cannot negate a {}", bi::type_name(v.get()))),
                },
            },
            CExpr::Not(x) => {
                let v = self.eval(x)?;
                Val::Own(Value::Bool(!bi::truthy(v.get())))
            }
            CExpr::Bin(op, a, b, _) => return self.binary(*op, a, b),
            CExpr::If(c, t, f) => {
                let cond = self.eval(c)?;
                if bi::truthy(cond.get()) {
                    return self.eval(t);
                }
                match f {
                    Some(f) => return self.eval(f),
                    None => Val::Absent,
                }
            }
            CExpr::Match(s, arms) => {
                let v = self.eval(s)?;
                for (pats, value) in arms {
                    if pats.iter().any(|p| pattern_matches(p, &v)) {
                        return self.eval(value);
                    }
                }
                Val::Absent
            }
            CExpr::Object(entries) => return self.object(entries),
            CExpr::Array(entries) => return self.array(entries),
            CExpr::Memo(slot, call) => return self.memoized(*slot, call),
        };
        Ok(v)
    }

    /// A call whose value is the deployment's: kept the first time, borrowed afterwards.
    #[inline(never)]
    fn memoized(&mut self, slot: usize, call: &'a CExpr) -> R<Val<'a>> {
        let Some(cell) = self.memo.and_then(|m| m.cell(slot)) else {
            return self.eval(call);
        };
        if let Some(kept) = cell.get() {
            return Ok(kept.as_ref().map_or(Val::Absent, Val::Ref));
        }
        let value = self.eval(call)?.into_value();
        // Another shard may have kept it meanwhile: the same value.
        let kept = cell.get_or_init(|| value);
        Ok(kept.as_ref().map_or(Val::Absent, Val::Ref))
    }

    /// An object literal computed inside an expression (a `let`, an argument, a condition)
    /// rather than for the output: built as a `Value` straight away.
    #[inline(never)]
    fn object(&mut self, entries: &'a [CObj]) -> R<Val<'a>> {
        let mut m = Map::new();
        for en in entries {
            match en {
                CObj::Field(k, v) => {
                    if let Some(v) = self.eval(v)?.into_value() {
                        m.insert(k.clone(), v);
                    }
                }
                CObj::Spread(v) => match self.eval(v)?.into_value() {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(o)) => m.extend(o),
                    Some(other) => {
                        return mapping(format!(
                            "cannot spread a {} into an object",
                            bi::type_name(Some(&other))
                        ))
                    }
                },
            }
        }
        Ok(Val::Own(Value::Object(m)))
    }

    #[inline(never)]
    fn array(&mut self, entries: &'a [CArr]) -> R<Val<'a>> {
        let mut out = Vec::with_capacity(entries.len());
        for en in entries {
            match en {
                CArr::Item(v) => {
                    if let Some(v) = self.eval(v)?.into_value() {
                        out.push(v);
                    }
                }
                CArr::Spread(v) => match self.eval(v)?.into_value() {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) => out.extend(a),
                    Some(other) => {
                        return mapping(format!(
                            "cannot spread a {} into a list",
                            bi::type_name(Some(&other))
                        ))
                    }
                },
            }
        }
        Ok(Val::Own(Value::Array(out)))
    }

    /// Evaluate an expression whose value goes to the output. Object and list literals,
    /// and the `fn` calls, branches, `??` and `map`s that yield them, are built as [`Out`]
    /// entries (borrowed keys and leaves) rather than `Value` trees; anything else is
    /// evaluated as usual.
    fn eval_out(&mut self, e: &'a CExpr) -> R<Out<'a>> {
        // Leaves go straight to `eval`, past the large frame of `eval_out_node`.
        match e {
            CExpr::Object(entries) => self.object_out(entries),
            CExpr::Array(entries) => self.array_out(entries),
            CExpr::UserFn(..)
            | CExpr::If(..)
            | CExpr::Match(..)
            | CExpr::Bin(BinOp::Coalesce, ..)
            | CExpr::Builtin(
                Builtin::Map | Builtin::FlatMap | Builtin::Nonempty | Builtin::MergeAdjacent,
                ..,
            ) => self.eval_out_node(e),
            _ => self.eval(e).map(Out::from),
        }
    }

    #[inline(never)]
    fn eval_out_node(&mut self, e: &'a CExpr) -> R<Out<'a>> {
        match e {
            CExpr::UserFn(idx, args) => {
                let top = self.push_args(args)?;
                self.call_user(*idx, top, Self::eval_out)
            }
            CExpr::If(c, t, f) => {
                let cond = self.eval(c)?;
                match (bi::truthy(cond.get()), f) {
                    (true, _) => self.eval_out(t),
                    (false, Some(f)) => self.eval_out(f),
                    (false, None) => Ok(Out::Absent),
                }
            }
            CExpr::Match(s, arms) => {
                let v = self.eval(s)?;
                match arms
                    .iter()
                    .find(|(pats, _)| pats.iter().any(|p| pattern_matches(p, &v)))
                {
                    Some((_, value)) => self.eval_out(value),
                    None => Ok(Out::Absent),
                }
            }
            CExpr::Bin(BinOp::Coalesce, a, b, _) => {
                let x = self.eval_out(a)?;
                if x.is_nullish() {
                    self.eval_out(b)
                } else {
                    Ok(x)
                }
            }
            CExpr::Builtin(b @ (Builtin::Map | Builtin::FlatMap), args, _) => {
                self.map_out(*b, args)
            }
            CExpr::Builtin(Builtin::Nonempty, args, _) => {
                let v = self.eval_out(&args[0])?;
                Ok(if v.is_empty() { Out::Absent } else { v })
            }
            CExpr::Builtin(Builtin::MergeAdjacent, args, _) => self.merge_adjacent_out(args),
            _ => self.eval(e).map(Out::from),
        }
    }

    #[inline(never)]
    fn object_out(&mut self, entries: &'a [CObj]) -> R<Out<'a>> {
        let mut fields = Vec::with_capacity(entries.len());
        // Literal fields are distinct (the compiler checks): only a spread can repeat a key.
        let mut spread = false;
        for en in entries {
            match en {
                CObj::Field(k, v) => match self.eval_out(v)? {
                    Out::Absent => {}
                    v if spread => out::put(&mut fields, k, v),
                    v => fields.push((k.as_str(), v)),
                },
                CObj::Spread(v) => {
                    spread = true;
                    match self.eval_out(v)? {
                        v @ Out::Obj(_)
                        | v @ Out::Ref(Value::Object(_))
                        | v @ Out::Own(Value::Object(_)) => {
                            for (k, v) in self.fields_of(v) {
                                out::put(&mut fields, k, v);
                            }
                        }
                        v if v.is_nullish() => {}
                        other => {
                            return mapping(format!(
                                "cannot spread a {} into an object",
                                other.type_name()
                            ))
                        }
                    }
                }
            }
        }
        Ok(Out::Obj(fields))
    }

    #[inline(never)]
    fn array_out(&mut self, entries: &'a [CArr]) -> R<Out<'a>> {
        let mut items = Vec::with_capacity(entries.len());
        for en in entries {
            match en {
                CArr::Item(v) => match self.eval_out(v)? {
                    Out::Absent => {}
                    v => items.push(v),
                },
                CArr::Spread(v) => match out::extend(&mut items, self.eval_out(v)?) {
                    Ok(()) => {}
                    Err(v) if v.is_nullish() => {}
                    Err(other) => {
                        return mapping(format!(
                            "cannot spread a {} into a list",
                            other.type_name()
                        ))
                    }
                },
            }
        }
        Ok(Out::Arr(items))
    }

    /// `map` / `flat_map` whose results go to the output.
    fn map_out(&mut self, b: Builtin, args: &'a [CExpr]) -> R<Out<'a>> {
        let Some(items) = self.list_arg(b, &args[0])? else {
            return Ok(Out::Absent);
        };
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match self.apply_with(&args[1], it, Self::eval_out)? {
                Out::Absent => {}
                v if b == Builtin::FlatMap => {
                    if let Err(v) = out::extend(&mut out, v) {
                        if !v.is_nullish() {
                            out.push(v);
                        }
                    }
                }
                v => out.push(v),
            }
        }
        Ok(Out::Arr(out))
    }

    /// `merge_adjacent` on built objects, which are edited as entries instead of being
    /// turned into `Value`s first.
    fn merge_adjacent_out(&mut self, args: &'a [CExpr]) -> R<Out<'a>> {
        let list = self.eval_out(&args[0])?;
        let key = self.eval(&args[1])?;
        let field = self.eval(&args[2])?;
        let items = match list.into_items() {
            Ok(items) => items,
            Err(v) if v.is_nullish() => return Ok(Out::Absent),
            Err(other) => return mapping(format!("merge_adjacent of a {}", other.type_name())),
        };
        let key = key.get().and_then(Value::as_str).unwrap_or_default();
        // Pinned, so that the merged field can be keyed by a borrow of it.
        let field = match self.pin(field) {
            Val::Ref(Value::String(s)) => s.as_str(),
            _ => "",
        };
        let mut merged: Vec<Out<'a>> = Vec::with_capacity(items.len());
        for item in items {
            let same = match merged.last().and_then(|prev| prev.field(key)) {
                Some(k) => item.field(key).is_some_and(|c| out::same(&k, &c)),
                None => false,
            };
            if !same {
                merged.push(item);
                continue;
            }
            let mut prev = match merged.pop() {
                Some(prev) => self.fields_of(prev),
                None => Vec::new(),
            };
            let mut cur = self.fields_of(item);
            let more = cur
                .iter()
                .position(|(k, _)| *k == field)
                .map(|i| cur.swap_remove(i).1);
            let before = match prev.iter().position(|(k, _)| *k == field) {
                Some(i) => prev.remove(i).1,
                None => Out::Absent,
            };
            let mut list = Vec::new();
            for v in std::iter::once(before).chain(more) {
                if let Err(v) = out::extend(&mut list, v) {
                    if !v.is_nullish() {
                        list.push(v);
                    }
                }
            }
            prev.push((field, Out::Arr(list)));
            merged.push(Out::Obj(prev));
        }
        Ok(Out::Arr(merged))
    }

    /// The entries of an object (a document object becomes entries borrowing it; an owned
    /// one is moved to the arena first). Anything else has none.
    fn fields_of(&mut self, o: Out<'a>) -> Fields<'a> {
        let m = match o {
            Out::Obj(f) => return f,
            Out::Ref(Value::Object(m)) => m,
            Out::Own(v @ Value::Object(_)) => match self.keep(v) {
                Value::Object(m) => m,
                _ => return Vec::new(),
            },
            _ => return Vec::new(),
        };
        m.iter().map(|(k, v)| (k.as_str(), Out::Ref(v))).collect()
    }

    /// Set `path` inside `fields`, making objects on the way (replacing a non-object in
    /// the way, as assigning to a field of it does).
    fn set_out(&mut self, fields: &mut Fields<'a>, path: &'a [String], v: Out<'a>) {
        match path {
            [] => {}
            [key] => out::put(fields, key, v),
            [key, rest @ ..] => {
                let i = match fields.iter().position(|(k, _)| *k == key.as_str()) {
                    Some(i) => i,
                    None => {
                        fields.push((key, Out::Obj(Vec::new())));
                        fields.len() - 1
                    }
                };
                let inner = std::mem::replace(&mut fields[i].1, Out::Absent);
                let mut inner = self.fields_of(inner);
                self.set_out(&mut inner, rest, v);
                fields[i].1 = Out::Obj(inner);
            }
        }
    }

    /// A `ctx` field, built once per evaluation and borrowed afterwards: a file reads
    /// `ctx.model` several times per request (the OpenAI file five), and each read used to copy
    /// the string.
    fn ctx_field(&mut self, f: CtxField) -> Val<'a> {
        let slot = f as usize;
        if let Some(v) = self.ctx_vals.get(slot).copied().flatten() {
            return Val::Ref(v);
        }
        match self.build_ctx_field(f) {
            Val::Own(v) => {
                let kept = self.keep(v);
                if let Some(cell) = self.ctx_vals.get_mut(slot) {
                    *cell = Some(kept);
                }
                Val::Ref(kept)
            }
            other => other,
        }
    }

    /// `headers`: an object built once per evaluation, only when a file reads it. A repeated
    /// header's values are joined with `, ` (RFC 9110 §5.3).
    fn headers_value(&mut self) -> Val<'a> {
        if let Some(v) = self.headers_val {
            return Val::Ref(v);
        }
        let mut m = Map::new();
        for (k, v) in self.headers {
            let k = k.to_ascii_lowercase();
            match m.get_mut(&k) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(v);
                }
                _ => {
                    m.insert(k, Value::String(v.clone()));
                }
            }
        }
        let kept = self.keep(Value::Object(m));
        self.headers_val = Some(kept);
        Val::Ref(kept)
    }

    /// A declared parameter: the deployment's value, else the declaration's default.
    fn ctx_param(&self, i: usize) -> Val<'a> {
        let prog: &'a Program = self.prog;
        let Some(p) = prog.params.get(i) else {
            return Val::Absent;
        };
        match p.name.as_str() {
            "api_base" => return self.ctx_field_value(CtxField::ApiBase, p),
            "api_version" => return self.ctx_field_value(CtxField::ApiVersion, p),
            _ => {}
        }
        let given = self.ctx.and_then(|c| c.params.get(&p.name));
        ref_or_absent(given.or(p.default_value.as_ref()))
    }

    fn ctx_field_value(&self, f: CtxField, p: &'a super::ir::Param) -> Val<'a> {
        match self.build_ctx_field(f) {
            Val::Absent => ref_or_absent(p.default_value.as_ref()),
            v => v,
        }
    }

    fn build_ctx_field(&self, f: CtxField) -> Val<'a> {
        let Some(c) = self.ctx else {
            return Val::Absent;
        };
        let s = |s: Option<&str>| s.map_or(Val::Absent, |s| Val::Own(Value::String(s.to_owned())));
        match f {
            CtxField::Model => Val::Own(Value::String(c.model.to_string())),
            CtxField::Stream => Val::Own(Value::Bool(c.stream)),
            CtxField::ApiVersion => s(c
                .api_version
                .as_deref()
                .or(self.prog.api_version.as_deref())),
            CtxField::ApiBase => s(c.api_base.as_deref()),
            CtxField::MaxOutputTokens => c
                .max_output_tokens
                .map_or(Val::Absent, |n| Val::Own(Value::from(n))),
            CtxField::IncludeUsage => Val::Own(Value::Bool(c.include_usage)),
            CtxField::DropParams => Val::Own(Value::Bool(c.drop_params)),
            CtxField::ApiKey => s(c.api_key.as_deref()),
        }
    }

    /// Evaluate (and pin) call arguments onto the stack, where they become the
    /// callee's first slots: no argument vector per call. Returns where they start.
    fn push_args(&mut self, args: &'a [CExpr]) -> R<usize> {
        let top = self.stack.len();
        for a in args {
            match self.eval(a) {
                Ok(v) => {
                    let v = self.pin(v);
                    self.stack.push(v);
                }
                Err(e) => {
                    self.stack.truncate(top);
                    return Err(e);
                }
            }
        }
        Ok(top)
    }

    /// Call fn `idx` whose (pinned) arguments are on the stack from `top` on;
    /// they become the first slots of its frame, and `eval` evaluates its body
    /// (as a value or as output). The stack is back at `top` afterwards, on
    /// success and on error.
    fn call_user<T>(
        &mut self,
        idx: usize,
        top: usize,
        eval: impl FnOnce(&mut Self, &'a CExpr) -> R<T>,
    ) -> R<T> {
        let prog = self.prog;
        let Some(f) = prog.fns.get(idx) else {
            self.stack.truncate(top);
            return mapping("unknown fn");
        };
        let levels = f.depth.max(1);
        if self.depth + levels > MAX_CALL_LEVELS {
            self.stack.truncate(top);
            return mapping(format!(
                "fn `{}` recursed deeper than the limit of {MAX_CALL_LEVELS} nested levels",
                f.name
            ));
        }
        self.depth += levels;
        let old = self.base;
        self.base = top;
        // The arguments already fill the frame unless the body has lambdas.
        if f.slots > f.params {
            self.stack.resize(top + f.slots, Val::Absent);
        }
        let r = eval(self, &f.body);
        self.stack.truncate(top);
        self.base = old;
        self.depth -= levels;
        r
    }

    /// Apply a lambda or fn reference to one argument.
    fn apply(&mut self, f: &'a CExpr, arg: Val<'a>) -> R<Val<'a>> {
        self.apply_with(f, arg, Self::eval)
    }

    /// Apply a lambda or fn reference to one argument, its body evaluated by `eval`.
    fn apply_with<T>(
        &mut self,
        f: &'a CExpr,
        arg: Val<'a>,
        eval: impl FnOnce(&mut Self, &'a CExpr) -> R<T>,
    ) -> R<T> {
        let arg = self.pin(arg);
        match f {
            CExpr::Lambda(slot, body) => {
                self.stack[self.base + slot] = arg;
                eval(self, body)
            }
            CExpr::FnRef(idx) => {
                let top = self.stack.len();
                self.stack.push(arg);
                self.call_user(*idx, top, eval)
            }
            _ => mapping("expected a function"),
        }
    }

    // Kept out of `eval_node` so that its frame stays small.
    #[inline(never)]
    fn binary(&mut self, op: BinOp, a: &'a CExpr, b: &'a CExpr) -> R<Val<'a>> {
        use BinOp::*;
        match op {
            And => {
                let x = self.eval(a)?;
                if !bi::truthy(x.get()) {
                    return Ok(Val::Own(Value::Bool(false)));
                }
                let y = self.eval(b)?;
                return Ok(Val::Own(Value::Bool(bi::truthy(y.get()))));
            }
            Or => {
                let x = self.eval(a)?;
                if bi::truthy(x.get()) {
                    return Ok(Val::Own(Value::Bool(true)));
                }
                let y = self.eval(b)?;
                return Ok(Val::Own(Value::Bool(bi::truthy(y.get()))));
            }
            Coalesce => {
                let x = self.eval(a)?;
                if x.is_nullish() {
                    return self.eval(b);
                }
                return Ok(x);
            }
            _ => {}
        }
        let x = self.eval(a)?;
        // Most comparisons are against a constant (`m.role == "user"`, `in [...]`).
        let y = match b {
            CExpr::Const(c) => Val::Ref(c),
            _ => self.eval(b)?,
        };
        let (xv, yv) = (x.get(), y.get());
        let boolean = |b: bool| Ok(Val::Own(Value::Bool(b)));
        match op {
            Eq => boolean(json_eq(xv, yv)),
            Ne => boolean(!json_eq(xv, yv)),
            Lt | Le | Gt | Ge => {
                let ord = match (xv, yv) {
                    (Some(Value::Number(p)), Some(Value::Number(q))) => {
                        p.as_f64().partial_cmp(&q.as_f64())
                    }
                    (Some(Value::String(p)), Some(Value::String(q))) => Some(p.cmp(q)),
                    _ => None,
                };
                let Some(o) = ord else { return boolean(false) };
                boolean(match op {
                    Lt => o.is_lt(),
                    Le => o.is_le(),
                    Gt => o.is_gt(),
                    _ => o.is_ge(),
                })
            }
            Like => boolean(match (xv, yv) {
                (Some(Value::String(h)), Some(Value::String(n))) => contains_ci(h, n),
                _ => false,
            }),
            In | NotIn => {
                let hit = match (xv, yv) {
                    (None, _) => false,
                    (Some(x), Some(Value::Array(items))) => {
                        items.iter().any(|i| json_eq(Some(x), Some(i)))
                    }
                    (Some(Value::String(x)), Some(Value::String(h))) => h.contains(x.as_str()),
                    (Some(Value::String(x)), Some(Value::Object(o))) => o.contains_key(x),
                    _ => false,
                };
                boolean(if op == In { hit } else { !hit })
            }
            Add | Sub | Mul | Div | Rem => {
                if x.is_absent() || y.is_absent() {
                    return Ok(Val::Absent);
                }
                arith(op, x, y)
            }
            _ => mapping("bad operator"),
        }
    }

    // Kept out of `eval_node` so that its frame stays small.
    #[inline(never)]
    fn builtin(&mut self, b: Builtin, args: &'a [CExpr]) -> R<Val<'a>> {
        use Builtin::*;
        // Functions that take a lambda evaluate it per item.
        match b {
            Map | Filter | Reject | FlatMap => {
                return Ok(match self.seq(b, args)? {
                    None => Val::Absent,
                    Some(items) => Val::Own(Value::Array(
                        items.into_iter().filter_map(Val::into_value).collect(),
                    )),
                });
            }
            Find | Any | All | Leading | AfterLeading => {
                let Some(items) = self.list_arg(b, &args[0])? else {
                    return Ok(Val::Absent);
                };
                return self.iterate(b, items, &args[1]);
            }
            // `xs | map(...) | join(sep)`: join the mapped items where they
            // are, without building (and cloning into) the intermediate list.
            Join if is_seq(&args[0]) => {
                let xs = self.items(&args[0])?;
                let sep = self.eval(&args[1])?;
                let Items::List(items) = xs else {
                    return Ok(Val::Absent);
                };
                let sep = sep.get().and_then(Value::as_str).unwrap_or_default();
                let mut out = String::new();
                for (i, it) in items.enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    match it.get() {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(Value::Null) | None => {}
                        Some(other) => out.push_str(&other.to_string()),
                    }
                }
                return Ok(Val::Own(Value::String(out)));
            }
            Lookup => {
                let CExpr::TableRef(t) = &args[0] else {
                    return mapping("lookup without a table");
                };
                let k = self.eval(&args[1])?;
                let prog = self.prog;
                let table = &prog.tables[*t];
                // An absent key takes the `_` default too: a table with `_` always answers.
                return Ok(match k.get() {
                    None | Some(Value::Null) => {
                        table.default.as_ref().map_or(Val::Absent, Val::Ref)
                    }
                    Some(k) => table.get(k).map_or(Val::Absent, Val::Ref),
                });
            }
            Now => {
                return Ok(Val::Own(Value::from(self.ctx.map_or(0, |c| c.now))));
            }
            ParseJson | TryParseJson => {
                let v = self.eval(&args[0])?;
                return match v.get() {
                    None | Some(Value::Null) => Ok(Val::Absent),
                    Some(Value::String(s)) => {
                        match crate::json::parse_str(s, self.max_json_depth) {
                            Ok(v) => Ok(Val::Own(v)),
                            Err(e) if b == ParseJson => Err(Box::new(RtError::Invalid(format!(
                                "invalid JSON ({e}): {}",
                                preview(s)
                            )))),
                            Err(_) => Ok(Val::Absent),
                        }
                    }
                    // Already structured (some clients send objects): keep as is.
                    Some(_) => Ok(v),
                };
            }
            // Frequent one-argument tests, answered without the argument stack.
            Nonempty => {
                let v = self.eval(&args[0])?;
                return Ok(if v.get().is_none_or(out::is_empty) {
                    Val::Absent
                } else {
                    v
                });
            }
            Present => {
                let v = self.eval(&args[0])?;
                return Ok(Val::Own(Value::Bool(!v.is_nullish())));
            }
            NewId => {
                let p = self.eval(&args[0])?;
                let prefix = p.get().and_then(Value::as_str).unwrap_or_default();
                let mut id = String::with_capacity(prefix.len() + 24);
                id.push_str(prefix);
                let seed = self.ctx.map_or("", |c| &*c.request_id);
                bi::push_id_hex(&mut id, seed, *self.id_counter);
                *self.id_counter += 1;
                return Ok(Val::Own(Value::String(id)));
            }
            _ => {}
        }
        // Arguments are evaluated onto the stack: no vector per call.
        let top = self.stack.len();
        for a in args {
            match self.eval(a) {
                Ok(v) => self.stack.push(v),
                Err(e) => {
                    self.stack.truncate(top);
                    return Err(e);
                }
            }
        }
        let r = Self::pure_builtin(b, &mut self.stack[top..], self.source.as_ref());
        self.stack.truncate(top);
        r
    }

    /// Built-ins that only look at their evaluated arguments; results are
    /// moved out of `vals` where possible.
    /// `source` is only for `to_json` (the provider's key order).
    fn pure_builtin(
        b: Builtin,
        vals: &mut [Val<'a>],
        source: Option<&SourceOrder<'_>>,
    ) -> R<Val<'a>> {
        use Builtin::*;
        let v0 = vals.first().and_then(Val::get);
        let str_arg = |i: usize| vals.get(i).and_then(Val::get).and_then(Value::as_str);
        let num_arg = |i: usize| vals.get(i).and_then(Val::get).and_then(Value::as_f64);
        let own = |v: Value| Ok(Val::Own(v));
        match b {
            Len => match v0 {
                Some(Value::String(s)) => own(Value::from(s.chars().count())),
                Some(Value::Array(a)) => own(Value::from(a.len())),
                Some(Value::Object(o)) => own(Value::from(o.len())),
                None | Some(Value::Null) => Ok(Val::Absent),
                Some(other) => mapping(format!("len of a {}", bi::type_name(Some(other)))),
            },
            First | Last => {
                let first = b == First;
                Ok(match take(vals, 0) {
                    Val::Ref(Value::Array(a)) => {
                        ref_or_absent(if first { a.first() } else { a.last() })
                    }
                    Val::Own(Value::Array(mut a)) => Val::from_opt(if first {
                        (!a.is_empty()).then(|| a.swap_remove(0))
                    } else {
                        a.pop()
                    }),
                    _ => Val::Absent,
                })
            }
            Join => {
                let Some(Value::Array(items)) = v0 else {
                    return Ok(Val::Absent);
                };
                let sep = str_arg(1).unwrap_or_default();
                let mut out = String::new();
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    match it {
                        Value::String(s) => out.push_str(s),
                        Value::Null => {}
                        other => out.push_str(&other.to_string()),
                    }
                }
                own(Value::String(out))
            }
            MergeAdjacent => {
                let Some((first, rest)) = vals.split_first_mut() else {
                    return Ok(Val::Absent);
                };
                let arg = |i: usize| {
                    rest.get(i)
                        .and_then(Val::get)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                };
                match std::mem::replace(first, Val::Absent).into_value() {
                    Some(Value::Array(a)) => {
                        own(Value::Array(bi::merge_adjacent(a, arg(0), arg(1))))
                    }
                    None | Some(Value::Null) => Ok(Val::Absent),
                    Some(other) => mapping(format!(
                        "merge_adjacent of a {}",
                        bi::type_name(Some(&other))
                    )),
                }
            }
            WithIndex => match take(vals, 0).into_value() {
                Some(Value::Array(a)) => own(Value::Array(
                    a.into_iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let mut m = serde_json::Map::new();
                            m.insert("index".into(), Value::from(i));
                            m.insert("value".into(), v);
                            Value::Object(m)
                        })
                        .collect(),
                )),
                _ => Ok(Val::Absent),
            },
            TextOf => Ok(v0.and_then(bi::text_of).map_or(Val::Absent, Val::Own)),
            AsList => Ok(match take(vals, 0) {
                Val::Absent => Val::Absent,
                v @ (Val::Ref(Value::Array(_)) | Val::Own(Value::Array(_))) => v,
                Val::Ref(Value::Null) | Val::Own(Value::Null) => Val::Absent,
                v => Val::Own(Value::Array(v.into_value().into_iter().collect())),
            }),
            IsString => own(Value::Bool(v0.is_some_and(Value::is_string))),
            IsArray => own(Value::Bool(v0.is_some_and(Value::is_array))),
            IsObject => own(Value::Bool(v0.is_some_and(Value::is_object))),
            IsNumber => own(Value::Bool(v0.is_some_and(Value::is_number))),
            IsBool => own(Value::Bool(v0.is_some_and(Value::is_boolean))),
            TypeOf => own(Value::String(bi::type_name(v0).to_string())),
            ParseJson | TryParseJson => mapping("parse_json is evaluated by `builtin`"),
            ToJson => match v0 {
                None => Ok(Val::Absent),
                Some(v) => own(Value::String(key_order::json_text(v, source))),
            },
            Base64Decode => Ok(str_arg(0)
                .and_then(bi::base64_decode)
                .map_or(Val::Absent, |s| Val::Own(Value::String(s)))),
            Base64Encode => Ok(str_arg(0)
                .map(bi::base64_encode)
                .map_or(Val::Absent, |s| Val::Own(Value::String(s)))),
            DataUrl => Ok(str_arg(0)
                .and_then(bi::data_url)
                .map_or(Val::Absent, Val::Own)),
            StartsWith | EndsWith => {
                let (Some(s), Some(p)) = (str_arg(0), str_arg(1)) else {
                    return own(Value::Bool(false));
                };
                own(Value::Bool(if b == StartsWith {
                    s.starts_with(p)
                } else {
                    s.ends_with(p)
                }))
            }
            Contains => {
                let hit = match (v0, vals.get(1).and_then(Val::get)) {
                    (Some(Value::String(s)), Some(Value::String(n))) => s.contains(n.as_str()),
                    (Some(Value::Array(a)), Some(x)) => a.iter().any(|i| json_eq(Some(i), Some(x))),
                    (Some(Value::Object(o)), Some(Value::String(k))) => o.contains_key(k),
                    _ => false,
                };
                own(Value::Bool(hit))
            }
            Lower | Upper | Trim => match str_arg(0) {
                None => Ok(Val::Absent),
                Some(s) => own(Value::String(match b {
                    Lower => s.to_lowercase(),
                    Upper => s.to_uppercase(),
                    _ => s.trim().to_string(),
                })),
            },
            Split => match (str_arg(0), str_arg(1)) {
                (Some(s), Some(sep)) if !sep.is_empty() => own(Value::Array(
                    s.split(sep).map(|p| Value::String(p.to_string())).collect(),
                )),
                _ => Ok(Val::Absent),
            },
            Replace => match (str_arg(0), str_arg(1), str_arg(2)) {
                (Some(s), Some(from), Some(to)) if !from.is_empty() => {
                    own(Value::String(s.replace(from, to)))
                }
                (Some(_), _, _) => Ok(take(vals, 0)),
                _ => Ok(Val::Absent),
            },
            Clamp => match (num_arg(0), num_arg(1), num_arg(2)) {
                (Some(x), Some(lo), Some(hi)) => {
                    if x < lo {
                        Ok(take(vals, 1))
                    } else if x > hi {
                        Ok(take(vals, 2))
                    } else {
                        Ok(take(vals, 0))
                    }
                }
                _ => Ok(if v0.is_none() {
                    Val::Absent
                } else {
                    take(vals, 0)
                }),
            },
            Min | Max => {
                let mut best: Option<(f64, usize)> = None;
                for (i, v) in vals.iter().enumerate() {
                    if let Some(f) = v.get().and_then(Value::as_f64) {
                        let better = match best {
                            None => true,
                            Some((bf, _)) => (b == Min && f < bf) || (b == Max && f > bf),
                        };
                        if better {
                            best = Some((f, i));
                        }
                    }
                }
                Ok(match best {
                    Some((_, i)) => take(vals, i),
                    None => Val::Absent,
                })
            }
            Round | Int => match v0 {
                None | Some(Value::Null) => Ok(Val::Absent),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(take(vals, 0)),
                Some(Value::Number(n)) => {
                    let f = n.as_f64().unwrap_or_default();
                    Ok(Val::from_opt(bi::num(if b == Round {
                        f.round()
                    } else {
                        f.trunc()
                    })))
                }
                Some(other) => mapping(format!("{b:?} of a {}", bi::type_name(Some(other)))),
            },
            ToString => match v0 {
                None => Ok(Val::Absent),
                Some(Value::String(_)) => Ok(take(vals, 0)),
                Some(v) => own(Value::String(v.to_string())),
            },
            ToNumber => match v0 {
                Some(Value::Number(_)) => Ok(take(vals, 0)),
                Some(Value::String(s)) => Ok(s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(bi::num)
                    .map_or(Val::Absent, Val::Own)),
                _ => Ok(Val::Absent),
            },
            Merge => {
                let mut out = serde_json::Map::new();
                for v in vals.iter_mut() {
                    match std::mem::replace(v, Val::Absent).into_value() {
                        Some(Value::Object(o)) => out.extend(o),
                        None | Some(Value::Null) => {}
                        Some(other) => {
                            return mapping(format!("merge of a {}", bi::type_name(Some(&other))))
                        }
                    }
                }
                own(Value::Object(out))
            }
            Without => {
                let Some((first, keys)) = vals.split_first_mut() else {
                    return Ok(Val::Absent);
                };
                match std::mem::replace(first, Val::Absent).into_value() {
                    Some(Value::Object(mut o)) => {
                        for k in keys.iter().filter_map(|v| v.get().and_then(Value::as_str)) {
                            o.remove(k);
                        }
                        own(Value::Object(o))
                    }
                    other => Ok(Val::from_opt(other)),
                }
            }
            Keys => match v0 {
                Some(Value::Object(o)) => own(Value::Array(
                    o.keys().map(|k| Value::String(k.clone())).collect(),
                )),
                _ => Ok(Val::Absent),
            },
            Get => {
                let seg = match vals.get(1).and_then(Val::get) {
                    Some(Value::String(s)) => Seg::Key(s.clone()),
                    Some(Value::Number(n)) if n.as_u64().is_some() => {
                        Seg::Idx(n.as_u64().unwrap_or_default() as usize)
                    }
                    _ => return Ok(Val::Absent),
                };
                Ok(walk(take(vals, 0), std::slice::from_ref(&seg)))
            }
            Invert => match v0 {
                None | Some(Value::Null) => Ok(Val::Absent),
                Some(v) => own(Value::Bool(!bi::truthy(Some(v)))),
            },
            Invalid => Err(Box::new(RtError::Invalid(
                str_arg(0).unwrap_or("invalid request").to_string(),
            ))),
            Map | Filter | Reject | FlatMap | Find | Any | All | Leading | AfterLeading
            | Lookup | Now | NewId | Nonempty | Present => mapping("unreachable builtin dispatch"),
        }
    }

    /// The items of a list argument. A nested `map`/`filter`/`reject`/
    /// `flat_map` yields its results as they are (mostly borrowed from the
    /// input), so a pipeline never clones its intermediate lists.
    fn items(&mut self, e: &'a CExpr) -> R<Items<'a>> {
        if let CExpr::Builtin(b, args, _) = e {
            if is_seq(e) {
                return Ok(match self.seq(*b, args)? {
                    Some(items) => Items::List(ItemIter::Vals(items.into_iter())),
                    None => Items::Other(Val::Absent),
                });
            }
        }
        Ok(match self.eval(e)? {
            // A borrowed list is walked in place, without a vector of items.
            Val::Ref(Value::Array(a)) => Items::List(ItemIter::Refs(a.iter())),
            Val::Own(Value::Array(a)) => Items::List(ItemIter::Owns(a.into_iter())),
            other => Items::Other(other),
        })
    }

    /// The list argument of `b`: `None` for absent or null, an error for a
    /// non-list.
    fn list_arg(&mut self, b: Builtin, e: &'a CExpr) -> R<Option<ItemIter<'a>>> {
        match self.items(e)? {
            Items::List(items) => Ok(Some(items)),
            Items::Other(Val::Absent | Val::Ref(Value::Null) | Val::Own(Value::Null)) => Ok(None),
            Items::Other(other) => mapping(format!(
                "{b:?} expects a list, got a {}",
                bi::type_name(other.get())
            )),
        }
    }

    /// `map`, `filter`, `reject`, `flat_map` as a list of values (`None` when
    /// the input is absent). Absent results of `map` are dropped.
    fn seq(&mut self, b: Builtin, args: &'a [CExpr]) -> R<Option<Vec<Val<'a>>>> {
        use Builtin::*;
        let Some(items) = self.list_arg(b, &args[0])? else {
            return Ok(None);
        };
        let f = &args[1];
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match b {
                Filter | Reject => {
                    // Pinned first, so the copy the predicate sees is a borrow.
                    let it = self.pin(it);
                    if bi::truthy(self.apply(f, it.clone())?.get()) == (b == Filter) {
                        out.push(it);
                    }
                }
                FlatMap => match self.apply(f, it)? {
                    Val::Absent | Val::Ref(Value::Null) | Val::Own(Value::Null) => {}
                    Val::Ref(Value::Array(a)) => out.extend(a.iter().map(Val::Ref)),
                    Val::Own(Value::Array(a)) => out.extend(a.into_iter().map(Val::Own)),
                    v => out.push(v),
                },
                _ => match self.apply(f, it)? {
                    Val::Absent => {}
                    v => out.push(v),
                },
            }
        }
        Ok(Some(out))
    }

    fn iterate(&mut self, b: Builtin, items: ItemIter<'a>, f: &'a CExpr) -> R<Val<'a>> {
        use Builtin::*;
        match b {
            Find => {
                for it in items {
                    let it = self.pin(it);
                    if bi::truthy(self.apply(f, it.clone())?.get()) {
                        return Ok(it);
                    }
                }
                Ok(Val::Absent)
            }
            Any | All => {
                for it in items {
                    let t = bi::truthy(self.apply(f, it)?.get());
                    if b == Any && t {
                        return Ok(Val::Own(Value::Bool(true)));
                    }
                    if b == All && !t {
                        return Ok(Val::Own(Value::Bool(false)));
                    }
                }
                Ok(Val::Own(Value::Bool(b == All)))
            }
            _ => {
                // Leading / AfterLeading
                let mut items: Vec<Val<'a>> = items.collect();
                let mut split = items.len();
                for (i, it) in items.iter_mut().enumerate() {
                    *it = self.pin(std::mem::replace(it, Val::Absent));
                    if !bi::truthy(self.apply(f, it.clone())?.get()) {
                        split = i;
                        break;
                    }
                }
                let chosen: Vec<Value> = if b == Leading {
                    items
                        .into_iter()
                        .take(split)
                        .filter_map(Val::into_value)
                        .collect()
                } else {
                    items
                        .into_iter()
                        .skip(split)
                        .filter_map(Val::into_value)
                        .collect()
                };
                Ok(Val::Own(Value::Array(chosen)))
            }
        }
    }
}

/// The items of a list, or the value that was not a list.
enum Items<'a> {
    List(ItemIter<'a>),
    Other(Val<'a>),
}

/// The items of a list: borrowed from a document, or computed.
enum ItemIter<'a> {
    Refs(std::slice::Iter<'a, Value>),
    Owns(std::vec::IntoIter<Value>),
    Vals(std::vec::IntoIter<Val<'a>>),
}

impl<'a> Iterator for ItemIter<'a> {
    type Item = Val<'a>;

    fn next(&mut self) -> Option<Val<'a>> {
        match self {
            ItemIter::Refs(it) => it.next().map(Val::Ref),
            ItemIter::Owns(it) => it.next().map(Val::Own),
            ItemIter::Vals(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ItemIter::Refs(it) => it.size_hint(),
            ItemIter::Owns(it) => it.size_hint(),
            ItemIter::Vals(it) => it.size_hint(),
        }
    }
}

impl ExactSizeIterator for ItemIter<'_> {}

/// A call whose result is a list computed item by item (see [`Env::items`]).
fn is_seq(e: &CExpr) -> bool {
    matches!(
        e,
        CExpr::Builtin(
            Builtin::Map | Builtin::Filter | Builtin::Reject | Builtin::FlatMap,
            ..
        )
    )
}

/// Load-time rewrite: list and object literals whose entries are all
/// constants become one constant, so evaluating them borrows instead of
/// building (and allocating) a fresh value every time. `m.role in ["system",
/// "developer"]` in a `fn` called per message is the typical case. Literals are
/// built in entry order with later keys winning, exactly as at run time.
pub fn fold_constants(prog: &mut Program) {
    for (_, exprs) in prog.frames() {
        exprs.into_iter().for_each(fold_expr);
    }
}

fn fold_expr(e: &mut CExpr) {
    e.for_each_child(&mut fold_expr);
    match e {
        CExpr::Object(entries)
            if entries
                .iter()
                .all(|en| matches!(en, CObj::Field(_, CExpr::Const(_)))) =>
        {
            let mut m = Map::new();
            for en in entries.drain(..) {
                if let CObj::Field(k, CExpr::Const(v)) = en {
                    m.insert(k, v);
                }
            }
            *e = CExpr::Const(Value::Object(m));
        }
        CExpr::Array(entries)
            if entries
                .iter()
                .all(|en| matches!(en, CArr::Item(CExpr::Const(_)))) =>
        {
            let items = entries
                .drain(..)
                .filter_map(|en| match en {
                    CArr::Item(CExpr::Const(v)) => Some(v),
                    _ => None,
                })
                .collect();
            *e = CExpr::Const(Value::Array(items));
        }
        _ => {}
    }
}

/// Load-time rewrite: a `fn` passed by name to a list built-in (`filter(is_system)`,
/// `map(message)`) becomes a lambda with a copy of its body, its slots moved past those of
/// the frame it is used in. Each item is then applied in that frame, without the frame,
/// argument push and depth check of a call. Copies are made from the original bodies, so a
/// fn that passes itself by name is copied once, not without end.
pub fn lambdas_for_fn_refs(prog: &mut Program) {
    let fns = prog.fns.clone();
    for (slots, exprs) in prog.frames() {
        for e in exprs {
            fn_refs_to_lambdas(e, slots, &fns);
        }
    }
}

fn fn_refs_to_lambdas(e: &mut CExpr, slots: &mut usize, fns: &[CFn]) {
    let CExpr::FnRef(idx) = e else {
        e.for_each_child(&mut |c| fn_refs_to_lambdas(c, slots, fns));
        return;
    };
    // The compiler only passes one-parameter fns by name; the parameter is slot 0.
    let Some(f) = fns.get(*idx).filter(|f| f.params == 1) else {
        return;
    };
    let mut body = f.body.clone();
    shift_slots(&mut body, *slots);
    *e = CExpr::Lambda(*slots, Box::new(body));
    *slots += f.slots.max(1);
}

/// Moves every slot an expression uses up by `by`.
fn shift_slots(e: &mut CExpr, by: usize) {
    if let CExpr::Local(i) | CExpr::Lambda(i, _) = e {
        *i += by;
    }
    e.for_each_child(&mut |c| shift_slots(c, by));
}

/// Move argument `i` out of an argument list, leaving `Absent`.
fn take<'a>(vals: &mut [Val<'a>], i: usize) -> Val<'a> {
    std::mem::replace(&mut vals[i], Val::Absent)
}

fn ref_or_absent(v: Option<&Value>) -> Val<'_> {
    match v {
        None | Some(Value::Null) => Val::Absent,
        Some(v) => Val::Ref(v),
    }
}

fn walk<'a>(v: Val<'a>, segs: &[Seg]) -> Val<'a> {
    match v {
        Val::Absent => Val::Absent,
        Val::Ref(mut r) => {
            for s in segs {
                let next = match (s, r) {
                    (Seg::Key(k), Value::Object(m)) => field(m, k),
                    (Seg::Idx(i), Value::Array(a)) => a.get(*i),
                    _ => None,
                };
                match next {
                    Some(n) => r = n,
                    None => return Val::Absent,
                }
            }
            ref_or_absent(Some(r))
        }
        Val::Own(mut o) => {
            for s in segs {
                let next = match (s, &mut o) {
                    (Seg::Key(k), Value::Object(m)) => m.remove(k),
                    (Seg::Idx(i), Value::Array(a)) if *i < a.len() => Some(a.swap_remove(*i)),
                    _ => None,
                };
                match next {
                    Some(n) => o = n,
                    None => return Val::Absent,
                }
            }
            if o.is_null() {
                Val::Absent
            } else {
                Val::Own(o)
            }
        }
    }
}

/// `m.get(k)`, by a scan that compares lengths first for the small objects of requests and
/// responses: the B-tree search compares every key it passes byte-wise.
fn field<'v>(m: &'v Map<String, Value>, k: &str) -> Option<&'v Value> {
    if m.len() > 8 {
        return m.get(k);
    }
    m.iter()
        .find(|(key, _)| key.len() == k.len() && key.as_str() == k)
        .map(|(_, v)| v)
}

fn pattern_matches(p: &CPattern, v: &Val<'_>) -> bool {
    let g = v.get();
    match p {
        CPattern::Any => true,
        CPattern::Absent => matches!(g, None | Some(Value::Null)),
        CPattern::Const(c) => json_eq(g, Some(c)),
        CPattern::String => g.is_some_and(Value::is_string),
        CPattern::Number => g.is_some_and(Value::is_number),
        CPattern::Boolean => g.is_some_and(Value::is_boolean),
        CPattern::Array => g.is_some_and(Value::is_array),
        CPattern::Object => g.is_some_and(Value::is_object),
    }
}

/// Equality where `1 == 1.0` and absent equals only absent.
fn json_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        // Strings first: roles, types and other tags are what files compare most.
        (Some(Value::String(x)), Some(Value::String(y))) => x == y,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(x), Some(y)) => x == y,
        (None, None) => true,
        _ => false,
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(&needle.to_lowercase())
}

fn arith<'a>(op: BinOp, x: Val<'a>, y: Val<'a>) -> R<Val<'a>> {
    match (x.get(), y.get()) {
        (Some(Value::Number(p)), Some(Value::Number(q))) => {
            if let (Some(a), Some(b)) = (p.as_i64(), q.as_i64()) {
                let r = match op {
                    BinOp::Add => a.checked_add(b),
                    BinOp::Sub => a.checked_sub(b),
                    BinOp::Mul => a.checked_mul(b),
                    BinOp::Div if b != 0 && a % b == 0 => a.checked_div(b),
                    BinOp::Rem if b != 0 => a.checked_rem(b),
                    _ => None,
                };
                if let Some(r) = r {
                    return Ok(Val::Own(Value::from(r)));
                }
            }
            let (a, b) = (
                p.as_f64().unwrap_or_default(),
                q.as_f64().unwrap_or_default(),
            );
            let r = match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div | BinOp::Rem if b == 0.0 => return mapping("division by zero"),
                BinOp::Div => a / b,
                _ => a % b,
            };
            Ok(Val::from_opt(bi::num(r)))
        }
        (Some(Value::String(_)), Some(Value::String(q))) if op == BinOp::Add => {
            let mut s = match x.into_value() {
                Some(Value::String(s)) => s,
                _ => String::new(),
            };
            s.push_str(q);
            Ok(Val::Own(Value::String(s)))
        }
        (Some(Value::Array(_)), Some(Value::Array(_))) if op == BinOp::Add => {
            let mut a = match x.into_value() {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            if let Some(Value::Array(b)) = y.into_value() {
                a.extend(b);
            }
            Ok(Val::Own(Value::Array(a)))
        }
        (p, q) => mapping(format!(
            "operator {op:?} cannot combine a {} and a {}",
            bi::type_name(p),
            bi::type_name(q)
        )),
    }
}

fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(60).collect();
    if p.len() < s.len() {
        p.push('…');
    }
    p
}

/// Set `path` inside `m`, creating objects on the way.
pub fn set_path(m: &mut Map<String, Value>, path: &[String], v: Value) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut cur = m;
    for k in init {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(next) => cur = next,
            _ => return,
        }
    }
    cur.insert(last.clone(), v);
}
