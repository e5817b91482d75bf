//! What a file's `fn`s do to the interpreter's stack, found at load time.
//!
//! - [`depth`]: how many nested evaluation levels an expression takes. A call to a user fn
//!   charges its body's depth against the interpreter's budget, so recursion is bounded by
//!   the stack it really uses, not by a call count that ignores the size of each body.
//! - [`endless`]: fns that call themselves on every path through their body (directly or
//!   through other fns). Such a fn can never return; it is a load error rather than a
//!   runtime 500 on the first request that reaches it.

use super::ast::BinOp;
use super::ir::{CArr, CExpr, CFn, CObj};

/// The number of nested evaluation levels `e` takes (1 for a leaf).
pub fn depth(e: &CExpr) -> usize {
    // Iterative: an expression may be as deep as the parser allows, and this runs on the
    // request path's thread only at load time, but stays safe on any stack.
    let mut max = 0;
    let mut todo: Vec<(&CExpr, usize)> = vec![(e, 1)];
    while let Some((e, d)) = todo.pop() {
        max = max.max(d);
        for_each_child(e, |c| todo.push((c, d + 1)));
    }
    max
}

/// For each fn on a cycle of calls made on every path (each such fn once, in index order),
/// the cycle starting and ending at it, as fn indices.
pub fn endless(fns: &[CFn]) -> Vec<Vec<usize>> {
    let calls: Vec<Vec<usize>> = fns
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            must_call(&f.body, &mut out);
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect();
    let mut found = Vec::new();
    for start in 0..fns.len() {
        if let Some(path) = cycle_from(start, &calls) {
            found.push(path);
        }
    }
    found
}

/// A path of must-calls from `start` back to itself, found breadth first (so the shortest):
/// `[start, ..., start]`.
fn cycle_from(start: usize, calls: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut parent: Vec<Option<usize>> = vec![None; calls.len()];
    let mut seen = vec![false; calls.len()];
    *seen.get_mut(start)? = true;
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(f) = queue.pop_front() {
        for &g in calls.get(f)? {
            if g == start {
                let mut path = vec![start];
                let mut at = f;
                while at != start {
                    path.push(at);
                    at = parent[at]?;
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return Some(path);
            }
            if g < seen.len() && !seen[g] {
                seen[g] = true;
                parent[g] = Some(f);
                queue.push_back(g);
            }
        }
    }
    None
}

/// Adds the fns that evaluating `e` calls on every path. Under-approximates where it cannot
/// tell (lambda bodies, built-in arguments after the first, `match` arms), so that only a
/// recursion that can never end is reported.
fn must_call(e: &CExpr, out: &mut Vec<usize>) {
    match e {
        CExpr::UserFn(idx, args) => {
            out.push(*idx);
            args.iter().for_each(|a| must_call(a, out));
        }
        // The list argument is evaluated; a lambda body may never run (an empty list).
        CExpr::Builtin(_, args, _) => {
            if let Some(first) = args.first() {
                must_call(first, out);
            }
        }
        CExpr::Bin(BinOp::And | BinOp::Or | BinOp::Coalesce, a, _, _) => must_call(a, out),
        CExpr::If(c, t, e) => {
            must_call(c, out);
            let mut then = Vec::new();
            must_call(t, &mut then);
            let mut other = Vec::new();
            if let Some(e) = e {
                must_call(e, &mut other);
            }
            out.extend(then.into_iter().filter(|f| other.contains(f)));
        }
        CExpr::Match(x, _) => must_call(x, out),
        CExpr::Lambda(..) => {}
        other => for_each_child(other, |c| must_call(c, out)),
    }
}

/// Calls `f` on each direct sub-expression of `e` (`CExpr::for_each_child`, for a shared
/// borrow).
pub(crate) fn for_each_child<'e>(e: &'e CExpr, mut f: impl FnMut(&'e CExpr)) {
    match e {
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
        CExpr::Builtin(_, args, _) | CExpr::UserFn(_, args) => args.iter().for_each(f),
        CExpr::If(c, t, e) => {
            f(c);
            f(t);
            if let Some(e) = e {
                f(e);
            }
        }
        CExpr::Match(x, arms) => {
            f(x);
            arms.iter().for_each(|(_, v)| f(v));
        }
        CExpr::Object(entries) => entries.iter().for_each(|en| match en {
            CObj::Field(_, v) | CObj::Spread(v) => f(v),
        }),
        CExpr::Array(entries) => entries.iter().for_each(|en| match en {
            CArr::Item(v) | CArr::Spread(v) => f(v),
        }),
    }
}
