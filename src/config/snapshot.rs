//! The validated, immutable view of a config that requests read.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::providers::ProvidersSource;
use super::schema::{ConfigFile, ModelEntry};
use super::secrets::{self, SecretError};
use super::ProviderCatalog;
use crate::dsl::ProviderSet;
use crate::util::{secs, BaseUrl};

/// LiteLLM's default request timeout (seconds).
const DEFAULT_TIMEOUT_SECS: f64 = 600.0;

/// One upstream deployment of a model group.
#[derive(Debug)]
pub struct Deployment {
    /// `model_info.id`, or `<group>/<index>` when the file gives none.
    pub id: String,
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
    pub timeout: Duration,
    pub stream_timeout: Duration,
    pub weight: f64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub drop_params: bool,
}

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
    pub tls: Arc<rustls::ClientConfig>,
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
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    /// Every secret value the config resolved, for exact-value redaction in logs.
    pub secrets: Vec<String>,
    /// The compiled provider adapters.
    pub providers: Arc<ProviderSet>,
    /// Where they were loaded from (a directory is watched for reload).
    pub providers_source: ProvidersSource,
}

impl Snapshot {
    pub fn group(&self, name: &str) -> Option<&ModelGroup> {
        self.groups.get(name)
    }
}

pub(super) fn build(
    file: ConfigFile,
    base_dir: &Path,
    providers: Arc<ProviderSet>,
    providers_source: ProvidersSource,
    warnings: &mut Vec<String>,
) -> Result<Snapshot, String> {
    let catalog: &dyn ProviderCatalog = &*providers;
    for (k, v) in &file.environment_variables {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let mut secrets_seen = Vec::new();
    let global_drop = file.litellm_settings.drop_params.unwrap_or(false);
    let default_timeout = file
        .litellm_settings
        .request_timeout
        .or(file.router_settings.timeout)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);

    let mut groups: HashMap<String, ModelGroup> = HashMap::new();
    let mut group_names = Vec::new();
    for (index, entry) in file.model_list.iter().enumerate() {
        match deployment(
            entry,
            index,
            base_dir,
            catalog,
            global_drop,
            default_timeout,
            &mut secrets_seen,
        )? {
            Ok(dep) => {
                let g = groups.entry(dep.group.clone()).or_insert_with(|| {
                    group_names.push(dep.group.clone());
                    ModelGroup {
                        name: dep.group.clone(),
                        deployments: Vec::new(),
                    }
                });
                g.deployments.push(Arc::new(dep));
            }
            Err(skip) => warnings.push(format!(
                "model_list[{index}] ({}): {skip}",
                entry.model_name
            )),
        }
    }

    let master_key = match file
        .general_settings
        .master_key
        .as_deref()
        .map(|k| secrets::resolve(k, base_dir))
    {
        None => None,
        Some(Ok(k)) if k.is_empty() => None,
        Some(Ok(k)) => {
            secrets_seen.push(k.clone());
            Some(k)
        }
        Some(Err(e @ SecretError::EnvMissing(_))) => {
            warnings.push(format!(
                "general_settings.master_key: {e}; requests are not authenticated"
            ));
            None
        }
        Some(Err(e)) => return Err(format!("general_settings.master_key: {e}")),
    };

    let s = &file.llmux.server;
    let tls = match &s.tls {
        Some(t) => Some(Arc::new(server_tls(base_dir, &t.cert_file, &t.key_file)?)),
        None => None,
    };
    let server = ServerSettings {
        max_request_body_bytes: s.max_request_body_bytes.unwrap_or(10 * 1024 * 1024),
        max_header_bytes: s.max_header_bytes.unwrap_or(64 * 1024),
        max_json_depth: s.max_json_depth.unwrap_or(crate::json::DEFAULT_MAX_DEPTH),
        body_timeout: secs(s.body_timeout.unwrap_or(30.0)),
        header_timeout: secs(s.header_timeout.unwrap_or(10.0)),
        idle_timeout: secs(s.idle_timeout.unwrap_or(60.0)),
        shutdown_timeout: secs(s.shutdown_timeout.unwrap_or(30.0)),
        shutdown_delay: secs(s.shutdown_delay.unwrap_or(0.0)),
        debug_routes: s.debug_routes.unwrap_or(false),
        tls,
    };
    let u = &file.llmux.upstream;
    let upstream = UpstreamSettings {
        max_connections_per_host: u.max_connections_per_host.unwrap_or(1024).max(1),
        max_idle_per_host: u.max_idle_per_host.unwrap_or(256),
        pool_idle_timeout: secs(u.pool_idle_timeout.unwrap_or(60.0)),
        connect_timeout: secs(u.connect_timeout.unwrap_or(10.0)),
        dns_ttl: secs(u.dns_ttl.unwrap_or(30.0)),
        max_response_body_bytes: u.max_response_body_bytes.unwrap_or(64 * 1024 * 1024),
        max_stream_event_bytes: u.max_stream_event_bytes.unwrap_or(4 * 1024 * 1024),
        tls: Arc::new(client_tls(base_dir, u.ca_file.as_deref())?),
    };
    let md = &file.llmux.media;
    let media = MediaSettings {
        allow_http: md.allow_http.unwrap_or(false),
        allow_hosts: md
            .allow_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        max_bytes: md.max_bytes.unwrap_or(20 * 1024 * 1024),
        timeout: secs(md.timeout.unwrap_or(10.0)),
        max_redirects: md.max_redirects.unwrap_or(3),
        max_images: md.max_images.unwrap_or(16),
    };
    secrets_seen.retain(|s| s.len() >= 4);
    secrets_seen.sort();
    secrets_seen.dedup();
    Ok(Snapshot {
        groups,
        group_names,
        master_key,
        server,
        upstream,
        media,
        mock_listen: file.llmux.mock.map(|m| m.listen),
        providers_dir: file.llmux.providers_dir,
        log_format: file.llmux.logging.format,
        log_level: file.llmux.logging.level,
        secrets: secrets_seen,
        providers,
        providers_source,
    })
}

