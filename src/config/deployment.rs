//! One `model_list` entry into a [`Deployment`]. Every problem of the entry is reported (not
//! only the first); a deployment that cannot run *yet* — its provider is a LiteLLM one LLMux has
//! no file for, or a secret's environment variable is unset — is disabled with a warning, so
//! that LiteLLM configs and configs for keys not set on this machine still load.

use std::path::Path;

use super::diag::Diagnostics;
use super::env::Env;
use super::locate::KeyPath;
use super::number::Limit;
use super::provider_names::{self, Prefix};
use super::providers::{self, ProvidersSource};
use super::schema::ModelEntry;
use super::secrets::{self, SecretError};
use super::snapshot::Deployment;
use super::ProviderCatalog;
use crate::util::{secs, BaseUrl};

/// What every deployment shares.
pub(super) struct Common<'a> {
    pub base_dir: &'a Path,
    pub env: &'a Env,
    pub catalog: &'a dyn ProviderCatalog,
    pub providers_source: &'a ProvidersSource,
    pub global_drop: bool,
    pub default_timeout: f64,
    /// The shipped price table with `llmux.pricing.file` over it.
    pub prices: &'a crate::usage::PriceTable,
}

/// `weight` is a share, 0 included (a deployment kept in the file but out of rotation).
const WEIGHT: Limit = Limit {
    min: 0.0,
    max: 1_000_000.0,
    whole: false,
    unit: "",
};
/// USD per token: 0 (free) up to a dollar.
const COST: Limit = Limit {
    min: 0.0,
    max: 1.0,
    whole: false,
    unit: "",
};
/// A context window or output limit, in tokens.
const TOKENS: Limit = Limit::count(1, 1_000_000_000);
/// `rpm` / `tpm`: at least one, at most a trillion.
const RATE: Limit = Limit::count(1, 1_000_000_000_000);

