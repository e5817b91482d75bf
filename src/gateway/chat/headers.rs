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
        if call.snap.routing_headers
            && call.attempts.is_empty()
            && call.retries == 0
            && call.fallbacks.is_empty()
        {
            // Most answers: the headers depend only on the deployment, rendered once.
            let lines = dep
                .first_attempt_headers
                .get_or_init(|| first_attempt_lines(&dep.id));
            let mut h = Self::empty(true);
            h.push_cow(PRE_RENDERED, Cow::Borrowed(lines));
            return h;
        }
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
        Self::counts(
            call.snap.routing_headers,
            attempts,
            call.retries as usize,
            call.fallbacks.len(),
            Some(&call.view.model),
        )
    }

    fn empty(routing: bool) -> Self {
        Self {
            fields: std::array::from_fn(|_| ("", Cow::Borrowed(""))),
            len: 0,
            routing,
        }
    }

    /// The counts, and the group the client asked for when fallbacks were taken.
    fn counts(
        routing: bool,
        attempts: usize,
        retries: usize,
        fallbacks: usize,
        fallback_from: Option<&str>,
    ) -> Self {
        let mut h = Self::empty(routing);
        if !h.routing {
            return h;
        }
        h.push_cow("x-llmux-attempts", count(attempts));
        h.push_cow("x-litellm-attempted-retries", count(retries));
        h.push_cow("x-litellm-attempted-fallbacks", count(fallbacks));
        if let Some(from) = fallback_from.filter(|_| fallbacks > 0) {
            // Rare: owned, so that these headers borrow nothing of the request's context.
            h.push_cow("x-llmux-fallback-from", Cow::Owned(from.to_owned()));
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

/// The name of a field whose value is whole header lines, written as they are
/// (`http1::response::ResponseWriter`'s head).
const PRE_RENDERED: &str = "";

/// The routing headers of a first attempt's answer from deployment `id`, as header lines.
fn first_attempt_lines(id: &str) -> Box<str> {
    let mut h = RouteHeaders::counts(true, 1, 0, 0, None);
    h.deployment(id);
    let mut b = Vec::with_capacity(160 + 2 * id.len());
    for (k, v) in h.pairs().iter() {
        crate::http1::response::push_header(&mut b, k, v);
    }
    // Names are ASCII, the id is a `&str`: the lines are UTF-8.
    String::from_utf8(b).map_or_else(|_| Box::from(""), String::into_boxed_str)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &RouteHeaders<'_>) -> String {
        let mut b = Vec::new();
        for (k, v) in h.pairs().iter() {
            crate::http1::response::push_header(&mut b, k, v);
        }
        String::from_utf8(b).expect("header text")
    }

    #[test]
    fn pre_rendered_first_attempt_lines_are_the_fields_written_one_by_one() {
        let mut fields = RouteHeaders::counts(true, 1, 0, 0, None);
        fields.deployment("openai-eu/0");
        let lines = first_attempt_lines("openai-eu/0");
        assert_eq!(&*lines, rendered(&fields));
        assert_eq!(
            &*lines,
            "x-llmux-attempts: 1\r\nx-litellm-attempted-retries: 0\r\n\
             x-litellm-attempted-fallbacks: 0\r\nx-llmux-deployment: openai-eu/0\r\n\
             x-litellm-model-id: openai-eu/0\r\n"
        );
    }

    #[test]
    fn later_attempts_and_fallbacks_are_counted() {
        let mut h = RouteHeaders::counts(true, 3, 1, 1, Some("gpt-4o"));
        h.deployment("b");
        let text = rendered(&h);
        assert!(text.starts_with("x-llmux-attempts: 3\r\nx-litellm-attempted-retries: 1\r\n"));
        assert!(
            text.contains("x-litellm-attempted-fallbacks: 1\r\nx-llmux-fallback-from: gpt-4o\r\n")
        );
        assert!(RouteHeaders::counts(false, 3, 1, 1, Some("gpt-4o"))
            .pairs()
            .is_empty());
    }
}
