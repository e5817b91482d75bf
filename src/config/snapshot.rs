//! The validated, immutable view of a config that requests read.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;

use super::deployment;
use super::diag::Diagnostics;
use super::env::Env;
use super::locate::KeyPath;
use super::number::{Limit, Num};
use super::providers::ProvidersSource;
use super::proxy::ProxySettings;
use super::schema::ConfigFile;
use super::secrets::{self, SecretError};
use super::tls;
use crate::dsl::ProviderSet;
use crate::util::secs;

/// LiteLLM's default request timeout (seconds).
const DEFAULT_TIMEOUT_SECS: f64 = 600.0;

/// One upstream deployment of a model group.
#[derive(Debug)]
pub struct Deployment {
    /// `model_info.id`, or `<group>/<index>` when the file gives none.
    pub id: String,
    /// The id, shared with the process-wide limiter's owner thread.
    pub key: Arc<str>,
    pub group: String,
    /// The provider prefix of `litellm_params.model` (`openai` in `openai/gpt-4o`).
    pub provider: String,
    /// The model name sent upstream (`gpt-4o`).
    pub upstream_model: String,
    /// `api_base` from the config, without a trailing slash; `None` means the provider file's
    /// default base URL.
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    /// `litellm_params` values of the parameters the provider file declares (`ctx.params`).
    pub params: Arc<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Cloud credentials, when the provider file's `auth` is `aws_sigv4` (without an
    /// `api_key`), `google_oauth` or `token_exchange`.
    pub credentials: Option<Arc<crate::upstream::credentials::DeploymentCredentials>>,
    pub timeout: Duration,
    pub stream_timeout: Duration,
    /// Overrides `llmux.upstream.connect_timeout` for this deployment.
    pub connect_timeout: Option<Duration>,
    pub weight: f64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub drop_params: bool,
    /// What routing reads: weight, limits, order, prices.
    pub spec: crate::router::DeploymentSpec,
    /// What its calls cost (`None`: unknown — no cost header, no spend, and the access log
    /// says so).
    pub price: Option<crate::usage::Price>,
    /// The model name the tokenizer is chosen by: `model_info.base_model` if set (an Azure
    /// deployment's name says nothing of its model), else `upstream_model`.
    pub tokenizer_model: String,
    /// The context window (price table or `model_info`), for the pre-flight check.
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// The attributes of its client spans that depend only on the deployment (written by the
    /// first shard that traces it; a snapshot's deployments are never reused by another).
    pub trace_attributes: std::sync::OnceLock<crate::telemetry::otel::Attributes>,
    /// The values of its provider file's calls that depend only on the deployment (`dsl::memo`),
    /// kept by the first request that needs each.
    pub dsl_memo: std::sync::OnceLock<crate::dsl::Memo>,
    /// The routing headers of an answer from a first attempt, as header lines: they depend only
    /// on the deployment (`gateway::chat::headers`), so they are written once, by the first
    /// answer that needs them, not per answer.
    pub first_attempt_headers: std::sync::OnceLock<Box<str>>,
}

/// Deployments in one model group, at most (the router's sets of deployments are 64-bit masks).
pub const MAX_GROUP_DEPLOYMENTS: usize = 64;

#[derive(Debug)]
pub struct ModelGroup {
    pub name: String,
    pub deployments: Vec<Arc<Deployment>>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_request_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_json_depth: usize,
    pub body_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    pub debug_routes: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub max_connections_per_host: usize,
    pub max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub dns_ttl: Duration,
    pub max_response_body_bytes: usize,
    pub max_stream_event_bytes: usize,
    /// See `llmux.upstream.check_relayed_json`.
    pub check_relayed_json: bool,
    pub tls: Arc<rustls::ClientConfig>,
    /// Outbound proxies (from `HTTPS_PROXY` & co. through the config's environment).
    pub proxy: Arc<ProxySettings>,
}

/// Limits for fetching remote images (see `llmux.media`).
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub allow_http: bool,
    pub allow_hosts: Vec<String>,
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_redirects: u8,
    pub max_images: usize,
}

