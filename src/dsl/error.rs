//! Errors of the provider language: load errors (with source positions),
//! request translation errors, and mapped upstream errors.

use std::fmt;

use serde_json::{json, Map, Value};

use super::ast::Span;

/// A problem found while loading a mapping file. Displays as
/// `file:line:col: message`, then the source line and a caret under the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    /// 1-based; 0 when the error is not tied to a position (e.g. an unreadable file).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    pub message: String,
    /// The full text of the offending line (empty when `line == 0`).
    pub source_line: String,
    /// Width of the caret underline, in characters (at least 1).
    pub width: usize,
}

impl LoadError {
    /// An error at `span` of `source`.
    pub fn at(file: &str, source: &str, span: Span, message: impl Into<String>) -> Self {
        let start = clamp_to_char_boundary(source, span.start);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line = source[..start].matches('\n').count() + 1;
        let col = source[line_start..start].chars().count() + 1;
        let end = clamp_to_char_boundary(source, span.end.clamp(start, line_end));
        let width = source[start..end].chars().count().max(1);
        LoadError {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
            source_line: source[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
            width,
        }
    }

    /// An error about a whole file (I/O and the like).
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_string(),
            line: 0,
            col: 0,
            message: message.into(),
            source_line: String::new(),
            width: 1,
        }
    }
}

fn clamp_to_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Characters of a source line shown around the error's column: a 100 KB line (minified, or
/// hostile) is shown as a window with `…` where it was cut.
const SHOWN_LINE_CHARS: usize = 160;

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = crate::util::clip_to(&self.message, 4 * crate::util::MAX_ECHO_CHARS);
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, message);
        }
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, message)?;
        let gutter = self.line.to_string();
        let pad = " ".repeat(gutter.len());
        let chars: Vec<char> = self.source_line.chars().collect();
        let caret_at = self.col.saturating_sub(1).min(chars.len());
        let from = caret_at.saturating_sub(SHOWN_LINE_CHARS / 2);
        let to = (from + SHOWN_LINE_CHARS).min(chars.len());
        let cut_left = from > 0;
        let cut_right = to < chars.len();
        let mut shown: String = if cut_left {
            "…".into()
        } else {
            String::new()
        };
        shown.extend(&chars[from..to]);
        if cut_right {
            shown.push('…');
        }
        // Tabs are kept in the padding so that the caret lines up in a terminal.
        let mut lead: String = if cut_left { " ".into() } else { String::new() };
        lead.extend(
            chars[from..caret_at]
                .iter()
                .map(|&c| if c == '\t' { '\t' } else { ' ' }),
        );
        let width = self.width.min(to.saturating_sub(caret_at)).max(1);
        write!(
            f,
            "\n{pad} |\n{gutter} | {shown}\n{pad} | {lead}{}",
            "^".repeat(width)
        )
    }
}

impl std::error::Error for LoadError {}

/// Why an OpenAI request could not be translated for the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The provider cannot honour `param` and `drop_params` is off. Answer 400.
    #[error("{provider} does not support parameter `{param}`; set drop_params: true to drop it")]
    UnsupportedParam { provider: String, param: String },
    /// The client's request is malformed in a way the mapping detected. Answer 400.
    #[error("invalid request for {provider}: {message}")]
    InvalidRequest { provider: String, message: String },
    /// The deployment is missing something the provider needs (e.g. `api_base`).
    #[error("{provider} deployment misconfigured: {message}")]
    Config { provider: String, message: String },
    /// A mapping file misbehaved at run time (a bug in the file). Answer 500.
    #[error("mapping error in {provider}: {message}")]
    Mapping { provider: String, message: String },
}

impl TranslateError {
    /// HTTP status the gateway should answer with.
    pub fn status(&self) -> u16 {
        match self {
            TranslateError::UnsupportedParam { .. } | TranslateError::InvalidRequest { .. } => 400,
            TranslateError::Config { .. } | TranslateError::Mapping { .. } => 500,
        }
    }

    /// The offending parameter, for the `param` field of the OpenAI error body.
    pub fn param(&self) -> Option<&str> {
        match self {
            TranslateError::UnsupportedParam { param, .. } => Some(param),
            _ => None,
        }
    }

