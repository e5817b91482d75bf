//! OAuth2-style token answers (RFC 6749 §5): `{"access_token", "expires_in"}` on success,
//! `{"error", "error_description"}` on failure — Google's token endpoint and metadata server,
//! and API-key exchange endpoints alike.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::client::Answer;
use super::{Credential, CredentialError, CredentialValue, Secret};

/// The lifetime assumed when an answer says none (RFC 6749 leaves `expires_in` optional; an
/// hour is what Google and IBM issue).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Reads a token endpoint's answer into a bearer credential.
pub(crate) fn read_token(
    origin: &'static str,
    endpoint: &str,
    answer: &Answer,
) -> Result<Credential, CredentialError> {
    if answer.status != 200 {
        let (detail, retry) = error_detail(&answer.body);
        return Err(CredentialError::from_status(
            origin,
            endpoint,
            answer.status,
            &detail.unwrap_or_else(|| answer.text().into_owned()),
            retry,
        ));
    }
    #[derive(Deserialize)]
    struct Token {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        /// Unix seconds (IBM Cloud IAM sends it beside `expires_in`).
        expiration: Option<serde_json::Value>,
    }
    // serde's message is not kept: it can quote the value it choked on.
    let t: Token = serde_json::from_slice(&answer.body).map_err(|e| {
        CredentialError::bad_answer(
            origin,
            endpoint,
            format!(
                "not a token JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let token = t
        .access_token
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CredentialError::bad_answer(origin, endpoint, "no access_token in it"))?;
    let now = SystemTime::now();
    let expires_at = match (
        seconds(t.expires_in.as_ref()),
        seconds(t.expiration.as_ref()),
    ) {
        (Some(secs), _) if secs > 0 => now.checked_add(Duration::from_secs(secs.unsigned_abs())),
        (_, Some(unix)) => super::time::from_unix(unix),
        (None, None) => now.checked_add(DEFAULT_LIFETIME),
        (Some(_), None) => None,
    };
    let expires_at = expires_at.filter(|e| *e > now).ok_or_else(|| {
        CredentialError::bad_answer(origin, endpoint, "the token it issued has already expired")
    })?;
    Ok(Credential::expiring(
        CredentialValue::Bearer(Secret::new(token)),
        now,
        expires_at,
    ))
}

/// A number of seconds, as a JSON number or a string of digits.
fn seconds(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What an error answer says (`error: error_description`, or IBM's
/// `errorCode: errorMessage`), and whether it asks to retry later.
fn error_detail(body: &[u8]) -> (Option<String>, bool) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, false);
    };
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    let (code, description) = match text("error") {
        Some(code) => (Some(code), text("error_description")),
        None => (text("errorCode"), text("errorMessage")),
    };
    let retry = matches!(code, Some("temporarily_unavailable" | "slow_down"));
    let detail = match (code, description) {
        (Some(c), Some(d)) => Some(format!("{c}: {d}")),
        (Some(c), None) => Some(c.to_owned()),
        (None, Some(d)) => Some(d.to_owned()),
        (None, None) => None,
    };
    (detail, retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn lifetimes_from_expires_in_or_expiration() {
        let now = SystemTime::now();
        let c = read_token(
            "t",
            "http://e/",
            &answer(
                200,
                r#"{"access_token":"a1","expires_in":3599,"token_type":"Bearer"}"#,
            ),
        )
        .unwrap();
        assert_eq!(c.bearer(), Some("a1"));
        let left = c.expires_at().unwrap().duration_since(now).unwrap();
        assert!(
            left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
            "{left:?}"
        );
        let later = super::super::time::unix(now) + 7200;
        let c = read_token(
            "t",
            "http://e/",
            &answer(
                200,
                &format!(r#"{{"access_token":"a2","expiration":{later}}}"#),
            ),
        )
        .unwrap();
        assert_eq!(super::super::time::unix(c.expires_at().unwrap()), later);
        let c = read_token(
            "t",
            "http://e/",
            &answer(200, r#"{"access_token":"a3","expires_in":"60"}"#),
        )
        .unwrap();
        assert!(c.expires_at().unwrap() > now);
        let c = read_token("t", "http://e/", &answer(200, r#"{"access_token":"a4"}"#)).unwrap();
        assert!(c.expires_at().unwrap() > now + Duration::from_secs(3000));
    }

    #[test]
    fn errors_are_classified() {
        let e = read_token(
            "t",
            "http://e/",
            &answer(
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            ),
        )
        .unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(
            e.to_string()
                .contains("invalid_grant: Invalid JWT Signature."),
            "{e}"
        );
        let e = read_token("t", "http://e/", &answer(400, r#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found."}"#)).unwrap_err();
        assert!(
            e.to_string().contains("BXNIM0415E: Provided API key"),
            "{e}"
        );
        let e = read_token(
            "t",
            "http://e/",
            &answer(400, r#"{"error":"temporarily_unavailable"}"#),
        )
        .unwrap_err();
        assert_eq!(e.status(), 502);
        let e =
            read_token("t", "http://e/", &answer(200, r#"{"token_type":"Bearer"}"#)).unwrap_err();
        assert!(matches!(e, CredentialError::BadAnswer { .. }));
        let e = read_token(
            "t",
            "http://e/",
            &answer(200, r#"{"access_token":"x","expires_in":0}"#),
        )
        .unwrap_err();
        assert!(matches!(e, CredentialError::BadAnswer { .. }));
        let e = read_token(
            "t",
            "http://e/",
            &answer(200, r#"{"access_token":["sekrit-value"]}"#),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("sekrit"), "{e}");
    }
}
