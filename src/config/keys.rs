//! Virtual keys and their settings: the config file's keys (`llmux.virtual_keys`), the key
//! database (`general_settings.database_url` or `DATABASE_URL`), and LiteLLM's settings for
//! caching keys, writing spend and answering an exceeded budget.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;

use super::diag::Diagnostics;
use super::env::Env;
use super::locate::KeyPath;
use super::number::{Limit, Num};
use super::schema::ConfigFile;
use super::secrets;
use crate::keys::credential::{abbreviate, hash_key};
use crate::keys::record::KeyRecord;

#[derive(Debug, Clone, PartialEq)]
pub struct KeySettings {
    /// The config file's keys, by hash.
    pub static_keys: HashMap<String, KeyRecord>,
    pub database_url: Option<String>,
    pub cache_ttl: Duration,
    pub budget_status: StatusCode,
    pub allow_on_db_unavailable: bool,
    /// Spend is written this often (plus up to 5 s of jitter, as LiteLLM does).
    pub batch_write: Duration,
    pub spend_logs: bool,
    /// The Redis shared with LiteLLM, if any.
    pub redis: Option<RedisSettings>,
    /// The exact-match response cache (`litellm_settings.cache: true` with a Redis).
    pub cache: Option<CacheSettings>,
    /// Every deployment's id, for the cooldowns shared through Redis (filled in by the
    /// snapshot, which makes the ids).
    pub deployment_ids: Vec<String>,
    /// Deployments with an rpm or tpm limit, held across gateways through Redis.
    pub deployment_limits: Vec<DeploymentLimit>,
    /// Run the budget reset job, every `budget_reset_every` (a range: jittered as LiteLLM).
    pub budget_reset: bool,
    pub budget_reset_every: (Duration, Duration),
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            static_keys: HashMap::new(),
            database_url: None,
            cache_ttl: Duration::from_secs(60),
            budget_status: StatusCode::UNPROCESSABLE_ENTITY,
            allow_on_db_unavailable: false,
            batch_write: Duration::from_secs(10),
            spend_logs: true,
            redis: None,
            cache: None,
            deployment_ids: Vec::new(),
            deployment_limits: Vec::new(),
            budget_reset: false,
            budget_reset_every: (Duration::from_secs(597), Duration::from_secs(605)),
        }
    }
}

impl KeySettings {
    /// Virtual keys are in use (requests other than the master key's are looked up).
    pub fn enabled(&self) -> bool {
        !self.static_keys.is_empty() || self.database_url.is_some()
    }

    /// The key control plane has work: keys, or the response cache (its Redis lives there).
    pub fn needs_control_plane(&self) -> bool {
        self.enabled() || self.redis.is_some()
    }
}

/// A deployment's rpm/tpm, as LiteLLM's router keys name it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentLimit {
    pub id: String,
    /// `litellm_params.model` (`openai/gpt-4o`).
    pub model: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// The response cache's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub ttl: Duration,
    /// One entry for every caller (else per team, or key without a team).
    pub global: bool,
}

