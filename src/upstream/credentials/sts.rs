//! AWS STS: AssumeRole (signed with base credentials) and AssumeRoleWithWebIdentity
//! (unsigned), through the query API (`Action=…&Version=2011-06-15` as a form body), and the
//! few elements of its XML answer that matter, read by a small scanner over an answer already
//! bounded to [`super::client::MAX_ANSWER_BYTES`] (no XML library: STS's answers are flat and
//! fixed, and nothing else here speaks XML).

use std::time::SystemTime;

use super::client::{form, Answer, Http, FORM};
use super::{AwsCredentials, Credential, CredentialError, CredentialValue, Secret, StsEndpoint};

pub(crate) const ASSUME_ROLE: &str = "STS AssumeRole";
pub(crate) const WEB_IDENTITY: &str = "STS AssumeRoleWithWebIdentity";
const VERSION: &str = "2011-06-15";

pub(crate) async fn assume_role(
    http: &Http,
    sts: &StsEndpoint,
    base: &AwsCredentials,
    role_arn: &str,
    session_name: &str,
    external_id: Option<&str>,
) -> Result<Credential, CredentialError> {
    let mut fields = vec![
        ("Action", "AssumeRole"),
        ("Version", VERSION),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
    ];
    if let Some(id) = external_id {
        fields.push(("ExternalId", id));
    }
    let body = form(&fields);
    let mut headers = vec![("content-type", FORM)];
    let signature = super::sign_aws(
        base,
        &sts.region,
        "sts",
        "POST",
        &sts.url,
        &headers,
        &body,
        SystemTime::now(),
    )?;
    headers.extend(signature.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let secrets: Vec<&str> = [Some(base.secret_access_key()), base.session_token()]
        .into_iter()
        .flatten()
        .collect();
    let answer = http
        .call(http::Method::POST, &sts.url, &headers, body)
        .await
        .map_err(|e| e.into_credential_error(ASSUME_ROLE, &sts.url))?;
    read_answer(ASSUME_ROLE, &sts.url, &answer).map_err(|e| e.masked(&secrets))
}

pub(crate) async fn assume_role_with_web_identity(
    http: &Http,
    sts: &StsEndpoint,
    token: &Secret,
    role_arn: &str,
    session_name: &str,
) -> Result<Credential, CredentialError> {
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", VERSION),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token.expose()),
    ]);
    let answer = http
        .call(
            http::Method::POST,
            &sts.url,
            &[("content-type", FORM)],
            body,
        )
        .await
        .map_err(|e| e.into_credential_error(WEB_IDENTITY, &sts.url))?;
    read_answer(WEB_IDENTITY, &sts.url, &answer).map_err(|e| e.masked(&[token.expose()]))
}

/// STS error codes that say "try again later" rather than "no".
const RETRYABLE: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
    // AssumeRoleWithWebIdentity: STS could not reach the identity provider.
    "IDPCommunicationError",
];

fn read_answer(
    origin: &'static str,
    endpoint: &str,
    answer: &Answer,
) -> Result<Credential, CredentialError> {
    let text = answer.text();
    if answer.status != 200 {
        let error = element(&text, "Error").unwrap_or(&text);
        let code = element(error, "Code").map(unescape);
        let message = element(error, "Message").map(unescape);
        let throttled = code.as_deref().is_some_and(|c| RETRYABLE.contains(&c));
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            (None, _) => "no error code in the answer".to_owned(),
        };
        return Err(CredentialError::from_status(
            origin,
            endpoint,
            answer.status,
            &detail,
            throttled,
        ));
    }
    let bad = |why: String| CredentialError::bad_answer(origin, endpoint, why);
    let creds = element(&text, "Credentials").ok_or_else(|| bad("no Credentials in it".into()))?;
    let field = |name: &str| {
        element(creds, name)
            .map(unescape)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| bad(format!("no {name} in its Credentials")))
    };
    let (key_id, secret, token) = (
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        field("SessionToken")?,
    );
    let expiration = field("Expiration")?;
    let expires_at = super::time::parse_rfc3339(&expiration).ok_or_else(|| {
        bad(format!(
            "Expiration `{}` is not a timestamp",
            crate::util::clip(&expiration)
        ))
    })?;
    let now = SystemTime::now();
    if expires_at <= now {
        return Err(bad(format!(
            "the credentials expired already ({expiration})"
        )));
    }
    Ok(Credential::expiring(
        CredentialValue::Aws(AwsCredentials::new(
            key_id.trim(),
            secret.trim(),
            Some(token.trim().to_owned()),
        )),
        now,
        expires_at,
    ))
}

