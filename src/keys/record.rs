//! What a virtual key may do, and the checks a request passes, in LiteLLM's order and with its
//! error types and messages (LiteLLM 1.110: `auth_checks.common_checks`,
//! `user_api_key_auth.py`): blocked, model access, expiry, key budget, team blocked, team model
//! access, team budget. Rate limits come after, in the gateway.

use std::sync::Arc;

use http::StatusCode;

use crate::api::{ApiError, ErrorKind};

/// A key, as LiteLLM's `LiteLLM_VerificationToken` row (joined with its team) or a key of the
/// config file describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRecord {
    /// `sha256(raw key)`, lower-case hex.
    pub token: String,
    pub key_alias: Option<String>,
    /// `sk-...abcd`, for messages.
    pub key_name: Option<String>,
    /// Empty: every model. Special values: `all-proxy-models`, `*`, `all-team-models`;
    /// `provider/*` wildcards.
    pub models: Vec<String>,
    pub blocked: bool,
    /// Unix milliseconds; `None`: never.
    pub expires_ms: Option<i64>,
    /// USD spent (as the database or this process knows it).
    pub spend: f64,
    pub max_budget: Option<f64>,
    /// When LiteLLM's budget reset is due (`budget_reset_at`, unix ms): from then on, the
    /// spend read before it no longer counts against the budget.
    pub budget_reset_at_ms: Option<i64>,
    /// A config-file key's `budget_duration` (ms); the control plane resets its spend.
    pub budget_duration_ms: Option<i64>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u32>,
    pub user_id: Option<String>,
    pub team: Option<TeamRecord>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub blocked: bool,
    pub models: Vec<String>,
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub budget_reset_at_ms: Option<i64>,
}

/// Why a key may not make a request: LiteLLM's error for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Malformed,
    NotAVirtualKey {
        shown: String,
    },
    NotFound {
        shown: String,
        token: String,
    },
    Blocked,
    ModelDenied {
        allowed: Vec<String>,
        model: String,
    },
    Expired {
        expires: String,
        now: String,
    },
    KeyBudget {
        spend: f64,
        max: f64,
    },
    TeamBlocked {
        team: String,
    },
    TeamModelDenied {
        team: String,
        model: String,
        allowed: Vec<String>,
    },
    TeamBudget {
        team: String,
        spend: f64,
        max: f64,
    },
    /// The database could not be asked and the key is not cached.
    Unavailable,
}

impl Refusal {
    /// The error answered; `budget_status` is `litellm_settings.budget_exceeded_status_code`
    /// (LiteLLM 1.104+: 422).
    pub fn to_error(&self, budget_status: StatusCode) -> ApiError {
        let auth = |m: String| ApiError::new(ErrorKind::Authentication, m);
        match self {
            Refusal::Malformed => {
                auth("Malformed API Key passed in. Ensure Key has `Bearer ` prefix.".into())
                    .with_type("auth_error")
            }
            Refusal::NotAVirtualKey { shown } => auth(format!(
                "Authentication Error, LiteLLM Virtual Key expected. Received={shown}, expected to start with 'sk-'."
            ))
            .with_type("auth_error"),
            Refusal::NotFound { shown, token } => auth(format!(
                "Authentication Error, Invalid proxy server token passed. Received API Key = {shown}, Key Hash (Token) ={token}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`"
            ))
            .with_type("token_not_found_in_db"),
            Refusal::Blocked => auth(
                "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
                    .into(),
            )
            .with_type("auth_error"),
            Refusal::ModelDenied { allowed, model } => auth(format!(
                "Authentication Error, key not allowed to access model. This key can only access models={allowed:?}. Tried to access {model}"
            ))
            .with_type("key_model_access_denied")
            .with_param("model"),
            Refusal::Expired { expires, now } => auth(format!(
                "Authentication Error - Expired Key. Key Expiry time {expires} and current time {now}"
            ))
            .with_type("expired_key"),
            Refusal::KeyBudget { spend, max } => ApiError::new(
                ErrorKind::BadRequest,
                format!("Budget has been exceeded! Current cost: {spend}, Max budget: {max}"),
            )
            .with_type("budget_exceeded")
            .with_status(budget_status),
            Refusal::TeamBlocked { team } => auth(format!(
                "Authentication Error, Team={team} is blocked. Update via `/team/unblock` if you're an admin."
            ))
            .with_type("auth_error"),
            Refusal::TeamModelDenied {
                team,
                model,
                allowed,
            } => auth(format!(
                "Authentication Error, Team not allowed to access model. Team={team}, Model={model}. Allowed team models = {allowed:?}"
            ))
            .with_type("team_model_access_denied")
            .with_param("model"),
            Refusal::TeamBudget { team, spend, max } => ApiError::new(
                ErrorKind::BadRequest,
                format!(
                    "Budget has been exceeded! Team={team} Current cost: {spend}, Max budget: {max}"
                ),
            )
            .with_type("budget_exceeded")
            .with_status(budget_status),
            Refusal::Unavailable => ApiError::new(
                ErrorKind::ServiceUnavailable,
                "Authentication is unavailable: the key database cannot be reached and this key is not cached. Try again shortly.",
            )
            .with_type("auth_unavailable"),
        }
    }
}

