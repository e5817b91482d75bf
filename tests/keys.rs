//! Virtual keys: the config file's keys (no database) checked in LiteLLM's order with its
//! error types; keys read from LiteLLM's tables on a real PostgreSQL (127.0.0.1:5432, trust
//! auth, user postgres), spend written back as LiteLLM writes it; `llmux db migrate`.
//!
//! Each database test creates its own database and drops it at the end. PostgreSQL missing is a
//! failure with a clear message, never a skip.

mod common;

use std::process::Command;
use std::time::Duration;

use common::hostile;
use common::*;

const WAIT: Duration = Duration::from_secs(30);
const MASTER: &str = "sk-master-test-0123456789";

fn chat_as(gw: &Gateway, key: &str, model: &str) -> Response {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let auth = format!("Bearer {key}");
    request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )
}

fn error_type(r: &Response) -> String {
    r.json()["error"]["type"].as_str().unwrap_or("").to_owned()
}

#[test]
fn config_keys_are_checked_in_litellm_s_order_with_its_errors() {
    let mock = Mock::start();
    let config = config_for(
        &mock,
        &[("m", "gpt-4o-mini"), ("other", "gpt-4o-mini")],
        &format!(
            r#"general_settings:
  master_key: {MASTER}
llmux:
  virtual_keys:
    - key: sk-only-m-0001
      models: [m]
    - key: sk-blocked-0002
      blocked: true
    - key: sk-expired-0003
      expires: "2020-01-01"
    - key: sk-tiny-budget-0004
      max_budget: 0.0000001
"#
        ),
    );
    // One shard: a key's spend on it counts at once (across shards, within a cache TTL).
    let gw = Gateway::start_with(
        &config,
        GatewayOpts {
            workers: 1,
            ..Default::default()
        },
    );
    assert_eq!(chat_as(&gw, MASTER, "m").status, 200);
    assert_eq!(chat_as(&gw, "sk-only-m-0001", "m").status, 200);

    let r = chat_as(&gw, "sk-only-m-0001", "other");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "key_model_access_denied"),
        "{}",
        r.text()
    );
    let r = chat_as(&gw, "sk-unknown-key-9999", "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "token_not_found_in_db"),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains("sk-unknown-key-9999"),
        "the whole key is never echoed"
    );
    let r = chat_as(&gw, "not-a-virtual-key", "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "auth_error"),
        "{}",
        r.text()
    );
    let r = chat_as(&gw, "sk-blocked-0002", "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "auth_error"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("blocked"), "{}", r.text());
    let r = chat_as(&gw, "sk-expired-0003", "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "expired_key"),
        "{}",
        r.text()
    );

    // The first call spends past the budget; the next is refused (LiteLLM 1.110: 422).
    assert_eq!(chat_as(&gw, "sk-tiny-budget-0004", "m").status, 200);
    let r = chat_as(&gw, "sk-tiny-budget-0004", "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (422, "budget_exceeded"),
        "{}",
        r.text()
    );

    // A malformed Authorization header (no scheme) is LiteLLM's 401.
    let r = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "sk-only-m-0001")],
        b"{}",
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Malformed API Key"), "{}", r.text());

    // A key sees only its models.
    let r = request(
        &gw.addr,
        "GET",
        "/v1/models",
        &[("x-litellm-api-key", "sk-only-m-0001")],
        b"",
    );
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m"]);
}

#[test]
fn virtual_keys_need_a_master_key() {
    let dir = TempDir::new("keys-config");
    let file = dir.0.join("llmux.yaml");
    std::fs::write(
        &file,
        "model_list: []\nllmux:\n  virtual_keys:\n    - key: sk-abcdefgh\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("run llmux config check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key"), "{err}");
}

/// The calendar minute now (LiteLLM's and LLMux's rate windows for deployments and the
/// gateway's own limiter count in them).
/// One shard: a gateway's own limiter then hands out exactly a limit (with more shards, leases
/// make it stricter: docs/routing.md).
fn one_shard() -> GatewayOpts<'static> {
    GatewayOpts {
        workers: 1,
        ..Default::default()
    }
}

/// A database of the test's own, dropped when the test ends.
struct TestDb {
    name: String,
}

impl TestDb {
    fn new(tag: &str) -> TestDb {
        let name = format!("llmux_{tag}_{}_{}", std::process::id(), fastrand_u32());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Runs SQL with psql; panics with PostgreSQL's words if it fails (these tests need the
/// project's PostgreSQL at 127.0.0.1:5432).
fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ])
        .output()
        .expect("psql must be installed: these tests need PostgreSQL at 127.0.0.1:5432");
    assert!(
        out.status.success(),
        "PostgreSQL at 127.0.0.1:5432 (user postgres) is required: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn migrate(db: &TestDb) -> std::process::Output {
    Command::new(BIN)
        .args(["db", "migrate", "--database-url", &db.url()])
        .output()
        .expect("run llmux db migrate")
}

fn sha256_hex(s: &str) -> String {
    // The gateway's own hash is tested against Python's hashlib in its unit tests; here the
    // database computes it, as an independent check.
    psql(
        "postgres",
        &format!("SELECT encode(sha256('{s}'::bytea), 'hex')"),
    )
}