/// Everything a request needs from the config, swapped atomically on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// Looked up by the client's model name on every request: hashbrown's default hasher
    /// (foldhash) costs a fraction of SipHash, and the keys come from the config, not from
    /// clients, so there is nothing to flood.
    groups: HashMap<String, ModelGroup>,
    /// Group names in file order, for `/v1/models`.
    pub group_names: Vec<String>,
    pub master_key: Option<String>,
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub media: MediaSettings,
    /// Address of the built-in mock to start beside the gateway, if configured.
    pub mock_listen: Option<String>,
    pub providers_dir: Option<String>,
    /// Answers carry the model group the client asked for (`llmux.response_model: requested`,
    /// the default, as LiteLLM), not the provider's model name.
    pub response_model_requested: bool,
    /// `llmux.routing_headers`: answers say which deployment answered and after how many
    /// attempts (default on, as LiteLLM).
    pub routing_headers: bool,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    /// `llmux.logging.redact_pii`.
    pub log_redact_pii: bool,
    /// Every secret value the config resolved, for exact-value redaction in logs.
    pub secrets: Vec<String>,
    /// The compiled provider adapters.
    pub providers: Arc<ProviderSet>,
    /// Chat requests are checked without building their tree: some deployment's provider
    /// forwards the client's bytes and reads only OpenAI fields (`Provider::reads_request_tree`
    /// is false). When every provider maps the request, the check builds the tree they read.
    pub check_without_tree: bool,
    /// Where they were loaded from (a directory is watched for reload).
    pub providers_source: ProvidersSource,
    /// Environment lookups for everything that needs one (`environment_variables` first, then
    /// the process environment).
    pub env: Env,
    /// Routing, retries, fallbacks, cooldowns, breakers (`router_settings`, `llmux.router`).
    pub router: Arc<crate::router::RouterSettings>,
    /// `llmux.tracing`.
    pub tracing: Arc<super::TracingSettings>,
    /// Virtual keys (the config file's, the database), key caching and spend writing.
    pub keys: Arc<super::keys::KeySettings>,
}

impl Snapshot {
    /// Every deployment of every group.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.groups.values().flat_map(|g| g.deployments.iter())
    }

    pub fn group(&self, name: &str) -> Option<&ModelGroup> {
        self.groups.get(name)
    }
}

/// What a snapshot is built from besides the parsed file.
pub(super) struct Inputs<'a> {
    pub base_dir: &'a Path,
    pub providers: Arc<ProviderSet>,
    pub providers_source: ProvidersSource,
}

