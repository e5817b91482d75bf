//! Where AWS credentials come from: a deployment's parameters in LiteLLM's order, then the
//! standard chain of the AWS SDKs (environment, web identity, container, instance metadata).
//! The source is chosen once, when the spec is built; fetching it is the credential thread's.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use super::client::Http;
use super::{
    check_http_url, env, param, read_small_file, Credential, CredentialError, CredentialValue,
    Params,
};
use super::{AwsCredentials, Secret};
use crate::config::env::Env;

/// The instance metadata service of EC2.
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The ECS agent's credential endpoint, for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_ENDPOINT: &str = "http://169.254.170.2";

/// An AWS credential set and the region requests are signed for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AwsSpec {
    /// `aws_region_name`, else `AWS_REGION_NAME`, `AWS_REGION`, `AWS_DEFAULT_REGION`; `None`
    /// when none is set (the provider file decides the default).
    pub region: Option<String>,
    pub source: AwsSource,
}

/// One AWS credential source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AwsSource {
    /// Keys given as they are; they never expire.
    Static {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// STS AssumeRole, signed with the credentials of `base`.
    AssumeRole {
        base: Box<AwsSource>,
        role_arn: String,
        /// `None`: `llmux-<unix time>` at each fetch.
        session_name: Option<String>,
        external_id: Option<String>,
        sts: StsEndpoint,
    },
    /// STS AssumeRoleWithWebIdentity (unsigned): an OIDC token for a role.
    WebIdentity {
        token: TokenSource,
        role_arn: String,
        session_name: Option<String>,
        sts: StsEndpoint,
    },
    /// The ECS / EKS container credential endpoint.
    Container {
        url: String,
        authorization: Option<TokenSource>,
    },
    /// EC2 instance metadata, IMDSv2.
    InstanceMetadata { endpoint: String },
}

/// A token given inline or read from a file at each fetch (Kubernetes rotates projected
/// service-account tokens in place).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenSource {
    Inline(Secret),
    File(PathBuf),
}

/// Where STS is called, and the region its requests are signed for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StsEndpoint {
    pub url: String,
    pub region: String,
}

