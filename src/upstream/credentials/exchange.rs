//! An API key exchanged for a short-lived bearer token at a token endpoint (IBM Cloud IAM
//! style: a form POST of the grant type and the key, a JSON answer with `access_token` and
//! `expires_in` or `expiration`). The endpoint, the grant type and the parameter names come
//! from the caller: a provider file names them.

use super::client::{form, Http, FORM};
use super::{check_http_url, env, param, Credential, CredentialError, Params, Secret};
use crate::config::env::Env;

const ORIGIN: &str = "token exchange";

/// What a provider file says about its token exchange.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeConfig<'a> {
    /// The token endpoint.
    pub url: &'a str,
    /// A deployment parameter that overrides `url`, if the provider has one.
    pub url_param: Option<&'a str>,
    /// The form's `grant_type`.
    pub grant_type: &'a str,
    /// The form field that carries the key (`apikey` at IBM Cloud IAM).
    pub key_field: &'a str,
    /// The deployment parameter that holds the key.
    pub api_key_param: &'a str,
    /// Environment variables tried, in order, when the parameter is absent.
    pub api_key_env: &'a [&'a str],
}

/// A key and where it is exchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExchangeSpec {
    pub url: String,
    pub grant_type: String,
    pub key_field: String,
    pub api_key: Secret,
}

impl ExchangeSpec {
    pub fn from_params(
        params: &dyn Params,
        config: &ExchangeConfig<'_>,
        vars: &Env,
    ) -> Result<ExchangeSpec, CredentialError> {
        let api_key = param(params, config.api_key_param)
            .or_else(|| config.api_key_env.iter().find_map(|v| env(vars, v)))
            .ok_or_else(|| {
                CredentialError::invalid(
                    ORIGIN,
                    format!("no API key: `{}` is not set", config.api_key_param),
                )
            })?;
        let url = config
            .url_param
            .and_then(|p| param(params, p))
            .unwrap_or(config.url);
        check_http_url(url, ORIGIN, config.url_param.unwrap_or("the token URL"))?;
        if config.grant_type.is_empty() || config.key_field.is_empty() {
            return Err(CredentialError::invalid(
                ORIGIN,
                "the provider gives no grant type or key field",
            ));
        }
        Ok(ExchangeSpec {
            url: url.to_owned(),
            grant_type: config.grant_type.to_owned(),
            key_field: config.key_field.to_owned(),
            api_key: Secret::new(api_key),
        })
    }

    pub(crate) fn label(&self) -> String {
        format!("{ORIGIN} at {}", super::error::shown_endpoint(&self.url))
    }

    pub(crate) fn secrets(&self) -> Vec<&str> {
        vec![self.api_key.expose()]
    }

    pub(crate) async fn fetch(&self, http: &Http) -> Result<Credential, CredentialError> {
        let body = form(&[
            ("grant_type", &self.grant_type),
            (&self.key_field, self.api_key.expose()),
        ]);
        let answer = http
            .call(
                http::Method::POST,
                &self.url,
                &[("content-type", FORM), ("accept", "application/json")],
                body,
            )
            .await
            .map_err(|e| e.into_credential_error(ORIGIN, &self.url))?;
        super::oauth::read_token(ORIGIN, &self.url, &answer)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{
        block_on, env as vars, params, test_tls, Fake, Reply,
    };

    pub const GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

    pub fn config(url: &str) -> ExchangeConfig<'_> {
        ExchangeConfig {
            url,
            url_param: Some("token_url"),
            grant_type: GRANT,
            key_field: "apikey",
            api_key_param: "api_key",
            api_key_env: &["TEST_EXCHANGE_APIKEY"],
        }
    }

    /// A fake IAM endpoint: accepts `key`, answers tokens `iam-<hit>` living `lifetime` s.
    pub fn fake_iam(key: &'static str, lifetime: u64) -> Fake {
        Fake::start(move |n, seen| {
            let f = seen.form();
            if f.get("grant_type").map(String::as_str) == Some(GRANT)
                && f.get("apikey").map(String::as_str) == Some(key)
            {
                let now = super::super::time::unix(std::time::SystemTime::now());
                Reply::ok(format!(
                    r#"{{"access_token":"iam-{n}","refresh_token":"not_supported","token_type":"Bearer","expires_in":{lifetime},"expiration":{}}}"#,
                    now + lifetime
                ))
            } else {
                Reply::status(
                    400,
                    format!(
                        r#"{{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found: {}"}}"#,
                        f.get("apikey").map(String::as_str).unwrap_or("")
                    ),
                )
            }
        })
    }

    #[test]
    fn exchanges_the_key_for_a_token() {
        let fake = fake_iam("key-abc-123", 3600);
        let spec = ExchangeSpec::from_params(
            &params(&[("api_key", "key-abc-123")]),
            &config(&fake.url("/identity/token")),
            &vars(&[]),
        )
        .unwrap();
        let c = block_on(spec.fetch(&Http::new(&test_tls()))).unwrap();
        assert_eq!(c.bearer(), Some("iam-1"));
        let seen = fake.next_seen();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/identity/token");
        assert_eq!(seen.header("accept"), Some("application/json"));
    }

    #[test]
    fn key_and_url_sources() {
        let from_env = ExchangeSpec::from_params(
            &params(&[("token_url", "http://127.0.0.1:1/t")]),
            &config("https://iam.example/identity/token"),
            &vars(&[("TEST_EXCHANGE_APIKEY", "k-env")]),
        )
        .unwrap();
        assert_eq!(from_env.api_key.expose(), "k-env");
        assert_eq!(from_env.url, "http://127.0.0.1:1/t");
        let e =
            ExchangeSpec::from_params(&params(&[]), &config("https://iam.example/t"), &vars(&[]))
                .unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("api_key"), "{e}");
        assert!(ExchangeSpec::from_params(
            &params(&[("api_key", "k"), ("token_url", "not a url")]),
            &config("https://iam.example/t"),
            &vars(&[])
        )
        .is_err());
    }
}
