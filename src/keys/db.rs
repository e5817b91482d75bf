//! LiteLLM's tables, read and written as LiteLLM does (LiteLLM 1.110's schema;
//! ../shared/reference/litellm-compat.md §1–3): a key is one `LiteLLM_VerificationToken` row
//! joined with its `LiteLLM_TeamTable` row; spend goes to `LiteLLM_SpendLogs` (insert-only,
//! `ON CONFLICT DO NOTHING`) and to the `spend` columns, always as `spend = spend + x`, so that
//! several gateways (LLMux or LiteLLM) on one database never overwrite each other.

use std::collections::HashMap;

use tokio_postgres::{Client, NoTls};

use super::record::{iso8601, KeyRecord, TeamRecord};

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
    /// Answered from the response cache (`cache_hit` "True").
    pub cache_hit: bool,
    /// The response cache's key, or `None` when the cache is off ("Cache OFF").
    pub cache_key: Option<String>,
    pub error: Option<String>,
}

/// Spend rows encoded for `COPY` (CSV) as soon as they are recorded: one buffer, not a dozen
/// strings a row, so that rows waiting for the database cost their bytes only.
#[derive(Debug, Default)]
pub struct EncodedRows {
    pub csv: Vec<u8>,
    pub count: usize,
}

impl EncodedRows {
    pub fn push(&mut self, row: &SpendRow) {
        write_csv_row(&mut self.csv, row);
        self.count += 1;
    }

    pub fn append(&mut self, other: EncodedRows) {
        if self.csv.is_empty() {
            *self = other;
            return;
        }
        self.csv.extend_from_slice(&other.csv);
        self.count += other.count;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> usize {
        self.csv.len()
    }
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
    #[error("database TLS: {0}")]
    Tls(String),
    #[error("database host: {0}")]
    Resolve(String),
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

/// Connects, and runs the connection on the current (control-plane) runtime. TLS follows the
/// URL's `sslmode` as libpq reads it: `require` encrypts without checking the server's
/// certificate; `verify-ca` and `verify-full` check it (against `sslrootcert` when given,
/// else the webpki roots; the host name is checked in both); anything else is plain TCP.
pub async fn connect(url: &str) -> Result<Client, DbError> {
    // A URL's query, or a `key=value key=value` connection string.
    let param = |name: &str| {
        let pairs: Box<dyn Iterator<Item = &str>> = match url.split_once("://") {
            Some(_) => Box::new(url.split_once('?').map(|(_, q)| q).unwrap_or("").split('&')),
            None => Box::new(url.split_whitespace()),
        };
        pairs.into_iter().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| crate::util::percent_decode(v, false))
        })
    };
    let mode = param("sslmode").unwrap_or_default();
    let tls = match mode.as_str() {
        "require" => Some(tls::unverified()?),
        "verify-ca" | "verify-full" => Some(tls::verified(param("sslrootcert").as_deref())?),
        _ => None,
    };
    match tls {
        Some(config) => {
            spawn_connection(url, tokio_postgres_rustls::MakeRustlsConnect::new(config)).await
        }
        None => spawn_connection(url, NoTls).await,
    }
}

/// Connects with `tls` and drives the connection on the current runtime.
async fn spawn_connection<T>(url: &str, tls: T) -> Result<Client, DbError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let config = resolved_config(url).await?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "keys: database connection closed");
        }
    });
    Ok(client)
}

/// The URL's settings, each TCP host name resolved by LLMux's resolver into `hostaddr` (the
/// name stays the TLS server name): tokio-postgres would otherwise ask the C library, which a
/// static binary cannot.
async fn resolved_config(url: &str) -> Result<tokio_postgres::Config, DbError> {
    use tokio_postgres::config::Host;
    let mut config: tokio_postgres::Config = url.parse()?;
    let hosts = config.get_hosts().to_vec();
    if !config.get_hostaddrs().is_empty() || !hosts.iter().all(|h| matches!(h, Host::Tcp(_))) {
        return Ok(config);
    }
    let ports = config.get_ports().to_vec();
    for (i, host) in hosts.iter().enumerate() {
        let Host::Tcp(name) = host else { continue };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let addrs = crate::upstream::dns::lookup(name, port)
            .await
            .map_err(|e| DbError::Resolve(format!("{name}: {e}")))?;
        let ip = addrs
            .first()
            .map(|a| a.ip())
            .ok_or_else(|| DbError::Resolve(format!("{name} has no addresses")))?;
        config.hostaddr(ip);
    }
    Ok(config)
}