pub fn build(
    file: &ConfigFile,
    has_master_key: bool,
    env: &Env,
    base_dir: &Path,
    diag: &mut Diagnostics,
    secrets_seen: &mut Vec<String>,
) -> KeySettings {
    let d = KeySettings::default();
    let g = &file.general_settings;
    let database_url = match g.database_url.as_deref() {
        Some(raw) => match secrets::resolve(raw, base_dir, env) {
            Ok(u) if !u.trim().is_empty() => Some(u),
            Ok(_) => None,
            Err(e) => {
                diag.error(
                    KeyPath::keys("general_settings.database_url"),
                    e.to_string(),
                );
                None
            }
        },
        None => env
            .get("DATABASE_URL")
            .filter(|u| !u.trim().is_empty())
            .map(str::to_owned),
    };
    if let Some(u) = &database_url {
        secrets_seen.push(u.clone());
        // The password alone too, for messages that quote it without the URL.
        if let Some(pw) = url_password(u) {
            secrets_seen.push(pw.to_owned());
        }
    }
    let mut static_keys = HashMap::new();
    for (i, k) in file.llmux.virtual_keys.iter().enumerate() {
        let at = |field: &str| KeyPath::keys(&format!("llmux.virtual_keys.{i}.{field}"));
        let raw = match secrets::resolve(&k.key, base_dir, env) {
            Ok(r) => r,
            Err(e) => {
                diag.error(at("key"), e.to_string());
                continue;
            }
        };
        if !raw.starts_with("sk-") || raw.len() < 8 {
            diag.error(
                at("key"),
                "a virtual key must start with `sk-` and be at least 8 characters (LiteLLM hashes and looks up only `sk-` keys)",
            );
            continue;
        }
        secrets_seen.push(raw.clone());
        let token = hash_key(&raw);
        let mut count = |field: &str, v: &Option<Num>| {
            v.as_ref()
                .and_then(|n| match Limit::count(0, u32::MAX.into()).check(n) {
                    Ok(v) => Some(v as u64),
                    Err(m) => {
                        diag.error(at(field), m);
                        None
                    }
                })
        };
        let rpm_limit = count("rpm_limit", &k.rpm_limit);
        let tpm_limit = count("tpm_limit", &k.tpm_limit);
        let max_parallel_requests = count("max_parallel_requests", &k.max_parallel_requests)
            .map(|n| n.min(u64::from(u32::MAX)) as u32);
        let max_budget = k.max_budget.as_ref().and_then(|n| match n {
            Num::Value(v) if v.is_finite() && *v >= 0.0 => Some(*v),
            _ => {
                diag.error(at("max_budget"), "must be a number of USD, 0 or more");
                None
            }
        });
        let expires_ms = k.expires.as_deref().and_then(|e| match parse_utc(e) {
            Some(ms) => Some(ms),
            None => {
                diag.error(
                    at("expires"),
                    format!("`{e}` is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC)"),
                );
                None
            }
        });
        let budget_duration_ms = k.budget_duration.as_deref().and_then(|d| {
            let ms = crate::keys::db::budget_duration_ms(d);
            if ms.is_none_or(|ms| ms <= 0) {
                diag.error(
                    at("budget_duration"),
                    format!("`{d}` is not a duration (30s, 30m, 30h, 30d or 1mo)"),
                );
            }
            ms.filter(|ms| *ms > 0)
        });
        let record = KeyRecord {
            token: token.clone(),
            key_alias: k.key_alias.clone(),
            key_name: Some(abbreviate(&raw)),
            models: k.models.clone(),
            blocked: k.blocked.unwrap_or(false),
            expires_ms,
            spend: 0.0,
            max_budget,
            budget_reset_at_ms: None,
            budget_duration_ms,
            rpm_limit,
            tpm_limit,
            max_parallel_requests,
            user_id: k.user_id.clone(),
            team: k
                .team_id
                .clone()
                .map(|team_id| crate::keys::record::TeamRecord {
                    team_id,
                    ..Default::default()
                }),
        };
        if static_keys.insert(token, record).is_some() {
            diag.error(at("key"), "the same key is listed twice");
        }
    }
    let settings = KeySettings {
        static_keys,
        database_url,
        cache_ttl: match &g.user_api_key_cache_ttl {
            Some(n) => secs(
                diag,
                "general_settings.user_api_key_cache_ttl",
                n,
                d.cache_ttl,
            ),
            None => d.cache_ttl,
        },
        budget_status: match &file.litellm_settings.budget_exceeded_status_code {
            Some(n) => match Limit::count(400, 599).check(n) {
                Ok(v) => StatusCode::from_u16(v as u16).unwrap_or(d.budget_status),
                Err(m) => {
                    diag.error(
                        KeyPath::keys("litellm_settings.budget_exceeded_status_code"),
                        m,
                    );
                    d.budget_status
                }
            },
            None => d.budget_status,
        },
        allow_on_db_unavailable: g.allow_requests_on_db_unavailable.unwrap_or(false),
        batch_write: match &g.proxy_batch_write_at {
            Some(n) => secs(
                diag,
                "general_settings.proxy_batch_write_at",
                n,
                d.batch_write,
            ),
            None => d.batch_write,
        },
        spend_logs: !g.disable_spend_logs.unwrap_or(false),
        redis: redis(file, env, base_dir, diag, secrets_seen),
        cache: None,
        deployment_ids: Vec::new(),
        deployment_limits: Vec::new(),
        budget_reset: file.llmux.budget_reset.unwrap_or(false),
        budget_reset_every: {
            let min = match &g.proxy_budget_rescheduler_min_time {
                Some(n) => secs(
                    diag,
                    "general_settings.proxy_budget_rescheduler_min_time",
                    n,
                    d.budget_reset_every.0,
                ),
                None => d.budget_reset_every.0,
            };
            let max = match &g.proxy_budget_rescheduler_max_time {
                Some(n) => secs(
                    diag,
                    "general_settings.proxy_budget_rescheduler_max_time",
                    n,
                    d.budget_reset_every.1,
                ),
                None => d.budget_reset_every.1,
            };
            (min, max.max(min))
        },
    };
    let mut settings = settings;
    if file.litellm_settings.cache == Some(true) {
        match &settings.redis {
            Some(_) => {
                let ttl = file
                    .litellm_settings
                    .cache_params
                    .as_ref()
                    .and_then(|c| c.ttl.as_ref())
                    .map_or(Duration::from_secs(60), |n| {
                        secs(diag, "litellm_settings.cache_params.ttl", n, Duration::from_secs(60))
                    });
                settings.cache = Some(CacheSettings {
                    ttl,
                    global: file.llmux.cache_global.unwrap_or(false),
                });
            }
            None => diag.warn(
                KeyPath::keys("litellm_settings.cache"),
                "the response cache needs Redis (litellm_settings.cache_params with type: redis); it is off",
            ),
        }
    }
    if settings.budget_reset && settings.database_url.is_none() {
        diag.warn(
            KeyPath::keys("llmux.budget_reset"),
            "the budget reset job needs a key database (general_settings.database_url); it does not run",
        );
    }
    if settings.enabled() && !has_master_key {
        diag.error(
            KeyPath::keys("general_settings.master_key"),
            "virtual keys (llmux.virtual_keys or a database) need a master key: without one, authentication is off",
        );
    }
    settings
}

