//! The OpenAI-format error body: `{"error": {"message", "type", "param", "code"}}`.

use http::StatusCode;

/// The error classes LLMux answers with. They follow LiteLLM's exception classes so that clients
/// written against LiteLLM see the same `type` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimit,
    Internal,
    BadGateway,
    ServiceUnavailable,
    Timeout,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `type` field, as OpenAI and LiteLLM spell it.
    pub fn type_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::MethodNotAllowed => {
                "invalid_request_error"
            }
            ErrorKind::PayloadTooLarge => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Internal => "internal_server_error",
            ErrorKind::BadGateway => "api_connection_error",
            ErrorKind::ServiceUnavailable => "service_unavailable",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// An error answered to the client. Rendered with [`ApiError::to_json`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// A `type` of LiteLLM's own instead of the kind's (`budget_exceeded`, `expired_key`, ...).
    pub type_name: Option<&'static str>,
    /// A status other than the kind's (LiteLLM answers an exceeded budget with 422).
    pub status_override: Option<StatusCode>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            code: None,
            type_name: None,
            status_override: None,
        }
    }

    /// Answers with LiteLLM's `type` for this error.
    pub fn with_type(mut self, type_name: &'static str) -> Self {
        self.type_name = Some(type_name);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status_override = Some(status);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// OpenAI answers an unknown model with 404 `model_not_found`, naming only the model asked for.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                crate::util::clip(model)
            ),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    pub fn status(&self) -> StatusCode {
        self.status_override.unwrap_or_else(|| self.kind.status())
    }

    pub fn to_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.type_name.unwrap_or_else(|| self.kind.type_str()),
                "param": self.param,
                "code": self.code.clone().unwrap_or_else(|| self.status().as_u16().to_string()),
            }
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape() {
        let e = ApiError::model_not_found("gpt-x");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn code_defaults_to_status() {
        let e = ApiError::new(ErrorKind::Timeout, "slow");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "504");
    }
}
