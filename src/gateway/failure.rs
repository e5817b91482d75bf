//! Every way a request can fail, as one [`Failure`] (the router's decision input), and the one
//! place that renders a failure as the client's answer.
//!
//! Four shapes used to reach the client separately: the gateway's own `ApiError`, a translation
//! error, an upstream's mapped error and pre-rendered bytes. Each now converts into a `Failure`
//! with its class, whose fault it is, and whether a retry or a fallback may help; rendering
//! redacts the config's secrets from upstream text.

use http::StatusCode;

use crate::api::{ApiError, ErrorKind};
use crate::dsl::{ErrorClass, MappedError, TranslateError};
use crate::router::{Failure, FailureClass, FailureSource, Millis};
use crate::telemetry::redact::redact_str;
use crate::upstream::UpstreamError;

fn class_of(c: ErrorClass) -> FailureClass {
    match c {
        ErrorClass::BadRequest => FailureClass::BadRequest,
        ErrorClass::Authentication => FailureClass::Authentication,
        ErrorClass::PermissionDenied => FailureClass::PermissionDenied,
        ErrorClass::NotFound => FailureClass::NotFound,
        ErrorClass::ContextWindowExceeded => FailureClass::ContextWindowExceeded,
        ErrorClass::ContentPolicyViolation => FailureClass::ContentPolicyViolation,
        ErrorClass::RateLimit => FailureClass::RateLimit,
        ErrorClass::Timeout => FailureClass::Timeout,
        ErrorClass::Internal => FailureClass::Internal,
        ErrorClass::ServiceUnavailable => FailureClass::ServiceUnavailable,
    }
}

/// An upstream's error, as its provider file mapped it.
pub fn from_mapped(e: &MappedError, retry_after_ms: Option<Millis>) -> Failure {
    let body = e.to_openai_body();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or(&e.message)
        .to_owned();
    Failure {
        class: class_of(e.class),
        source: FailureSource::Upstream,
        retryable: e.retryable,
        fallback: e.fallback,
        status: e.status,
        error_type: e.class.openai_type(),
        message,
        // The provider's own code and param when its file kept them (`insufficient_quota`,
        // `content_filter`, ...), else the status, as OpenAI-compatible clients expect.
        code: Some(e.code().map_or_else(|| e.status.to_string(), str::to_owned)),
        param: e.param().map(str::to_owned),
        details: e
            .details()
            .filter(|d| !d.is_empty())
            .map(|d| Box::new(d.clone())),
        retry_after_ms,
    }
}

/// The upstream could not be reached, did not answer in time, or broke the protocol.
pub fn from_upstream(e: &UpstreamError, deployment: &str) -> Failure {
    let (class, status, error_type, retryable) = match e {
        UpstreamError::Timeout(_) => (FailureClass::Timeout, 504, "timeout", true),
        // A body over the limit would be as large from another deployment of the group.
        UpstreamError::BodyTooLarge(_) => {
            (FailureClass::BadGateway, 502, "api_connection_error", false)
        }
        _ => (FailureClass::BadGateway, 502, "api_connection_error", true),
    };
    Failure {
        class,
        source: FailureSource::Upstream,
        retryable,
        fallback: true,
        status,
        error_type,
        message: format!("Upstream deployment `{deployment}`: {e}"),
        code: None,
        param: None,
        details: None,
        retry_after_ms: None,
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let (class, source, retryable) = match e.kind {
            ErrorKind::BadGateway => (FailureClass::BadGateway, FailureSource::Upstream, true),
            ErrorKind::Timeout => (FailureClass::Timeout, FailureSource::Upstream, true),
            ErrorKind::ServiceUnavailable => (
                FailureClass::ServiceUnavailable,
                FailureSource::Upstream,
                true,
            ),
            ErrorKind::RateLimit => (FailureClass::RateLimit, FailureSource::Upstream, true),
            ErrorKind::Internal => (FailureClass::Internal, FailureSource::Internal, false),
            ErrorKind::Authentication => {
                (FailureClass::Authentication, FailureSource::Client, false)
            }
            ErrorKind::PermissionDenied => {
                (FailureClass::PermissionDenied, FailureSource::Client, false)
            }
            ErrorKind::NotFound => (FailureClass::NotFound, FailureSource::Client, false),
            ErrorKind::BadRequest | ErrorKind::MethodNotAllowed | ErrorKind::PayloadTooLarge => {
                (FailureClass::BadRequest, FailureSource::Client, false)
            }
        };
        Failure {
            class,
            source,
            retryable,
            fallback: retryable,
            status: status.as_u16(),
            error_type: e.kind.type_str(),
            code: Some(
                e.code
                    .clone()
                    .unwrap_or_else(|| status.as_u16().to_string()),
            ),
            message: e.message,
            param: e.param,
            details: None,
            retry_after_ms: None,
        }
    }
}