/// Builds the snapshot, reporting every problem into `diag`; `None` when there was an error.
pub(super) fn build(
    file: ConfigFile,
    inputs: Inputs<'_>,
    diag: &mut Diagnostics,
) -> Option<Snapshot> {
    let Inputs {
        base_dir,
        providers,
        providers_source,
    } = inputs;
    let env = Env::with_config(file.environment_variables.clone());
    let mut secrets_seen = Vec::new();

    let client_tls = tls::client(base_dir, file.llmux.upstream.ca_file.as_deref())
        .or_else(|e| {
            diag.error(KeyPath::keys("llmux.upstream").key(e.key), e.message);
            // A stand-in so that the other settings are still checked; the load fails anyway.
            tls::client(base_dir, None)
        })
        .map_err(|e| diag.error(KeyPath::keys("llmux.upstream").key(e.key), e.message))
        .ok()?;

    // LiteLLM's default for a deployment's `timeout`: `request_timeout`, else the router's.
    let router_timeout = num(
        diag,
        "router_settings.timeout",
        &file.router_settings.timeout,
        Limit::SECONDS,
        DEFAULT_TIMEOUT_SECS,
    );
    let default_timeout = num(
        diag,
        "litellm_settings.request_timeout",
        &file.litellm_settings.request_timeout,
        Limit::SECONDS,
        router_timeout,
    );

    let s = &file.llmux.server;
    let mut server = ServerSettings {
        max_request_body_bytes: num(
            diag,
            "llmux.server.max_request_body_bytes",
            &s.max_request_body_bytes,
            Limit::BYTES,
            (10 * 1024 * 1024) as f64,
        ) as usize,
        max_header_bytes: num(
            diag,
            "llmux.server.max_header_bytes",
            &s.max_header_bytes,
            Limit::count(1024, 16 * 1024 * 1024),
            (64 * 1024) as f64,
        ) as usize,
        max_json_depth: num(
            diag,
            "llmux.server.max_json_depth",
            &s.max_json_depth,
            Limit::JSON_DEPTH,
            crate::json::DEFAULT_MAX_DEPTH as f64,
        ) as usize,
        body_timeout: secs(num(
            diag,
            "llmux.server.body_timeout",
            &s.body_timeout,
            Limit::SECONDS,
            30.0,
        )),
        header_timeout: secs(num(
            diag,
            "llmux.server.header_timeout",
            &s.header_timeout,
            Limit::SECONDS,
            10.0,
        )),
        idle_timeout: secs(num(
            diag,
            "llmux.server.idle_timeout",
            &s.idle_timeout,
            Limit::SECONDS,
            60.0,
        )),
        // 0: in-flight requests are not waited for.
        shutdown_timeout: secs(num(
            diag,
            "llmux.server.shutdown_timeout",
            &s.shutdown_timeout,
            Limit::SECONDS_OR_ZERO,
            30.0,
        )),
        // 0: listeners close at once on SIGTERM.
        shutdown_delay: secs(num(
            diag,
            "llmux.server.shutdown_delay",
            &s.shutdown_delay,
            Limit::SECONDS_OR_ZERO,
            0.0,
        )),
        debug_routes: s.debug_routes.unwrap_or(false),
        tls: None,
    };
    let u = &file.llmux.upstream;
    let mut upstream = UpstreamSettings {
        max_connections_per_host: num(
            diag,
            "llmux.upstream.max_connections_per_host",
            &u.max_connections_per_host,
            Limit::count(1, 1 << 20),
            1024.0,
        ) as usize,
        // 0: no idle connection is kept.
        max_idle_per_host: num(
            diag,
            "llmux.upstream.max_idle_per_host",
            &u.max_idle_per_host,
            Limit::count(0, 1 << 20),
            256.0,
        ) as usize,
        pool_idle_timeout: secs(num(
            diag,
            "llmux.upstream.pool_idle_timeout",
            &u.pool_idle_timeout,
            Limit::SECONDS,
            60.0,
        )),
        connect_timeout: secs(num(
            diag,
            "llmux.upstream.connect_timeout",
            &u.connect_timeout,
            Limit::SECONDS,
            10.0,
        )),
        // 0: every connection resolves the name again.
        dns_ttl: secs(num(
            diag,
            "llmux.upstream.dns_ttl",
            &u.dns_ttl,
            Limit::SECONDS_OR_ZERO,
            30.0,
        )),
        max_response_body_bytes: num(
            diag,
            "llmux.upstream.max_response_body_bytes",
            &u.max_response_body_bytes,
            Limit::BYTES,
            (64 * 1024 * 1024) as f64,
        ) as usize,
        max_stream_event_bytes: num(
            diag,
            "llmux.upstream.max_stream_event_bytes",
            &u.max_stream_event_bytes,
            Limit::BYTES,
            (4 * 1024 * 1024) as f64,
        ) as usize,
        check_relayed_json: u.check_relayed_json.unwrap_or(true),
        tls: Arc::new(client_tls),
        proxy: Arc::default(),
    };
    let md = &file.llmux.media;
    let media = MediaSettings {
        allow_http: md.allow_http.unwrap_or(false),
        allow_hosts: md
            .allow_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        max_bytes: num(
            diag,
            "llmux.media.max_bytes",
            &md.max_bytes,
            Limit::BYTES,
            (20 * 1024 * 1024) as f64,
        ) as usize,
        timeout: secs(num(
            diag,
            "llmux.media.timeout",
            &md.timeout,
            Limit::SECONDS,
            10.0,
        )),
        // 0: redirects are not followed.
        max_redirects: num(
            diag,
            "llmux.media.max_redirects",
            &md.max_redirects,
            Limit::count(0, 20),
            3.0,
        ) as u8,
        // 0: no image URL is fetched.
        max_images: num(
            diag,
            "llmux.media.max_images",
            &md.max_images,
            Limit::count(0, 1024),
            16.0,
        ) as usize,
    };

    if let Some(t) = &s.tls {
        match tls::server(base_dir, &t.cert_file, &t.key_file) {
            Ok(cfg) => server.tls = Some(Arc::new(cfg)),
            Err(errors) => {
                for e in errors {
                    diag.error(KeyPath::keys("llmux.server.tls").key(e.key), e.message);
                }
            }
        }
    }
    let mut proxy_warnings = Vec::new();
    upstream.proxy = Arc::new(ProxySettings::from_env(&env, &mut proxy_warnings));
    for w in proxy_warnings {
        diag.warn(KeyPath::default(), w);
    }

    let master_key = master_key(
        file.general_settings.master_key.as_deref(),
        base_dir,
        &env,
        diag,
    );
    secrets_seen.extend(master_key.iter().cloned());

    let mock_listen = file.llmux.mock.as_ref().map(|m| m.listen.clone());
    if let Some(addr) = &mock_listen {
        if let Err(e) = check_listen_addr(addr) {
            diag.error(KeyPath::keys("llmux.mock.listen"), e);
        }
    }
    let response_model_requested = match file.llmux.response_model.as_deref() {
        None | Some("requested") => true,
        Some("provider") => false,
        Some(other) => {
            diag.error(
                KeyPath::keys("llmux.response_model"),
                format!("`{other}` is not a response model setting (requested or provider)"),
            );
            true
        }
    };
    if let Some(f) = &file.llmux.logging.format {
        if !matches!(f.as_str(), "json" | "text") {
            diag.error(
                KeyPath::keys("llmux.logging.format"),
                format!("`{f}` is not a log format (json or text)"),
            );
        }
    }
    if let Some(level) = &file.llmux.logging.level {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
            diag.error(
                KeyPath::keys("llmux.logging.level"),
                format!("`{level}` is not a log level or filter: {e}"),
            );
        }
    }

    let prices = load_prices(file.llmux.pricing.file.as_deref(), base_dir, diag);
    let common = deployment::Common {
        base_dir,
        env: &env,
        catalog: &*providers,
        providers_source: &providers_source,
        global_drop: file.litellm_settings.drop_params.unwrap_or(false),
        default_timeout,
        prices: &prices,
    };
    let mut groups: HashMap<String, ModelGroup> = HashMap::new();
    let mut group_names = Vec::new();
    for (index, entry) in file.model_list.iter().enumerate() {
        let Some(dep) = deployment::build(entry, index, &common, diag, &mut secrets_seen) else {
            continue;
        };
        let g = groups.entry(dep.group.clone()).or_insert_with(|| {
            group_names.push(dep.group.clone());
            ModelGroup {
                name: dep.group.clone(),
                deployments: Vec::new(),
            }
        });
        if g.deployments.len() == MAX_GROUP_DEPLOYMENTS {
            diag.error(
                KeyPath::keys("model_list").index(index),
                format!(
                    "model group `{}` has more than {MAX_GROUP_DEPLOYMENTS} deployments; split it into groups joined by fallbacks",
                    g.name
                ),
            );
            continue;
        }
        g.deployments.push(Arc::new(dep));
    }

    let router = Arc::new(super::router::settings(&file, &group_names, diag));
    let mut keys = super::keys::build(
        &file,
        master_key.is_some(),
        &env,
        base_dir,
        diag,
        &mut secrets_seen,
    );
    keys.deployment_ids = groups
        .values()
        .flat_map(|g| g.deployments.iter().map(|d| d.id.clone()))
        .collect();
    keys.deployment_ids.sort();
    keys.deployment_limits = groups
        .values()
        .flat_map(|g| g.deployments.iter())
        .filter(|d| d.spec.rpm.is_some() || d.spec.tpm.is_some())
        .map(|d| super::keys::DeploymentLimit {
            id: d.id.clone(),
            model: format!("{}/{}", d.provider, d.upstream_model),
            rpm: d.spec.rpm,
            tpm: d.spec.tpm,
        })
        .collect();
    let keys = Arc::new(keys);
    let tracing = Arc::new(super::tracing::build(
        &file.llmux.tracing,
        &file.litellm_settings,
        &env,
        base_dir,
        diag,
        &mut secrets_seen,
    ));

    if diag.has_errors() {
        return None;
    }
    secrets_seen.retain(|s| s.len() >= 4);
    secrets_seen.sort();
    secrets_seen.dedup();
    let check_without_tree = groups.values().flat_map(|g| g.deployments.iter()).any(|d| {
        providers
            .get(&d.provider)
            .is_some_and(|p| !p.reads_request_tree())
    });
    Some(Snapshot {
        groups,
        group_names,
        master_key,
        server,
        upstream,
        media,
        mock_listen,
        providers_dir: file.llmux.providers_dir,
        response_model_requested,
        routing_headers: file.llmux.routing_headers.unwrap_or(true),
        log_format: file.llmux.logging.format,
        log_level: file.llmux.logging.level,
        log_redact_pii: file.llmux.logging.redact_pii.unwrap_or(false),
        secrets: secrets_seen,
        providers,
        check_without_tree,
        providers_source,
        env,
        router,
        tracing,
        keys,
    })
}