    /// OpenAI-format error body.
    pub fn to_openai_body(&self) -> Value {
        let ty = if self.status() == 400 {
            "invalid_request_error"
        } else {
            "internal_server_error"
        };
        json!({"error": {
            "message": self.to_string(),
            "type": ty,
            "param": self.param(),
            "code": self.status().to_string(),
        }})
    }
}

/// LiteLLM-style error classes; the router keys retries and fallbacks on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    BadRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    ContextWindowExceeded,
    ContentPolicyViolation,
    RateLimit,
    Timeout,
    Internal,
    ServiceUnavailable,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::BadRequest,
        ErrorClass::Authentication,
        ErrorClass::PermissionDenied,
        ErrorClass::NotFound,
        ErrorClass::ContextWindowExceeded,
        ErrorClass::ContentPolicyViolation,
        ErrorClass::RateLimit,
        ErrorClass::Timeout,
        ErrorClass::Internal,
        ErrorClass::ServiceUnavailable,
    ];

    /// The name used in mapping files.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::Authentication => "authentication",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::NotFound => "not_found",
            ErrorClass::ContextWindowExceeded => "context_window_exceeded",
            ErrorClass::ContentPolicyViolation => "content_policy_violation",
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Internal => "internal",
            ErrorClass::ServiceUnavailable => "service_unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// LiteLLM exception class name, used in the error message for compatibility.
    pub fn litellm_name(self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "BadRequestError",
            ErrorClass::Authentication => "AuthenticationError",
            ErrorClass::PermissionDenied => "PermissionDeniedError",
            ErrorClass::NotFound => "NotFoundError",
            ErrorClass::ContextWindowExceeded => "ContextWindowExceededError",
            ErrorClass::ContentPolicyViolation => "ContentPolicyViolationError",
            ErrorClass::RateLimit => "RateLimitError",
            ErrorClass::Timeout => "Timeout",
            ErrorClass::Internal => "InternalServerError",
            ErrorClass::ServiceUnavailable => "ServiceUnavailableError",
        }
    }

    /// Status the gateway answers with for this class.
    pub fn status(self) -> u16 {
        match self {
            ErrorClass::BadRequest
            | ErrorClass::ContextWindowExceeded
            | ErrorClass::ContentPolicyViolation => 400,
            ErrorClass::Authentication => 401,
            ErrorClass::PermissionDenied => 403,
            ErrorClass::NotFound => 404,
            ErrorClass::Timeout => 408,
            ErrorClass::RateLimit => 429,
            ErrorClass::Internal => 500,
            ErrorClass::ServiceUnavailable => 503,
        }
    }

    /// OpenAI `error.type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorClass::Authentication => "authentication_error",
            ErrorClass::PermissionDenied => "permission_error",
            ErrorClass::RateLimit => "rate_limit_error",
            ErrorClass::Internal | ErrorClass::Timeout => "internal_server_error",
            ErrorClass::ServiceUnavailable => "service_unavailable_error",
            ErrorClass::NotFound => "not_found_error",
            ErrorClass::BadRequest
            | ErrorClass::ContextWindowExceeded
            | ErrorClass::ContentPolicyViolation => "invalid_request_error",
        }
    }

    /// Retried on another attempt by default (OpenAI SDK rule: 408, 429, >= 500).
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimit
                | ErrorClass::Timeout
                | ErrorClass::Internal
                | ErrorClass::ServiceUnavailable
        )
    }

    /// Eligible for fallbacks by default: everything except a plain bad request,
    /// which would fail the same way on any deployment.
    pub fn default_fallback(self) -> bool {
        !matches!(self, ErrorClass::BadRequest)
    }

    /// Class for a status when no rule of the file matched (LiteLLM's
    /// `_map_exception_by_status`).
    pub fn from_status(status: u16) -> Self {
        match status {
            401 => ErrorClass::Authentication,
            403 => ErrorClass::PermissionDenied,
            404 => ErrorClass::NotFound,
            408 | 504 => ErrorClass::Timeout,
            429 => ErrorClass::RateLimit,
            503 => ErrorClass::ServiceUnavailable,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::Internal,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An upstream error translated into the OpenAI/LiteLLM vocabulary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({}): {message}", class.litellm_name(), status)]
pub struct MappedError {
    /// Status to answer the client with.
    pub status: u16,
    /// Status the upstream sent (0 when the error came from inside a stream or body).
    pub upstream_status: u16,
    pub class: ErrorClass,
    pub message: String,
    pub retryable: bool,
    pub fallback: bool,
    pub provider: String,
    /// What the provider file kept of the provider's own error object (boxed: most errors
    /// keep nothing, and a `Result` carrying this error stays small).
    pub kept: Option<Box<KeptFields>>,
}

/// The provider's own error fields the file keeps in the client's OpenAI error
/// (`message = { code: ..., param: ..., innererror: ... }`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeptFields {
    /// The provider's own error code (`insufficient_quota`, `content_filter`, an error type),
    /// for the OpenAI error's `code`; `None`: the status sent, as text.
    pub code: Option<String>,
    /// The request parameter the provider blamed, for the OpenAI error's `param`.
    pub param: Option<String>,
    /// Further fields kept in the OpenAI error object (Azure's `innererror`); never
    /// `message`, `type`, `param` or `code`.
    pub details: Map<String, Value>,
}

/// Longest `code` and `param` kept from an upstream error, in characters.
pub const MAX_CODE_CHARS: usize = 200;

/// Largest `details` kept from an upstream error, as JSON text; a larger set is dropped whole.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;

impl MappedError {
    pub fn new(provider: &str, upstream_status: u16, class: ErrorClass, message: String) -> Self {
        MappedError {
            status: class.status(),
            upstream_status,
            class,
            message,
            retryable: class.default_retryable(),
            fallback: class.default_fallback(),
            provider: provider.to_string(),
            kept: None,
        }
    }

    /// The provider's own error code, when the file kept one.
    pub fn code(&self) -> Option<&str> {
        self.kept.as_ref()?.code.as_deref()
    }

    /// The parameter the provider blamed, when the file kept it.
    pub fn param(&self) -> Option<&str> {
        self.kept.as_ref()?.param.as_deref()
    }

    /// Further fields of the provider's error kept beside `code` and `param`.
    pub fn details(&self) -> Option<&Map<String, Value>> {
        self.kept.as_ref().map(|k| &k.details)
    }

    /// Keeps the provider's `code`, `param` and further fields of an error object the file
    /// declared (`message = { code: ..., param: ..., innererror: ... }`). A code or param that
    /// is a number or boolean is kept as text; null and nested values are ignored. `message`
    /// and `type` are not details: the message is read separately, the type is the class's.
    pub fn keep_fields(&mut self, mut fields: Map<String, Value>) {
        fn text(v: Option<Value>) -> Option<String> {
            let s = match v? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            let s = s.trim();
            (!s.is_empty()).then(|| crate::util::clip_to(s, MAX_CODE_CHARS).into_owned())
        }
        let code = text(fields.remove("code"));
        let param = text(fields.remove("param"));
        fields.remove("message");
        fields.remove("type");
        fields.retain(|_, v| !v.is_null());
        let size = serde_json::to_vec(&fields).map_or(usize::MAX, |b| b.len());
        if size > MAX_DETAILS_BYTES {
            fields = Map::new();
        }
        self.kept = (code.is_some() || param.is_some() || !fields.is_empty()).then(|| {
            Box::new(KeptFields {
                code,
                param,
                details: fields,
            })
        });
    }

    /// The upstream answered something that cannot be read (not JSON, nested past the bound,
    /// a broken stream): a 502, which another deployment may well not repeat.
    pub fn bad_upstream(provider: &str, upstream_status: u16, message: String) -> Self {
        MappedError {
            status: 502,
            retryable: true,
            ..MappedError::new(provider, upstream_status, ErrorClass::Internal, message)
        }
    }

    /// OpenAI-format error body, with LiteLLM's message convention
    /// (`litellm.<Class>: <Provider>Exception - <message>`), which clients grep for. `code` is
    /// the provider's own code when the file kept one, else the status as text; `param` the
    /// parameter the provider blamed, else null; the kept details sit beside them.
    pub fn to_openai_body(&self) -> Value {
        let mut prov = self.provider.clone();
        if let Some(first) = prov.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let mut error = self.details().cloned().unwrap_or_default();
        error.insert(
            "message".into(),
            Value::String(format!(
                "litellm.{}: {}Exception - {}",
                self.class.litellm_name(),
                prov,
                self.message
            )),
        );
        error.insert("type".into(), self.class.openai_type().into());
        error.insert("param".into(), self.param().into());
        error.insert(
            "code".into(),
            self.code()
                .map_or_else(|| self.status.to_string(), str::to_owned)
                .into(),
        );
        json!({ "error": error })
    }
}
