//! LiteLLM's tables, read and written as LiteLLM does (LiteLLM 1.110's schema;
//! ../shared/reference/litellm-compat.md §1–3): a key is one `LiteLLM_VerificationToken` row
//! joined with its `LiteLLM_TeamTable` row; spend goes to `LiteLLM_SpendLogs` (insert-only,
//! `ON CONFLICT DO NOTHING`) and to the `spend` columns, always as `spend = spend + x`, so that
//! several gateways (LLMux or LiteLLM) on one database never overwrite each other.

use std::collections::HashMap;

use tokio_postgres::{Client, NoTls};

use super::record::{KeyRecord, TeamRecord};

/// One request, as a `LiteLLM_SpendLogs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendRow {
    pub request_id: String,
    /// The key's hash, or `litellm_proxy_master_key` (LiteLLM 1.100+).
    pub api_key: String,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// First chunk of a stream; the end otherwise.
    pub completion_start_ms: i64,
    pub model: String,
    pub model_id: String,
    pub model_group: String,
    pub custom_llm_provider: String,
    pub api_base: String,
    pub user: Option<String>,
    pub team_id: Option<String>,
    pub key_alias: Option<String>,
    pub session_id: String,
    /// `success` or `failure`.
    pub status: &'static str,
    pub error: Option<String>,
}

/// What failed, for logs (the URL is never in it).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "the database already holds LiteLLM tables ({0}); their schema belongs to LiteLLM's migrations, and `llmux db migrate` never alters one"
    )]
    NotEmpty(String),
}

/// The tables `llmux db migrate` creates, from LiteLLM 1.110.2's `schema.prisma`
/// (tools/prisma_to_sql.py).
pub const SCHEMA_SQL: &str = include_str!("schema.sql");
pub const TABLES: [&str; 4] = [
    "LiteLLM_VerificationToken",
    "LiteLLM_TeamTable",
    "LiteLLM_UserTable",
    "LiteLLM_SpendLogs",
];

/// Creates LiteLLM's tables on a database that has none of them (in one transaction).
pub async fn migrate(url: &str) -> Result<Vec<&'static str>, DbError> {
    let mut client = connect(url).await?;
    let existing: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name LIKE 'LiteLLM\\_%' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !existing.is_empty() {
        return Err(DbError::NotEmpty(existing.join(", ")));
    }
    let tx = client.transaction().await?;
    tx.batch_execute(SCHEMA_SQL).await?;
    tx.commit().await?;
    Ok(TABLES.to_vec())
}

/// The columns LLMux reads and writes that the database lacks, as `table.column` (empty: all
/// there). Checked when the control plane first connects.
pub async fn missing_columns(client: &Client) -> Result<Vec<String>, DbError> {
    const NEEDED: &[(&str, &[&str])] = &[
        (
            "LiteLLM_VerificationToken",
            &[
                "token",
                "key_alias",
                "key_name",
                "models",
                "blocked",
                "expires",
                "spend",
                "max_budget",
                "rpm_limit",
                "tpm_limit",
                "max_parallel_requests",
                "user_id",
                "team_id",
            ],
        ),
        (
            "LiteLLM_TeamTable",
            &[
                "team_id",
                "team_alias",
                "blocked",
                "models",
                "spend",
                "max_budget",
            ],
        ),
        ("LiteLLM_UserTable", &["user_id", "spend"]),
        (
            "LiteLLM_SpendLogs",
            &[
                "request_id",
                "call_type",
                "api_key",
                "spend",
                "total_tokens",
                "prompt_tokens",
                "completion_tokens",
                "startTime",
                "endTime",
                "completionStartTime",
                "model",
                "model_id",
                "model_group",
                "custom_llm_provider",
                "api_base",
                "user",
                "metadata",
                "cache_hit",
                "cache_key",
                "team_id",
                "session_id",
                "status",
            ],
        ),
    ];
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name LIKE 'LiteLLM\\_%'",
            &[],
        )
        .await?;
    let have: std::collections::HashSet<(String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut missing = Vec::new();
    for (table, columns) in NEEDED {
        for c in *columns {
            if !have.contains(&(table.to_string(), c.to_string())) {
                missing.push(format!("{table}.{c}"));
            }
        }
    }
    Ok(missing)
}

/// Connects, and runs the connection on the current (control-plane) runtime.
pub async fn connect(url: &str) -> Result<Client, DbError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "keys: database connection closed");
        }
    });
    Ok(client)
}

const LOOKUP: &str = r#"
SELECT v.token, v.key_alias, v.key_name, v.models, v.blocked,
       (EXTRACT(EPOCH FROM v.expires) * 1000)::float8 AS expires_ms,
       v.spend, v.max_budget, v.rpm_limit, v.tpm_limit, v.max_parallel_requests,
       v.user_id, v.team_id,
       t.team_alias, t.blocked AS team_blocked, t.models AS team_models,
       t.spend AS team_spend, t.max_budget AS team_max_budget
FROM "LiteLLM_VerificationToken" v
LEFT JOIN "LiteLLM_TeamTable" t ON v.team_id = t.team_id
WHERE v.token = $1"#;

