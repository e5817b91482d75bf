//! EC2 instance metadata, IMDSv2: a session token first (`PUT /latest/api/token`), then the
//! instance profile's role name and its credentials, each asked with that token.

use super::client::Http;
use super::{Credential, CredentialError};

pub(crate) const ORIGIN: &str = "EC2 instance metadata";
/// The session token's lifetime asked for (the SDKs' default, six hours); one token serves the
/// two reads that follow it.
const TOKEN_TTL_SECONDS: &str = "21600";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

pub(crate) async fn fetch(http: &Http, endpoint: &str) -> Result<Credential, CredentialError> {
    let token_url = format!("{endpoint}/latest/api/token");
    let answer = http
        .call(
            http::Method::PUT,
            &token_url,
            &[("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)],
            vec![],
        )
        .await
        .map_err(|e| e.into_credential_error(ORIGIN, &token_url))?;
    if answer.status != 200 {
        return Err(CredentialError::from_status(
            ORIGIN,
            &token_url,
            answer.status,
            "the session token was refused (IMDSv2 disabled, or the hop limit too low for a container)",
            false,
        ));
    }
    let token = answer.text().trim().to_owned();
    if token.is_empty() {
        return Err(CredentialError::bad_answer(
            ORIGIN,
            &token_url,
            "an empty session token",
        ));
    }
    let masked = |e: CredentialError| e.masked(&[&token]);
    let list_url = format!("{endpoint}{CREDENTIALS_PATH}");
    let headers = [("x-aws-ec2-metadata-token", token.as_str())];
    let answer = http
        .call(http::Method::GET, &list_url, &headers, vec![])
        .await
        .map_err(|e| masked(e.into_credential_error(ORIGIN, &list_url)))?;
    if answer.status == 404 {
        return Err(CredentialError::from_status(
            ORIGIN,
            &list_url,
            404,
            "no IAM role is attached to this instance",
            false,
        ));
    }
    if answer.status != 200 {
        return Err(masked(CredentialError::from_status(
            ORIGIN,
            &list_url,
            answer.status,
            &answer.text(),
            false,
        )));
    }
    let text = answer.text();
    let role = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // The role name goes into the next URL's path.
    let valid = !role.is_empty()
        && role.len() <= 128
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !valid {
        return Err(CredentialError::bad_answer(
            ORIGIN,
            &list_url,
            "no usable role name in the answer",
        ));
    }
    let creds_url = format!("{list_url}{role}");
    let answer = http
        .call(http::Method::GET, &creds_url, &headers, vec![])
        .await
        .map_err(|e| masked(e.into_credential_error(ORIGIN, &creds_url)))?;
    if answer.status != 200 {
        return Err(masked(CredentialError::from_status(
            ORIGIN,
            &creds_url,
            answer.status,
            &answer.text(),
            false,
        )));
    }
    super::container::read_json(ORIGIN, &creds_url, &answer.body).map_err(masked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{block_on, rfc3339_after, test_tls, Fake, Reply};

    #[test]
    fn token_then_role_then_credentials() {
        let body = format!(
            r#"{{"Code":"Success","AccessKeyId":"ASIAI","SecretAccessKey":"i-secret","Token":"i-token","Expiration":"{}"}}"#,
            rfc3339_after(6 * 3600)
        );
        let fake = Fake::start(move |_, seen| {
            let token_ok = seen.header("x-aws-ec2-metadata-token") == Some("imds-session-1");
            match (seen.method.as_str(), seen.target.as_str()) {
                ("PUT", "/latest/api/token")
                    if seen.header("x-aws-ec2-metadata-token-ttl-seconds") == Some("21600") =>
                {
                    Reply::ok("imds-session-1")
                }
                ("GET", "/latest/meta-data/iam/security-credentials/") if token_ok => {
                    Reply::ok("web-role\n")
                }
                ("GET", "/latest/meta-data/iam/security-credentials/web-role") if token_ok => {
                    Reply::ok(body.clone())
                }
                _ => Reply::status(401, ""),
            }
        });
        let endpoint = fake.url("");
        let c = block_on(fetch(&Http::new(&test_tls()), &endpoint)).unwrap();
        let k = c.aws().unwrap();
        assert_eq!(
            (k.access_key_id(), k.secret_access_key(), k.session_token()),
            ("ASIAI", "i-secret", Some("i-token"))
        );
        assert!(c.expires_at().is_some());
        assert_eq!(fake.hits(), 3);
    }

    #[test]
    fn no_role_is_a_refusal_and_no_metadata_service_is_unavailable() {
        let fake = Fake::start(|_, seen| match seen.method.as_str() {
            "PUT" => Reply::ok("t"),
            _ => Reply::status(404, "not found"),
        });
        let e = block_on(fetch(&Http::new(&test_tls()), &fake.url(""))).unwrap_err();
        assert_eq!(e.status(), 401, "{e}");
        assert!(e.to_string().contains("no IAM role"), "{e}");
        let closed = crate::upstream::credentials::testutil::closed_port_url();
        let e = block_on(fetch(&Http::new(&test_tls()), closed.trim_end_matches('/'))).unwrap_err();
        assert_eq!(e.status(), 502, "{e}");
    }

    #[test]
    fn a_strange_role_name_is_not_put_into_a_url() {
        let fake = Fake::start(|_, seen| match seen.method.as_str() {
            "PUT" => Reply::ok("t"),
            _ => Reply::ok("../../latest/user-data"),
        });
        let e = block_on(fetch(&Http::new(&test_tls()), &fake.url(""))).unwrap_err();
        assert!(matches!(e, CredentialError::BadAnswer { .. }), "{e}");
        assert_eq!(fake.hits(), 2);
    }
}
