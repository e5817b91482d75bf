//! Calls whose value depends only on the deployment, evaluated once per deployment.
//!
//! A provider file asks the same questions of every request to a deployment:
//! `reasoning_model(ctx.model)` in OpenAI's file is four `starts_with` calls and an `or`
//! chain, about 2,000 instructions of a passthrough request's 8,500 spent in the mapping,
//! with the same answer each time. At load time [`memoize`] marks each call of a `fn` whose
//! arguments are built only from constants and the deployment's own context (`ctx.model`,
//! `ctx.api_base`, `ctx.api_version`, `ctx.drop_params`, `ctx.params.*`), and whose body reads
//! nothing else (no request, response, event, state, clock or id): its value is a function
//! of the deployment. The interpreter keeps the value of each marked call in the deployment's
//! [`Memo`] the first time it is evaluated and borrows it from there afterwards.
//!
//! `ctx.stream` and `ctx.include_usage` belong to the request, `ctx.api_key` is a secret
//! (not kept in another place) and `ctx.max_output_tokens` may be set per request: calls that
//! read them are evaluated every time. A call that fails is not kept (it fails again, with
//! its message, next time).

use std::sync::OnceLock;

use serde_json::Value;

use super::builtins::Builtin;
use super::ir::{CExpr, Program};
use super::recursion::for_each_child;
use super::schema::CtxField;

/// The kept values of one deployment's marked calls, by the slot [`memoize`] gave each.
/// Shared by the shards (each value is written once, by whichever evaluates it first).
#[derive(Debug, Default)]
pub struct Memo {
    cells: Box<[OnceLock<Option<Value>>]>,
}

impl Memo {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            cells: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn cell(&self, slot: usize) -> Option<&OnceLock<Option<Value>>> {
        self.cells.get(slot)
    }
}

/// Context fields that are the deployment's, the same for each of its requests.
fn deployment_field(f: CtxField) -> bool {
    matches!(
        f,
        CtxField::Model | CtxField::ApiBase | CtxField::ApiVersion | CtxField::DropParams
    )
}

/// Built-ins whose value depends only on their arguments.
fn pure_builtin(b: Builtin) -> bool {
    !matches!(b, Builtin::NewId | Builtin::Now | Builtin::Invalid)
}

/// What an expression may read to have a deployment's constant value.
#[derive(Clone, Copy)]
struct Scope<'p> {
    /// Which fns are pure (their body reads only its arguments, constants and the
    /// deployment's context).
    pure: &'p [bool],
    /// Inside a fn body: its locals are its arguments (and lambdas' parameters), which a
    /// marked call has made constant. At a call site, a local is the request's.
    locals: bool,
}

/// Whether `e` reads only constants, the deployment's context, pure fns and built-ins (and,
/// within `scope`, locals).
fn constant_in(e: &CExpr, scope: Scope<'_>) -> bool {
    let own = match e {
        CExpr::Const(_) | CExpr::Omit | CExpr::CtxParam(_) | CExpr::TableRef(_) => true,
        CExpr::Ctx(f) => deployment_field(*f),
        CExpr::Local(_) | CExpr::Lambda(..) => scope.locals,
        CExpr::FnRef(i) | CExpr::UserFn(i, _) => scope.pure.get(*i).copied().unwrap_or(false),
        CExpr::Builtin(b, ..) => pure_builtin(*b),
        CExpr::Req(_)
        | CExpr::Extra(_)
        | CExpr::Headers
        | CExpr::Res
        | CExpr::Ev
        | CExpr::Event
        | CExpr::Status
        | CExpr::Text
        | CExpr::State(_) => false,
        CExpr::Memo(..)
        | CExpr::Path(..)
        | CExpr::Index(..)
        | CExpr::Neg(_)
        | CExpr::Not(_)
        | CExpr::Bin(..)
        | CExpr::If(..)
        | CExpr::Match(..)
        | CExpr::Object(_)
        | CExpr::Array(_) => true,
    };
    if !own {
        return false;
    }
    let mut all = true;
    for_each_child(e, |c| all = all && constant_in(c, scope));
    all
}

/// Which fns are pure: found by iterating to a fixed point (a fn calling an impure one is
/// impure; recursion stays pure when nothing else makes it impure).
fn pure_fns(prog: &Program) -> Vec<bool> {
    let mut pure = vec![true; prog.fns.len()];
    loop {
        let mut changed = false;
        for (i, f) in prog.fns.iter().enumerate() {
            let scope = Scope {
                pure: &pure,
                locals: true,
            };
            if pure[i] && !constant_in(&f.body, scope) {
                pure[i] = false;
                changed = true;
            }
        }
        if !changed {
            return pure;
        }
    }
}

/// Marks every call of a pure fn with constant arguments (see the module's documentation);
/// returns the number of slots a deployment's [`Memo`] needs.
pub fn memoize(prog: &mut Program) -> usize {
    let pure = pure_fns(prog);
    let mut slots = 0;
    // A call's arguments may not read locals, even in a fn's body: there they are its own
    // arguments, which may be the request's.
    let scope = Scope {
        pure: &pure,
        locals: false,
    };
    for (_, exprs) in prog.frames() {
        for e in exprs {
            mark(e, scope, &mut slots);
        }
    }
    slots
}