impl KeyRecord {
    /// The checks before a call of `model` (a model group), at `now_ms`. `spent_here` is spend
    /// this process recorded for the key (and its team) since `spend` was read.
    /// `providers_of_model` lists the providers of the group's deployments (for `openai/*`).
    pub fn check(
        &self,
        model: &str,
        providers_of_model: &[&str],
        now_ms: i64,
        spent_here: (f64, f64),
    ) -> Result<(), Refusal> {
        if self.blocked {
            return Err(Refusal::Blocked);
        }
        let team_models = self.team.as_ref().map(|t| t.models.as_slice());
        if !key_allows(&self.models, team_models, model, providers_of_model) {
            return Err(Refusal::ModelDenied {
                allowed: self.models.clone(),
                model: model.to_owned(),
            });
        }
        if let Some(exp) = self.expires_ms.filter(|e| *e < now_ms) {
            return Err(Refusal::Expired {
                expires: iso8601(exp),
                now: iso8601(now_ms),
            });
        }
        // A reset that is due counts as done (its job may not have run yet, or run elsewhere).
        let reset_due = |at: Option<i64>| at.is_some_and(|at| at <= now_ms);
        let base = if reset_due(self.budget_reset_at_ms) {
            0.0
        } else {
            self.spend
        };
        let spend = base + spent_here.0;
        if let Some(max) = self.max_budget.filter(|m| spend >= *m) {
            return Err(Refusal::KeyBudget { spend, max });
        }
        if let Some(t) = &self.team {
            if t.blocked {
                return Err(Refusal::TeamBlocked {
                    team: t.team_id.clone(),
                });
            }
            if !models_allow(&t.models, model, providers_of_model) {
                return Err(Refusal::TeamModelDenied {
                    team: t.team_id.clone(),
                    model: model.to_owned(),
                    allowed: t.models.clone(),
                });
            }
            let base = if reset_due(t.budget_reset_at_ms) {
                0.0
            } else {
                t.spend
            };
            let spend = base + spent_here.1;
            // LiteLLM: strictly greater for teams.
            if let Some(max) = t.max_budget.filter(|m| spend > *m) {
                return Err(Refusal::TeamBudget {
                    team: t.team_id.clone(),
                    spend,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Whether the key (and its team) may use `model` at all.
    pub fn may_use(&self, model: &str, providers_of_model: &[&str]) -> bool {
        let team_models = self.team.as_ref().map(|t| t.models.as_slice());
        key_allows(&self.models, team_models, model, providers_of_model)
            && self
                .team
                .as_ref()
                .is_none_or(|t| models_allow(&t.models, model, providers_of_model))
    }

    /// The limiter's id for this key's rpm/tpm/parallel limits.
    pub fn limiter_id(&self) -> Arc<str> {
        Arc::from(format!("key:{}", self.token))
    }
}

fn key_allows(
    models: &[String],
    team_models: Option<&[String]>,
    model: &str,
    providers: &[&str],
) -> bool {
    if models.iter().any(|m| m == "all-team-models") {
        return team_models.is_none_or(|t| models_allow(t, model, providers));
    }
    models_allow(models, model, providers)
}

/// LiteLLM's model access: an empty list allows every model; `all-proxy-models` and `*` too;
/// `provider/*` allows the groups served by that provider (and names with that prefix).
pub fn models_allow(models: &[String], model: &str, providers: &[&str]) -> bool {
    models.is_empty()
        || models.iter().any(|m| {
            m == model
                || m == "*"
                || m == "all-proxy-models"
                || m.strip_suffix("/*").is_some_and(|p| {
                    providers.contains(&p)
                        || model.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
                })
                || (m.ends_with('*') && !m.ends_with("/*") && model.starts_with(&m[..m.len() - 1]))
        })
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for messages.
pub fn iso8601(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyRecord {
        KeyRecord {
            token: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn model_access_follows_litellm() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(models_allow(&[], "gpt-4o", &[]));
        assert!(models_allow(&m(&["all-proxy-models"]), "gpt-4o", &[]));
        assert!(models_allow(&m(&["gpt-4o"]), "gpt-4o", &[]));
        assert!(!models_allow(&m(&["gpt-4o"]), "claude", &["anthropic"]));
        assert!(models_allow(&m(&["anthropic/*"]), "claude", &["anthropic"]));
        assert!(models_allow(&m(&["openai/*"]), "openai/gpt-4o", &[]));
        assert!(!models_allow(&m(&["openai/*"]), "claude", &["anthropic"]));
        assert!(models_allow(&m(&["gpt-4*"]), "gpt-4o-mini", &[]));
    }

    #[test]
    fn checks_run_in_litellm_s_order() {
        let mut k = key();
        k.blocked = true;
        k.models = vec!["other".into()];
        assert_eq!(k.check("m", &[], 0, (0.0, 0.0)), Err(Refusal::Blocked));
        k.blocked = false;
        assert!(matches!(
            k.check("m", &[], 0, (0.0, 0.0)),
            Err(Refusal::ModelDenied { .. })
        ));
        k.models.clear();
        k.expires_ms = Some(1_000);
        k.max_budget = Some(1.0);
        k.spend = 2.0;
        assert!(matches!(
            k.check("m", &[], 2_000, (0.0, 0.0)),
            Err(Refusal::Expired { .. })
        ));
        k.expires_ms = None;
        assert!(matches!(
            k.check("m", &[], 2_000, (0.0, 0.0)),
            Err(Refusal::KeyBudget { .. })
        ));
        // Spend recorded here counts against the budget too.
        k.spend = 0.5;
        assert!(k.check("m", &[], 0, (0.4, 0.0)).is_ok());
        assert!(k.check("m", &[], 0, (0.5, 0.0)).is_err());
        k.team = Some(TeamRecord {
            team_id: "tm".into(),
            max_budget: Some(1.0),
            spend: 1.0,
            ..Default::default()
        });
        // A budget reset that is due (LiteLLM's budget_reset_at passed) clears the spend read.
        let mut due = k.clone();
        due.team = None;
        due.spend = 5.0;
        due.budget_reset_at_ms = Some(100);
        assert!(due.check("m", &[], 100, (0.0, 0.0)).is_ok());
        assert!(due.check("m", &[], 99, (0.0, 0.0)).is_err());
        // Team budgets refuse only when strictly exceeded.
        assert!(k.check("m", &[], 0, (0.0, 0.0)).is_ok());
        assert!(matches!(
            k.check("m", &[], 0, (0.0, 0.01)),
            Err(Refusal::TeamBudget { .. })
        ));
    }

    #[test]
    fn errors_have_litellm_s_types() {
        let e = Refusal::KeyBudget {
            spend: 2.0,
            max: 1.0,
        }
        .to_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "budget_exceeded");
        let e = Refusal::Expired {
            expires: "x".into(),
            now: "y".into(),
        }
        .to_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(iso8601(0), "1970-01-01 00:00:00");
        assert_eq!(iso8601(1_767_225_600_000), "2026-01-01 00:00:00");
    }
}
