//! The key management API (master key only), LiteLLM's request and response shapes for the
//! fields LLMux supports: `/key/generate`, `/key/info`, `/key/update`, `/key/delete`,
//! `/key/list`, `/key/block`, `/key/unblock`, `/team/new`, `/team/info`. Requests are parsed on
//! the shard and carried out by the control plane on the database; a field LLMux does not
//! support is a 400 naming it (never silently dropped).

use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::credential::{abbreviate, hash_key};
use super::record::iso8601;

/// One management call.
#[derive(Debug)]
pub enum AdminOp {
    Generate(GenerateKey),
    Info { key: String },
    Update(UpdateKey),
    Delete(DeleteKeys),
    List { page: i64, size: i64 },
    Block { key: String, blocked: bool },
    NewTeam(NewTeam),
    TeamInfo { team_id: String },
}

/// What a call answers, and the key hashes whose cached entries must go.
pub struct AdminAnswer {
    pub body: Value,
    pub invalidate: Vec<String>,
}

#[derive(Debug)]
pub struct AdminError {
    pub status: u16,
    pub message: String,
}

impl AdminError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A constraint the request broke is the caller's; anything else is the database's.
        let status = if e.code().is_some_and(|c| c.code().starts_with("23")) {
            400
        } else {
            503
        };
        Self {
            status,
            message: format!("database: {e}"),
        }
    }
}

/// The fields of a key that can be set (LiteLLM's `GenerateKeyRequest` / `UpdateKeyRequest`,
/// those LLMux uses).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    /// `/key/generate`: a key of the caller's choosing (`sk-...`), else one is made;
    /// `/key/update`: the key to change (or its hash), required.
    pub key: Option<String>,
    pub key_alias: Option<String>,
    pub models: Option<Vec<String>>,
    pub max_budget: Option<f64>,
    /// `30s`, `10m`, `24h`, `7d`: the key expires that long from now.
    pub duration: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub metadata: Option<Value>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i32>,
    pub blocked: Option<bool>,
    /// Kept for LiteLLM's budget reset job (LLMux does not run it).
    pub budget_duration: Option<String>,
    pub spend: Option<f64>,
}

pub type GenerateKey = KeyFields;

#[derive(Debug)]
pub struct UpdateKey {
    pub key: String,
    pub fields: KeyFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteKeys {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub key_aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub team_id: Option<String>,
    pub team_alias: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub metadata: Option<Value>,
    pub blocked: Option<bool>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i32>,
    pub budget_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    key: String,
}

/// Parses a management request: the path, the query, the body.
pub fn parse(path: &str, query: Option<&str>, body: &[u8]) -> Result<AdminOp, AdminError> {
    let json = |b: &[u8]| -> Result<Value, AdminError> {
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(b).map_err(|e| AdminError::bad(format!("invalid JSON body: {e}")))
    };
    let param = |name: &str| -> Option<String> {
        query?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| crate::util::percent_decode(v, true))
        })
    };
    Ok(match path {
        "/key/generate" => AdminOp::Generate(from(json(body)?)?),
        "/key/update" => {
            let mut fields: KeyFields = from(json(body)?)?;
            let key = fields
                .key
                .take()
                .ok_or_else(|| AdminError::bad("`key` is required"))?;
            AdminOp::Update(UpdateKey { key, fields })
        }
        "/key/delete" => {
            let d: DeleteKeys = from(json(body)?)?;
            if d.keys.is_empty() && d.key_aliases.is_empty() {
                return Err(AdminError::bad(
                    "At least one of 'keys' or 'key_aliases' must be provided.",
                ));
            }
            AdminOp::Delete(d)
        }
        "/key/info" => AdminOp::Info {
            key: param("key").ok_or_else(|| AdminError::bad("`key` is required (?key=sk-...)"))?,
        },
        "/key/list" => AdminOp::List {
            page: param("page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1),
            size: param("size")
                .and_then(|p| p.parse().ok())
                .unwrap_or(10)
                .clamp(1, 100),
        },
        "/key/block" | "/key/unblock" => {
            let b: BlockRequest = from(json(body)?)?;
            AdminOp::Block {
                key: b.key,
                blocked: path == "/key/block",
            }
        }
        "/team/new" => AdminOp::NewTeam(from(json(body)?)?),
        "/team/info" => AdminOp::TeamInfo {
            team_id: param("team_id")
                .ok_or_else(|| AdminError::bad("`team_id` is required (?team_id=...)"))?,
        },
        other => return Err(AdminError::not_found(format!("unknown route {other}"))),
    })
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, AdminError> {
    serde_json::from_value(v).map_err(|e| AdminError::bad(e.to_string()))
}

/// A key as given (`sk-...`) or as its hash.
fn token_of(key: &str) -> String {
    if key.starts_with("sk-") {
        hash_key(key)
    } else {
        key.to_owned()
    }
}

/// `Ns`, `Nm`, `Nh`, `Nd` (LiteLLM's durations) in milliseconds.
fn duration_ms(d: &str) -> Result<i64, AdminError> {
    let d = d.trim();
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| AdminError::bad(format!("duration `{d}`: a number and s, m, h or d")))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(AdminError::bad(format!(
                "duration `{d}`: a number and s, m, h or d"
            )))
        }
    };
    Ok(n.saturating_mul(unit_ms))
}

