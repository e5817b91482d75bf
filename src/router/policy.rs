//! What a failed attempt leads to: another attempt in the same group (after how long), a
//! fallback group, or the end of the request. One failure type carries what that decision
//! needs, whatever went wrong: an upstream's mapped error, a transport failure, the client's
//! own bad request, or a fault of the gateway.

use super::settings::RouterSettings;
use super::{Millis, Rand};

/// LiteLLM's exception classes, plus what only a gateway sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    BadRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    ContextWindowExceeded,
    ContentPolicyViolation,
    RateLimit,
    Timeout,
    Internal,
    ServiceUnavailable,
    /// The upstream could not be reached, or answered something unreadable.
    BadGateway,
    /// The client went away: nothing to answer, nothing to count.
    Cancelled,
}

impl FailureClass {
    /// Every class, in the order of [`FailureClass::index`].
    pub const ALL: [FailureClass; 12] = [
        Self::BadRequest,
        Self::Authentication,
        Self::PermissionDenied,
        Self::NotFound,
        Self::ContextWindowExceeded,
        Self::ContentPolicyViolation,
        Self::RateLimit,
        Self::Timeout,
        Self::Internal,
        Self::ServiceUnavailable,
        Self::BadGateway,
        Self::Cancelled,
    ];

    /// Position in [`FailureClass::ALL`] (for per-class metric handles).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Authentication => "authentication",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::ContextWindowExceeded => "context_window_exceeded",
            Self::ContentPolicyViolation => "content_policy_violation",
            Self::RateLimit => "rate_limit",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::ServiceUnavailable => "service_unavailable",
            Self::BadGateway => "bad_gateway",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSource {
    /// The upstream answered an error, or could not be reached or read.
    Upstream,
    /// The client's request (or the client itself, gone).
    Client,
    /// The gateway (a provider file that failed at run time, a missing provider).
    Internal,
}

/// One failed attempt, with everything the retry decision and the answer need.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub source: FailureSource,
    /// Another attempt (on this deployment or another of the group) may succeed.
    pub retryable: bool,
    /// A fallback group may succeed where this group failed.
    pub fallback: bool,
    /// The status to answer the client with.
    pub status: u16,
    /// The OpenAI-format error's `type`, `message`, `code` and `param`.
    pub error_type: &'static str,
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
    /// Further fields of the provider's error object its file kept (Azure's `innererror`
    /// with `content_filter_result`), added to the client's error object.
    pub details: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// How long the upstream asked to wait (`Retry-After`), if it did.
    pub retry_after_ms: Option<Millis>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Another attempt in the same group after `delay_ms` (0: at once).
    Retry { delay_ms: Millis },
    /// Continue with this group.
    Fallback { group: String },
    /// Answer with the failure.
    Fail,
}

/// Where a request stands: borrowed from the request's own record, so that the usual request
/// (no fallback) keeps its groups without a list of its own.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Attempts made in the current group.
    pub in_group: u32,
    /// The group the client asked for.
    pub requested: &'a str,
    /// Fallback groups entered so far, in order (the last is the current group).
    pub fallbacks: &'a [String],
}

impl<'a> Progress<'a> {
    /// The group being tried.
    pub fn current(&self) -> &'a str {
        self.fallbacks.last().map_or(self.requested, String::as_str)
    }

    /// Whether `group` was tried already (the requested one or a fallback).
    pub fn tried(&self, group: &str) -> bool {
        self.requested == group || self.fallbacks.iter().any(|g| g == group)
    }
}

/// The next step after `failure` in `progress`. `retries` is the number of retries allowed in
/// the current group (`num_retries`, or the failing deployment's `max_retries`), and
/// `same_deployment` whether a retry would go to the deployment that just failed (no other
/// one of the group is available): only then is there a backoff, and a `Retry-After` to honour.
pub fn next_step(
    settings: &RouterSettings,
    failure: &Failure,
    progress: &Progress<'_>,
    retries: u32,
    same_deployment: bool,
    rand: &mut impl Rand,
) -> NextStep {
    if failure.class == FailureClass::Cancelled {
        return NextStep::Fail;
    }
    if failure.retryable && progress.in_group <= retries {
        let delay_ms = if same_deployment {
            backoff(settings, progress.in_group, failure.retry_after_ms, rand)
        } else {
            0
        };
        return NextStep::Retry { delay_ms };
    }
    if !failure.fallback && !failure.retryable {
        return NextStep::Fail;
    }
    match fallback_group(settings, failure.class, progress) {
        Some(group) => NextStep::Fallback { group },
        None => NextStep::Fail,
    }
}