/// Largest price file read (LiteLLM's own is about 1.6 MB).
const MAX_PRICE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The shipped price table, with `llmux.pricing.file`'s entries over it.
fn load_prices(
    file: Option<&str>,
    base_dir: &Path,
    diag: &mut Diagnostics,
) -> std::borrow::Cow<'static, crate::usage::PriceTable> {
    use crate::usage::PriceTable;
    let shipped = PriceTable::embedded();
    let Some(file) = file else {
        return std::borrow::Cow::Borrowed(shipped);
    };
    let at = KeyPath::keys("llmux.pricing.file");
    let path = base_dir.join(file);
    let text = match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_PRICE_FILE_BYTES => Err(format!(
            "{} is {} bytes, more than the {MAX_PRICE_FILE_BYTES} a price file may have",
            path.display(),
            m.len()
        )),
        _ => std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
    };
    let parsed = text.and_then(|t| {
        PriceTable::parse_file(&path.display().to_string(), &t).map_err(|e| e.to_string())
    });
    match parsed {
        Ok((extra, skipped)) => {
            tracing::info!(
                file = %path.display(),
                entries = extra.len(),
                skipped,
                "price file loaded"
            );
            let mut table = shipped.clone();
            table.extend(extra);
            std::borrow::Cow::Owned(table)
        }
        Err(e) => {
            diag.error(at, e);
            std::borrow::Cow::Borrowed(shipped)
        }
    }
}

