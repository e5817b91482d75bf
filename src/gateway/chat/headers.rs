//! What routing did, told to the client in response headers (LLMux's and LiteLLM's names) and
//! to the operator in the access log.

use std::fmt;

use super::{Attempt, Call};
use crate::config::Deployment;

/// Response headers about routing.
pub struct RouteHeaders {
    fields: Vec<(&'static str, String)>,
}

impl RouteHeaders {
    /// For an answer from `dep`, the attempt now being made.
    pub fn new(call: &Call<'_>, dep: &Deployment) -> Self {
        let mut h = Self::base(call, call.attempts.len() + 1);
        h.deployment(dep);
        h
    }

    /// For a failure the gateway answers with, after the attempts made.
    pub fn for_failure(call: &Call<'_>) -> Self {
        let mut h = Self::base(call, call.attempts.len());
        if let Some(a) = call.attempts.last() {
            h.deployment(&a.deployment);
        }
        h
    }

    fn base(call: &Call<'_>, attempts: usize) -> Self {
        let fallbacks = call.progress.groups.len().saturating_sub(1);
        let mut fields = Vec::with_capacity(7);
        fields.push(("x-llmux-attempts", attempts.to_string()));
        fields.push(("x-litellm-attempted-retries", call.retries.to_string()));
        fields.push(("x-litellm-attempted-fallbacks", fallbacks.to_string()));
        if fallbacks > 0 {
            if let Some(first) = call.progress.groups.first() {
                push_safe(&mut fields, "x-llmux-fallback-from", first);
            }
        }
        Self { fields }
    }

    fn deployment(&mut self, dep: &Deployment) {
        push_safe(&mut self.fields, "x-llmux-deployment", &dep.id);
        push_safe(&mut self.fields, "x-litellm-model-id", &dep.id);
    }

    pub fn push(&mut self, name: &'static str, value: String) {
        push_safe(&mut self.fields, name, &value);
    }

    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// Names from the config go into a header only if they are valid header text (a deployment id
/// with a line break must not split the response head).
fn push_safe(fields: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    let ok = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80);
    if ok {
        fields.push((name, value.to_owned()));
    }
}

/// Every attempt, for the access log: `deployment status[/class] ms`, in order.
pub struct AttemptsLog<'a>(pub &'a [Attempt]);

impl fmt::Display for AttemptsLog<'_> {
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
