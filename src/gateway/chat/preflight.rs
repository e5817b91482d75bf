//! The context-window check before an attempt: a prompt that cannot fit the deployment's
//! window (`max_input_tokens`, from the price table or `model_info`) is not sent; the router's
//! `context_window_fallbacks` take it to a group with a larger window instead.
//!
//! It runs only where it can help — the requested group has context-window fallbacks — and
//! costs nothing for prompts that plainly fit: a token is at least one byte of text, so a body
//! no longer than the window in bytes is never counted. Counts of models whose tokenizer is
//! not OpenAI's are approximations, and an estimate is used until the encoder is loaded: those
//! counts must exceed the window by [`APPROX_MARGIN`] before the check fires, so that a prompt
//! near the limit is still sent (the upstream's own refusal falls back the same way).

use crate::config::Deployment;
use crate::router::{Failure, FailureClass, FailureSource};
use crate::usage::tokens::{self, Encoding};

use super::Call;

/// How far an approximate count must exceed the window before the prompt is held back.
pub const APPROX_MARGIN: f64 = 0.10;

/// `Some(failure)` when the prompt does not fit `dep`'s context window.
pub async fn check(call: &Call<'_>, dep: &Deployment) -> Option<Failure> {
    let window = dep.max_input_tokens?;
    let fallbacks = call
        .snap
        .router
        .fallbacks
        .context_window
        .get(&call.view.model)?;
    if fallbacks.is_empty() || call.req.body.len() as u64 <= window {
        return None;
    }
    let (encoding, known) = Encoding::for_model(&dep.tokenizer_model);
    let counted = tokens::prompt_tokens(call.body(), encoding).await;
    // Exact only for a model tiktoken knows, counted by its own encoding, without tools (how
    // tool definitions become tokens is the provider's own, approximated here by their JSON).
    let tools = call.body().get("tools").is_some_and(|t| !t.is_null());
    let exact = counted.exact && known && !tools;
    let limit = if exact {
        window as f64
    } else {
        window as f64 * (1.0 + APPROX_MARGIN)
    };
    if (counted.tokens as f64) <= limit {
        return None;
    }
    Some(too_long(dep, window, counted.tokens, exact))
}

fn too_long(dep: &Deployment, window: u64, tokens: u64, exact: bool) -> Failure {
    let how = if exact { "" } else { "about " };
    Failure {
        class: FailureClass::ContextWindowExceeded,
        source: FailureSource::Internal,
        retryable: false,
        fallback: true,
        status: 400,
        error_type: "invalid_request_error",
        message: format!(
            "This model's maximum context length is {window} tokens. However, your messages resulted in {how}{tokens} tokens (counted by LLMux before sending to deployment `{}`). Please reduce the length of the messages.",
            dep.id
        ),
        code: Some("context_length_exceeded".into()),
        param: Some("messages".into()),
        details: None,
        retry_after_ms: None,
    }
}