impl TokenSource {
    pub(crate) fn read(&self, origin: &'static str) -> Result<Secret, CredentialError> {
        match self {
            TokenSource::Inline(s) => Ok(s.clone()),
            TokenSource::File(path) => {
                let text = read_small_file(path).map_err(|e| {
                    CredentialError::invalid(
                        origin,
                        format!("cannot read the token file {}: {e}", path.display()),
                    )
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(CredentialError::invalid(
                        origin,
                        format!("the token file {} is empty", path.display()),
                    ));
                }
                Ok(Secret::new(token))
            }
        }
    }
}

impl AwsSpec {
    /// The credential source of a deployment, chosen in LiteLLM's order: web identity
    /// (`aws_web_identity_token` with a role), AssumeRole (`aws_role_name`, signed with the
    /// deployment's keys or the standard chain's), static keys, then the standard chain.
    ///
    /// Parameter names read (each falls back to LiteLLM's environment variable of the same
    /// meaning, in brackets): `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`
    /// (taken as a set: from the parameters, else all from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), `aws_region_name` [`AWS_REGION_NAME`],
    /// `aws_role_name` [`AWS_ROLE_NAME`], `aws_session_name` [`AWS_SESSION_NAME`],
    /// `aws_web_identity_token` [`AWS_WEB_IDENTITY_TOKEN`], `aws_external_id`
    /// [`AWS_EXTERNAL_ID`], `aws_sts_endpoint` [`AWS_STS_ENDPOINT`, then `AWS_ENDPOINT_URL_STS`],
    /// `aws_imds_endpoint` [`AWS_EC2_METADATA_SERVICE_ENDPOINT`], `aws_profile_name`
    /// [`AWS_PROFILE_NAME`] (refused: profiles are not supported).
    pub fn from_params(params: &dyn Params, env_vars: &Env) -> Result<AwsSpec, CredentialError> {
        let get = |name: &str, var: &str| param(params, name).or_else(|| env(env_vars, var));
        let region = param(params, "aws_region_name")
            .or_else(|| env(env_vars, "AWS_REGION_NAME"))
            .or_else(|| env(env_vars, "AWS_REGION"))
            .or_else(|| env(env_vars, "AWS_DEFAULT_REGION"));
        if let Some(r) = region {
            check_region(r, "aws_region_name")?;
        }
        let explicit_keys = explicit_keys(params)?;
        let role = get("aws_role_name", "AWS_ROLE_NAME");
        let session_name = get("aws_session_name", "AWS_SESSION_NAME").map(str::to_owned);
        let external_id = get("aws_external_id", "AWS_EXTERNAL_ID").map(str::to_owned);
        let web_token = get("aws_web_identity_token", "AWS_WEB_IDENTITY_TOKEN");
        let sts_override = get("aws_sts_endpoint", "AWS_STS_ENDPOINT")
            .or_else(|| env(env_vars, "AWS_ENDPOINT_URL_STS"));
        let sts = || sts_endpoint(sts_override, env_vars, region);

        let source = if let (Some(token), Some(role_arn)) =
            (web_token, role.or_else(|| env(env_vars, "AWS_ROLE_ARN")))
        {
            AwsSource::WebIdentity {
                token: TokenSource::Inline(Secret::new(token)),
                role_arn: role_arn.to_owned(),
                session_name,
                sts: sts()?,
            }
        } else if let Some(role_arn) = role {
            let base = match explicit_keys {
                Some(keys) => keys,
                None => default_chain(params, env_vars, true, &sts)?,
            };
            AwsSource::AssumeRole {
                base: Box::new(base),
                role_arn: role_arn.to_owned(),
                session_name,
                external_id,
                sts: sts()?,
            }
        } else if get("aws_profile_name", "AWS_PROFILE_NAME").is_some() {
            return Err(CredentialError::invalid(
                "AWS credentials",
                "aws_profile_name: shared config profiles are not supported; give \
                 aws_access_key_id and aws_secret_access_key, aws_role_name, or let the \
                 environment's credentials be used",
            ));
        } else if let Some(keys) = explicit_keys {
            keys
        } else {
            default_chain(params, env_vars, false, &sts)?
        };
        Ok(AwsSpec {
            region: region.map(str::to_owned),
            source,
        })
    }

    pub(crate) fn label(&self) -> String {
        self.source.label()
    }

    pub(crate) fn ready(&self) -> Option<Credential> {
        match &self.source {
            AwsSource::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Some(static_credential(
                access_key_id,
                secret_access_key,
                session_token,
            )),
            _ => None,
        }
    }

    pub(crate) fn secrets(&self) -> Vec<&str> {
        let mut out = vec![];
        self.source.secrets(&mut out);
        out
    }