#[test]
fn a_key_row_written_as_litellm_writes_it_authenticates_and_spend_is_written_back() {
    let db = TestDb::new("keys");
    let out = migrate(&db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = "sk-db-key-test-0001";
    let token = sha256_hex(key);
    // As LiteLLM's /key/generate and /team/new write them (Prisma fills the defaults).
    db.sql(
        "INSERT INTO \"LiteLLM_TeamTable\" (team_id, team_alias, models, spend, max_budget) \
         VALUES ('team-1', 'Team One', ARRAY[]::TEXT[], 0, 100)",
    );
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, key_name, key_alias, models, spend, \
         max_budget, user_id, team_id, metadata) VALUES ('{token}', 'sk-...0001', 'ci-key', \
         ARRAY['m']::TEXT[], 0, 10, 'user-1', 'team-1', '{{}}')"
    ));
    db.sql("INSERT INTO \"LiteLLM_UserTable\" (user_id, spend) VALUES ('user-1', 0)");
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\n  proxy_batch_write_at: 1\n",
            // A host name: resolved by the gateway's own resolver (/etc/hosts), not libc's.
            db.url().replace("127.0.0.1", "localhost")
        ),
    ));
    for _ in 0..5 {
        let r = chat_as(&gw, key, "m");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = chat_as(&gw, "sk-db-key-unknown-0002", "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "token_not_found_in_db")
    );
    assert_eq!(chat_as(&gw, MASTER, "m").status, 200);

    // Rows for all six served requests; the key's, team's and user's spend add up to its rows'.
    assert!(
        eventually(WAIT, || db
            .sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
            == "6"),
        "spend rows: {}",
        db.sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
    );
    let logged: f64 = db
        .sql(&format!(
            "SELECT sum(spend) FROM \"LiteLLM_SpendLogs\" WHERE api_key = '{token}'"
        ))
        .parse()
        .unwrap();
    assert!(logged > 0.0);
    assert!(
        eventually(WAIT, || {
            let spend: f64 = db
                .sql(&format!(
                    "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{token}'"
                ))
                .parse()
                .unwrap_or(0.0);
            (spend - logged).abs() < 1e-12
        }),
        "key spend {} against rows {logged}",
        db.sql(&format!(
            "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{token}'"
        ))
    );
    let team: f64 = db
        .sql("SELECT spend FROM \"LiteLLM_TeamTable\" WHERE team_id = 'team-1'")
        .parse()
        .unwrap();
    let user: f64 = db
        .sql("SELECT spend FROM \"LiteLLM_UserTable\" WHERE user_id = 'user-1'")
        .parse()
        .unwrap();
    assert!(
        (team - logged).abs() < 1e-12 && (user - logged).abs() < 1e-12,
        "{team} {user} {logged}"
    );
    let row = db.sql(&format!(
        "SELECT call_type, model_group, model, custom_llm_provider, status, \"user\", team_id, \
         prompt_tokens > 0, metadata->>'user_api_key_alias' FROM \"LiteLLM_SpendLogs\" \
         WHERE api_key = '{token}' LIMIT 1"
    ));
    assert_eq!(
        row,
        "acompletion|m|gpt-4o-mini|openai|success|user-1|team-1|t|ci-key"
    );
    // The master key's row carries LiteLLM's alias, never the key or its hash.
    assert_eq!(
        db.sql(
            "SELECT count(*) FROM \"LiteLLM_SpendLogs\" WHERE api_key = 'litellm_proxy_master_key'"
        ),
        "1"
    );
    let all =
        db.sql("SELECT string_agg(metadata::text || api_key, ' ') FROM \"LiteLLM_SpendLogs\"");
    assert!(!all.contains(MASTER) && !all.contains(key));
}

#[test]
fn migrate_refuses_a_database_that_has_litellm_tables() {
    let db = TestDb::new("migrate");
    assert!(migrate(&db).status.success());
    let again = migrate(&db);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds LiteLLM tables"), "{err}");
    assert!(err.contains("LiteLLM_VerificationToken"), "{err}");
}

/// LiteLLM's own `schema.prisma`, from the litellm wheel on PyPI (cached under the target
/// directory; LiteLLM's Prisma tooling cannot run offline, its schema file can be read).
fn litellm_schema_prisma() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("litellm-1.110.2");
    let schema = dir.join("schema.prisma");
    if !schema.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let got = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "litellm==1.110.2",
                "--no-deps",
                "-q",
                "-d",
            ])
            .arg(&dir)
            .output()
            .expect("python3 with pip is needed to fetch LiteLLM's schema from PyPI");
        assert!(
            got.status.success(),
            "fetching the litellm wheel from PyPI failed: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        let extract = Command::new("python3")
            .current_dir(&dir)
            .args([
                "-c",
                "import glob, zipfile; z = zipfile.ZipFile(glob.glob('litellm-*.whl')[0]); \
                 open('schema.prisma', 'wb').write(z.read('litellm/proxy/schema.prisma'))",
            ])
            .output()
            .expect("python3");
        assert!(
            extract.status.success(),
            "{}",
            String::from_utf8_lossy(&extract.stderr)
        );
    }
    std::fs::read_to_string(schema).unwrap()
}

/// `(column, information_schema data_type, nullable)` of a Prisma model's scalar fields, as
/// Prisma's PostgreSQL connector creates them.
fn prisma_columns(schema: &str, model: &str) -> Vec<(String, String, bool)> {
    let start = schema
        .find(&format!("model {model} {{"))
        .unwrap_or_else(|| panic!("model {model} in schema.prisma"));
    let body = &schema[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    let mut cols = Vec::new();
    for line in body.lines() {
        let line = line.split("//").next().unwrap().trim();
        if line.is_empty() || line.starts_with('@') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(ty)) = (parts.next(), parts.next()) else {
            continue;
        };
        let base = ty.trim_end_matches(['?', '[', ']']);
        let data_type = match base {
            "String" => "text",
            "Json" => "jsonb",
            "Float" => "double precision",
            "Int" => "integer",
            "BigInt" => "bigint",
            "DateTime" => "timestamp without time zone",
            "Boolean" => "boolean",
            _ => continue, // a relation
        };
        let list = ty.ends_with("[]");
        let data_type = if list { "ARRAY" } else { data_type };
        cols.push((
            name.to_owned(),
            data_type.to_owned(),
            list || ty.ends_with('?'),
        ));
    }
    cols.sort();
    cols
}

