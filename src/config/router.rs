//! `router_settings` (LiteLLM's names), the fallbacks of `litellm_settings`, and
//! `llmux.router` into the router's [`RouterSettings`].

use std::collections::HashMap;

use super::diag::Diagnostics;
use super::locate::KeyPath;
use super::number::{Limit, Num};
use super::schema::{ConfigFile, FallbackList};
use crate::router::policy::fallback_loop;
use crate::router::settings::{
    BreakerPolicy, CooldownPolicy, Fallbacks, LatencyArgs, QueuePolicy, RetryPolicy,
};
use crate::router::{RouterSettings, Strategy};

/// A share: 0 to 1.
const SHARE: Limit = Limit {
    min: 0.0,
    max: 1.0,
    whole: false,
    unit: "",
};

fn ms(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}

/// Builds the router's settings; `groups` are the model groups the config defines (fallbacks
/// to others are reported).
pub(super) fn settings(
    file: &ConfigFile,
    groups: &[String],
    diag: &mut Diagnostics,
) -> RouterSettings {
    let r = &file.router_settings;
    let l = &file.litellm_settings;
    let x = &file.llmux.router;
    let strategy = r.routing_strategy.as_deref().and_then(|s| {
        let parsed = Strategy::parse(s);
        if parsed.is_none() {
            diag.error(
                KeyPath::keys("router_settings.routing_strategy"),
                format!(
                    "`{}` is not a routing strategy ({})",
                    crate::util::clip(s),
                    Strategy::NAMES.join(", ")
                ),
            );
        }
        parsed
    });
    let mut num = |path: &str, v: &Option<Num>, limit: Limit| -> Option<f64> {
        limit
            .check(v.as_ref()?)
            .map_err(|m| diag.error(KeyPath::keys(path), m))
            .ok()
    };

    let defaults = RetryPolicy::default();
    let retry = RetryPolicy {
        num_retries: num(
            "router_settings.num_retries",
            &r.num_retries,
            Limit::count(0, 100),
        )
        .or(num(
            "litellm_settings.num_retries",
            &l.num_retries,
            Limit::count(0, 100),
        ))
        .map_or(defaults.num_retries, |v| v as u32),
        backoff_base_ms: num(
            "llmux.router.retry.backoff_base",
            &x.retry.backoff_base,
            Limit::SECONDS_OR_ZERO,
        )
        .map_or(defaults.backoff_base_ms, ms),
        backoff_max_ms: num(
            "llmux.router.retry.backoff_max",
            &x.retry.backoff_max,
            Limit::SECONDS_OR_ZERO,
        )
        .map_or(defaults.backoff_max_ms, ms),
        retry_after_max_ms: num(
            "llmux.router.retry.retry_after_max",
            &x.retry.retry_after_max,
            Limit::SECONDS_OR_ZERO,
        )
        .map_or(defaults.retry_after_max_ms, ms),
    };
    let c = CooldownPolicy::default();
    let cooldown = CooldownPolicy {
        disabled: r.disable_cooldowns.unwrap_or(false),
        allowed_fails: num(
            "router_settings.allowed_fails",
            &r.allowed_fails,
            Limit::count(0, 1_000_000),
        )
        .map_or(c.allowed_fails, |v| v as u32),
        cooldown_ms: num(
            "router_settings.cooldown_time",
            &r.cooldown_time,
            Limit::SECONDS,
        )
        .map_or(c.cooldown_ms, ms),
        failure_rate: num(
            "llmux.router.cooldown_failure_rate",
            &x.cooldown_failure_rate,
            SHARE,
        )
        .unwrap_or(c.failure_rate),
        min_requests: c.min_requests,
    };
    let b = BreakerPolicy::default();
    let bs = &x.breaker;
    let breaker = BreakerPolicy {
        enabled: bs.enabled.unwrap_or(b.enabled),
        consecutive_failures: num(
            "llmux.router.breaker.consecutive_failures",
            &bs.consecutive_failures,
            Limit::count(1, 1_000_000),
        )
        .map_or(b.consecutive_failures, |v| v as u32),
        failure_rate: num("llmux.router.breaker.failure_rate", &bs.failure_rate, SHARE)
            .unwrap_or(b.failure_rate),
        window_ms: num("llmux.router.breaker.window", &bs.window, Limit::SECONDS)
            .map_or(b.window_ms, ms),
        min_requests: num(
            "llmux.router.breaker.min_requests",
            &bs.min_requests,
            Limit::count(1, 1_000_000),
        )
        .map_or(b.min_requests, |v| v as u32),
        open_ms: num(
            "llmux.router.breaker.open_for",
            &bs.open_for,
            Limit::SECONDS,
        )
        .map_or(b.open_ms, ms),
        half_open_probes: num(
            "llmux.router.breaker.half_open_probes",
            &bs.half_open_probes,
            Limit::count(1, 1_000),
        )
        .map_or(b.half_open_probes, |v| v as u32),
    };
    let q = QueuePolicy::default();
    let queue = QueuePolicy {
        max_waiting: num(
            "llmux.router.queue.max_waiting",
            &x.queue.max_waiting,
            Limit::count(0, 1_000_000),
        )
        .map_or(q.max_waiting, |v| v as usize),
        timeout_ms: num(
            "llmux.router.queue.timeout",
            &x.queue.timeout,
            Limit::SECONDS,
        )
        .map_or(q.timeout_ms, ms),
    };
    let la = LatencyArgs::default();
    let latency = LatencyArgs {
        buffer: num(
            "router_settings.routing_strategy_args.lowest_latency_buffer",
            &r.routing_strategy_args.lowest_latency_buffer,
            Limit {
                min: 0.0,
                max: 100.0,
                whole: false,
                unit: "",
            },
        )
        .unwrap_or(la.buffer),
        explore_after_ms: num(
            "llmux.router.latency_explore_after",
            &x.latency_explore_after,
            Limit::SECONDS,
        )
        .map_or(la.explore_after_ms, ms),
    };
    let max_fallbacks = num(
        "router_settings.max_fallbacks",
        &r.max_fallbacks,
        Limit::count(0, 100),
    )
    .map_or(5, |v| v as usize);

    let mut lists = |name: &str, router: &Option<FallbackList>, litellm: &Option<FallbackList>| {
        let (section, list) = match (router, litellm) {
            (Some(l), _) => ("router_settings", l),
            (None, Some(l)) => ("litellm_settings", l),
            (None, None) => return HashMap::new(),
        };
        let path = KeyPath::keys(section).key(name);
        let mut map = HashMap::new();
        for entry in list {
            for (from, to) in entry {
                for g in std::iter::once(from).chain(to) {
                    if !groups.contains(g) {
                        diag.warn(
                            path.clone(),
                            format!(
                                "`{}` is not a model group of this config",
                                crate::util::clip(g)
                            ),
                        );
                    }
                }
                map.insert(from.clone(), to.clone());
            }
        }
        if let Some(cycle) = fallback_loop(&map) {
            diag.error(
                path,
                format!(
                    "the fallbacks loop ({}): a request would come back to where it failed",
                    cycle.join(" → ")
                ),
            );
        }
        map
    };
    let fallbacks = Fallbacks {
        general: lists("fallbacks", &r.fallbacks, &l.fallbacks),
        context_window: lists(
            "context_window_fallbacks",
            &r.context_window_fallbacks,
            &l.context_window_fallbacks,
        ),
        content_policy: lists(
            "content_policy_fallbacks",
            &r.content_policy_fallbacks,
            &l.content_policy_fallbacks,
        ),
        default: r
            .default_fallbacks
            .clone()
            .or_else(|| l.default_fallbacks.clone())
            .unwrap_or_default(),
        max: max_fallbacks,
    };
    RouterSettings {
        strategy,
        retry,
        cooldown,
        breaker,
        fallbacks,
        queue,
        latency,
    }
}