/// Builds the entry at `model_list[index]`; `None` when it has an error (in `diag`) or is
/// disabled (a warning in `diag`). Secret values it resolved are added to `secrets_seen`.
pub(super) fn build(
    entry: &ModelEntry,
    index: usize,
    c: &Common<'_>,
    diag: &mut Diagnostics,
    secrets_seen: &mut Vec<String>,
) -> Option<Deployment> {
    let at = KeyPath::keys("model_list").index(index);
    let params = at.key("litellm_params");
    let p = &entry.litellm_params;
    let errors_before = diag.error_count();
    // Why the deployment cannot run now (the first reason found, and the value it is about),
    // when it is not an error.
    let mut disabled: Option<(KeyPath, String)> = None;

    let provider = match p.model.split_once('/') {
        Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Some(provider),
        _ => {
            diag.error(
                params.key("model"),
                format!(
                    "`{}` must be `provider/model` (for example `openai/gpt-4o-mini`)",
                    p.model
                ),
            );
            None
        }
    };
    // The provider file that serves the model, and the model it is sent: the prefix's own file,
    // or the one its `dispatch` rules pick.
    let mut routed: Option<(String, String)> = None;
    if let Some(provider) = provider {
        let names = c.catalog.names();
        match provider_names::classify(provider, &names) {
            Prefix::Available => {
                let model = p.model.split_once('/').map_or("", |(_, m)| m);
                match c.catalog.resolve(provider, model) {
                    Ok(r) => routed = Some(r),
                    Err(e) => diag.error(params.key("model"), e),
                }
            }
            Prefix::LiteLlmOnly => {
                let why = match c.providers_source {
                    // The file was removed from (or never copied into) a providers directory.
                    ProvidersSource::Dir(d) if providers::is_shipped(provider) => format!(
                        "the provider file `{provider}.llmux` is missing from {}",
                        d.display()
                    ),
                    ProvidersSource::Dir(d) => format!(
                        "provider `{provider}` is a LiteLLM provider that LLMux does not ship yet (no `{provider}.llmux` in {})",
                        d.display()
                    ),
                    ProvidersSource::Embedded => format!(
                        "provider `{provider}` is a LiteLLM provider that LLMux does not ship yet"
                    ),
                };
                disabled.get_or_insert((params.key("model"), why));
            }
            Prefix::Unknown { suggestions } => diag.error(
                params.key("model"),
                format!(
                    "unknown provider `{provider}`: neither a provider file nor a LiteLLM provider{}",
                    provider_names::did_you_mean(&suggestions)
                ),
            ),
        }
    }

    let known_provider = routed.as_ref().map(|(file, _)| file.as_str());
    let mut secret = |key: &str, value: Option<&str>, diag: &mut Diagnostics| -> Option<String> {
        match secrets::resolve(value?, c.base_dir, c.env) {
            Ok(v) => Some(v),
            Err(e @ SecretError::EnvMissing(_)) => {
                disabled.get_or_insert((params.key(key), e.to_string()));
                None
            }
            Err(e) => {
                diag.error(params.key(key), e.to_string());
                None
            }
        }
    };
    let api_key = secret("api_key", p.api_key.as_deref(), diag);
    let api_base = secret("api_base", p.api_base.as_deref(), diag).and_then(|b| {
        match BaseUrl::parse(&b) {
            // Provider files see one spelling (`ctx.api_base`), with or without a trailing
            // slash in the config.
            Ok(_) => Some(b.trim_end_matches('/').to_owned()),
            Err(e) => {
                diag.error(params.key("api_base"), e);
                None
            }
        }
    });
    let api_version = secret("api_version", p.api_version.as_deref(), diag);

    // The provider's own parameters, as the file declares them: strings with `os.environ/`
    // references resolved (they are often secrets), other scalars and structures as given.
    let mut provider_params = std::collections::BTreeMap::new();
    if let Some(provider) = known_provider {
        let declared = c.catalog.provider_params(provider);
        for key in p.extra.keys() {
            if !declared.contains(&key.as_str()) {
                diag.warn(
                    params.key(key),
                    format!("unknown key `{key}` ignored: provider `{provider}` declares no such parameter"),
                );
            }
        }
        for name in declared {
            let Some(v) = p.extra.get(name) else {
                continue;
            };
            let value = match v {
                serde_yaml::Value::String(s) => secret(name, Some(s), diag).map(|resolved| {
                    // Redacted from logs by value, as API keys are (a region or a project
                    // id is not: masking it would mask every log line that names it).
                    if is_secret_param(name) {
                        secrets_seen.push(resolved.clone());
                    }
                    serde_json::Value::String(resolved)
                }),
                serde_yaml::Value::Null => None,
                other => match serde_json::to_value(other) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        diag.error(params.key(name), format!("unreadable value: {e}"));
                        None
                    }
                },
            };
            if let Some(value) = value {
                provider_params.insert(name.to_owned(), value);
            }
        }
    }

    if let Some(provider) = known_provider {
        for name in c.catalog.required_params(provider) {
            let given = match name {
                "api_base" => p.api_base.is_some(),
                "api_version" => p.api_version.is_some(),
                other => provider_params.contains_key(other),
            };
            if !given {
                diag.error(
                    at.clone(),
                    format!(
                        "`litellm_params.{name}` is required for provider `{provider}` (its provider file declares `param {name} required`)"
                    ),
                );
            }
        }
    }

    // Cloud credentials, by the provider file's `auth` (a bad one is an error here, with its
    // position; nothing is fetched until the config is live).
    let mut credentials = None;
    if let (Some(provider), Some((_, model))) = (known_provider, routed.as_ref()) {
        if let Some(file) = c.catalog.provider(provider) {
            match super::cloud::credentials(
                file,
                &provider_params,
                api_key.as_deref(),
                api_base.as_deref(),
                model,
                c.env,
            ) {
                Ok(found) => credentials = found.map(std::sync::Arc::new),
                Err(e) => diag.error(
                    params.clone(),
                    format!("provider `{provider}`: cloud credentials: {e}"),
                ),
            }
        }
    }

    let info = KeyPath::keys("model_list").index(index).key("model_info");
    let mut num = |key: &str, limit: Limit| {
        let (v, path) = match key {
            "timeout" => (p.timeout.as_ref(), params.key(key)),
            "stream_timeout" => (p.stream_timeout.as_ref(), params.key(key)),
            "connect_timeout" => (p.connect_timeout.as_ref(), params.key(key)),
            "weight" => (p.weight.as_ref(), params.key(key)),
            "rpm" => (p.rpm.as_ref(), params.key(key)),
            "tpm" => (p.tpm.as_ref(), params.key(key)),
            "order" => (p.order.as_ref(), params.key(key)),
            "max_parallel_requests" => (p.max_parallel_requests.as_ref(), params.key(key)),
            "max_retries" => (p.max_retries.as_ref(), params.key(key)),
            // Prices and limits: `litellm_params` first, then `model_info` (LiteLLM reads both).
            _ => {
                let (ours, info_v) = match key {
                    "input_cost_per_token" => (
                        &p.input_cost_per_token,
                        &entry.model_info.input_cost_per_token,
                    ),
                    "output_cost_per_token" => (
                        &p.output_cost_per_token,
                        &entry.model_info.output_cost_per_token,
                    ),
                    "cache_read_input_token_cost" => (
                        &p.cache_read_input_token_cost,
                        &entry.model_info.cache_read_input_token_cost,
                    ),
                    "cache_creation_input_token_cost" => (
                        &p.cache_creation_input_token_cost,
                        &entry.model_info.cache_creation_input_token_cost,
                    ),
                    "max_input_tokens" => (&None, &entry.model_info.max_input_tokens),
                    _ => (&None, &entry.model_info.max_output_tokens),
                };
                match ours {
                    Some(v) => (Some(v), params.key(key)),
                    None => (info_v.as_ref(), info.key(key)),
                }
            }
        };
        limit.check(v?).map_err(|m| diag.error(path, m)).ok()
    };
    let timeout = num("timeout", Limit::SECONDS).unwrap_or(c.default_timeout);
    let stream_timeout = num("stream_timeout", Limit::SECONDS).unwrap_or(timeout);
    let connect_timeout = num("connect_timeout", Limit::SECONDS);
    let weight = num("weight", WEIGHT);
    let rpm = num("rpm", RATE).map(|v| v as u64);
    let tpm = num("tpm", RATE).map(|v| v as u64);
    let overrides = crate::usage::prices::Overrides {
        input: num("input_cost_per_token", COST),
        output: num("output_cost_per_token", COST),
        cache_read: num("cache_read_input_token_cost", COST),
        cache_write: num("cache_creation_input_token_cost", COST),
        max_input: num("max_input_tokens", TOKENS).map(|v| v as u64),
        max_output: num("max_output_tokens", TOKENS).map(|v| v as u64),
    };
    let pricing = p.model.split_once('/').map(|(provider, model)| {
        // Priced by the LiteLLM prefix and the model as sent (`converse/` and the like off).
        let model = routed.as_ref().map_or(model, |(_, m)| m.as_str());
        crate::usage::prices::resolve(
            c.prices,
            provider,
            model,
            entry.model_info.base_model.as_deref(),
            &overrides,
        )
    });
    let pricing = pricing.unwrap_or_default();
    let spec = crate::router::DeploymentSpec {
        weight,
        rpm,
        tpm,
        order: num("order", Limit::count(0, 1_000_000)).map_or(0, |v| v as u32),
        max_parallel: num("max_parallel_requests", Limit::count(1, 1_000_000)).map(|v| v as u32),
        input_cost: pricing.price.as_ref().map(|p| p.input),
        output_cost: pricing.price.as_ref().map(|p| p.output),
        max_retries: num("max_retries", Limit::count(0, 100)).map(|v| v as u32),
    };

    // Names go into response headers (`x-llmux-deployment`, `x-llmux-fallback-from`) and log
    // lines: a control character there would split them.
    let header_safe = |v: &str| !v.bytes().any(|b| b < b' ' && b != b'\t' || b == 0x7f);
    if !header_safe(&entry.model_name) {
        diag.error(
            at.key("model_name"),
            "a model group name must not contain control characters (line breaks, ...)",
        );
    }
    if entry
        .model_info
        .id
        .as_deref()
        .is_some_and(|id| !header_safe(id))
    {
        diag.error(
            info.key("id"),
            "a deployment id must not contain control characters (line breaks, ...)",
        );
    }
    if diag.error_count() > errors_before {
        return None;
    }
    if let Some((path, why)) = disabled {
        diag.warn(
            path,
            format!(
                "deployment of model group `{}` disabled: {why}",
                entry.model_name
            ),
        );
        return None;
    }
    let (provider, upstream_model) = routed
        .as_ref()
        .map(|(file, model)| (file.as_str(), model.as_str()))?;
    secrets_seen.extend(api_key.iter().cloned());
    let id = entry
        .model_info
        .id
        .clone()
        .unwrap_or_else(|| format!("{}/{index}", entry.model_name));
    Some(Deployment {
        key: std::sync::Arc::from(id.as_str()),
        id,
        group: entry.model_name.clone(),
        provider: provider.to_owned(),
        upstream_model: upstream_model.to_owned(),
        api_base,
        api_key,
        api_version,
        params: std::sync::Arc::new(provider_params),
        credentials,
        timeout: secs(timeout),
        stream_timeout: secs(stream_timeout),
        connect_timeout: connect_timeout.map(secs),
        weight: weight.unwrap_or(1.0),
        rpm,
        tpm,
        drop_params: p.drop_params.unwrap_or(c.global_drop),
        spec,
        tokenizer_model: entry
            .model_info
            .base_model
            .clone()
            .unwrap_or_else(|| upstream_model.to_owned()),
        price: pricing.price,
        max_input_tokens: pricing.max_input,
        max_output_tokens: pricing.max_output,
        trace_attributes: std::sync::OnceLock::new(),
        dsl_memo: std::sync::OnceLock::new(),
        first_attempt_headers: std::sync::OnceLock::new(),
    })
}

/// Whether a provider parameter holds a secret, by its name (`aws_secret_access_key`,
/// `aws_session_token`, `vertex_credentials`, `aws_web_identity_token`, ...).
fn is_secret_param(name: &str) -> bool {
    // An endpoint is not a secret, even one for tokens (`watsonx_token_url`, `aws_sts_endpoint`).
    let endpoint = ["_url", "_uri", "_endpoint", "_host"]
        .iter()
        .any(|e| name.ends_with(e));
    !endpoint
        && ["key", "secret", "token", "credential", "password"]
            .iter()
            .any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_parameters_are_known_by_name_and_endpoints_are_not_secrets() {
        for secret in [
            "aws_secret_access_key",
            "aws_session_token",
            "service_account_credentials",
            "zen_api_key",
            "aws_web_identity_token",
        ] {
            assert!(super::is_secret_param(secret), "{secret}");
        }
        for plain in [
            "iam_token_url",
            "aws_sts_endpoint",
            "gce_metadata_host",
            "aws_region_name",
            "project_id",
        ] {
            assert!(!super::is_secret_param(plain), "{plain}");
        }
    }
}
