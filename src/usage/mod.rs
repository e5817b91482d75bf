//! What a call used and what it cost: token usage read from answers ([`extract`]), counted
//! when a provider reports none ([`tokens`], [`completion`]), the price table ([`prices`]) and
//! the cost of a call ([`cost`]).
//!
//! Prices are resolved once per deployment when a config loads (`Deployment::price`), so a
//! request only multiplies a handful of numbers.

pub mod completion;
pub mod cost;
pub mod extract;
pub mod prices;
pub mod tokens;

pub use cost::cost_usd;
pub use extract::{extract, top_level_member};
pub use prices::{Price, PriceTable};

/// Tokens of one call, in OpenAI's convention: `prompt` includes the cached and cache-written
/// tokens (`cached`, `cache_write` are its split, for their own rates).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic bills them apart).
    pub cache_write: u64,
    /// Counted by the gateway because the provider reported none (a cut stream, a client gone,
    /// a provider without usage), not reported by the provider.
    pub estimated: bool,
}

impl Usage {
    /// Usage as a provider reported it, without a cache split.
    pub fn reported(prompt: u64, completion: u64) -> Self {
        Self {
            prompt,
            completion,
            ..Self::default()
        }
    }

    /// Reads an OpenAI-shaped `usage` object (what a mapping file emits).
    pub fn from_value(u: &serde_json::Value) -> Self {
        let n = |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_u64);
        let details = &u["prompt_tokens_details"];
        Self {
            prompt: n(u, "prompt_tokens").unwrap_or(0),
            completion: n(u, "completion_tokens").unwrap_or(0),
            cached: n(details, "cached_tokens").unwrap_or(0),
            cache_write: n(details, "cache_creation_tokens")
                .or_else(|| n(u, "cache_creation_input_tokens"))
                .unwrap_or(0),
            estimated: false,
        }
    }

    /// Whether there is anything to count.
    pub fn is_empty(&self) -> bool {
        self.prompt == 0 && self.completion == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_mapped_usage_object() {
        let v = serde_json::json!({
            "prompt_tokens": 1500, "completion_tokens": 20, "total_tokens": 1520,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 400},
            "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 400
        });
        let u = Usage::from_value(&v);
        assert_eq!(
            (u.prompt, u.completion, u.cached, u.cache_write),
            (1500, 20, 1000, 400)
        );
        assert!(!u.estimated);
        let bare =
            Usage::from_value(&serde_json::json!({"prompt_tokens": 3, "completion_tokens": 4}));
        assert_eq!(bare, Usage::reported(3, 4));
        assert_eq!(
            Usage::from_value(&serde_json::Value::Null),
            Usage::default()
        );
        assert!(Usage::default().is_empty());
    }
}