/// The text inside the first element named `name` (`<name>…</name>`, attributes allowed),
/// not unescaped. `None` if there is none or it is not closed.
pub(crate) fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    while let Some(i) = xml.get(from..)?.find(&open) {
        let after = from + i + open.len();
        let rest = xml.get(after..)?;
        match rest.bytes().next() {
            Some(b'>') => {
                let body = &rest[1..];
                return body.find(&close).map(|end| &body[..end]);
            }
            Some(b' ' | b'\t' | b'\r' | b'\n' | b'/') => {
                let gt = rest.find('>')?;
                if rest[..gt].ends_with('/') {
                    return Some("");
                }
                let body = &rest[gt + 1..];
                return body.find(&close).map(|end| &body[..end]);
            }
            // `<CredentialsX`: a longer name; look further.
            _ => from = after,
        }
    }
    None
}

/// XML character references and the five predefined entities; anything else is kept as is.
pub(crate) fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|e| *e <= 12) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..end];
        let ch = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{
        block_on, rfc3339_after, signature_checks, sts_answer, test_tls, Fake, Reply,
    };

    #[test]
    fn assume_role_is_signed_with_the_base_credentials() {
        let base = AwsCredentials::new("AKIABASE", "base-secret-1", Some("base-token-1".into()));
        let expires = rfc3339_after(3600);
        let answer = sts_answer("AssumeRole", "ASIANEW", "new-secret", "new-token", &expires);
        let fake = Fake::start(move |_, _| Reply::ok(answer.clone()));
        let sts = StsEndpoint {
            url: fake.url("/"),
            region: "eu-west-1".into(),
        };
        let http = Http::new(&test_tls());
        let c = block_on(assume_role(
            &http,
            &sts,
            &base,
            "arn:aws:iam::1:role/r",
            "sess-1",
            Some("ext-1"),
        ))
        .unwrap();
        let k = c.aws().unwrap();
        assert_eq!(
            (k.access_key_id(), k.secret_access_key(), k.session_token()),
            ("ASIANEW", "new-secret", Some("new-token"))
        );
        assert!(c.expires_at().is_some());
        let seen = fake.next_seen();
        assert_eq!(seen.method, "POST");
        let form = seen.form();
        assert_eq!(form["Action"], "AssumeRole");
        assert_eq!(form["Version"], "2011-06-15");
        assert_eq!(form["RoleArn"], "arn:aws:iam::1:role/r");
        assert_eq!(form["RoleSessionName"], "sess-1");
        assert_eq!(form["ExternalId"], "ext-1");
        assert_eq!(seen.header("x-amz-security-token"), Some("base-token-1"));
        let authz = seen.header("authorization").unwrap();
        assert!(
            authz.starts_with("AWS4-HMAC-SHA256 Credential=AKIABASE/")
                && authz.contains("/eu-west-1/sts/aws4_request"),
            "{authz}"
        );
        assert!(signature_checks(&seen, &sts.url, &base, "eu-west-1"));
        // A different secret would not have made this signature.
        let other = AwsCredentials::new("AKIABASE", "another", Some("base-token-1".into()));
        assert!(!signature_checks(&seen, &sts.url, &other, "eu-west-1"));
    }

    #[test]
    fn web_identity_is_unsigned_and_carries_the_token() {
        let expires = rfc3339_after(3600);
        let answer = sts_answer(
            "AssumeRoleWithWebIdentity",
            "ASIAW",
            "w-secret",
            "w-token",
            &expires,
        );
        let fake = Fake::start(move |_, _| Reply::ok(answer.clone()));
        let sts = StsEndpoint {
            url: fake.url("/"),
            region: "us-east-1".into(),
        };
        let c = block_on(assume_role_with_web_identity(
            &Http::new(&test_tls()),
            &sts,
            &Secret::new("oidc.jwt.value"),
            "arn:aws:iam::1:role/w",
            "s",
        ))
        .unwrap();
        assert_eq!(c.aws().unwrap().access_key_id(), "ASIAW");
        let seen = fake.next_seen();
        assert!(seen.header("authorization").is_none());
        let form = seen.form();
        assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(form["WebIdentityToken"], "oidc.jwt.value");
    }

    #[test]
    fn refusals_throttling_and_junk_are_told_apart() {
        let http = Http::new(&test_tls());
        let call = |status: u16, body: &str| {
            let body = body.to_owned();
            let fake = Fake::start(move |_, _| Reply::status(status, body.clone()));
            let sts = StsEndpoint {
                url: fake.url("/"),
                region: "us-east-1".into(),
            };
            block_on(assume_role_with_web_identity(
                &http,
                &sts,
                &Secret::new("the-oidc-token-xyz"),
                "arn:aws:iam::1:role/w",
                "s",
            ))
            .unwrap_err()
        };
        let err = |code: &str, msg: &str| {
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>1</RequestId></ErrorResponse>")
        };
        let refused = call(
            400,
            &err(
                "InvalidIdentityToken",
                "token the-oidc-token-xyz is bad &amp; old",
            ),
        );
        assert_eq!(refused.status(), 401);
        let text = refused.to_string();
        assert!(
            text.contains("InvalidIdentityToken: token [redacted] is bad & old"),
            "{text}"
        );
        assert!(!text.contains("the-oidc-token-xyz"));
        let throttled = call(400, &err("Throttling", "Rate exceeded"));
        assert_eq!(throttled.status(), 502, "{throttled}");
        assert_eq!(call(503, "").status(), 502);
        let junk = call(200, "<html>captive portal</html>");
        assert!(matches!(junk, CredentialError::BadAnswer { .. }), "{junk}");
        let expired = call(
            200,
            &sts_answer(
                "AssumeRoleWithWebIdentity",
                "A",
                "s",
                "t",
                "2001-01-01T00:00:00Z",
            ),
        );
        assert!(
            matches!(expired, CredentialError::BadAnswer { .. }),
            "{expired}"
        );
        let bad_time = call(
            200,
            &sts_answer("AssumeRoleWithWebIdentity", "A", "s", "t", "soon"),
        );
        assert!(
            bad_time.to_string().contains("not a timestamp"),
            "{bad_time}"
        );
    }

    #[test]
    fn the_scanner_finds_elements_and_nothing_else() {
        let xml = "<a><CredentialsX>no</CredentialsX><Credentials attr=\"1\"><K>v&lt;1&#65;&#x42;&bogus;</K></Credentials><E/></a>";
        let c = element(xml, "Credentials").unwrap();
        assert_eq!(unescape(element(c, "K").unwrap()), "v<1AB&bogus;");
        assert_eq!(element(xml, "E"), Some(""));
        assert_eq!(element(xml, "Missing"), None);
        assert_eq!(element("<K>unclosed", "K"), None);
        assert_eq!(element("<K", "K"), None);
        assert_eq!(
            unescape("a & b &#xZZ; &#1114112;"),
            "a & b &#xZZ; &#1114112;"
        );
        // Linear in the input: a long run of almost-matches ends.
        let long = "<Credential".repeat(5000);
        assert_eq!(element(&long, "Credentials"), None);
    }
}