/// Where Redis is, and the namespace LiteLLM's helpers prefix keys with.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    pub namespace: Option<String>,
}

impl RedisSettings {
    /// A key as LiteLLM's cache helpers write it.
    pub fn key(&self, key: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}:{key}"),
            None => key.to_owned(),
        }
    }
}

/// LiteLLM's Redis: `litellm_settings.cache_params` (type redis), then
/// `router_settings.redis_*`, then `REDIS_URL` / `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`.
fn redis(
    file: &ConfigFile,
    env: &Env,
    base_dir: &Path,
    diag: &mut Diagnostics,
    secrets_seen: &mut Vec<String>,
) -> Option<RedisSettings> {
    let mut resolve = |path: &str, v: &Option<String>| -> Option<String> {
        let raw = v.as_deref()?;
        match secrets::resolve(raw, base_dir, env) {
            Ok(s) if !s.trim().is_empty() => Some(s),
            Ok(_) => None,
            Err(e) => {
                diag.error(KeyPath::keys(path), e.to_string());
                None
            }
        }
    };
    let port = |n: &Option<Num>| match n {
        Some(Num::Value(v)) if (1.0..=65535.0).contains(v) => Some(*v as u16),
        _ => None,
    };
    let cp = file.litellm_settings.cache_params.as_ref().filter(|c| {
        c.kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case("redis"))
    });
    let rs = &file.router_settings;
    let from_parts = |host: String, port: Option<u16>, password: Option<String>| {
        let auth = password
            .map(|p| format!(":{}@", percent_encode(&p)))
            .unwrap_or_default();
        format!("redis://{auth}{host}:{}", port.unwrap_or(6379))
    };
    let url = if let Some(c) = cp.filter(|c| c.host.is_some() || c.redis_url.is_some()) {
        match resolve("litellm_settings.cache_params.redis_url", &c.redis_url) {
            Some(u) => Some(u),
            None => {
                let host = resolve("litellm_settings.cache_params.host", &c.host)?;
                let pw = resolve("litellm_settings.cache_params.password", &c.password);
                Some(from_parts(host, port(&c.port), pw))
            }
        }
    } else if rs.redis_url.is_some() || rs.redis_host.is_some() {
        match resolve("router_settings.redis_url", &rs.redis_url) {
            Some(u) => Some(u),
            None => {
                let host = resolve("router_settings.redis_host", &rs.redis_host)?;
                let pw = resolve("router_settings.redis_password", &rs.redis_password);
                Some(from_parts(host, port(&rs.redis_port), pw))
            }
        }
    } else if let Some(u) = env.get("REDIS_URL").filter(|u| !u.trim().is_empty()) {
        Some(u.to_owned())
    } else {
        env.get("REDIS_HOST")
            .filter(|h| !h.trim().is_empty())
            .map(|h| {
                from_parts(
                    h.to_owned(),
                    env.get("REDIS_PORT").and_then(|p| p.trim().parse().ok()),
                    env.get("REDIS_PASSWORD").map(str::to_owned),
                )
            })
    }?;
    secrets_seen.push(url.clone());
    if let Some(pw) = url_password(&url) {
        secrets_seen.push(pw.to_owned());
    }
    Some(RedisSettings {
        url,
        namespace: cp
            .and_then(|c| c.namespace.clone())
            .filter(|n| !n.is_empty()),
    })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn secs(diag: &mut Diagnostics, path: &str, n: &Num, default: Duration) -> Duration {
    match Limit::SECONDS.check(n) {
        Ok(v) => Duration::from_secs_f64(v),
        Err(m) => {
            diag.error(KeyPath::keys(path), m);
            default
        }
    }
}

/// The password of a `postgres://user:password@host/db` URL.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS[.fff][Z]`, as UTC, to unix ms.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (mut hh, mut mm, mut ss, mut ms) = (0i64, 0i64, 0i64, 0i64);
    if let Some(t) = time {
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut p = hms.split(':');
        hh = p.next()?.parse().ok()?;
        mm = p.next()?.parse().ok()?;
        ss = p.next().unwrap_or("0").parse().ok()?;
        if !frac.is_empty() {
            let digits: String = frac.chars().take(3).collect();
            ms = format!("{digits:0<3}").parse().ok()?;
        }
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
    }
    Some((crate::util::days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_as_utc() {
        assert_eq!(parse_utc("1970-01-01"), Some(0));
        assert_eq!(parse_utc("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(parse_utc("2026-01-01 00:00:01.5"), Some(1_767_225_601_500));
        assert_eq!(parse_utc("2026-13-01"), None);
        assert_eq!(parse_utc("soon"), None);
        assert_eq!(
            crate::keys::record::iso8601(parse_utc("2024-02-29T12:34:56").unwrap()),
            "2024-02-29 12:34:56"
        );
    }

    #[test]
    fn a_database_password_is_a_secret() {
        assert_eq!(url_password("postgres://u:p%40ss@h/db"), Some("p%40ss"));
        assert_eq!(url_password("postgres://u@h/db"), None);
    }
}
