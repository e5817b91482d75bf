//! AWS Signature Version 4 over the exact bytes of an upstream request, by the aws-sigv4
//! crate: a pure function of its inputs (no I/O, no runtime), so a shard signs its own
//! requests with a credential it read from its handle.
//!
//! Signed: the method, the URL's path (normalized and encoded twice, as every AWS service but
//! S3 expects) and query, the host (from the URL unless a `host` header is given), every given
//! header but `user-agent`, `x-amzn-trace-id`, `transfer-encoding` and the ones the signer
//! computes itself, the SHA-256 of the body, `x-amz-date`, and `x-amz-security-token` when the
//! credentials have a session token. The payload hash is signed as part of the canonical
//! request always; it is also sent as an `x-amz-content-sha256` header only when
//! [`SignOptions::content_sha256_header`] asks (S3-style services want it, others ignore it).

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;

use super::{AwsCredentials, CredentialError};

/// Headers the signer computes: values the caller passes for them are dropped, not signed.
const COMPUTED: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// How to sign beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// Also sign and return `x-amz-content-sha256` (the body's SHA-256 in hex).
    pub content_sha256_header: bool,
}

/// Signs a request: returns the headers to add to it (`x-amz-date`, `authorization`, and
/// `x-amz-security-token` when the credentials have a session token), names in lower case.
/// `headers` are the headers the request will be sent with (the ones listed in the module
/// docs are left out of the signature); `body` its exact bytes; `url` its absolute URL, as
/// sent (already percent-encoded).
#[allow(clippy::too_many_arguments)]
pub fn sign_aws<K: AsRef<str>, V: AsRef<str>>(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(K, V)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, CredentialError> {
    sign_aws_with(
        creds,
        region,
        service,
        method,
        url,
        headers,
        body,
        time,
        SignOptions::default(),
    )
}

/// [`sign_aws`] with options.
#[allow(clippy::too_many_arguments)]
pub fn sign_aws_with<K: AsRef<str>, V: AsRef<str>>(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(K, V)],
    body: &[u8],
    time: SystemTime,
    options: SignOptions,
) -> Result<Vec<(String, String)>, CredentialError> {
    let refuse = |why: String| CredentialError::invalid("SigV4 signing", why);
    // aws-sigv4 takes the host from the URL and assumes there is one.
    let uri: http::Uri = url
        .parse()
        .map_err(|e| refuse(format!("cannot sign a request to an invalid URL: {e}")))?;
    if uri.scheme().is_none() || uri.host().is_none_or(str::is_empty) {
        return Err(refuse("the URL to sign must be absolute".into()));
    }
    if region.is_empty() || service.is_empty() {
        return Err(refuse("a region and a service name are needed".into()));
    }
    let mut settings = SigningSettings::default();
    if options.content_sha256_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(creds.identity())
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| refuse(e.to_string()))?
        .into();
    let signed_headers = headers
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, _)| !COMPUTED.iter().any(|c| k.eq_ignore_ascii_case(c)));
    let request = SignableRequest::new(method, url, signed_headers, SignableBody::Bytes(body))
        .map_err(|e| refuse(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| refuse(e.to_string()))?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name().to_ascii_lowercase(), h.value().to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, UNIX_EPOCH};

    /// The suite's example keys (AWS's documentation example, not a real account).
    const SUITE_KEY_ID: &str = "AKIDEXAMPLE";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    struct Case {
        method: String,
        target: String,
        /// Headers as the request has them before signing.
        headers: Vec<(String, String)>,
        /// What the signer must add, as the suite's signed request has it.
        expected: Vec<(String, String)>,
        body: Vec<u8>,
        token: Option<String>,
        sign_body: bool,
    }

    fn fixture(case: &str, file: &str) -> Option<String> {
        let path: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "tests/fixtures/credentials/sigv4",
            case,
            file,
        ]
        .iter()
        .collect();
        std::fs::read_to_string(path).ok()
    }

    /// Reads a case of the suite: the signed request, less the headers the signer adds, is the
    /// request to sign; those headers are what it must add.
    fn case(name: &str) -> Case {
        let signed = fixture(name, "header-signed-request.txt").expect("signed request");
        let context: serde_json::Value =
            serde_json::from_str(&fixture(name, "context.json").expect("context")).unwrap();
        assert_eq!(context["region"], "us-east-1");
        assert_eq!(context["service"], "service");
        assert_eq!(context["timestamp"], "2015-08-30T12:36:00Z");
        assert_eq!(context["credentials"]["access_key_id"], SUITE_KEY_ID);
        assert_eq!(context["credentials"]["secret_access_key"], SUITE_SECRET);
        let (head, body) = signed.split_once("\n\n").expect("head and body");
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
        let mut headers = vec![];
        let mut expected = vec![];
        for line in lines {
            let (k, v) = line.split_once(':').expect("a header line");
            let k = k.to_ascii_lowercase();
            if COMPUTED.contains(&k.as_str()) {
                expected.push((k, v.to_owned()));
            } else {
                headers.push((k, v.to_owned()));
            }
        }
        expected.sort();
        Case {
            method: method.into(),
            target: target.into(),
            headers,
            expected,
            body: body.as_bytes().to_vec(),
            token: context["credentials"]["token"].as_str().map(str::to_owned),
            sign_body: context["sign_body"].as_bool().unwrap_or(false),
        }
    }

    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn run(name: &str) {
        let c = case(name);
        let creds = AwsCredentials::new(SUITE_KEY_ID, SUITE_SECRET, c.token.clone());
        let url = format!("https://example.amazonaws.com{}", c.target);
        let mut got = sign_aws_with(
            &creds,
            "us-east-1",
            "service",
            &c.method,
            &url,
            &c.headers,
            &c.body,
            suite_time(),
            SignOptions {
                content_sha256_header: c.sign_body,
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        got.sort();
        assert_eq!(got, c.expected, "{name}");
    }

    #[test]
    fn aws_suite_get_vanilla() {
        run("get-vanilla");
    }

    #[test]
    fn aws_suite_post_vanilla() {
        run("post-vanilla");
    }

    #[test]
    fn aws_suite_post_x_www_form_urlencoded() {
        run("post-x-www-form-urlencoded");
    }

    #[test]
    fn aws_suite_get_vanilla_query_order_key_case() {
        run("get-vanilla-query-order-key-case");
    }

    #[test]
    fn aws_suite_get_vanilla_with_session_token() {
        run("get-vanilla-with-session-token");
    }

    #[test]
    fn aws_suite_post_sts_header_before() {
        run("post-sts-header-before");
    }

    #[test]
    fn the_host_comes_from_the_url_when_no_header_gives_it() {
        let creds = AwsCredentials::new(SUITE_KEY_ID, SUITE_SECRET, None);
        let none: [(&str, &str); 0] = [];
        let got = sign_aws(
            &creds,
            "us-east-1",
            "service",
            "GET",
            "https://example.amazonaws.com/",
            &none,
            b"",
            suite_time(),
        )
        .unwrap();
        // get-vanilla's signature: the same canonical request.
        assert!(got.iter().any(|(k, v)| k == "authorization"
            && v.ends_with(
                "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )));
    }

    #[test]
    fn computed_headers_given_by_the_caller_are_not_signed() {
        let creds = AwsCredentials::new(SUITE_KEY_ID, SUITE_SECRET, None);
        let got = sign_aws(
            &creds,
            "us-east-1",
            "service",
            "GET",
            "https://example.amazonaws.com/",
            &[
                ("Authorization", "Bearer stale"),
                ("X-Amz-Date", "20000101T000000Z"),
                ("user-agent", "llmux"),
            ],
            b"",
            suite_time(),
        )
        .unwrap();
        let authz = &got.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(authz.contains("SignedHeaders=host;x-amz-date,"), "{authz}");
        assert!(got.contains(&("x-amz-date".into(), "20150830T123600Z".into())));
    }

    #[test]
    fn unusable_input_is_an_error_not_a_panic() {
        let creds = AwsCredentials::new(SUITE_KEY_ID, SUITE_SECRET, None);
        let none: [(&str, &str); 0] = [];
        for url in [
            "",
            "/relative",
            "example.com/x",
            "https://",
            "http://[::1/",
            "https:///x",
        ] {
            let r = sign_aws(
                &creds,
                "us-east-1",
                "s",
                "GET",
                url,
                &none,
                b"",
                suite_time(),
            );
            assert!(r.is_err(), "{url}");
        }
        let bad_header = sign_aws(
            &creds,
            "us-east-1",
            "s",
            "GET",
            "https://h/",
            &[("x-a", "line\nbreak")],
            b"",
            suite_time(),
        );
        assert!(bad_header.is_err());
        let no_region = sign_aws(
            &creds,
            "",
            "s",
            "GET",
            "https://h/",
            &none,
            b"",
            suite_time(),
        );
        assert!(no_region.is_err());
    }
}
