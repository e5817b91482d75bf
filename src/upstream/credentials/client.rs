//! The credential thread's HTTP client: hyper-util's client on LLMux's resolver
//! ([`crate::upstream::dns::hyper_connector`]) with rustls for `https` — the same stack as the
//! OTLP exporter's. Every call has a deadline and every answer a size bound.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::upstream::dns::{hyper_connector, HyperResolve};

/// The largest answer read from a credential endpoint (credentials and tokens are a few KiB).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest a credential call may take, connection and answer included.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS (and plain HTTP) connector on LLMux's resolver with the given rustls settings: the
/// control plane's HTTP clients are built on it.
pub fn https_connector(
    tls: &rustls::ClientConfig,
) -> hyper_rustls::HttpsConnector<HttpConnector<HyperResolve>> {
    let mut config = tls.clone();
    // The connector sets ALPN from the enabled versions (and refuses a preset one).
    config.alpn_protocols.clear();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(hyper_connector())
}

/// rustls with the webpki roots alone: what credential calls use until [`super::set_tls`]
/// hands them the upstream client's settings.
pub(crate) fn webpki_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<HyperResolve>>;

/// The client: cheap to clone (one connection pool behind it).
#[derive(Clone)]
pub(crate) struct Http {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

/// An endpoint's answer: status and whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// Why a call got no answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The request could not be built (a header value with a line break, a bad URL).
    Request(String),
    Unreachable(String),
    Timeout,
    TooLarge,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Request(e) => write!(f, "cannot build the request: {e}"),
            CallError::Unreachable(e) => write!(f, "{e}"),
            CallError::Timeout => write!(f, "no answer within {}s", CALL_TIMEOUT.as_secs()),
            CallError::TooLarge => write!(f, "answer larger than {MAX_ANSWER_BYTES} bytes"),
        }
    }
}

impl CallError {
    /// The error a source reports for this failure: a request it could not send is its own
    /// fault (invalid), an answer too large is unreadable, the rest is the endpoint's.
    pub fn into_credential_error(
        self,
        origin: &'static str,
        endpoint: &str,
    ) -> super::CredentialError {
        match self {
            CallError::TooLarge => {
                super::CredentialError::bad_answer(origin, endpoint, self.to_string())
            }
            CallError::Request(_) => super::CredentialError::invalid(
                origin,
                format!("{}: {self}", super::error::shown_endpoint(endpoint)),
            ),
            CallError::Unreachable(_) | CallError::Timeout => {
                super::CredentialError::unavailable(origin, endpoint, self.to_string())
            }
        }
    }
}

impl Http {
    pub fn new(tls: &rustls::ClientConfig) -> Self {
        Self::with_timeout(tls, CALL_TIMEOUT)
    }

    pub fn with_timeout(tls: &rustls::ClientConfig, timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            // Credential calls come minutes apart: a pooled connection would only go stale.
            .pool_max_idle_per_host(0)
            .build(https_connector(tls));
        Self { client, timeout }
    }

    /// Sends one request and reads the whole answer (at most [`MAX_ANSWER_BYTES`]), all
    /// within the client's deadline. Must run inside the credential thread's runtime.
    pub async fn call(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, CallError> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Request(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallError::Unreachable(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        CallError::TooLarge
                    } else {
                        CallError::Unreachable(format!("reading the answer: {e}"))
                    }
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout)?
    }
}

/// An error with its causes (hyper's top-level message alone is "client error (Connect)").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    // Bounded: a cycle in a source chain must not loop.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `application/x-www-form-urlencoded` text of `pairs` (every byte outside the unreserved set
/// percent-encoded, so `+` and `/` in a key survive).
pub(crate) fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        percent_encode(&mut out, k);
        out.push(b'=');
        percent_encode(&mut out, v);
    }
    out
}

fn percent_encode(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The content type of [`form`] bodies.
pub(crate) const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::credentials::testutil::{block_on, test_tls, Fake, Reply};

    #[test]
    fn form_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(
            form(&[("a b", "x+y/z=1&é"), ("k", "A-Z_a.z~0")]),
            b"a%20b=x%2By%2Fz%3D1%26%C3%A9&k=A-Z_a.z~0".to_vec()
        );
    }

    #[test]
    fn an_answer_past_the_bound_is_refused() {
        let fake = Fake::start(|_, _| Reply::ok("x".repeat(MAX_ANSWER_BYTES + 1)));
        let http = Http::new(&test_tls());
        let e = block_on(http.call(http::Method::GET, &fake.url("/"), &[], vec![])).unwrap_err();
        assert!(matches!(e, CallError::TooLarge), "{e:?}");
        let ok = Fake::start(|_, _| Reply::ok("x".repeat(MAX_ANSWER_BYTES)));
        let a = block_on(http.call(http::Method::GET, &ok.url("/"), &[], vec![])).unwrap();
        assert_eq!(a.body.len(), MAX_ANSWER_BYTES);
    }

    #[test]
    fn a_silent_endpoint_times_out() {
        let fake = Fake::silent();
        let http = Http::with_timeout(&test_tls(), Duration::from_millis(100));
        let e = block_on(http.call(http::Method::GET, &fake.url("/"), &[], vec![])).unwrap_err();
        assert!(matches!(e, CallError::Timeout), "{e:?}");
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let url = crate::upstream::credentials::testutil::closed_port_url();
        let http = Http::new(&test_tls());
        let e = block_on(http.call(http::Method::GET, &url, &[], vec![])).unwrap_err();
        assert!(matches!(e, CallError::Unreachable(_)), "{e:?}");
    }

    #[test]
    fn a_header_value_with_a_line_break_is_not_sent() {
        let http = Http::new(&test_tls());
        let e = block_on(http.call(
            http::Method::GET,
            "http://127.0.0.1:9/",
            &[("x-token", "a\r\nb")],
            vec![],
        ))
        .unwrap_err();
        assert!(matches!(e, CallError::Request(_)), "{e:?}");
        assert!(!e.to_string().contains("a\r\nb"));
    }
}
