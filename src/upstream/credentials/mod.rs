//! Cloud credentials for upstream requests: AWS SigV4 signing and the AWS credential chain,
//! Google OAuth2 access tokens, and API keys exchanged for bearer tokens (docs/credentials.md).
//!
//! Fetching and refreshing happen on one control-plane thread (`llmux-credentials`, a
//! current-thread tokio runtime; `service.rs`), never on a shard. A shard holds a
//! [`CredentialHandle`]: [`CredentialHandle::current`] is one lock-free load, and
//! [`CredentialHandle::get`] waits only when nothing valid is cached (the first fetch, or after
//! an expiry the refresh could not prevent). Credential sets are shared by every deployment that
//! names the same parameters.
//!
//! Nothing here names a provider: provider files say which kind of credential a deployment
//! uses and, where a parameter or endpoint is provider-specific, pass its name or URL in.

mod aws;
pub(crate) mod client;
mod container;
mod deployment;
mod error;
mod exchange;
mod google;
mod imds;
mod oauth;
mod service;
mod sigv4;
mod sts;
mod time;

#[cfg(test)]
mod testutil;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

pub use aws::{AwsSource, AwsSpec, StsEndpoint, TokenSource};
pub use client::https_connector;
pub use deployment::DeploymentCredentials;
pub use error::CredentialError;
pub use exchange::{ExchangeConfig, ExchangeSpec};
pub use google::{GoogleSource, GoogleSpec, CLOUD_PLATFORM_SCOPE};
pub use service::{handle, set_tls, CredentialHandle};
pub use sigv4::{sign_aws, sign_aws_with, SignOptions};
pub(crate) use time::parse_rfc3339;

/// Where a credential comes from, built from a deployment's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CredentialSpec {
    Aws(AwsSpec),
    GoogleOAuth(GoogleSpec),
    TokenExchange(ExchangeSpec),
}

/// A read-only view of a deployment's `litellm_params` (secret references already resolved).
pub trait Params {
    /// The parameter's value, if the deployment gives one.
    fn param(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Params for HashMap<String, String, S> {
    fn param(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Params for BTreeMap<String, String> {
    fn param(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A parameter's value, trimmed; blank counts as absent (an empty `os.environ/` value must not
/// select a source).
fn param<'a>(params: &'a dyn Params, name: &str) -> Option<&'a str> {
    params.param(name).map(str::trim).filter(|v| !v.is_empty())
}

/// An environment variable's value, trimmed; blank counts as absent.
fn env<'a>(env: &'a crate::config::env::Env, name: &str) -> Option<&'a str> {
    env.get(name).map(str::trim).filter(|v| !v.is_empty())
}

/// An endpoint override must be an absolute http(s) URL with a host.
pub(crate) fn check_http_url(
    url: &str,
    origin: &'static str,
    param: &str,
) -> Result<(), CredentialError> {
    let ok = url
        .parse::<::http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
        .is_some_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if ok {
        Ok(())
    } else {
        Err(CredentialError::invalid(
            origin,
            format!(
                "{param} `{}` is not an http(s) URL",
                error::shown_endpoint(url)
            ),
        ))
    }
}

/// The largest file read for a credential (token files, service-account JSON).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Reads a small text file, refusing one past [`MAX_FILE_BYTES`] (a wrong path must not make
/// the credential thread read a disk image).
fn read_small_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// A secret string: compared and hashed by value (so equal specs share one credential set),
/// never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// AWS credentials, ready to sign with.
#[derive(Clone)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// aws-sigv4's form of the same keys, built once per credential rather than per signature.
    identity: aws_smithy_runtime_api::client::identity::Identity,
}

impl AwsCredentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        let access_key_id = access_key_id.into();
        let secret_access_key = secret_access_key.into();
        let identity = aws_credential_types::Credentials::new(
            access_key_id.clone(),
            secret_access_key.clone(),
            session_token.clone(),
            None,
            "llmux",
        )
        .into();
        Self {
            access_key_id,
            secret_access_key: Secret(secret_access_key),
            session_token: session_token.map(Secret),
            identity,
        }
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        self.secret_access_key.expose()
    }

    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_ref().map(Secret::expose)
    }

    pub(crate) fn identity(&self) -> &aws_smithy_runtime_api::client::identity::Identity {
        &self.identity
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An access key id is not a secret, but its first characters are enough to tell keys
        // apart in a log.
        let shown: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &format_args!("{shown}…"))
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish()
    }
}