#[test]
fn migrate_creates_litellm_s_tables_as_its_schema_prisma_defines_them() {
    let schema = litellm_schema_prisma();
    let db = TestDb::new("schema");
    let out = migrate(&db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in [
        "LiteLLM_VerificationToken",
        "LiteLLM_TeamTable",
        "LiteLLM_UserTable",
        "LiteLLM_SpendLogs",
    ] {
        let expected = prisma_columns(&schema, table);
        let rows = db.sql(&format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY column_name"
        ));
        let mut actual: Vec<(String, String, bool)> = rows
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f[0].to_owned(), f[1].to_owned(), f[2] == "YES")
            })
            .collect();
        actual.sort();
        assert_eq!(
            actual, expected,
            "{table}: information_schema against schema.prisma"
        );
    }
}

fn key_limits_config(upstream: &str, limits: &str) -> String {
    format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {upstream}/v1\n      api_key: sk-upstream-000\ngeneral_settings:\n  master_key: {MASTER}\nllmux:\n  virtual_keys:\n    - key: sk-limited-key-0001\n      {limits}\n"
    )
}

#[test]
fn a_key_s_rpm_limit_holds_for_the_minute() {
    let mock = Mock::start();
    let mut config = key_limits_config(&mock.base(), "rpm_limit: 2");
    config.push_str("  server:\n    debug_routes: true\n");
    let gw = Gateway::start(&config);
    // One second into a calendar minute (the gateway's clock, moved): 59 s before it ends.
    gw.move_clock(
        Some(MASTER),
        &format!(r#"{{"unix_ms":{}}}"#, a_minute_start()),
    );
    let key = "sk-limited-key-0001";
    let codes: Vec<u16> = (0..3).map(|_| chat_as(&gw, key, "m").status).collect();
    assert_eq!(codes, [200, 200, 429]);
    let r = chat_as(&gw, key, "m");
    assert!(
        r.text().contains("Rate limit exceeded for api_key"),
        "{}",
        r.text()
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // The master key is not held to the virtual key's limit.
    assert_eq!(chat_as(&gw, MASTER, "m").status, 200);
    // A virtual key cannot move the clock past its own limit.
    let by_key = request(
        &gw.addr,
        "POST",
        "/debug/clock",
        &[("authorization", &format!("Bearer {key}"))],
        br#"{"advance_ms":60000}"#,
    );
    assert_eq!(by_key.status, 401, "{}", by_key.text());
    assert_eq!(chat_as(&gw, key, "m").status, 429);
    // The next minute, the key has its two requests again.
    gw.move_clock(Some(MASTER), r#"{"advance_ms":60000}"#);
    let codes: Vec<u16> = (0..3).map(|_| chat_as(&gw, key, "m").status).collect();
    assert_eq!(codes, [200, 200, 429]);
}

#[test]
fn a_key_s_max_parallel_requests_holds() {
    let gate = hostile::Gate::new();
    let up = hostile::Hostile::start_writing({
        let gate = gate.clone();
        move |_, conn| {
            use std::io::Write;
            gate.wait();
            let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
            let _ = conn.write_all(&hostile::response(200, "application/json", body));
        }
    });
    let gw = Gateway::start(&key_limits_config(&up.base(), "max_parallel_requests: 1"));
    let mut first = connect(&gw.addr);
    write_request(
        &mut first,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-limited-key-0001")],
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    // The first request holds the key's only slot at the upstream.
    up.next_request();
    let r = chat_as(&gw, "sk-limited-key-0001", "m");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("max_parallel_requests"), "{}", r.text());
    gate.go();
    let mut rd = std::io::BufReader::new(first);
    assert_eq!(read_response(&mut rd).status, 200);
    gate.go();
    assert_eq!(chat_as(&gw, "sk-limited-key-0001", "m").status, 200);
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> Response {
    let auth = format!("Bearer {MASTER}");
    request(
        &gw.addr,
        method,
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )
}

#[test]
fn the_key_management_api_round_trip() {
    let db = TestDb::new("keyapi");
    assert!(migrate(&db).status.success());
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini"), ("other", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\n  proxy_batch_write_at: 1\n",
            db.url()
        ),
    ));
    // A team, then a key in it.
    let r = admin(
        &gw,
        "POST",
        "/team/new",
        r#"{"team_id":"t-api","team_alias":"API team","max_budget":50}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["team_id"], "t-api");
    let r = admin(
        &gw,
        "POST",
        "/key/generate",
        r#"{"key_alias":"api-key","models":["m"],"max_budget":5,"duration":"1d","team_id":"t-api","metadata":{"owner":"ci"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-"), "{created}");
    assert_eq!(created["token_id"].as_str().unwrap(), sha256_hex(&key));
    assert_eq!(created["key_alias"], "api-key");
    assert!(created["expires"].is_string(), "{created}");
    // The row is LiteLLM's: LiteLLM would find it by the same hash.
    assert_eq!(
        db.sql(&format!(
            "SELECT key_alias || '|' || team_id || '|' || (metadata->>'owner') FROM \"LiteLLM_VerificationToken\" WHERE token = '{}'",
            sha256_hex(&key)
        )),
        "api-key|t-api|ci"
    );

    // The key works for its model only.
    assert_eq!(chat_as(&gw, &key, "m").status, 200);
    assert_eq!(chat_as(&gw, &key, "other").status, 401);

    // Info, by the key and by its hash.
    let r = admin(&gw, "GET", &format!("/key/info?key={key}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["info"]["models"], serde_json::json!(["m"]));
    let token = sha256_hex(&key);
    assert_eq!(
        admin(&gw, "GET", &format!("/key/info?key={token}"), "").status,
        200
    );

    // An update takes effect at once on every shard (no waiting for the cache TTL).
    let r = admin(
        &gw,
        "POST",
        "/key/update",
        &format!(r#"{{"key":"{key}","models":["other"]}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..4 {
        assert_eq!(chat_as(&gw, &key, "m").status, 401);
        assert_eq!(chat_as(&gw, &key, "other").status, 200);
    }

    // Block, unblock.
    assert_eq!(
        admin(&gw, "POST", "/key/block", &format!(r#"{{"key":"{key}"}}"#)).status,
        200
    );
    let r = chat_as(&gw, &key, "other");
    assert_eq!(r.status, 401);
    assert!(r.text().contains("blocked"), "{}", r.text());
    assert_eq!(
        admin(
            &gw,
            "POST",
            "/key/unblock",
            &format!(r#"{{"key":"{key}"}}"#)
        )
        .status,
        200
    );
    assert_eq!(chat_as(&gw, &key, "other").status, 200);

    // List, team info.
    let r = admin(&gw, "GET", "/key/list?page=1&size=10", "");
    assert_eq!(r.json()["total_count"], 1, "{}", r.text());
    assert_eq!(r.json()["keys"][0].as_str(), Some(token.as_str()));
    let r = admin(&gw, "GET", "/team/info?team_id=t-api", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["team_info"]["team_alias"], "API team");
    assert_eq!(r.json()["keys"].as_array().map(Vec::len), Some(1));

    // A field LLMux does not support is named, not dropped; only the master key may call.
    let r = admin(&gw, "POST", "/key/generate", r#"{"guardrails":["pii"]}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("guardrails"), "{}", r.text());
    let r = request(
        &gw.addr,
        "GET",
        "/key/list",
        &[("authorization", &format!("Bearer {key}"))],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.text());

    // Delete: the key stops working at once.
    let r = admin(
        &gw,
        "POST",
        "/key/delete",
        &format!(r#"{{"keys":["{key}"]}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted_keys"][0].as_str(), Some(key.as_str()));
    let r = chat_as(&gw, &key, "other");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (401, "token_not_found_in_db")
    );
}

/// A TCP proxy to PostgreSQL that the test can cut (every connection closed, new ones closed
/// at once) and restore: the database "goes away" without stopping the shared server.
// The proxy's threads share its connection list behind a lock: test code, not the data plane.
#[allow(clippy::disallowed_types)]
struct CuttableProxy {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

#[allow(clippy::disallowed_types)]
impl CuttableProxy {
    fn start(target: &'static str) -> CuttableProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        {
            let (up, conns) = (up.clone(), conns.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    if !up.load(Ordering::SeqCst) {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = std::net::TcpStream::connect(target) else {
                        continue;
                    };
                    for s in [&client, &server] {
                        if let Ok(c) = s.try_clone() {
                            conns.lock().unwrap().push(c);
                        }
                    }
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server, client),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            });
        }
        CuttableProxy { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_database_going_away_fails_no_cached_key_and_loses_no_spend_row() {
    let db = TestDb::new("outage");
    assert!(migrate(&db).status.success());
    let key = "sk-outage-key-0001";
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend) VALUES ('{}', ARRAY[]::TEXT[], 0)",
        sha256_hex(key)
    ));
    let proxy = CuttableProxy::start("127.0.0.1:5432");
    let mock = Mock::start();
    // A short cache TTL: during the outage the entries are past it and must keep serving.
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: postgres://postgres@{}/{}\n  proxy_batch_write_at: 1\n  user_api_key_cache_ttl: 0.05\n",
            proxy.addr, db.name
        ),
    ));
    // Until both shards have cached the key (the shard is in the request id).
    let mut served = 0;
    let mut shards = std::collections::HashSet::new();
    while shards.len() < 2 {
        assert!(served < 500, "no request reached the second shard");
        let r = chat_as(&gw, key, "m");
        assert_eq!(r.status, 200);
        let id = r.header("x-request-id").expect("request id").to_owned();
        shards.insert(id[8..10].to_owned());
        served += 1;
    }
    let before = served.to_string();
    assert!(eventually(WAIT, || db
        .sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
        == before));

    proxy.cut();
    for _ in 0..20 {
        let r = chat_as(&gw, key, "m");
        assert_eq!(
            r.status,
            200,
            "a cached key failed during the outage: {}",
            r.text()
        );
        served += 1;
    }
    // A key nobody has seen cannot be checked: 503, said plainly.
    let r = chat_as(&gw, "sk-outage-unknown-0002", "m");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        eventually(WAIT, || metric(&gw.metrics(), "llmux_keys_db_errors_total")
            .unwrap_or(0.0)
            >= 1.0),
        "{}",
        gw.metrics()
    );

    proxy.restore();
    let expected = served.to_string();
    assert!(
        eventually(WAIT, || db
            .sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
            == expected),
        "rows {} against {expected} requests",
        db.sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
    );
    let rows: f64 = db
        .sql("SELECT sum(spend) FROM \"LiteLLM_SpendLogs\"")
        .parse()
        .unwrap();
    let token = sha256_hex(key);
    assert!(eventually(WAIT, || {
        let spend: f64 = db
            .sql(&format!(
                "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{token}'"
            ))
            .parse()
            .unwrap_or(0.0);
        (spend - rows).abs() < 1e-12
    }));
}

#[test]
fn budget_resets_are_honoured_and_run_when_asked() {
    let db = TestDb::new("reset");
    assert!(migrate(&db).status.success());
    let due = "sk-reset-due-0001";
    let later = "sk-reset-later-0002";
    // Both over budget; the first one's reset (LiteLLM's budget_reset_at) has passed.
    for (key, reset_at) in [
        (due, "now() AT TIME ZONE 'UTC' - interval '1 hour'"),
        (later, "now() AT TIME ZONE 'UTC' + interval '1 day'"),
    ] {
        db.sql(&format!(
            "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend, max_budget, budget_duration, budget_reset_at) \
             VALUES ('{}', ARRAY[]::TEXT[], 5, 1, '30d', {reset_at})",
            sha256_hex(key)
        ));
    }
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\n  proxy_budget_rescheduler_min_time: 0.2\n  proxy_budget_rescheduler_max_time: 0.3\nllmux:\n  budget_reset: true\n  server:\n    debug_routes: true\n",
            db.url()
        ),
    ));
    // A reset that is due counts as done, whether or not its job has run yet.
    assert_eq!(chat_as(&gw, due, "m").status, 200);
    let r = chat_as(&gw, later, "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (422, "budget_exceeded")
    );
    // The job resets the due key only, and moves its next reset a budget_duration on.
    let due_token = sha256_hex(due);
    assert!(eventually(WAIT, || {
        db.sql(&format!(
        "SELECT budget_reset_at > now() AT TIME ZONE 'UTC' + interval '29 days' FROM \"LiteLLM_VerificationToken\" WHERE token = '{due_token}'"
    )) == "t"
    }));
    let spend: f64 = db
        .sql(&format!(
            "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{due_token}'"
        ))
        .parse()
        .unwrap();
    assert!(
        spend < 1.0,
        "reset to 0, plus at most the one request since: {spend}"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{}'",
            sha256_hex(later)
        )),
        "5"
    );
    // Two days on (the gateway's clock, moved), the other key's reset is due as well: it is
    // served at once and its reset job runs.
    gw.move_clock(Some(MASTER), r#"{"advance_ms":172800000}"#);
    assert_eq!(chat_as(&gw, later, "m").status, 200);
    let later_token = sha256_hex(later);
    assert!(eventually(WAIT, || {
        db.sql(&format!(
            "SELECT spend < 1 FROM \"LiteLLM_VerificationToken\" WHERE token = '{later_token}'"
        )) == "t"
    }));
}

#[test]
fn two_gateways_on_one_database_add_their_spend_up_exactly() {
    let db = TestDb::new("twogw");
    assert!(migrate(&db).status.success());
    let key = "sk-two-gateways-0001";
    let token = sha256_hex(key);
    db.sql("INSERT INTO \"LiteLLM_TeamTable\" (team_id, models, spend) VALUES ('tw', ARRAY[]::TEXT[], 0)");
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend, team_id) VALUES ('{token}', ARRAY[]::TEXT[], 0, 'tw')"
    ));
    let mock = Mock::start();
    let config = config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\n  proxy_batch_write_at: 1\n",
            db.url()
        ),
    );
    let gws = [Gateway::start(&config), Gateway::start(&config)];
    for i in 0..40 {
        assert_eq!(chat_as(&gws[i % 2], key, "m").status, 200);
    }
    assert!(eventually(WAIT, || db
        .sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
        == "40"));
    let rows: f64 = db
        .sql("SELECT sum(spend) FROM \"LiteLLM_SpendLogs\"")
        .parse()
        .unwrap();
    assert!(rows > 0.0);
    // Neither gateway overwrote the other's increments.
    assert!(
        eventually(WAIT, || {
            let key_spend: f64 = db
                .sql(&format!(
                    "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{token}'"
                ))
                .parse()
                .unwrap_or(0.0);
            let team_spend: f64 = db
                .sql("SELECT spend FROM \"LiteLLM_TeamTable\" WHERE team_id = 'tw'")
                .parse()
                .unwrap_or(0.0);
            (key_spend - rows).abs() < 1e-12 && (team_spend - rows).abs() < 1e-12
        }),
        "key {} team {} rows {rows}",
        db.sql(&format!(
            "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{token}'"
        )),
        db.sql("SELECT spend FROM \"LiteLLM_TeamTable\" WHERE team_id = 'tw'")
    );
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli must be installed: these tests need Redis at 127.0.0.1:6379");
    assert!(
        out.status.success(),
        "Redis at 127.0.0.1:6379 is required: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn litellm_s_redis_spend_counters_see_llmux_spend() {
    let db = TestDb::new("redis");
    assert!(migrate(&db).status.success());
    let key = "sk-redis-counter-0001";
    let token = sha256_hex(key);
    db.sql("INSERT INTO \"LiteLLM_TeamTable\" (team_id, models, spend) VALUES ('rt', ARRAY[]::TEXT[], 0)");
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend, team_id) VALUES ('{token}', ARRAY[]::TEXT[], 1.5, 'rt')"
    ));
    // The test's own namespace (LiteLLM prefixes its counters with cache_params.namespace).
    let ns = format!("llmux-test-{}-{}", std::process::id(), fastrand_u32());
    let key_counter = format!("{ns}:spend:key:{token}");
    let team_counter = format!("{ns}:spend:team:rt");
    // LiteLLM seeded the key's counter from the database; the team's it has not.
    redis_cli(&["SET", &key_counter, "1.5", "EX", "600"]);
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\n  proxy_batch_write_at: 1\nlitellm_settings:\n  cache: true\n  cache_params:\n    type: redis\n    host: localhost\n    port: 6379\n    namespace: {ns}\n",
            db.url()
        ),
    ));
    for _ in 0..5 {
        assert_eq!(chat_as(&gw, key, "m").status, 200);
    }
    assert!(eventually(WAIT, || db
        .sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
        == "5"));
    let spent: f64 = db
        .sql("SELECT sum(spend) FROM \"LiteLLM_SpendLogs\"")
        .parse()
        .unwrap();
    assert!(
        eventually(WAIT, || {
            let v: f64 = redis_cli(&["GET", &key_counter]).parse().unwrap_or(0.0);
            (v - (1.5 + spent)).abs() < 1e-9
        }),
        "counter {} against 1.5 + {spent}",
        redis_cli(&["GET", &key_counter])
    );
    // Incremented counters live on (LiteLLM's TTL); a counter LiteLLM has not seeded is not
    // made from a delta alone.
    let ttl: i64 = redis_cli(&["TTL", &key_counter]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 60, "{ttl}");
    assert_eq!(redis_cli(&["EXISTS", &team_counter]), "0");
    redis_cli(&["DEL", &key_counter, &team_counter]);
}