/// Builds one deployment. The outer error rejects the file; the inner one skips the entry with a
/// warning (an unknown provider, or an API key whose environment variable is not set, so that
/// deployments of real providers switch on only when their keys are present).
fn deployment(
    entry: &ModelEntry,
    index: usize,
    base_dir: &Path,
    catalog: &dyn ProviderCatalog,
    global_drop: bool,
    default_timeout: f64,
    secrets_seen: &mut Vec<String>,
) -> Result<Result<Deployment, String>, String> {
    let p = &entry.litellm_params;
    let at = format!("model_list[{index}].litellm_params");
    let Some((provider, upstream_model)) = p.model.split_once('/') else {
        return Err(format!(
            "{at}.model: `{}` must be `provider/model` (for example `openai/gpt-4o-mini`)",
            p.model
        ));
    };
    let Some(default_base) = catalog.default_api_base(provider) else {
        return Ok(Err(format!(
            "provider `{provider}` is not supported; deployment skipped"
        )));
    };
    let api_key = match p.api_key.as_deref().map(|k| secrets::resolve(k, base_dir)) {
        None => None,
        Some(Ok(k)) => {
            secrets_seen.push(k.clone());
            Some(k)
        }
        Some(Err(e @ SecretError::EnvMissing(_))) => {
            return Ok(Err(format!("api_key: {e}; deployment disabled")))
        }
        Some(Err(e)) => return Err(format!("{at}.api_key: {e}")),
    };
    let api_base = match p.api_base.as_deref() {
        Some(b) => match secrets::resolve(b, base_dir) {
            Ok(b) => {
                BaseUrl::parse(&b).map_err(|e| format!("{at}.api_base: {e}"))?;
                // Provider files see one spelling (`ctx.api_base`), with or without a trailing
                // slash in the config.
                Some(b.trim_end_matches('/').to_owned())
            }
            Err(e @ SecretError::EnvMissing(_)) => {
                return Ok(Err(format!("api_base: {e}; deployment disabled")))
            }
            Err(e) => return Err(format!("{at}.api_base: {e}")),
        },
        None if default_base.is_none() => {
            return Err(format!(
                "{at}.api_base is required for provider `{provider}`"
            ))
        }
        None => None,
    };
    let api_version = match p.api_version.as_deref() {
        Some(v) => {
            Some(secrets::resolve(v, base_dir).map_err(|e| format!("{at}.api_version: {e}"))?)
        }
        None => None,
    };
    let timeout = p.timeout.unwrap_or(default_timeout);
    let weight = p.weight.unwrap_or(1.0);
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(format!("{at}.weight must be a non-negative number"));
    }
    Ok(Ok(Deployment {
        id: entry
            .model_info
            .id
            .clone()
            .unwrap_or_else(|| format!("{}/{index}", entry.model_name)),
        group: entry.model_name.clone(),
        provider: provider.to_owned(),
        upstream_model: upstream_model.to_owned(),
        api_base,
        api_key,
        api_version,
        timeout: secs(timeout),
        stream_timeout: secs(p.stream_timeout.unwrap_or(timeout)),
        weight,
        rpm: p.rpm,
        tpm: p.tpm,
        drop_params: p.drop_params.unwrap_or(global_drop),
    }))
}

fn read_pem(base_dir: &Path, file: &str) -> Result<Vec<u8>, String> {
    let path = base_dir.join(file);
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn server_tls(
    base_dir: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<rustls::ServerConfig, String> {
    let cert_pem = read_pem(base_dir, cert_file)?;
    let key_pem = read_pem(base_dir, key_file)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("llmux.server.tls.cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("llmux.server.tls.cert_file holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("llmux.server.tls.key_file: {e}"))?
        .ok_or("llmux.server.tls.key_file holds no private key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("llmux.server.tls: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn client_tls(base_dir: &Path, ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(f) = ca_file {
        let pem = read_pem(base_dir, f)?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("llmux.upstream.ca_file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("llmux.upstream.ca_file: {e}"))?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