    pub(crate) async fn fetch(&self, http: &Http) -> Result<Credential, CredentialError> {
        self.source.fetch(http).await
    }
}

fn static_credential(
    access_key_id: &str,
    secret_access_key: &Secret,
    session_token: &Option<Secret>,
) -> Credential {
    Credential::lasting(CredentialValue::Aws(AwsCredentials::new(
        access_key_id,
        secret_access_key.expose(),
        session_token.as_ref().map(|t| t.expose().to_owned()),
    )))
}

/// The deployment's own keys, if it gives any (all from parameters: a key id from a parameter
/// and a secret from the environment would be two identities mixed).
fn explicit_keys(params: &dyn Params) -> Result<Option<AwsSource>, CredentialError> {
    let id = param(params, "aws_access_key_id");
    let secret = param(params, "aws_secret_access_key");
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some(AwsSource::Static {
            access_key_id: id.to_owned(),
            secret_access_key: Secret::new(secret),
            session_token: param(params, "aws_session_token").map(Secret::new),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CredentialError::invalid(
            "AWS credentials",
            "aws_access_key_id is set but aws_secret_access_key is not",
        )),
        (None, Some(_)) => Err(CredentialError::invalid(
            "AWS credentials",
            "aws_secret_access_key is set but aws_access_key_id is not",
        )),
    }
}

/// The SDKs' chain after the deployment's parameters: environment keys, web identity from
/// the environment (EKS IRSA), the container endpoint (ECS, EKS Pod Identity), then instance
/// metadata. `for_role`: the chain provides the base credentials of an AssumeRole.
fn default_chain(
    params: &dyn Params,
    vars: &Env,
    for_role: bool,
    sts: &dyn Fn() -> Result<StsEndpoint, CredentialError>,
) -> Result<AwsSource, CredentialError> {
    if let (Some(id), Some(secret)) = (
        env(vars, "AWS_ACCESS_KEY_ID"),
        env(vars, "AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(AwsSource::Static {
            access_key_id: id.to_owned(),
            secret_access_key: Secret::new(secret),
            session_token: env(vars, "AWS_SESSION_TOKEN").map(Secret::new),
        });
    }
    if let (Some(file), Some(role_arn)) = (
        env(vars, "AWS_WEB_IDENTITY_TOKEN_FILE"),
        env(vars, "AWS_ROLE_ARN"),
    ) {
        return Ok(AwsSource::WebIdentity {
            token: TokenSource::File(PathBuf::from(file)),
            role_arn: role_arn.to_owned(),
            session_name: env(vars, "AWS_ROLE_SESSION_NAME").map(str::to_owned),
            sts: sts()?,
        });
    }
    let authorization = env(vars, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        .map(|f| TokenSource::File(PathBuf::from(f)))
        .or_else(|| {
            env(vars, "AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(|t| TokenSource::Inline(Secret::new(t)))
        });
    if let Some(relative) = env(vars, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        if !relative.starts_with('/') {
            return Err(CredentialError::invalid(
                "container credentials",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /",
            ));
        }
        return Ok(AwsSource::Container {
            url: format!("{ECS_ENDPOINT}{relative}"),
            authorization,
        });
    }
    if let Some(full) = env(vars, "AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        check_container_uri(full)?;
        return Ok(AwsSource::Container {
            url: full.to_owned(),
            authorization,
        });
    }
    if env(vars, "AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(CredentialError::invalid(
            "AWS credentials",
            format!(
                "no AWS credentials: none in the deployment's parameters{} or the environment, \
                 and AWS_EC2_METADATA_DISABLED is set",
                if for_role { " for the role's base" } else { "" }
            ),
        ));
    }
    let endpoint = param(params, "aws_imds_endpoint")
        .or_else(|| env(vars, "AWS_EC2_METADATA_SERVICE_ENDPOINT"))
        .unwrap_or(IMDS_ENDPOINT);
    check_http_url(endpoint, "EC2 instance metadata", "aws_imds_endpoint")?;
    Ok(AwsSource::InstanceMetadata {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
    })
}

/// The STS endpoint and signing region: an explicit endpoint (its region read from a
/// `sts.REGION.amazonaws.com` host), else the regional endpoint of `AWS_REGION`,
/// `AWS_DEFAULT_REGION` or the deployment's region (LiteLLM's order), else the global one
/// (signed for us-east-1).
fn sts_endpoint(
    explicit: Option<&str>,
    vars: &Env,
    region: Option<&str>,
) -> Result<StsEndpoint, CredentialError> {
    let signing = explicit
        .and_then(region_of_sts_url)
        .or_else(|| env(vars, "AWS_REGION"))
        .or_else(|| env(vars, "AWS_DEFAULT_REGION"))
        .or(region);
    if let Some(r) = signing {
        check_region(r, "the STS region")?;
    }
    let url = match (explicit, signing) {
        (Some(url), _) => {
            check_http_url(url, "STS", "aws_sts_endpoint")?;
            with_path(url)
        }
        (None, Some(r)) => format!("https://sts.{r}.{}/", dns_suffix(r)),
        (None, None) => "https://sts.amazonaws.com/".to_owned(),
    };
    Ok(StsEndpoint {
        url,
        region: signing.unwrap_or("us-east-1").to_owned(),
    })
}

