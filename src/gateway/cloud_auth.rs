//! Cloud credentials on an upstream request: an AWS SigV4 signature over the exact bytes
//! sent, or a bearer token (Google OAuth2, an exchanged key). The credential is the cached
//! one (a lock-free read); only the very first requests of a deployment, or requests after
//! every refresh failed until expiry, wait for the control plane's fetch.

use std::time::SystemTime;

use crate::api::{ApiError, ErrorKind};
use crate::config::Deployment;
use crate::dsl::{Auth, Provider};
use crate::gateway::adapter::PreparedRequest;
use crate::router::Failure;
use crate::upstream::credentials::{self, CredentialError};

/// The headers that authenticate this attempt (none for a deployment without cloud
/// credentials).
pub async fn headers(
    dep: &Deployment,
    provider: &Provider,
    prepared: &PreparedRequest<'_>,
) -> Result<Vec<(String, String)>, Failure> {
    let Some(creds) = &dep.credentials else {
        return Ok(Vec::new());
    };
    // A file that wrote its own authorization (a ready token the deployment gives) keeps it.
    let bearer_kind = !matches!(provider.auth(), Auth::AwsSigV4 { .. });
    if bearer_kind
        && prepared
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        return Ok(Vec::new());
    }
    let handle = creds.handle();
    let cred = match handle.current() {
        Some(c) => c,
        None => handle.get().await.map_err(|e| failure(&e, &dep.id))?,
    };
    match provider.auth() {
        Auth::AwsSigV4 { service } => {
            let (Some(aws), Some(region)) = (cred.aws(), creds.region.as_deref()) else {
                return Err(Failure::from(ApiError::new(
                    ErrorKind::Internal,
                    format!(
                        "Deployment `{}`: AWS signing needs credentials and a region (aws_region_name)",
                        dep.id
                    ),
                )));
            };
            credentials::sign_aws(
                aws,
                region,
                service,
                &prepared.method,
                prepared.url.as_str(),
                &prepared.headers,
                &prepared.body,
                SystemTime::now(),
            )
            .map_err(|e| failure(&e, &dep.id))
        }
        _ => match cred.bearer() {
            Some(token) => Ok(vec![(
                "authorization".to_owned(),
                format!("Bearer {token}"),
            )]),
            None => Err(Failure::from(ApiError::new(
                ErrorKind::Internal,
                format!(
                    "Deployment `{}`: its credential is not a bearer token",
                    dep.id
                ),
            ))),
        },
    }
}

/// 401 for credentials that are wrong or refused, 502 when their endpoint failed: either way
/// naming the deployment, never a secret (the error's text is masked where it is made).
fn failure(e: &CredentialError, deployment: &str) -> Failure {
    let kind = if e.status() == 401 {
        ErrorKind::Authentication
    } else {
        ErrorKind::BadGateway
    };
    Failure::from(ApiError::new(kind, e.for_deployment(deployment)))
}