/// The delay before retry number `n` (1-based) on the same deployment: exponential with full
/// jitter, and at least the upstream's `Retry-After` (capped).
pub fn backoff(
    settings: &RouterSettings,
    n: u32,
    retry_after_ms: Option<Millis>,
    rand: &mut impl Rand,
) -> Millis {
    let p = &settings.retry;
    let exp = p
        .backoff_base_ms
        .saturating_mul(1u64 << n.saturating_sub(1).min(20))
        .min(p.backoff_max_ms);
    let jittered = (exp as f64 * rand.next_f64()) as Millis;
    let asked = retry_after_ms.map_or(0, |r| r.min(p.retry_after_max_ms));
    jittered.max(asked)
}

/// The fallback group for a failure of `class`, from the requested group's lists: the list for
/// the class (context window, content policy), else `fallbacks`, else `default_fallbacks`.
/// Groups already tried are skipped; at most `max_fallbacks` are used.
fn fallback_group(
    settings: &RouterSettings,
    class: FailureClass,
    progress: &Progress<'_>,
) -> Option<String> {
    let f = &settings.fallbacks;
    let requested = progress.requested;
    // The requested group and the fallbacks so far: at most `max` fallbacks.
    if progress.fallbacks.len() >= f.max {
        return None;
    }
    let specific = match class {
        FailureClass::ContextWindowExceeded => f.context_window.get(requested),
        FailureClass::ContentPolicyViolation => f.content_policy.get(requested),
        _ => None,
    };
    let general = match class {
        // A prompt too long or refused content is not helped by any group but those named
        // for it.
        FailureClass::ContextWindowExceeded | FailureClass::ContentPolicyViolation => None,
        _ => Some(f.general.get(requested).unwrap_or(&f.default)),
    };
    specific
        .into_iter()
        .chain(general)
        .flatten()
        .find(|g| !progress.tried(g))
        .cloned()
}