/// `https://sts.eu-west-1.amazonaws.com` → `eu-west-1` (also FIPS, China and VPC endpoint
/// hosts).
fn region_of_sts_url(url: &str) -> Option<&str> {
    let host = url.split_once("://")?.1.split(['/', ':', '?']).next()?;
    let labels: Vec<&str> = host.split('.').collect();
    labels.windows(3).enumerate().find_map(|(i, w)| {
        let rest = labels.get(i + 2..)?.join(".");
        let known = matches!(
            rest.as_str(),
            "amazonaws.com" | "amazonaws.com.cn" | "vpce.amazonaws.com"
        );
        (matches!(w[0], "sts" | "sts-fips") && known && valid_region(w[1])).then_some(w[1])
    })
}

fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A region goes into a host name: anything but lower-case letters, digits and `-` could
/// point the call somewhere else.
fn check_region(r: &str, what: &str) -> Result<(), CredentialError> {
    if valid_region(r) {
        Ok(())
    } else {
        Err(CredentialError::invalid(
            "AWS credentials",
            format!("{what} `{}` is not a region name", crate::util::clip(r)),
        ))
    }
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` may be any https URL, but plain http only to the
/// loopback or the container endpoints (as the SDKs allow): credentials must not cross a
/// network in clear.
fn check_container_uri(url: &str) -> Result<(), CredentialError> {
    check_http_url(
        url,
        "container credentials",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )?;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| CredentialError::invalid("container credentials", "invalid URL"))?;
    if uri.scheme_str() == Some("https") {
        return Ok(());
    }
    let host = uri.host().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let allowed = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip == std::net::IpAddr::from([169, 254, 170, 2])
                || ip == std::net::IpAddr::from([169, 254, 170, 23])
                || ip
                    == std::net::IpAddr::from(std::net::Ipv6Addr::new(
                        0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23,
                    ))
        }
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    if allowed {
        Ok(())
    } else {
        Err(CredentialError::invalid(
            "container credentials",
            format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI `{}`: plain http is allowed only to the \
                 loopback and the container credential addresses",
                super::error::shown_endpoint(url)
            ),
        ))
    }
}

/// `https://host` → `https://host/` (a request needs a path).
fn with_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    if after_scheme.contains('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

type Fetch<'a> = Pin<Box<dyn Future<Output = Result<Credential, CredentialError>> + Send + 'a>>;

impl AwsSource {
    fn label(&self) -> String {
        match self {
            AwsSource::Static { access_key_id, .. } => {
                let shown: String = access_key_id.chars().take(4).collect();
                format!("AWS keys {shown}…")
            }
            AwsSource::AssumeRole {
                base,
                role_arn,
                sts,
                ..
            } => format!(
                "STS AssumeRole {role_arn} at {} (base: {})",
                sts.url,
                base.label()
            ),
            AwsSource::WebIdentity { role_arn, sts, .. } => {
                format!("STS AssumeRoleWithWebIdentity {role_arn} at {}", sts.url)
            }
            AwsSource::Container { url, .. } => {
                format!(
                    "container credentials at {}",
                    super::error::shown_endpoint(url)
                )
            }
            AwsSource::InstanceMetadata { endpoint } => {
                format!("EC2 instance metadata at {endpoint}")
            }
        }
    }

    fn secrets<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            AwsSource::Static {
                secret_access_key,
                session_token,
                ..
            } => {
                out.push(secret_access_key.expose());
                out.extend(session_token.as_ref().map(Secret::expose));
            }
            AwsSource::AssumeRole { base, .. } => base.secrets(out),
            AwsSource::WebIdentity { token, .. }
            | AwsSource::Container {
                authorization: Some(token),
                ..
            } => {
                if let TokenSource::Inline(t) = token {
                    out.push(t.expose());
                }
            }
            AwsSource::Container {
                authorization: None,
                ..
            }
            | AwsSource::InstanceMetadata { .. } => {}
        }
    }

    fn fetch<'a>(&'a self, http: &'a Http) -> Fetch<'a> {
        Box::pin(async move {
            match self {
                AwsSource::Static {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } => Ok(static_credential(
                    access_key_id,
                    secret_access_key,
                    session_token,
                )),
                AwsSource::AssumeRole {
                    base,
                    role_arn,
                    session_name,
                    external_id,
                    sts,
                } => {
                    let base = base.fetch(http).await?;
                    let Some(keys) = base.aws() else {
                        return Err(CredentialError::invalid(
                            super::sts::ASSUME_ROLE,
                            "the base credential is not an AWS one",
                        ));
                    };
                    super::sts::assume_role(
                        http,
                        sts,
                        keys,
                        role_arn,
                        &session(session_name),
                        external_id.as_deref(),
                    )
                    .await
                }
                AwsSource::WebIdentity {
                    token,
                    role_arn,
                    session_name,
                    sts,
                } => {
                    let token = token.read(super::sts::WEB_IDENTITY)?;
                    super::sts::assume_role_with_web_identity(
                        http,
                        sts,
                        &token,
                        role_arn,
                        &session(session_name),
                    )
                    .await
                    .map_err(|e| e.masked(&[token.expose()]))
                }
                AwsSource::Container { url, authorization } => {
                    let auth = authorization
                        .as_ref()
                        .map(|t| t.read(super::container::ORIGIN))
                        .transpose()?;
                    let secrets: Vec<&str> = auth.iter().map(Secret::expose).collect();
                    super::container::fetch(http, url, auth.as_ref())
                        .await
                        .map_err(|e| e.masked(&secrets))
                }
                AwsSource::InstanceMetadata { endpoint } => {
                    super::imds::fetch(http, endpoint).await
                }
            }
        })
    }
}