/// Wraps the outermost marked calls in `e` (a marked call's arguments are evaluated only
/// when its value is first kept, so calls inside it are not marked).
fn mark(e: &mut CExpr, scope: Scope<'_>, slots: &mut usize) {
    if let CExpr::UserFn(..) = e {
        if constant_in(e, scope) {
            let call = std::mem::replace(e, CExpr::Omit);
            *e = CExpr::Memo(*slots, Box::new(call));
            *slots += 1;
            return;
        }
    }
    e.for_each_child(&mut |c| mark(c, scope, slots));
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::dsl::{load_str, RequestCtx};

    const SRC: &str = r#"provider p {
  base_url "https://x.test/v1"
  url "/chat"
  param size default "tiny"
  fn family(m) = if starts_with(m, "big") then "large" else "small"
  fn wordy(m) = family(m) == "large" or contains(m, "verbose")
  fn asked(r) = r ?? 0
  fn stamped(m) = now()
  request {
    a = family(ctx.model)
    b = wordy(ctx.model)
    c = family(req.model)
    d = asked(req.max_tokens)
    e = if ctx.stream then family(ctx.model) else "no"
    f = family(ctx.params.size)
    g = stamped(ctx.model)
    h = family(if ctx.stream then "big" else "little")
  }
}"#;

    fn provider() -> crate::dsl::Provider {
        let set = load_str("p.llmux", SRC).unwrap_or_else(|e| panic!("{e:?}"));
        set.get("p")
            .cloned()
            .unwrap_or_else(|| panic!("no provider"))
    }

    fn body(p: &crate::dsl::Provider, ctx: &RequestCtx, memo: Option<&super::Memo>) -> Value {
        let req = json!({"model": "big-client", "max_tokens": 5});
        let up = match memo {
            Some(m) => p.build_request_memo(ctx, m, &req, None),
            None => p.build_request(ctx, &req),
        };
        let up = up.unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&up.body).unwrap_or_default()
    }

    /// Only calls built from constants and the deployment's own context are kept: not those
    /// reading the request, `ctx.stream` or the clock.
    #[test]
    fn calls_of_the_deployment_are_kept_and_others_are_not() {
        let p = provider();
        // family(ctx.model), wordy(ctx.model) (which calls family: kept whole), the call in
        // the `if` branch, family(ctx.params.size).
        assert_eq!(p.prog.memo_slots, 4);
        let ctx = RequestCtx {
            model: "big-one".into(),
            stream: true,
            now: 1,
            ..RequestCtx::default()
        };
        let memo = p.new_memo();
        let want = body(&p, &ctx, None);
        assert_eq!(
            want,
            json!({"a": "large", "b": true, "c": "large", "d": 5, "e": "large", "f": "small",
                   "g": 1, "h": "large"})
        );
        assert_eq!(body(&p, &ctx, Some(&memo)), want, "keeping");
        assert_eq!(body(&p, &ctx, Some(&memo)), want, "reading");
        // The request's own values still count: `ctx.stream` is the request's.
        let unstreamed = RequestCtx {
            stream: false,
            now: 2,
            ..ctx.clone()
        };
        let got = body(&p, &unstreamed, Some(&memo));
        assert_eq!((&got["e"], &got["h"]), (&json!("no"), &json!("small")));
        assert_eq!(got["g"], json!(2), "the clock is read each time");
        assert_eq!(got["a"], json!("large"));
    }

    #[test]
    fn a_memo_of_another_size_is_not_read_out_of_bounds() {
        let p = provider();
        let ctx = RequestCtx {
            model: "big-one".into(),
            ..RequestCtx::default()
        };
        let small = super::Memo::new(1);
        assert_eq!(body(&p, &ctx, Some(&small)), body(&p, &ctx, None));
    }
}

#[cfg(test)]
mod bound_tests {
    use crate::dsl::load_str;

    fn nested_calls(depth: usize, inner: &str) -> String {
        format!(
            "provider p {{\n  base_url \"https://x.test\"\n  url \"/c\"\n  fn f(m) = m\n  request {{ model = {}{inner}{} }}\n}}",
            "f(".repeat(depth),
            ")".repeat(depth)
        )
    }

    /// The pass walks expressions as deep as the parser lets a file nest them (its bounds:
    /// `MAX_NESTING` and pest's own call limit, which stops nested calls first): a deep chain
    /// of calls loads, marked whole or not at all, and one past the bounds is refused by the
    /// parser before any pass runs.
    #[test]
    fn calls_nested_to_the_parser_limit_load_and_deeper_ones_are_refused() {
        for inner in ["ctx.model", "req.model"] {
            let set = load_str("p.llmux", &nested_calls(40, inner))
                .unwrap_or_else(|e| panic!("{inner}: {e:?}"));
            let p = set.get("p").unwrap_or_else(|| panic!("no provider"));
            // Kept whole when it is the deployment's; otherwise nothing in it is.
            let want = usize::from(inner == "ctx.model");
            assert_eq!(p.prog.memo_slots, want, "{inner}");
        }
        let err = load_str("p.llmux", &nested_calls(2_000, "ctx.model"))
            .err()
            .unwrap_or_else(|| panic!("a file nested past the limit loaded"));
        let err = format!("{err:?}");
        assert!(
            err.contains("nested too deeply") || err.contains("stack limit reached"),
            "{err}"
        );
    }
}