impl From<&TranslateError> for Failure {
    fn from(e: &TranslateError) -> Self {
        let client = e.status() == 400;
        Failure {
            class: if client {
                FailureClass::BadRequest
            } else {
                FailureClass::Internal
            },
            source: if client {
                FailureSource::Client
            } else {
                FailureSource::Internal
            },
            // A deployment the provider file cannot serve (misconfigured, or a file that failed
            // at run time) may not be the only one of its group.
            retryable: !client,
            fallback: !client,
            status: e.status(),
            error_type: if client {
                "invalid_request_error"
            } else {
                "internal_server_error"
            },
            message: e.to_string(),
            code: Some(e.status().to_string()),
            param: e.param().map(str::to_owned),
            details: None,
            retry_after_ms: None,
        }
    }
}

/// The client went away before its answer began: nothing to answer, nothing to count.
pub fn cancelled() -> Failure {
    Failure {
        class: FailureClass::Cancelled,
        source: FailureSource::Client,
        retryable: false,
        fallback: false,
        status: 499,
        error_type: "cancelled",
        message: "The client closed the connection.".into(),
        code: None,
        param: None,
        details: None,
        retry_after_ms: None,
    }
}

/// A deployment the gateway held back at its own limits (`max_parallel_requests`, `rpm`,
/// `tpm`): 429, another deployment or a fallback group may take the request.
pub fn held_back(deployment: &str, why: &str, retry_after_ms: Option<Millis>) -> Failure {
    Failure {
        class: FailureClass::RateLimit,
        source: FailureSource::Internal,
        retryable: true,
        fallback: true,
        status: 429,
        error_type: "rate_limit_error",
        message: format!("Deployment `{deployment}` {why}."),
        code: Some("429".into()),
        param: None,
        details: None,
        retry_after_ms,
    }
}

/// How long an upstream asks to wait: `retry-after-ms` (OpenAI, Azure), else `retry-after` in
/// seconds. An HTTP date is not honoured (clocks differ; the backoff applies instead).
pub fn retry_after_ms(headers: &crate::http1::head::Headers) -> Option<Millis> {
    let parse = |name: &str| -> Option<f64> {
        let v = headers.get(name)?;
        let v: f64 = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    parse("retry-after-ms")
        .map(|ms| ms as Millis)
        .or_else(|| parse("retry-after").map(|s| (s * 1000.0) as Millis))
}

/// The gateway cannot try any deployment now (all cooling down, all at their limits).
pub fn unavailable(group: &str, why: &str, retry_after_ms: Millis, status: u16) -> Failure {
    Failure {
        class: if status == 429 {
            FailureClass::RateLimit
        } else {
            FailureClass::ServiceUnavailable
        },
        source: FailureSource::Upstream,
        retryable: false,
        fallback: true,
        status,
        error_type: if status == 429 {
            "rate_limit_error"
        } else {
            "service_unavailable_error"
        },
        message: format!(
            "No deployment of model group `{}` can take the request now: {why}. Try again in {}s.",
            crate::util::clip(group),
            retry_after_ms.div_ceil(1000).max(1)
        ),
        code: Some(status.to_string()),
        param: None,
        details: None,
        retry_after_ms: Some(retry_after_ms),
    }
}

/// The answer to the client: status, OpenAI-format body with secrets redacted, and
/// `Retry-After` where there is one.
pub fn render(f: &Failure, secrets: &[String]) -> (StatusCode, Vec<u8>, Option<String>) {
    let message = redact_str(&f.message, secrets);
    let mut body = serde_json::json!({"error": {
        "message": message,
        "type": f.error_type,
        "param": f.param,
        "code": f.code.clone().unwrap_or_else(|| f.status.to_string()),
    }});
    if let (Some(details), Some(error)) = (&f.details, body["error"].as_object_mut()) {
        for (k, v) in details.iter() {
            // Upstream text, redacted like the message; never over the four fields above.
            let text = serde_json::to_string(v).unwrap_or_default();
            let v = serde_json::from_str(&redact_str(&text, secrets))
                .unwrap_or(serde_json::Value::Null);
            error.entry(k.clone()).or_insert(v);
        }
    }
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let retry_after = f
        .retry_after_ms
        .filter(|_| matches!(f.status, 429 | 503))
        .map(|ms| ms.div_ceil(1000).max(1).to_string());
    (
        status,
        serde_json::to_vec(&body).unwrap_or_default(),
        retry_after,
    )
}
