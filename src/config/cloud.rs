//! A deployment's cloud credentials, from its provider file's `auth` and its parameters:
//! AWS SigV4 (unless the deployment gives an `api_key`: a Bedrock API key is a bearer
//! token), Google OAuth2, or an API key exchanged for a token. Built when the config loads,
//! so a bad service-account JSON is an error at the deployment; fetched only once the
//! config is live (see `upstream::credentials::DeploymentCredentials`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::env::Env;
use crate::dsl::{Auth, Provider, RequestCtx};
use crate::upstream::credentials::{
    AwsSpec, CredentialSpec, DeploymentCredentials, ExchangeConfig, ExchangeSpec, GoogleSpec,
};

/// The parameter AWS's region is read from (LiteLLM's name).
const REGION_PARAM: &str = "aws_region_name";
/// The key handed to a token exchange, in the parameter view built here.
const API_KEY: &str = "api_key";

/// `None` when the provider authenticates with the deployment's key alone.
pub(super) fn credentials(
    provider: &Provider,
    params: &BTreeMap<String, Value>,
    api_key: Option<&str>,
    api_base: Option<&str>,
    model: &str,
    env: &Env,
) -> Result<Option<DeploymentCredentials>, String> {
    let mut view: BTreeMap<String, String> = params
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect();
    let declared_default = |name: &str| {
        provider
            .params()
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.default.clone())
            .filter(|d| !d.is_empty())
    };
    let spec = match provider.auth() {
        Auth::AwsSigV4 { .. } if api_key.is_none() => {
            let spec = AwsSpec::from_params(&view, env).map_err(|e| e.to_string())?;
            // The region the URL is built with (the deployment's, else the file's default)
            // signs too; the environment's only when the file names none.
            let region = view
                .get(REGION_PARAM)
                .cloned()
                .or_else(|| declared_default(REGION_PARAM))
                .or_else(|| spec.region.clone());
            return Ok(Some(DeploymentCredentials::new(
                CredentialSpec::Aws(spec),
                region,
            )));
        }
        Auth::GoogleOAuth { credentials_param } => CredentialSpec::GoogleOAuth(
            GoogleSpec::from_params(&view, credentials_param.as_deref().unwrap_or(""), env)
                .map_err(|e| e.to_string())?,
        ),
        Auth::TokenExchange {
            grant, key_field, ..
        } => {
            // Without a key there is nothing to exchange: the file authenticates otherwise
            // (a ready token in a header, say).
            let Some(key) = api_key else {
                return Ok(None);
            };
            let ctx = RequestCtx {
                model: model.into(),
                api_base: api_base.map(Into::into),
                params: std::borrow::Cow::Borrowed(params),
                ..RequestCtx::default()
            };
            let url = provider
                .token_url(&ctx)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            view.insert(API_KEY.to_owned(), key.to_owned());
            let config = ExchangeConfig {
                url: &url,
                url_param: None,
                grant_type: grant,
                key_field,
                api_key_param: API_KEY,
                api_key_env: &[],
            };
            CredentialSpec::TokenExchange(
                ExchangeSpec::from_params(&view, &config, env).map_err(|e| e.to_string())?,
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(DeploymentCredentials::new(spec, None)))
}