/// A numeric setting at `path`: its value if within `limit`, else `default` and an error.
fn num(diag: &mut Diagnostics, path: &str, v: &Option<Num>, limit: Limit, default: f64) -> f64 {
    match v {
        None => default,
        Some(n) => limit.check(n).unwrap_or_else(|m| {
            diag.error(KeyPath::keys(path), m);
            default
        }),
    }
}

/// `general_settings.master_key`: absent means no authentication (with a warning); a key that
/// is empty, or resolves to empty, is an error rather than authentication silently turned off.
fn master_key(
    raw: Option<&str>,
    base_dir: &Path,
    env: &Env,
    diag: &mut Diagnostics,
) -> Option<String> {
    let path = KeyPath::keys("general_settings.master_key");
    let Some(raw) = raw else {
        diag.warn(
            KeyPath::default(),
            "general_settings.master_key is not set: requests are not authenticated",
        );
        return None;
    };
    match secrets::resolve(raw, base_dir, env) {
        Ok(k) if k.trim().is_empty() => {
            let what = if raw.trim().is_empty() {
                "is empty".to_owned()
            } else {
                format!("`{raw}` resolves to an empty value")
            };
            diag.error(
                path,
                format!(
                    "{what}, which would turn authentication off; remove the key to run without authentication"
                ),
            );
            None
        }
        Ok(k) => Some(k),
        Err(e @ SecretError::EnvMissing(_)) => {
            diag.warn(path, format!("{e}; requests are not authenticated"));
            None
        }
        Err(e) => {
            diag.error(path, e.to_string());
            None
        }
    }
}

/// `HOST:PORT` with an IP address or a host name, as the listener binds it.
fn check_listen_addr(addr: &str) -> Result<(), String> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad =
        || format!("`{addr}` is not an address to listen on (HOST:PORT, e.g. 127.0.0.1:4010)");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}
