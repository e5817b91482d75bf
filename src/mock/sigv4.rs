//! The mock checks AWS Signature V4 the way AWS does, for end-to-end tests of the gateway's
//! signing: with `LLMUX_MOCK_AWS_KEYS="KEY_ID:SECRET,..."` in its environment, a request
//! signed `AWS4-HMAC-SHA256` is signed again here from the bytes that arrived (the signed
//! headers, the body, the date it names) with the secret of its key id, and refused with
//! AWS's 403 when the signatures differ or the key is unknown.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::http1::Request;
use crate::upstream::credentials::{sign_aws, AwsCredentials};

/// Key id → secret, from the environment.
fn keys() -> &'static HashMap<String, String> {
    static KEYS: OnceLock<HashMap<String, String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::env::var("LLMUX_MOCK_AWS_KEYS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once(':'))
            .map(|(k, s)| (k.trim().to_owned(), s.trim().to_owned()))
            .collect()
    })
}

/// The verdict on a request's signature.
pub enum Verdict {
    /// Not signed with SigV4, or no keys configured: nothing to check.
    Unchecked,
    /// Signed correctly with this key id.
    Valid(String),
    /// AWS's error type and message.
    Refused(&'static str, String),
}

pub fn check(req: &Request) -> Verdict {
    let Some(auth) = req.header("authorization") else {
        return Verdict::Unchecked;
    };
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Verdict::Unchecked;
    };
    if keys().is_empty() {
        return Verdict::Unchecked;
    }
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or("")
    };
    let scope: Vec<&str> = field("Credential=").split('/').collect();
    let [key_id, _date, region, service, _] = scope[..] else {
        return Verdict::Refused("IncompleteSignatureException", "bad Credential".into());
    };
    let Some(secret) = keys().get(key_id) else {
        return Verdict::Refused(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        );
    };
    let Some(time) = req.header("x-amz-date").and_then(parse_amz_date) else {
        return Verdict::Refused("IncompleteSignatureException", "no x-amz-date".into());
    };
    let host = req.header("host").unwrap_or("");
    let url = match req.query() {
        Some(q) => format!("http://{host}{}?{q}", req.path()),
        None => format!("http://{host}{}", req.path()),
    };
    let signed: Vec<(&str, &str)> = field("SignedHeaders=")
        .split(';')
        .filter(|h| !matches!(*h, "host" | "x-amz-date" | "x-amz-security-token"))
        .filter_map(|h| req.header(h).map(|v| (h, v)))
        .collect();
    let token = req.header("x-amz-security-token").map(str::to_owned);
    let creds = AwsCredentials::new(key_id.to_owned(), secret.clone(), token);
    let again = sign_aws(
        &creds,
        region,
        service,
        req.method().as_str(),
        &url,
        &signed,
        &req.body,
        time,
    );
    match again {
        Ok(h) if h.iter().any(|(k, v)| k == "authorization" && v == auth) => {
            Verdict::Valid(key_id.to_owned())
        }
        _ => Verdict::Refused(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.".into(),
        ),
    }
}

/// `20150830T123600Z`.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !s.is_ascii() {
        return None;
    }
    crate::upstream::credentials::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn amz_dates_parse() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_440_938_160
        );
        assert!(parse_amz_date("2015-08-30").is_none());
    }
}