/// TLS settings for PostgreSQL (rustls; no OpenSSL).
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

    use super::DbError;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// `sslmode=verify-*`: the server's certificate checked against `root` (a PEM file) or
    /// the webpki roots.
    pub fn verified(root: Option<&str>) -> Result<ClientConfig, DbError> {
        let mut roots = rustls::RootCertStore::empty();
        match root {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| DbError::Tls(format!("sslrootcert {path}: {e}")))?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert =
                        cert.map_err(|e| DbError::Tls(format!("sslrootcert {path}: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| DbError::Tls(format!("sslrootcert {path}: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// `sslmode=require`: encrypted, the certificate not checked — libpq's meaning of it.
    pub fn unverified() -> Result<ClientConfig, DbError> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth())
    }

    /// Accepts any certificate (the signatures of the handshake are still checked).
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

const LOOKUP: &str = r#"
SELECT v.token, v.key_alias, v.key_name, v.models, v.blocked,
       (EXTRACT(EPOCH FROM v.expires) * 1000)::float8 AS expires_ms,
       v.spend, v.max_budget, v.rpm_limit, v.tpm_limit, v.max_parallel_requests,
       v.user_id, v.team_id,
       (EXTRACT(EPOCH FROM v.budget_reset_at) * 1000)::float8 AS reset_ms,
       t.team_alias, t.blocked AS team_blocked, t.models AS team_models,
       t.spend AS team_spend, t.max_budget AS team_max_budget,
       (EXTRACT(EPOCH FROM t.budget_reset_at) * 1000)::float8 AS team_reset_ms
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
            budget_reset_at_ms: row
                .try_get::<_, Option<f64>>("team_reset_ms")?
                .map(|ms| ms as i64),
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
        budget_duration_ms: None,
        budget_reset_at_ms: row
            .try_get::<_, Option<f64>>("reset_ms")?
            .map(|ms| ms as i64),
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

/// Writes a batch in one transaction: the rows, then `spend += x` for each key, team and user
/// (sorted, as LiteLLM sorts them, so that concurrent writers lock rows in one order).
pub async fn write_spend(
    client: &mut Client,
    rows: &EncodedRows,
    keys: &HashMap<String, f64>,
    teams: &HashMap<String, f64>,
    users: &HashMap<String, f64>,
) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    if !rows.is_empty() {
        insert_rows(&tx, rows).await?;
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

/// The spend rows' columns, in COPY order.
const SPEND_COLUMNS: &str = r#"request_id, call_type, api_key, spend, total_tokens, prompt_tokens,
    completion_tokens, "startTime", "endTime", "completionStartTime", model, model_id, model_group,
    custom_llm_provider, api_base, "user", metadata, cache_hit, cache_key, team_id, session_id,
    status"#;

/// Inserts rows with `COPY` (CSV) into a session-temporary table shaped like
/// `LiteLLM_SpendLogs`, then `INSERT … SELECT … ON CONFLICT DO NOTHING`: COPY keeps up with a
/// gateway's full request rate where row-by-row inserts do not, and the conflict rule stays
/// LiteLLM's (`create_many(skip_duplicates=True)`).
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &EncodedRows,
) -> Result<(), DbError> {
    use futures_util::SinkExt;
    tx.batch_execute(
        r#"CREATE TEMP TABLE IF NOT EXISTS llmux_spend_rows
           (LIKE "LiteLLM_SpendLogs" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"#,
    )
    .await?;
    let sink = tx
        .copy_in(&format!(
            "COPY llmux_spend_rows ({SPEND_COLUMNS}) FROM STDIN (FORMAT csv)"
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::copy_from_slice(&rows.csv)).await?;
    sink.as_mut().finish().await?;
    tx.execute(
        r#"INSERT INTO "LiteLLM_SpendLogs" SELECT * FROM llmux_spend_rows
           ON CONFLICT (request_id) DO NOTHING"#,
        &[],
    )
    .await?;
    Ok(())
}

/// One row in PostgreSQL's CSV: every field quoted (quotes doubled), `NULL` as an empty
/// unquoted field, timestamps as UTC text.
fn write_csv_row(out: &mut Vec<u8>, r: &SpendRow) {
    fn field(out: &mut Vec<u8>, v: Option<&str>) {
        if let Some(v) = v {
            out.push(b'"');
            for b in v.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
        out.push(b',');
    }
    let ts = |ms: i64| {
        let s = iso8601(ms);
        format!("{s}.{:03}", ms.rem_euclid(1000))
    };
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
    field(out, Some(&r.request_id));
    field(out, Some("acompletion"));
    field(out, Some(&r.api_key));
    field(out, Some(&r.spend.to_string()));
    field(out, Some(&total.to_string()));
    field(out, Some(&r.prompt_tokens.to_string()));
    field(out, Some(&r.completion_tokens.to_string()));
    field(out, Some(&ts(r.start_ms)));
    field(out, Some(&ts(r.end_ms)));
    field(out, Some(&ts(r.completion_start_ms)));
    field(out, Some(&r.model));
    field(out, Some(&r.model_id));
    field(out, Some(&r.model_group));
    field(out, Some(&r.custom_llm_provider));
    field(out, Some(&r.api_base));
    field(out, r.user.as_deref());
    field(out, Some(&metadata));
    field(out, Some(if r.cache_hit { "True" } else { "False" }));
    field(out, Some(r.cache_key.as_deref().unwrap_or("Cache OFF")));
    field(out, r.team_id.as_deref());
    field(out, Some(&r.session_id));
    field(out, Some(r.status));
    // The last field ends the line instead of a separator.
    out.pop();
    out.push(b'\n');
}

/// LiteLLM's budget reset (`ResetBudgetJob`), for a database LiteLLM does not also serve (it
/// runs its own, leader-locked): keys, teams and users whose `budget_reset_at` has passed get
/// `spend = 0` and their next reset `budget_duration` later; rows with a duration and no reset
/// time get one. Returns how many rows were reset.
pub async fn reset_budgets(client: &mut Client, now_ms: i64) -> Result<u64, DbError> {
    let tx = client.transaction().await?;
    let mut reset = 0;
    for (table, id) in [
        ("LiteLLM_VerificationToken", "token"),
        ("LiteLLM_TeamTable", "team_id"),
        ("LiteLLM_UserTable", "user_id"),
    ] {
        let rows = tx
            .query(
                &format!(
                    r#"SELECT "{id}", budget_duration,
                              (EXTRACT(EPOCH FROM budget_reset_at) * 1000)::float8
                       FROM "{table}" WHERE budget_duration IS NOT NULL
                       AND (budget_reset_at IS NULL
                            OR budget_reset_at <= to_timestamp($1::float8 / 1000) AT TIME ZONE 'UTC')
                       ORDER BY 1 FOR UPDATE"#
                ),
                &[&(now_ms as f64)],
            )
            .await?;
        for r in rows {
            let key: String = r.get(0);
            let Some(every) = budget_duration_ms(r.get::<_, &str>(1)) else {
                continue;
            };
            let due: Option<f64> = r.get(2);
            let next = iso8601(now_ms.saturating_add(every));
            let spend_sql = if due.is_some() { "spend = 0, " } else { "" };
            reset += tx
                .execute(
                    &format!(
                        r#"UPDATE "{table}" SET {spend_sql}budget_reset_at = $2::text::timestamp WHERE "{id}" = $1"#
                    ),
                    &[&key, &next],
                )
                .await?
                * u64::from(due.is_some());
        }
    }
    tx.commit().await?;
    Ok(reset)
}

/// LiteLLM's `budget_duration`: `Ns`, `Nm`, `Nh`, `Nd`, `Nmo` (a month as 30 days).
pub fn budget_duration_ms(d: &str) -> Option<i64> {
    let d = d.trim();
    let split = d.find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = d[..split].parse().ok()?;
    let unit = match &d[split..] {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "mo" => 30 * 86_400_000,
        _ => return None,
    };
    Some(n.saturating_mul(unit))
}
