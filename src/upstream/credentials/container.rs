//! The container credential endpoint (ECS task roles, EKS Pod Identity): one GET, with the
//! authorization token when the environment gives one, answering the JSON the instance
//! metadata service answers too.

use serde::Deserialize;

use super::client::Http;
use super::{AwsCredentials, Credential, CredentialError, CredentialValue, Secret};

pub(crate) const ORIGIN: &str = "container credentials";

pub(crate) async fn fetch(
    http: &Http,
    url: &str,
    authorization: Option<&Secret>,
) -> Result<Credential, CredentialError> {
    let mut headers = vec![("accept", "application/json")];
    if let Some(a) = authorization {
        headers.push(("authorization", a.expose()));
    }
    let answer = http
        .call(http::Method::GET, url, &headers, vec![])
        .await
        .map_err(|e| e.into_credential_error(ORIGIN, url))?;
    if answer.status != 200 {
        return Err(CredentialError::from_status(
            ORIGIN,
            url,
            answer.status,
            &answer.text(),
            false,
        ));
    }
    read_json(ORIGIN, url, &answer.body)
}

/// The credentials JSON of the container endpoint and of instance metadata:
/// `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}` (instance metadata adds
/// `"Code": "Success"`).
pub(crate) fn read_json(
    origin: &'static str,
    endpoint: &str,
    body: &[u8],
) -> Result<Credential, CredentialError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
        expiration: Option<String>,
        code: Option<String>,
        message: Option<String>,
    }
    // serde's message is not kept: it can quote the value it choked on.
    let a: Answer = serde_json::from_slice(body).map_err(|e| {
        CredentialError::bad_answer(
            origin,
            endpoint,
            format!(
                "not a credentials JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if let Some(code) = a.code.as_deref().filter(|c| *c != "Success") {
        let message = a.message.as_deref().unwrap_or("");
        return Err(CredentialError::from_status(
            origin,
            endpoint,
            200,
            &format!("{code}: {message}"),
            false,
        ));
    }
    let (Some(key_id), Some(secret)) = (
        a.access_key_id.filter(|v| !v.trim().is_empty()),
        a.secret_access_key.filter(|v| !v.trim().is_empty()),
    ) else {
        return Err(CredentialError::bad_answer(
            origin,
            endpoint,
            "no AccessKeyId and SecretAccessKey in it",
        ));
    };
    let keys = CredentialValue::Aws(AwsCredentials::new(
        key_id.trim(),
        secret.trim(),
        a.token.filter(|t| !t.trim().is_empty()),
    ));
    // Without an expiration the SDKs keep such keys for good; so does this.
    let Some(expiration) = a.expiration else {
        return Ok(Credential::lasting(keys));
    };
    let expires_at = super::time::parse_rfc3339(&expiration).ok_or_else(|| {
        CredentialError::bad_answer(
            origin,
            endpoint,
            format!(
                "Expiration `{}` is not a timestamp",
                crate::util::clip(&expiration)
            ),
        )
    })?;
    let now = std::time::SystemTime::now();
    if expires_at <= now {
        return Err(CredentialError::bad_answer(
            origin,
            endpoint,
            format!("the credentials expired already ({expiration})"),
        ));
    }
    Ok(Credential::expiring(keys, now, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{block_on, rfc3339_after, test_tls, Fake, Reply};

    pub fn creds_json(key_id: &str, secret: &str, token: &str, expires: &str) -> String {
        format!(
            r#"{{"Code":"Success","LastUpdated":"2024-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"{key_id}","SecretAccessKey":"{secret}","Token":"{token}","Expiration":"{expires}"}}"#
        )
    }

    #[test]
    fn fetches_with_the_authorization_token() {
        let body = creds_json("ASIAC", "c-secret", "c-token", &rfc3339_after(3600));
        let fake = Fake::start(move |_, _| Reply::ok(body.clone()));
        let c = block_on(fetch(
            &Http::new(&test_tls()),
            &fake.url("/v2/credentials/x"),
            Some(&Secret::new("auth-token-1")),
        ))
        .unwrap();
        let k = c.aws().unwrap();
        assert_eq!(
            (k.access_key_id(), k.secret_access_key(), k.session_token()),
            ("ASIAC", "c-secret", Some("c-token"))
        );
        let seen = fake.next_seen();
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.target, "/v2/credentials/x");
        assert_eq!(seen.header("authorization"), Some("auth-token-1"));
    }

    #[test]
    fn errors_never_quote_the_answer_values() {
        let e = read_json(
            ORIGIN,
            "http://x/",
            br#"{"AccessKeyId": 12345678, "SecretAccessKey": "leaky-secret"}"#,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("12345678"), "{e}");
        let e = read_json(
            ORIGIN,
            "http://x/",
            br#"{"Code":"Failed","Message":"no role"}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 401);
        let e = read_json(ORIGIN, "http://x/", br#"{"AccessKeyId":"a"}"#).unwrap_err();
        assert!(matches!(e, CredentialError::BadAnswer { .. }));
        let lasting = read_json(
            ORIGIN,
            "http://x/",
            br#"{"AccessKeyId":"a","SecretAccessKey":"b"}"#,
        )
        .unwrap();
        assert!(lasting.expires_at().is_none());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(read_json(ORIGIN, "http://x/", deep.as_bytes()).is_err());
    }
}