/// Checks the fallback lists for a loop (a → b → a): returns the loop found, as group names.
pub fn fallback_loop(
    lists: &std::collections::HashMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    fn visit(
        g: &str,
        lists: &std::collections::HashMap<String, Vec<String>>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == g) {
            let mut cycle = path[i..].to_vec();
            cycle.push(g.to_owned());
            return Some(cycle);
        }
        path.push(g.to_owned());
        for next in lists.get(g).into_iter().flatten() {
            if let Some(c) = visit(next, lists, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut names: Vec<&String> = lists.keys().collect();
    names.sort();
    names
        .into_iter()
        .find_map(|g| visit(g, lists, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::settings::{Fallbacks, RetryPolicy};
    use crate::router::SeqRand;
    use std::collections::HashMap;

    fn failure(class: FailureClass, retryable: bool) -> Failure {
        Failure {
            class,
            source: FailureSource::Upstream,
            retryable,
            fallback: true,
            status: 500,
            error_type: "api_error",
            message: "x".into(),
            code: None,
            param: None,
            details: None,
            retry_after_ms: None,
        }
    }

    fn settings() -> RouterSettings {
        let mut general = HashMap::new();
        general.insert("a".to_owned(), vec!["b".to_owned(), "c".to_owned()]);
        let mut cw = HashMap::new();
        cw.insert("a".to_owned(), vec!["a-long".to_owned()]);
        RouterSettings {
            retry: RetryPolicy {
                num_retries: 2,
                backoff_base_ms: 100,
                backoff_max_ms: 1_000,
                retry_after_max_ms: 5_000,
            },
            fallbacks: Fallbacks {
                general,
                context_window: cw,
                default: vec!["d".to_owned()],
                max: 5,
                ..Fallbacks::default()
            },
            ..RouterSettings::default()
        }
    }

    fn progress(in_group: u32, groups: &[&'static str]) -> Progress<'static> {
        // Leaked: a few bytes per test case, for a `'static` view like the request's record.
        let fallbacks: Vec<String> = groups[1..].iter().map(|g| g.to_string()).collect();
        Progress {
            in_group,
            requested: groups[0],
            fallbacks: Vec::leak(fallbacks),
        }
    }

    #[test]
    fn retries_then_falls_back_then_fails() {
        let s = settings();
        let mut r = SeqRand(vec![0.5], 0);
        let f = failure(FailureClass::Internal, true);
        // Another deployment: at once; the same one: backoff with jitter.
        assert_eq!(
            next_step(&s, &f, &progress(1, &["a"]), 2, false, &mut r),
            NextStep::Retry { delay_ms: 0 }
        );
        assert_eq!(
            next_step(&s, &f, &progress(2, &["a"]), 2, true, &mut r),
            NextStep::Retry { delay_ms: 100 }
        );
        assert_eq!(
            next_step(&s, &f, &progress(3, &["a"]), 2, false, &mut r),
            NextStep::Fallback { group: "b".into() }
        );
        assert_eq!(
            next_step(&s, &f, &progress(3, &["a", "b"]), 2, false, &mut r),
            NextStep::Fallback { group: "c".into() }
        );
        assert_eq!(
            next_step(&s, &f, &progress(3, &["a", "b", "c"]), 2, false, &mut r),
            NextStep::Fail
        );
        // A group with no list of its own uses the default fallbacks.
        assert_eq!(
            next_step(&s, &f, &progress(3, &["x"]), 2, false, &mut r),
            NextStep::Fallback { group: "d".into() }
        );
    }

    #[test]
    fn client_errors_and_non_retryable_ones_are_not_retried() {
        let s = settings();
        let mut r = SeqRand(vec![0.5], 0);
        let mut bad = failure(FailureClass::BadRequest, false);
        bad.fallback = false;
        assert_eq!(
            next_step(&s, &bad, &progress(1, &["a"]), 2, false, &mut r),
            NextStep::Fail
        );
        let mut quota = failure(FailureClass::RateLimit, false);
        quota.fallback = false;
        assert_eq!(
            next_step(&s, &quota, &progress(1, &["a"]), 2, false, &mut r),
            NextStep::Fail
        );
        // A prompt too long goes to its own fallbacks only, at once.
        let cw = failure(FailureClass::ContextWindowExceeded, false);
        assert_eq!(
            next_step(&s, &cw, &progress(1, &["a"]), 2, false, &mut r),
            NextStep::Fallback {
                group: "a-long".into()
            }
        );
        assert_eq!(
            next_step(&s, &cw, &progress(1, &["a", "a-long"]), 2, false, &mut r),
            NextStep::Fail
        );
        let gone = failure(FailureClass::Cancelled, true);
        assert_eq!(
            next_step(&s, &gone, &progress(1, &["a"]), 2, false, &mut r),
            NextStep::Fail
        );
    }

    #[test]
    fn backoff_is_capped_jittered_and_honours_retry_after() {
        let s = settings();
        let mut r = SeqRand(vec![1.0], 0);
        assert_eq!(backoff(&s, 1, None, &mut r), 100);
        assert_eq!(backoff(&s, 3, None, &mut r), 400);
        assert_eq!(backoff(&s, 10, None, &mut r), 1_000);
        let mut r = SeqRand(vec![0.0], 0);
        assert_eq!(backoff(&s, 3, None, &mut r), 0);
        assert_eq!(backoff(&s, 1, Some(2_000), &mut r), 2_000);
        assert_eq!(backoff(&s, 1, Some(60_000), &mut r), 5_000, "capped");
    }

    #[test]
    fn loops_in_fallbacks_are_found() {
        let mut l = HashMap::new();
        l.insert("a".to_owned(), vec!["b".to_owned()]);
        l.insert("b".to_owned(), vec!["c".to_owned()]);
        assert_eq!(fallback_loop(&l), None);
        l.insert("c".to_owned(), vec!["a".to_owned()]);
        assert_eq!(
            fallback_loop(&l),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
