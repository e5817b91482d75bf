//! What routing did, told to the client in response headers (LLMux's and LiteLLM's names) and
//! to the operator in the access log.

use std::borrow::Cow;
use std::fmt;

use super::{Attempt, Call};
use crate::config::Deployment;

/// At most this many routing headers (and a `retry-after`).
const MAX: usize = 8;

/// Response headers about routing. Built for every answer, so without a heap allocation in the
/// common case: names are static, values borrow the deployment id or are small numbers.
pub struct RouteHeaders<'a> {
    fields: [(&'static str, Cow<'a, str>); MAX],
    len: usize,
    /// `llmux.routing_headers`: off, only headers pushed by name (`retry-after`) go out.
    routing: bool,
}

impl<'a> RouteHeaders<'a> {
    /// For an answer from `dep`, the attempt now being made.
    pub fn new(call: &Call<'_>, dep: &'a Deployment) -> Self {
        let mut h = Self::base(call, call.attempts.len() + 1);
        h.deployment(&dep.id);
        h
    }

    /// For a failure the gateway answers with, after the attempts made.
    pub fn for_failure(call: &'a Call<'_>) -> Self {
        let mut h = Self::base(call, call.attempts.len());
        if let Some(a) = call.attempts.last() {
            h.deployment(&a.deployment.id);
        }
        h
    }

    fn base(call: &Call<'_>, attempts: usize) -> Self {
        let fallbacks = call.fallbacks.len();
        let mut h = Self {
            fields: std::array::from_fn(|_| ("", Cow::Borrowed(""))),
            len: 0,
            routing: call.snap.routing_headers,
        };
        if !h.routing {
            return h;
        }
        h.push_cow("x-llmux-attempts", count(attempts));
        h.push_cow("x-litellm-attempted-retries", count(call.retries as usize));
        h.push_cow("x-litellm-attempted-fallbacks", count(fallbacks));
        if fallbacks > 0 {
            // Rare: owned, so that these headers borrow nothing of the request's context.
            h.push_cow("x-llmux-fallback-from", Cow::Owned(call.view.model.clone()));
        }
        h
    }

    fn deployment(&mut self, id: &'a str) {
        if !self.routing {
            return;
        }
        self.push_cow("x-llmux-deployment", Cow::Borrowed(id));
        self.push_cow("x-litellm-model-id", Cow::Borrowed(id));
    }

    pub fn push(&mut self, name: &'static str, value: String) {
        self.push_cow(name, Cow::Owned(value));
    }

    /// Values are header text: the config refuses group names and deployment ids with
    /// control characters, and the rest are numbers.
    fn push_cow(&mut self, name: &'static str, value: Cow<'a, str>) {
        if self.len < MAX {
            self.fields[self.len] = (name, value);
            self.len += 1;
        }
    }

    pub fn pairs(&self) -> Pairs<'_> {
        let mut items = [("", ""); MAX];
        for (slot, (k, v)) in items.iter_mut().zip(&self.fields[..self.len]) {
            *slot = (*k, v.as_ref());
        }
        Pairs {
            items,
            len: self.len,
        }
    }
}

/// The headers as the response writer takes them.
pub struct Pairs<'a> {
    items: [(&'a str, &'a str); MAX],
    len: usize,
}

impl<'a> std::ops::Deref for Pairs<'a> {
    type Target = [(&'a str, &'a str)];
    fn deref(&self) -> &Self::Target {
        &self.items[..self.len]
    }
}

/// A small count as header text: from a table, without formatting.
fn count(n: usize) -> Cow<'static, str> {
    const SMALL: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    SMALL
        .get(n)
        .map_or_else(|| Cow::Owned(n.to_string()), |s| Cow::Borrowed(*s))
}

/// Every attempt, for the access log: `deployment status[/class] ms`, in order.
pub struct AttemptsLog<'a, 'r>(pub &'a [Attempt<'r>]);

impl fmt::Display for AttemptsLog<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", a.deployment.id, a.status)?;
            if let Some(c) = a.class {
                write!(f, "/{}", c.as_str())?;
            }
            write!(f, " {}ms", a.ms)?;
        }
        Ok(())
    }
}