/// The key whose hash is `token`, with its team.
pub async fn lookup(client: &Client, token: &str) -> Result<Option<KeyRecord>, DbError> {
    let Some(row) = client.query_opt(LOOKUP, &[&token]).await? else {
        return Ok(None);
    };
    let team_id: Option<String> = row.try_get("team_id")?;
    let team = match team_id {
        Some(team_id) => Some(TeamRecord {
            team_id,
            team_alias: row.try_get("team_alias")?,
            blocked: row
                .try_get::<_, Option<bool>>("team_blocked")?
                .unwrap_or(false),
            models: row
                .try_get::<_, Option<Vec<String>>>("team_models")?
                .unwrap_or_default(),
            spend: row.try_get::<_, Option<f64>>("team_spend")?.unwrap_or(0.0),
            max_budget: row.try_get("team_max_budget")?,
        }),
        None => None,
    };
    Ok(Some(KeyRecord {
        token: row.try_get("token")?,
        key_alias: row.try_get("key_alias")?,
        key_name: row.try_get("key_name")?,
        models: row
            .try_get::<_, Option<Vec<String>>>("models")?
            .unwrap_or_default(),
        blocked: row.try_get::<_, Option<bool>>("blocked")?.unwrap_or(false),
        expires_ms: row
            .try_get::<_, Option<f64>>("expires_ms")?
            .map(|ms| ms as i64),
        spend: row.try_get::<_, Option<f64>>("spend")?.unwrap_or(0.0),
        max_budget: row.try_get("max_budget")?,
        rpm_limit: row
            .try_get::<_, Option<i64>>("rpm_limit")?
            .and_then(|v| u64::try_from(v).ok()),
        tpm_limit: row
            .try_get::<_, Option<i64>>("tpm_limit")?
            .and_then(|v| u64::try_from(v).ok()),
        max_parallel_requests: row
            .try_get::<_, Option<i32>>("max_parallel_requests")?
            .and_then(|v| u32::try_from(v).ok()),
        user_id: row.try_get("user_id")?,
        team,
    }))
}

/// Spend rows per statement: 19 parameters each, well under PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 500;

/// Writes a batch in one transaction: the rows, then `spend += x` for each key, team and user
/// (sorted, as LiteLLM sorts them, so that concurrent writers lock rows in one order).
pub async fn write_spend(
    client: &mut Client,
    rows: &[SpendRow],
    keys: &HashMap<String, f64>,
    teams: &HashMap<String, f64>,
    users: &HashMap<String, f64>,
) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        insert_rows(&tx, chunk).await?;
    }
    for (table, column, amounts) in [
        ("LiteLLM_VerificationToken", "token", keys),
        ("LiteLLM_TeamTable", "team_id", teams),
        ("LiteLLM_UserTable", "user_id", users),
    ] {
        let mut ids: Vec<(&String, &f64)> = amounts.iter().collect();
        ids.sort_by(|a, b| a.0.cmp(b.0));
        if ids.is_empty() {
            continue;
        }
        let stmt = tx
            .prepare(&format!(
                r#"UPDATE "{table}" SET spend = spend + $1 WHERE "{column}" = $2"#
            ))
            .await?;
        for (id, usd) in ids {
            tx.execute(&stmt, &[usd, id]).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[SpendRow],
) -> Result<(), DbError> {
    const COLUMNS: &str = r#"request_id, call_type, api_key, spend, total_tokens, prompt_tokens,
        completion_tokens, "startTime", "endTime", "completionStartTime", model, model_id,
        model_group, custom_llm_provider, api_base, "user", metadata, cache_hit, cache_key,
        team_id, session_id, status"#;
    let mut sql = format!(r#"INSERT INTO "LiteLLM_SpendLogs" ({COLUMNS}) VALUES "#);
    let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
        Vec::with_capacity(rows.len() * 19);
    for (i, r) in rows.iter().enumerate() {
        let b = i * 19;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, 'acompletion', ${}, ${}, ${}, ${}, ${}, to_timestamp(${}::float8 / 1000) AT TIME ZONE 'UTC', to_timestamp(${}::float8 / 1000) AT TIME ZONE 'UTC', to_timestamp(${}::float8 / 1000) AT TIME ZONE 'UTC', ${}, ${}, ${}, ${}, ${}, ${}, ${}::text::jsonb, 'False', 'Cache OFF', ${}, ${}, ${})",
            b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11,
            b + 12, b + 13, b + 14, b + 15, b + 16, b + 17, b + 18, b + 19
        ));
        let total = r.prompt_tokens + r.completion_tokens;
        let metadata = serde_json::json!({
            "user_api_key": r.api_key,
            "user_api_key_alias": r.key_alias,
            "user_api_key_team_id": r.team_id,
            "user_api_key_user_id": r.user,
            "status": r.status,
            "error_information": r.error.as_ref().map(|e| serde_json::json!({ "error_message": e })),
            "usage_object": {
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": total,
            },
        })
        .to_string();
        params.push(Box::new(r.request_id.clone()));
        params.push(Box::new(r.api_key.clone()));
        params.push(Box::new(r.spend));
        params.push(Box::new(i32::try_from(total).unwrap_or(i32::MAX)));
        params.push(Box::new(i32::try_from(r.prompt_tokens).unwrap_or(i32::MAX)));
        params.push(Box::new(
            i32::try_from(r.completion_tokens).unwrap_or(i32::MAX),
        ));
        params.push(Box::new(r.start_ms as f64));
        params.push(Box::new(r.end_ms as f64));
        params.push(Box::new(r.completion_start_ms as f64));
        params.push(Box::new(r.model.clone()));
        params.push(Box::new(r.model_id.clone()));
        params.push(Box::new(r.model_group.clone()));
        params.push(Box::new(r.custom_llm_provider.clone()));
        params.push(Box::new(r.api_base.clone()));
        params.push(Box::new(r.user.clone()));
        params.push(Box::new(metadata));
        params.push(Box::new(r.team_id.clone()));
        params.push(Box::new(r.session_id.clone()));
        params.push(Box::new(r.status.to_owned()));
    }
    sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    tx.execute(sql.as_str(), &refs).await?;
    Ok(())
}
