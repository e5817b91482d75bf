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
    request_field_bytes(name.as_bytes())
}

/// Longest field name, plus one: the size of the table by length.
const BY_LEN_SLOTS: usize = 32;

/// Field ids by the length of their names: a lookup compares a name with the two or three
/// fields of its length (at most six), not all of them (it runs for each top-level member of each request).
const BY_LEN: [[u8; 6]; BY_LEN_SLOTS] = {
    let mut table = [[u8::MAX; 6]; BY_LEN_SLOTS];
    let mut id = 0;
    while id < REQUEST_FIELDS.len() {
        let len = REQUEST_FIELDS[id].len();
        let mut slot = 0;
        while table[len][slot] != u8::MAX {
            slot += 1;
        }
        table[len][slot] = id as u8;
        id += 1;
    }
    table
};

/// Id of a top-level request field, by the name's bytes.
pub fn request_field_bytes(name: &[u8]) -> Option<u8> {
    let ids = BY_LEN.get(name.len())?;
    ids.iter()
        .take_while(|id| **id != u8::MAX)
        .find(|id| REQUEST_FIELDS[usize::from(**id)].as_bytes() == name)
        .copied()
}

/// Id of a field known to be in [`REQUEST_FIELDS`] (a compile-time error otherwise).
pub const fn field_id(name: &str) -> u8 {
    let mut id = 0;
    while id < REQUEST_FIELDS.len() {
        let f = REQUEST_FIELDS[id].as_bytes();
        let n = name.as_bytes();
        if f.len() == n.len() {
            let mut i = 0;
            while i < n.len() && f[i] == n[i] {
                i += 1;
            }
            if i == n.len() {
                return id as u8;
            }
        }
        id += 1;
    }
    panic!("not a request field")
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

    #[test]
    fn finds_each_field_by_its_name_only() {
        for (id, name) in super::REQUEST_FIELDS.iter().enumerate() {
            assert_eq!(super::request_field(name), Some(id as u8));
            assert_eq!(super::field_id(name), id as u8);
        }
        for other in [
            "",
            "Model",
            "stream_option",
            "streams",
            "cache",
            &"x".repeat(40),
        ] {
            assert_eq!(super::request_field(other), None, "{other}");
        }
    }
}