#[test]
fn redis_unreachable_costs_the_traffic_nothing() {
    let db = TestDb::new("redisdown");
    assert!(migrate(&db).status.success());
    let key = "sk-redis-down-0001";
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend) VALUES ('{}', ARRAY[]::TEXT[], 0)",
        sha256_hex(key)
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\n  proxy_batch_write_at: 1\nrouter_settings:\n  redis_host: 127.0.0.1\n  redis_port: {port}\n",
            db.url()
        ),
    ));
    for _ in 0..10 {
        assert_eq!(chat_as(&gw, key, "m").status, 200);
    }
    assert!(
        eventually(WAIT, || metric(&gw.metrics(), "llmux_redis_errors_total")
            .unwrap_or(0.0)
            >= 1.0),
        "{}",
        gw.metrics()
    );
    // The database still gets every row.
    assert!(eventually(WAIT, || db
        .sql("SELECT count(*) FROM \"LiteLLM_SpendLogs\"")
        == "10"));
}

#[test]
fn the_response_cache_answers_repeats_for_nothing_and_keeps_tenants_apart() {
    let ns = format!("llmux-cache-{}-{}", std::process::id(), fastrand_u32());
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\nlitellm_settings:\n  cache: true\n  cache_params:\n    type: redis\n    host: localhost\n    port: 6379\n    namespace: {ns}\n    ttl: 600\nllmux:\n  server:\n    debug_routes: true\n  virtual_keys:\n    - key: sk-cache-team-a-0001\n      team_id: a\n    - key: sk-cache-team-a-0002\n      team_id: a\n    - key: sk-cache-team-b-0003\n      team_id: b\n"
        ),
    ));
    // Entries of the test proper (the warm-up below keeps its own namespace).
    let entries = || {
        redis_cli(&["--scan", "--pattern", &format!("{ns}:llmux:cache:*")])
            .lines()
            .filter(|k| !k.contains(":warm-up:"))
            .count()
    };
    let upstream_calls = || mock.stats()["requests"].as_u64().unwrap();
    let ask_with = |key: &str, stream: bool, extra: &[(&str, &str)], member: &str| {
        let body = format!(
            r#"{{"model":"m","stream":{stream}{member},"messages":[{{"role":"user","content":"cache me"}}]}}"#
        );
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        headers.extend_from_slice(extra);
        request(
            &gw.addr,
            "POST",
            "/v1/chat/completions",
            &headers,
            body.as_bytes(),
        )
    };
    let ask = |key: &str, stream: bool, extra: &[(&str, &str)]| ask_with(key, stream, extra, "");

    // Storing is skipped until the gateway's Redis connection is up (it opens on first use):
    // answers are asked for, under a namespace of their own, until one is kept.
    let warm = || {
        ask_with(
            "sk-cache-team-b-0003",
            false,
            &[],
            r#","cache":{"namespace":"warm-up"}"#,
        );
        !redis_cli(&[
            "--scan",
            "--pattern",
            &format!("{ns}:llmux:cache:warm-up:*"),
        ])
        .is_empty()
    };
    assert!(eventually(WAIT, warm), "the gateway never reached Redis");

    // Non-stream: a miss, kept, then a hit that costs nothing and calls no upstream.
    let first = ask("sk-cache-team-a-0001", false, &[]);
    assert_eq!(first.status, 200);
    assert!(first.header("x-llmux-cache-hit").is_none());
    assert!(eventually(WAIT, || entries() == 1), "the answer is kept");
    let calls = upstream_calls();
    // Another key of the same team shares the team's entries.
    let hit = ask("sk-cache-team-a-0002", false, &[]);
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-llmux-cache-hit"), Some("true"));
    assert_eq!(hit.body, first.body);
    assert!(hit.header("x-llmux-response-cost").is_none());
    assert_eq!(upstream_calls(), calls);
    let line = gw.proc.wait_line("cache_hit=true", WAIT);
    assert!(line.contains("cost_usd=0"), "{line}");

    // Another team does not see team a's answers.
    let other = ask("sk-cache-team-b-0003", false, &[]);
    assert!(other.header("x-llmux-cache-hit").is_none());
    assert_eq!(upstream_calls(), calls + 1);

    // no-cache skips the lookup.
    let fresh = ask(
        "sk-cache-team-a-0001",
        false,
        &[("cache-control", "no-cache")],
    );
    assert!(fresh.header("x-llmux-cache-hit").is_none());
    assert_eq!(upstream_calls(), calls + 2);

    // A stream is kept as its events and replayed as them.
    let before = entries();
    let streamed = ask("sk-cache-team-a-0001", true, &[]);
    assert_eq!(streamed.status, 200);
    assert!(eventually(WAIT, || entries() == before + 1));
    let calls = upstream_calls();
    let replay = ask("sk-cache-team-a-0002", true, &[]);
    assert_eq!(replay.header("x-llmux-cache-hit"), Some("true"));
    assert!(
        replay
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        replay.header("content-type")
    );
    assert_eq!(data_events(&replay.body), data_events(&streamed.body));
    assert!(data_events(&replay.body)
        .last()
        .is_some_and(|e| e == "[DONE]"));
    assert_eq!(upstream_calls(), calls);

    // LiteLLM's body controls: the same entry (the member is not part of the request) ...
    let with = |m: &str| ask_with("sk-cache-team-a-0001", false, &[], m);
    let hit = with(r#","cache":{"ttl":300}"#);
    assert_eq!(hit.header("x-llmux-cache-hit"), Some("true"));
    // ... `no-cache` goes upstream, without the member (it is the gateway's, not OpenAI's) ...
    let calls = upstream_calls();
    let fresh = with(r#","cache":{"no-cache":true}"#);
    assert!(fresh.header("x-llmux-cache-hit").is_none());
    assert_eq!(upstream_calls(), calls + 1);
    let sent: serde_json::Value =
        serde_json::from_slice(&request(&mock.addr, "GET", "/mock/last-request", &[], b"").body)
            .unwrap();
    assert!(sent.get("cache").is_none(), "{sent}");
    assert_eq!(sent["model"], "gpt-4o-mini");
    // ... a namespace keeps its own entries ...
    let before = entries();
    assert!(with(r#","cache":{"namespace":"ns-1"}"#)
        .header("x-llmux-cache-hit")
        .is_none());
    assert!(eventually(WAIT, || entries() == before + 1));
    assert_eq!(
        with(r#","cache":{"namespace":"ns-1"}"#).header("x-llmux-cache-hit"),
        Some("true")
    );
    // ... `s-maxage` refuses an entry older than it (the gateway's clock, moved 10 s) ...
    gw.move_clock(Some(MASTER), r#"{"advance_ms":10000}"#);
    assert!(with(r#","cache":{"s-maxage":5}"#)
        .header("x-llmux-cache-hit")
        .is_none());
    assert_eq!(
        with(r#","cache":{"s-maxage":60}"#).header("x-llmux-cache-hit"),
        Some("true")
    );
    // ... and a control it does not know is a 400 naming it.
    let bad = with(r#","cache":{"no_cache":true}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("cache.no_cache"), "{}", bad.text());

    let keys = redis_cli(&["--scan", "--pattern", &format!("{ns}:*")]);
    for k in keys.lines() {
        redis_cli(&["DEL", k]);
    }
}

#[test]
fn a_cooldown_one_gateway_sets_is_honoured_by_another() {
    let ns = format!("llmux-cool-{}-{}", std::process::id(), fastrand_u32());
    let bad = hostile::Hostile::start(|_| {
        hostile::response(
            429,
            "application/json",
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        )
    });
    let mock = Mock::start();
    let config = format!(
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {}/v1\n      api_key: sk-up-0001\n      order: 1\n    model_info:\n      id: g-bad\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {}/v1\n      api_key: sk-up-0002\n      order: 2\n    model_info:\n      id: g-good\nrouter_settings:\n  cooldown_time: 60\nlitellm_settings:\n  cache_params:\n    type: redis\n    host: 127.0.0.1\n    port: 6379\n    namespace: {ns}\n",
        bad.base(),
        mock.base()
    );
    let a = Gateway::start(&config);
    // One shard: the view below is the view every request of B gets.
    let b = Gateway::start_with(
        &config,
        GatewayOpts {
            workers: 1,
            ..Default::default()
        },
    );
    let body = r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#;
    // A tries the preferred deployment, gets a 429, cools it down and answers from the other.
    assert_eq!(a.chat(body).status, 200);
    assert_eq!(bad.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The cooldown is LiteLLM's key, in LiteLLM's shape.
    let key = format!("{ns}:deployment:g-bad:cooldown");
    assert!(eventually(WAIT, || redis_cli(&["EXISTS", &key]) == "1"));
    let v: serde_json::Value = serde_json::from_str(&redis_cli(&["GET", &key])).unwrap();
    assert_eq!(v["status_code"], "429");
    assert!(v["cooldown_time"].as_f64().unwrap() > 50.0, "{v}");
    // B learns it and does not call the cooled-down deployment.
    assert!(
        eventually(WAIT, || {
            let r = b.get("/health/deployments");
            r.json()["deployments"]
                .as_array()
                .and_then(|a| a.iter().find(|d| d["deployment"] == "g-bad").cloned())
                .is_some_and(|d| d["cooldown_remaining_ms"].as_u64().unwrap_or(0) > 0)
        }),
        "{}",
        b.get("/health/deployments").text()
    );
    for _ in 0..5 {
        assert_eq!(b.chat(body).status, 200);
    }
    assert_eq!(bad.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    redis_cli(&["DEL", &key]);
}

#[test]
fn the_key_database_can_be_reached_over_tls_as_sslmode_says() {
    let db = TestDb::new("tls");
    assert!(migrate(&db).status.success());
    let key = "sk-tls-key-0001";
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend) VALUES ('{}', ARRAY[]::TEXT[], 0)",
        sha256_hex(key)
    ));
    let mock = Mock::start();
    let gateway = |sslmode: &str| {
        Gateway::start(&config_for(
            &mock,
            &[("m", "gpt-4o-mini")],
            &format!(
                "general_settings:\n  master_key: {MASTER}\n  database_url: {}?sslmode={sslmode}\n",
                db.url()
            ),
        ))
    };
    // require: encrypted (the project's PostgreSQL has TLS on, with a self-signed certificate).
    let gw = gateway("require");
    assert_eq!(chat_as(&gw, key, "m").status, 200);
    let encrypted = db.sql(&format!(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = '{}' AND s.ssl AND a.pid <> pg_backend_pid()",
        db.name
    ));
    assert_ne!(encrypted, "0", "the gateway's connection is encrypted");
    drop(gw);
    // verify-full: a certificate no root vouches for is refused; the key cannot be checked.
    let gw = gateway("verify-full");
    let r = chat_as(&gw, key, "m");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(metric(&gw.metrics(), "llmux_keys_db_errors_total").unwrap_or(0.0) >= 1.0);
}

#[test]
fn a_key_s_rpm_limit_holds_across_two_gateways_through_redis() {
    let db = TestDb::new("rpm2");
    assert!(migrate(&db).status.success());
    // LiteLLM's v3 limiter keys carry no namespace: a key of the test's own keeps them apart.
    let key = format!("sk-rpm-two-{}-{}", std::process::id(), fastrand_u32());
    let token = sha256_hex(&key);
    db.sql(&format!(
        "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend, rpm_limit) VALUES ('{token}', ARRAY[]::TEXT[], 0, 10)"
    ));
    let mock = Mock::start();
    let config = config_for(
        &mock,
        &[("m", "gpt-4o-mini")],
        &format!(
            "general_settings:\n  master_key: {MASTER}\n  database_url: {}\nrouter_settings:\n  redis_host: 127.0.0.1\n  redis_port: 6379\n",
            db.url()
        ),
    );
    let a = Gateway::start_with(&config, one_shard());
    let b = Gateway::start_with(&config, one_shard());
    // A uses the key's whole minute (its own limiter allows 10).
    for _ in 0..10 {
        assert_eq!(chat_as(&a, &key, "m").status, 200);
    }
    // Once A's requests are in LiteLLM's window in Redis ...
    let requests = format!("{{api_key:{token}}}:requests");
    assert!(
        eventually(WAIT, || redis_cli(&["GET", &requests]) == "10"),
        "window count {}",
        redis_cli(&["GET", &requests])
    );
    // ... B, whose own limiter would allow 10 more, refuses within the documented overshoot
    // (what it serves before its next sync: about a second's requests).
    let mut served = 0;
    loop {
        let r = chat_as(&b, &key, "m");
        if r.status == 429 {
            assert!(r.text().contains("Rate limit exceeded"), "{}", r.text());
            assert!(r.header("retry-after").is_some());
            break;
        }
        assert_eq!(r.status, 200);
        served += 1;
        assert!(
            served < 10,
            "B served its own full minute: the limit is not shared"
        );
    }
    // And A, once its sync has seen the window full, refuses too.
    assert!(eventually(WAIT, || chat_as(&a, &key, "m").status == 429));
    for suffix in ["window", "requests", "tokens"] {
        redis_cli(&["DEL", &format!("{{api_key:{token}}}:{suffix}")]);
    }
}

#[test]
fn a_config_key_s_budget_starts_over_every_budget_duration() {
    let mock = Mock::start();
    let gw = Gateway::start_with(
        &config_for(
            &mock,
            &[("m", "gpt-4o-mini")],
            &format!(
                "general_settings:\n  master_key: {MASTER}\n  user_api_key_cache_ttl: 0.2\nllmux:\n  virtual_keys:\n    - key: sk-budget-window-0001\n      max_budget: 0.0000001\n      budget_duration: 1h\n  server:\n    debug_routes: true\n"
            ),
        ),
        GatewayOpts {
            workers: 1,
            ..Default::default()
        },
    );
    let key = "sk-budget-window-0001";
    // Spent past the budget...
    assert_eq!(chat_as(&gw, key, "m").status, 200);
    let r = chat_as(&gw, key, "m");
    assert_eq!(
        (r.status, error_type(&r).as_str()),
        (422, "budget_exceeded")
    );
    // ... for the rest of the hour (the gateway's clock, moved) ...
    gw.move_clock(Some(MASTER), r#"{"advance_ms":3500000}"#);
    assert_eq!(chat_as(&gw, key, "m").status, 422);
    // ... until the budget starts over (seen once the key's cached entry is looked up again).
    gw.move_clock(Some(MASTER), r#"{"advance_ms":100000}"#);
    assert!(eventually(WAIT, || chat_as(&gw, key, "m").status == 200));
    // And is spent again.
    assert_eq!(chat_as(&gw, key, "m").status, 422);
}

#[test]
fn a_deployment_s_rpm_holds_across_two_gateways_through_redis() {
    let ns = format!("llmux-deprpm-{}-{}", std::process::id(), fastrand_u32());
    let up = hostile::Hostile::start(|_| {
        hostile::response(
            200,
            "application/json",
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        )
    });
    let id = format!("lim-{}", fastrand_u32());
    let config = format!(
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {}/v1\n      api_key: sk-up-0001\n      rpm: 5\n    model_info:\n      id: {id}\nrouter_settings:\n  redis_host: 127.0.0.1\n  redis_port: 6379\nlitellm_settings:\n  cache_params:\n    type: redis\n    host: 127.0.0.1\n    port: 6379\n    namespace: {ns}\nllmux:\n  server:\n    debug_routes: true\n",
        up.base()
    );
    let a = Gateway::start_with(&config, one_shard());
    let b = Gateway::start_with(&config, one_shard());
    // Both clocks one second into the same calendar minute (LiteLLM's router keys count
    // calendar minutes): 59 s before it ends.
    let start = a_minute_start();
    for gw in [&a, &b] {
        gw.move_clock(None, &format!(r#"{{"unix_ms":{start}}}"#));
    }
    let body = r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#;
    let calls = || up.requests.load(std::sync::atomic::Ordering::Relaxed);
    let mut a_served = 0;
    while a_served <= 5 && a.chat(body).status == 200 {
        a_served += 1;
    }
    assert_eq!(a_served, 5, "A serves the deployment's rpm, then refuses");
    // A's minute is in Redis; B learns it within a second or two and calls nobody.
    let counted = eventually(WAIT, || {
        let keys = redis_cli(&[
            "--scan",
            "--pattern",
            &format!("{ns}:global_router:{id}:*:rpm:*"),
        ]);
        keys.lines()
            .any(|k| redis_cli(&["GET", k]).parse::<f64>().unwrap_or(0.0) >= 5.0)
    });
    assert!(counted);
    // B reports it (its view of the deployment) without a request of its own ...
    let known = eventually(WAIT, || {
        let r = b.get("/health/deployments");
        r.json()["deployments"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["deployment"] == id.as_str()).cloned())
            .is_some_and(|d| d["limited_across_gateways_ms"].as_u64().unwrap_or(0) > 0)
    });
    assert!(known, "B never learned the deployment is at its rpm");
    // ... and refuses without calling the upstream.
    let r = b.chat(body);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(calls(), 5, "upstream calls this minute for an rpm of 5");
    // The next minute is a fresh one for both.
    for gw in [&a, &b] {
        gw.move_clock(None, r#"{"advance_ms":60000}"#);
    }
    assert_eq!(b.chat(body).status, 200);
    assert_eq!(a.chat(body).status, 200);
    let keys = redis_cli(&["--scan", "--pattern", &format!("{ns}:*")]);
    for k in keys.lines() {
        redis_cli(&["DEL", k]);
    }
}