/// The session name to send: the configured one, else `llmux-<unix time>` (as LiteLLM names
/// its sessions `litellm-session-<time>`).
fn session(configured: &Option<String>) -> String {
    configured
        .clone()
        .unwrap_or_else(|| format!("llmux-{}", super::time::unix(std::time::SystemTime::now())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{env as vars, params};
    use std::time::Duration;

    fn spec(p: &[(&str, &str)], e: &[(&str, &str)]) -> Result<AwsSpec, CredentialError> {
        AwsSpec::from_params(&params(p), &vars(e))
    }

    #[test]
    fn static_keys_from_parameters() {
        let s = spec(
            &[
                ("aws_access_key_id", "AKIA1"),
                ("aws_secret_access_key", "sk1"),
                ("aws_session_token", "tok1"),
                ("aws_region_name", "eu-west-1"),
            ],
            &[
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "skenv"),
            ],
        )
        .unwrap();
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let c = s.ready().unwrap();
        let k = c.aws().unwrap();
        assert_eq!(
            (k.access_key_id(), k.secret_access_key(), k.session_token()),
            ("AKIA1", "sk1", Some("tok1"))
        );
        assert!(c.expires_at().is_none());
        assert!(c.is_usable_at(std::time::SystemTime::now() + Duration::from_secs(1 << 30)));
    }

    #[test]
    fn environment_keys_come_as_a_set() {
        let s = spec(
            &[],
            &[
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "skenv"),
                ("AWS_SESSION_TOKEN", "tokenv"),
                ("AWS_REGION", "us-east-2"),
            ],
        )
        .unwrap();
        assert_eq!(s.region.as_deref(), Some("us-east-2"));
        let c = s.ready().unwrap();
        assert_eq!(c.aws().unwrap().session_token(), Some("tokenv"));
        // A parameter key is never completed by the environment's secret.
        let e = spec(
            &[("aws_access_key_id", "AKIA1")],
            &[("AWS_SECRET_ACCESS_KEY", "skenv")],
        )
        .unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("aws_secret_access_key"), "{e}");
    }

    #[test]
    fn region_order() {
        let r = |p: &[(&str, &str)], e: &[(&str, &str)]| {
            spec(
                p,
                &[
                    &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")],
                    e,
                ]
                .concat(),
            )
            .unwrap()
            .region
        };
        assert_eq!(r(&[], &[]), None);
        assert_eq!(
            r(&[], &[("AWS_DEFAULT_REGION", "r4")]).as_deref(),
            Some("r4")
        );
        assert_eq!(
            r(&[], &[("AWS_DEFAULT_REGION", "r4"), ("AWS_REGION", "r3")]).as_deref(),
            Some("r3")
        );
        assert_eq!(
            r(&[], &[("AWS_REGION", "r3"), ("AWS_REGION_NAME", "r2")]).as_deref(),
            Some("r2")
        );
        assert_eq!(
            r(&[("aws_region_name", "r1")], &[("AWS_REGION_NAME", "r2")]).as_deref(),
            Some("r1")
        );
        assert!(spec(&[("aws_region_name", "evil.example/x#")], &[]).is_err());
    }

    #[test]
    fn role_with_keys_is_assume_role_signed_by_them() {
        let s = spec(
            &[
                ("aws_access_key_id", "AKIA1"),
                ("aws_secret_access_key", "sk1"),
                ("aws_role_name", "arn:aws:iam::1:role/r"),
                ("aws_session_name", "s1"),
                ("aws_external_id", "x1"),
                ("aws_region_name", "eu-west-1"),
            ],
            &[],
        )
        .unwrap();
        let AwsSource::AssumeRole {
            base,
            role_arn,
            session_name,
            external_id,
            sts,
        } = &s.source
        else {
            panic!("{:?}", s.source)
        };
        assert!(matches!(**base, AwsSource::Static { .. }));
        assert_eq!(role_arn, "arn:aws:iam::1:role/r");
        assert_eq!(session_name.as_deref(), Some("s1"));
        assert_eq!(external_id.as_deref(), Some("x1"));
        assert_eq!(
            sts,
            &StsEndpoint {
                url: "https://sts.eu-west-1.amazonaws.com/".into(),
                region: "eu-west-1".into()
            }
        );
        assert!(s.ready().is_none());
        assert_eq!(s.secrets(), vec!["sk1"]);
    }

    #[test]
    fn role_without_keys_assumes_from_the_default_chain() {
        let s = spec(
            &[("aws_role_name", "arn:aws:iam::1:role/r")],
            &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")],
        )
        .unwrap();
        let AwsSource::AssumeRole { base, sts, .. } = &s.source else {
            panic!()
        };
        assert_eq!(
            **base,
            AwsSource::InstanceMetadata {
                endpoint: "http://127.0.0.1:9".into()
            }
        );
        // No region anywhere: the global endpoint, signed for us-east-1.
        assert_eq!(sts.url, "https://sts.amazonaws.com/");
        assert_eq!(sts.region, "us-east-1");
    }

    #[test]
    fn sts_endpoint_overrides_and_their_region() {
        let s = spec(
            &[
                ("aws_role_name", "arn:aws:iam::1:role/r"),
                ("aws_access_key_id", "a"),
                ("aws_secret_access_key", "b"),
                (
                    "aws_sts_endpoint",
                    "https://sts-fips.us-gov-west-1.amazonaws.com",
                ),
                ("aws_region_name", "eu-west-1"),
            ],
            &[],
        )
        .unwrap();
        let AwsSource::AssumeRole { sts, .. } = &s.source else {
            panic!()
        };
        assert_eq!(sts.url, "https://sts-fips.us-gov-west-1.amazonaws.com/");
        assert_eq!(sts.region, "us-gov-west-1");
        let local = spec(
            &[
                ("aws_role_name", "arn:aws:iam::1:role/r"),
                ("aws_access_key_id", "a"),
                ("aws_secret_access_key", "b"),
                ("aws_sts_endpoint", "http://127.0.0.1:4566/sts"),
            ],
            &[("AWS_DEFAULT_REGION", "ap-south-1")],
        )
        .unwrap();
        let AwsSource::AssumeRole { sts, .. } = &local.source else {
            panic!()
        };
        assert_eq!(sts.url, "http://127.0.0.1:4566/sts");
        assert_eq!(sts.region, "ap-south-1");
        let cn = sts_endpoint(None, &vars(&[("AWS_REGION", "cn-north-1")]), None).unwrap();
        assert_eq!(cn.url, "https://sts.cn-north-1.amazonaws.com.cn/");
        assert!(spec(
            &[
                ("aws_role_name", "r"),
                ("aws_access_key_id", "a"),
                ("aws_secret_access_key", "b"),
                ("aws_sts_endpoint", "ftp://x/"),
            ],
            &[]
        )
        .is_err());
        assert_eq!(
            region_of_sts_url("https://vpce-1.sts.eu-west-3.vpce.amazonaws.com/"),
            Some("eu-west-3")
        );
        assert_eq!(region_of_sts_url("https://sts.amazonaws.com/"), None);
        assert_eq!(region_of_sts_url("http://127.0.0.1:1/"), None);
    }

    #[test]
    fn web_identity_from_parameters_and_from_the_environment() {
        let s = spec(
            &[
                ("aws_web_identity_token", "oidc-token-1"),
                ("aws_role_name", "arn:aws:iam::1:role/w"),
                ("aws_session_name", "s"),
            ],
            &[],
        )
        .unwrap();
        assert!(matches!(
            &s.source,
            AwsSource::WebIdentity { token: TokenSource::Inline(t), role_arn, .. }
                if t.expose() == "oidc-token-1" && role_arn == "arn:aws:iam::1:role/w"
        ));
        assert_eq!(s.secrets(), vec!["oidc-token-1"]);
        // The role may come from AWS_ROLE_ARN.
        let s = spec(
            &[("aws_web_identity_token", "t")],
            &[("AWS_ROLE_ARN", "arn:aws:iam::1:role/env")],
        )
        .unwrap();
        assert!(
            matches!(&s.source, AwsSource::WebIdentity { role_arn, .. } if role_arn == "arn:aws:iam::1:role/env")
        );
        // The standard chain's IRSA variables.
        let s = spec(
            &[],
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/irsa"),
                ("AWS_ROLE_SESSION_NAME", "pod"),
            ],
        )
        .unwrap();
        assert!(matches!(
            &s.source,
            AwsSource::WebIdentity { token: TokenSource::File(p), session_name: Some(n), .. }
                if p == &PathBuf::from("/var/run/token") && n == "pod"
        ));
    }

    #[test]
    fn container_sources() {
        let s = spec(
            &[],
            &[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds/abc")],
        )
        .unwrap();
        assert_eq!(
            s.source,
            AwsSource::Container {
                url: "http://169.254.170.2/v2/creds/abc".into(),
                authorization: None
            }
        );
        let s = spec(
            &[],
            &[
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://127.0.0.1:1/creds",
                ),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth-1"),
            ],
        )
        .unwrap();
        assert!(
            matches!(&s.source, AwsSource::Container { authorization: Some(TokenSource::Inline(t)), .. } if t.expose() == "auth-1")
        );
        for bad in [
            "http://10.0.0.1/creds",
            "http://example.com/creds",
            "file:///etc/x",
        ] {
            assert!(
                spec(&[], &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", bad)]).is_err(),
                "{bad}"
            );
        }
        assert!(spec(
            &[],
            &[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "https://creds.example/x"
            )]
        )
        .is_ok());
        assert!(spec(
            &[],
            &[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://[fd00:ec2::23]/x"
            )]
        )
        .is_ok());
    }

    #[test]
    fn instance_metadata_last_unless_disabled() {
        let s = spec(&[], &[]).unwrap();
        assert_eq!(
            s.source,
            AwsSource::InstanceMetadata {
                endpoint: "http://169.254.169.254".into()
            }
        );
        let s = spec(&[("aws_imds_endpoint", "http://127.0.0.1:5/")], &[]).unwrap();
        assert_eq!(
            s.source,
            AwsSource::InstanceMetadata {
                endpoint: "http://127.0.0.1:5".into()
            }
        );
        let e = spec(&[], &[("AWS_EC2_METADATA_DISABLED", "true")]).unwrap_err();
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn profiles_are_refused_clearly() {
        let e = spec(&[("aws_profile_name", "dev")], &[]).unwrap_err();
        assert!(e.to_string().contains("aws_profile_name"), "{e}");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let s = spec(
            &[
                ("aws_access_key_id", "AKIAVISIBLE"),
                ("aws_secret_access_key", "very-secret-key"),
                ("aws_session_token", "very-secret-token"),
            ],
            &[],
        )
        .unwrap();
        let shown = format!("{s:?} {:?} {}", s.ready().unwrap(), s.label());
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}
