//! The OpenAI Chat Completions request schema, as far as the language checks it:
//! `req.<field>` must name one of these top-level fields.

/// Top-level fields of an OpenAI chat-completions request. The position of a field
/// is its id in compiled programs (used for the per-request "dropped" bit set),
/// so there must never be more than 64.
pub const REQUEST_FIELDS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// Id of a top-level request field.
pub fn request_field(name: &str) -> Option<u8> {
    REQUEST_FIELDS
        .iter()
        .position(|f| *f == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// Fields of the per-deployment context (`ctx.<field>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtxField {
    Model,
    Stream,
    ApiVersion,
    ApiBase,
    MaxOutputTokens,
    IncludeUsage,
    DropParams,
    ApiKey,
}

impl CtxField {
    pub const NAMES: &'static [&'static str] = &[
        "model",
        "stream",
        "api_version",
        "api_base",
        "max_output_tokens",
        "include_usage",
        "drop_params",
        "api_key",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "model" => CtxField::Model,
            "stream" => CtxField::Stream,
            "api_version" => CtxField::ApiVersion,
            "api_base" => CtxField::ApiBase,
            "max_output_tokens" => CtxField::MaxOutputTokens,
            "include_usage" => CtxField::IncludeUsage,
            "drop_params" => CtxField::DropParams,
            "api_key" => CtxField::ApiKey,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_fields_fit_the_dropped_bitset() {
        assert!(super::REQUEST_FIELDS.len() <= 64);
    }
}