/// What a credential is.
#[derive(Clone, Debug)]
pub enum CredentialValue {
    /// Keys to sign requests with ([`sign_aws`]).
    Aws(AwsCredentials),
    /// A token for `Authorization: Bearer …`.
    Bearer(Secret),
}

/// A credential as fetched, with its lifetime.
#[derive(Clone, Debug)]
pub struct Credential {
    value: CredentialValue,
    expires_at: Option<SystemTime>,
    /// When it stops being handed out: a margin before `expires_at`, so that a request signed
    /// with it does not reach the upstream after it expired.
    usable_until: Option<SystemTime>,
}

/// The longest margin kept before a credential's expiry.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

impl Credential {
    /// A credential that never expires (static keys).
    pub fn lasting(value: CredentialValue) -> Self {
        Self {
            value,
            expires_at: None,
            usable_until: None,
        }
    }

    /// A credential fetched at `now` that expires at `expires_at`. It is handed out until a
    /// margin before then: a tenth of its lifetime, at most a minute.
    pub fn expiring(value: CredentialValue, now: SystemTime, expires_at: SystemTime) -> Self {
        let lifetime = expires_at.duration_since(now).unwrap_or_default();
        let margin = (lifetime / 10).min(MAX_EXPIRY_MARGIN);
        Self {
            value,
            expires_at: Some(expires_at),
            usable_until: expires_at.checked_sub(margin),
        }
    }

    pub fn value(&self) -> &CredentialValue {
        &self.value
    }

    /// The AWS keys, if this is an AWS credential.
    pub fn aws(&self) -> Option<&AwsCredentials> {
        match &self.value {
            CredentialValue::Aws(c) => Some(c),
            CredentialValue::Bearer(_) => None,
        }
    }

    /// The bearer token, if this is one.
    pub fn bearer(&self) -> Option<&str> {
        match &self.value {
            CredentialValue::Bearer(t) => Some(t.expose()),
            CredentialValue::Aws(_) => None,
        }
    }

    /// When the issuer said it expires (`None`: never).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// True while it may still be handed out.
    pub fn is_usable_at(&self, now: SystemTime) -> bool {
        self.usable_until.is_none_or(|u| now < u)
    }
}

impl CredentialSpec {
    /// A description that names the source and its endpoint, never a secret (logs, errors).
    pub fn label(&self) -> String {
        match self {
            CredentialSpec::Aws(s) => s.label(),
            CredentialSpec::GoogleOAuth(s) => s.label(),
            CredentialSpec::TokenExchange(s) => s.label(),
        }
    }

    /// The credential when it needs no fetch (static keys).
    fn ready(&self) -> Option<Credential> {
        match self {
            CredentialSpec::Aws(s) => s.ready(),
            CredentialSpec::GoogleOAuth(_) | CredentialSpec::TokenExchange(_) => None,
        }
    }

    /// Every secret value this spec holds, to be masked in anything it reports.
    fn secrets(&self) -> Vec<&str> {
        match self {
            CredentialSpec::Aws(s) => s.secrets(),
            CredentialSpec::GoogleOAuth(s) => s.secrets(),
            CredentialSpec::TokenExchange(s) => s.secrets(),
        }
    }

    async fn fetch(&self, http: &client::Http) -> Result<Credential, CredentialError> {
        match self {
            CredentialSpec::Aws(s) => s.fetch(http).await,
            CredentialSpec::GoogleOAuth(s) => s.fetch(http).await,
            CredentialSpec::TokenExchange(s) => s.fetch(http).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_handed_out_until_a_margin_before_expiry() {
        let now = SystemTime::now();
        let token = || CredentialValue::Bearer(Secret::new("t"));
        let hour = Credential::expiring(token(), now, now + Duration::from_secs(3600));
        assert!(hour.is_usable_at(now + Duration::from_secs(3539)));
        assert!(!hour.is_usable_at(now + Duration::from_secs(3540)));
        let short = Credential::expiring(token(), now, now + Duration::from_secs(10));
        assert!(short.is_usable_at(now + Duration::from_secs(8)));
        assert!(!short.is_usable_at(now + Duration::from_secs(9)));
        let gone = Credential::expiring(token(), now, now);
        assert!(!gone.is_usable_at(now));
        assert!(Credential::lasting(token()).is_usable_at(now + Duration::from_secs(1 << 40)));
        assert_eq!(format!("{:?}", Secret::new("hidden")), "[redacted]");
    }
}