/// A new key: `sk-` and 16 random bytes, URL-safe base64 (LiteLLM's `token_urlsafe(16)`).
fn new_key() -> Result<String, AdminError> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| AdminError {
            status: 500,
            message: "no randomness for a new key".into(),
        })?;
    Ok(format!(
        "sk-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

const KEY_COLUMNS: &str = r#"token, key_name, key_alias, spend, max_budget, models, blocked,
    (EXTRACT(EPOCH FROM expires) * 1000)::float8 AS expires_ms, user_id, team_id, metadata::text AS metadata,
    rpm_limit, tpm_limit, max_parallel_requests, budget_duration,
    (EXTRACT(EPOCH FROM created_at) * 1000)::float8 AS created_ms"#;

fn key_json(r: &Row) -> Value {
    let ms = |c: &str| {
        r.try_get::<_, Option<f64>>(c)
            .ok()
            .flatten()
            .map(|v| iso8601(v as i64).replacen(' ', "T", 1))
    };
    json!({
        "token": r.try_get::<_, String>("token").ok(),
        "key_name": r.try_get::<_, Option<String>>("key_name").ok().flatten(),
        "key_alias": r.try_get::<_, Option<String>>("key_alias").ok().flatten(),
        "spend": r.try_get::<_, f64>("spend").unwrap_or(0.0),
        "max_budget": r.try_get::<_, Option<f64>>("max_budget").ok().flatten(),
        "models": r.try_get::<_, Option<Vec<String>>>("models").ok().flatten().unwrap_or_default(),
        "blocked": r.try_get::<_, Option<bool>>("blocked").ok().flatten(),
        "expires": ms("expires_ms"),
        "user_id": r.try_get::<_, Option<String>>("user_id").ok().flatten(),
        "team_id": r.try_get::<_, Option<String>>("team_id").ok().flatten(),
        "metadata": r
            .try_get::<_, String>("metadata")
            .ok()
            .and_then(|m| serde_json::from_str::<Value>(&m).ok())
            .unwrap_or_else(|| json!({})),
        "rpm_limit": r.try_get::<_, Option<i64>>("rpm_limit").ok().flatten(),
        "tpm_limit": r.try_get::<_, Option<i64>>("tpm_limit").ok().flatten(),
        "max_parallel_requests": r.try_get::<_, Option<i32>>("max_parallel_requests").ok().flatten(),
        "budget_duration": r.try_get::<_, Option<String>>("budget_duration").ok().flatten(),
        "created_at": ms("created_ms"),
    })
}

/// Carries out one call on the database.
pub async fn run(client: &Client, op: AdminOp) -> Result<AdminAnswer, AdminError> {
    match op {
        AdminOp::Generate(g) => generate(client, g).await,
        AdminOp::Info { key } => {
            let token = token_of(&key);
            let row = client
                .query_opt(
                    &format!(
                        r#"SELECT {KEY_COLUMNS} FROM "LiteLLM_VerificationToken" WHERE token = $1"#
                    ),
                    &[&token],
                )
                .await?
                .ok_or_else(|| AdminError::not_found("Key not found"))?;
            Ok(AdminAnswer {
                body: json!({ "key": key, "info": key_json(&row) }),
                invalidate: Vec::new(),
            })
        }
        AdminOp::Update(u) => update(client, u).await,
        AdminOp::Delete(d) => {
            let tokens: Vec<String> = d.keys.iter().map(|k| token_of(k)).collect();
            let rows = client
                .query(
                    r#"DELETE FROM "LiteLLM_VerificationToken" WHERE token = ANY($1) OR key_alias = ANY($2) RETURNING token"#,
                    &[&tokens, &d.key_aliases],
                )
                .await?;
            let deleted: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            if deleted.is_empty() {
                return Err(AdminError::not_found("No keys found to delete"));
            }
            Ok(AdminAnswer {
                body: json!({ "deleted_keys": d.keys.iter().chain(&d.key_aliases).collect::<Vec<_>>() }),
                invalidate: deleted,
            })
        }
        AdminOp::List { page, size } => {
            let total: i64 = client
                .query_one(r#"SELECT count(*) FROM "LiteLLM_VerificationToken""#, &[])
                .await?
                .get(0);
            let rows = client
                .query(
                    r#"SELECT token FROM "LiteLLM_VerificationToken" ORDER BY created_at, token LIMIT $1 OFFSET $2"#,
                    &[&size, &((page - 1) * size)],
                )
                .await?;
            let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            Ok(AdminAnswer {
                body: json!({
                    "keys": keys,
                    "total_count": total,
                    "current_page": page,
                    "total_pages": (total + size - 1) / size,
                }),
                invalidate: Vec::new(),
            })
        }
        AdminOp::Block { key, blocked } => {
            let token = token_of(&key);
            let row = client
                .query_opt(
                    &format!(
                        r#"UPDATE "LiteLLM_VerificationToken" SET blocked = $2, updated_at = now() AT TIME ZONE 'UTC'
                           WHERE token = $1 RETURNING {KEY_COLUMNS}"#
                    ),
                    &[&token, &blocked],
                )
                .await?
                .ok_or_else(|| AdminError::not_found("Key not found"))?;
            Ok(AdminAnswer {
                body: key_json(&row),
                invalidate: vec![token],
            })
        }
        AdminOp::NewTeam(t) => new_team(client, t).await,
        AdminOp::TeamInfo { team_id } => {
            let row = client
                .query_opt(
                    r#"SELECT team_id, team_alias, models, spend, max_budget, blocked, metadata::text,
                              rpm_limit, tpm_limit, max_parallel_requests, budget_duration
                       FROM "LiteLLM_TeamTable" WHERE team_id = $1"#,
                    &[&team_id],
                )
                .await?
                .ok_or_else(|| AdminError::not_found(format!("Team not found, passed team_id={team_id}")))?;
            let keys = client
                .query(
                    &format!(r#"SELECT {KEY_COLUMNS} FROM "LiteLLM_VerificationToken" WHERE team_id = $1"#),
                    &[&team_id],
                )
                .await?;
            Ok(AdminAnswer {
                body: json!({
                    "team_id": team_id,
                    "team_info": team_json(&row),
                    "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
                }),
                invalidate: Vec::new(),
            })
        }
    }
}

fn team_json(r: &Row) -> Value {
    json!({
        "team_id": r.get::<_, String>(0),
        "team_alias": r.get::<_, Option<String>>(1),
        "models": r.get::<_, Option<Vec<String>>>(2).unwrap_or_default(),
        "spend": r.get::<_, f64>(3),
        "max_budget": r.get::<_, Option<f64>>(4),
        "blocked": r.get::<_, bool>(5),
        "metadata": serde_json::from_str::<Value>(&r.get::<_, String>(6)).unwrap_or_else(|_| json!({})),
        "rpm_limit": r.get::<_, Option<i64>>(7),
        "tpm_limit": r.get::<_, Option<i64>>(8),
        "max_parallel_requests": r.get::<_, Option<i32>>(9),
        "budget_duration": r.get::<_, Option<String>>(10),
    })
}

async fn generate(client: &Client, g: GenerateKey) -> Result<AdminAnswer, AdminError> {
    let key = match g.key.clone() {
        Some(k) if k.starts_with("sk-") && k.len() >= 8 => k,
        Some(_) => {
            return Err(AdminError::bad(
                "a key must start with `sk-` (8 characters at least)",
            ))
        }
        None => new_key()?,
    };
    let token = hash_key(&key);
    let f = &g;
    let expires_ms = f
        .duration
        .as_deref()
        .map(duration_ms)
        .transpose()?
        .map(|d| (crate::util::unix_ms() as i64).saturating_add(d) as f64);
    let metadata = f.metadata.clone().unwrap_or_else(|| json!({})).to_string();
    let models = f.models.clone().unwrap_or_default();
    let params: [&(dyn ToSql + Sync); 15] = [
        &token,
        &abbreviate(&key),
        &f.key_alias,
        &models,
        &f.max_budget,
        &expires_ms,
        &f.user_id,
        &f.team_id,
        &metadata,
        &f.rpm_limit,
        &f.tpm_limit,
        &f.max_parallel_requests,
        &f.blocked,
        &f.budget_duration,
        &f.spend.unwrap_or(0.0),
    ];
    let row = client
        .query_one(
            &format!(
                r#"INSERT INTO "LiteLLM_VerificationToken"
                   (token, key_name, key_alias, models, max_budget, expires, user_id, team_id,
                    metadata, rpm_limit, tpm_limit, max_parallel_requests, blocked, budget_duration,
                    spend, created_by, updated_by)
                   VALUES ($1, $2, $3, $4, $5,
                           to_timestamp($6::float8 / 1000) AT TIME ZONE 'UTC', $7, $8,
                           $9::text::jsonb, $10, $11, $12, $13, $14, $15,
                           'litellm_proxy_master_key', 'litellm_proxy_master_key')
                   RETURNING {KEY_COLUMNS}"#
            ),
            &params,
        )
        .await?;
    let mut body = key_json(&row);
    body["key"] = json!(key);
    body["token_id"] = json!(token);
    Ok(AdminAnswer {
        body,
        invalidate: Vec::new(),
    })
}

async fn update(client: &Client, u: UpdateKey) -> Result<AdminAnswer, AdminError> {
    let token = token_of(&u.key);
    let f = &u.fields;
    let mut sets: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(token.clone())];
    let mut set = |column: &str, cast: &str, v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        sets.push(format!("{column} = ${}{cast}", params.len()));
    };
    if let Some(v) = &f.key_alias {
        set("key_alias", "", Box::new(v.clone()));
    }
    if let Some(v) = &f.models {
        set("models", "", Box::new(v.clone()));
    }
    if let Some(v) = f.max_budget {
        set("max_budget", "", Box::new(v));
    }
    if let Some(d) = &f.duration {
        let at = (crate::util::unix_ms() as i64).saturating_add(duration_ms(d)?);
        set("expires", "::text::timestamp", Box::new(iso8601(at)));
    }
    if let Some(v) = &f.team_id {
        set("team_id", "", Box::new(v.clone()));
    }
    if let Some(v) = &f.user_id {
        set("user_id", "", Box::new(v.clone()));
    }
    if let Some(v) = &f.metadata {
        set("metadata", "::text::jsonb", Box::new(v.to_string()));
    }
    if let Some(v) = f.rpm_limit {
        set("rpm_limit", "", Box::new(v));
    }
    if let Some(v) = f.tpm_limit {
        set("tpm_limit", "", Box::new(v));
    }
    if let Some(v) = f.max_parallel_requests {
        set("max_parallel_requests", "", Box::new(v));
    }
    if let Some(v) = f.blocked {
        set("blocked", "", Box::new(v));
    }
    if let Some(v) = &f.budget_duration {
        set("budget_duration", "", Box::new(v.clone()));
    }
    if let Some(v) = f.spend {
        set("spend", "", Box::new(v));
    }
    if sets.is_empty() {
        return Err(AdminError::bad("nothing to update"));
    }
    let sql = format!(
        r#"UPDATE "LiteLLM_VerificationToken" SET {}, updated_at = now() AT TIME ZONE 'UTC'
           WHERE token = $1 RETURNING {KEY_COLUMNS}"#,
        sets.join(", ")
    );
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let row = client
        .query_opt(&sql, &refs)
        .await?
        .ok_or_else(|| AdminError::not_found("Key not found"))?;
    Ok(AdminAnswer {
        body: key_json(&row),
        invalidate: vec![token],
    })
}

async fn new_team(client: &Client, t: NewTeam) -> Result<AdminAnswer, AdminError> {
    let team_id = match t.team_id {
        Some(id) if !id.trim().is_empty() => id,
        _ => {
            // LiteLLM's Prisma client makes a uuid4; any unique id will do.
            let k = new_key()?;
            k.trim_start_matches("sk-").to_owned()
        }
    };
    let metadata = t.metadata.clone().unwrap_or_else(|| json!({})).to_string();
    let row = client
        .query_one(
            r#"INSERT INTO "LiteLLM_TeamTable"
               (team_id, team_alias, models, max_budget, metadata, blocked, rpm_limit, tpm_limit,
                max_parallel_requests, budget_duration, admins, members)
               VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10, ARRAY[]::TEXT[], ARRAY[]::TEXT[])
               RETURNING team_id, team_alias, models, spend, max_budget, blocked, metadata::text,
                         rpm_limit, tpm_limit, max_parallel_requests, budget_duration"#,
            &[
                &team_id,
                &t.team_alias,
                &t.models,
                &t.max_budget,
                &metadata,
                &t.blocked.unwrap_or(false),
                &t.rpm_limit,
                &t.tpm_limit,
                &t.max_parallel_requests,
                &t.budget_duration,
            ],
        )
        .await?;
    Ok(AdminAnswer {
        body: team_json(&row),
        invalidate: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_litellm_sends_them() {
        let op = parse(
            "/key/generate",
            None,
            br#"{"key_alias":"a","models":["m"],"max_budget":1.5,"duration":"30d"}"#,
        )
        .unwrap();
        assert!(matches!(op, AdminOp::Generate(_)));
        let e = parse("/key/generate", None, br#"{"guardrails":["x"]}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("guardrails"), "{}", e.message);
        assert!(parse("/key/delete", None, b"{}").is_err());
        match parse("/key/info", Some("key=sk-a%2Bb"), b"").unwrap() {
            AdminOp::Info { key } => assert_eq!(key, "sk-a+b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(duration_ms("2h").unwrap(), 7_200_000);
        assert!(duration_ms("2 weeks").is_err());
        let k = new_key().unwrap();
        assert!(k.starts_with("sk-") && k.len() == 25, "{k}");
    }
}
