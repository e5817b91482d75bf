//! The cost of one call: tokens times the deployment's rates.
//!
//! As LiteLLM computes it (`generic_cost_per_token`): the prompt is split into cache reads,
//! cache writes and the rest, each at its own rate (`prompt_tokens` includes the cached ones,
//! in OpenAI's convention, which the mapping files keep); completion tokens, reasoning
//! included, at the output rate. The split is clamped so that no token is billed twice.

use super::{Price, Usage};

/// USD for `u` at `p`.
pub fn cost_usd(p: &Price, u: &Usage) -> f64 {
    let cached = u.cached.min(u.prompt);
    let cache_write = u.cache_write.min(u.prompt - cached);
    let text = u.prompt - cached - cache_write;
    text as f64 * p.input
        + cached as f64 * p.cache_read
        + cache_write as f64 * p.cache_write
        + u.completion as f64 * p.output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Price {
        // Rates as tables give them: USD per million tokens.
        Price {
            input: input / 1e6,
            output: output / 1e6,
            cache_read: cache_read / 1e6,
            cache_write: cache_write / 1e6,
            source: "test".into(),
        }
    }

    fn usage(prompt: u64, completion: u64, cached: u64, cache_write: u64) -> Usage {
        Usage {
            prompt,
            completion,
            cached,
            cache_write,
            estimated: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-9)
    }

    /// Each expectation is worked out by hand from the provider's published per-million rates.
    #[test]
    fn known_usage_costs_what_the_hand_computation_says() {
        let cases = [
            // gpt-4o: $2.50 in, $10 out, $1.25 cached. 1,000 prompt (200 cached), 500 out:
            // 800 × 2.5 + 200 × 1.25 + 500 × 10 = 2,000 + 250 + 5,000 = 7,250 per million.
            (
                "gpt-4o",
                price(2.5, 10.0, 1.25, 2.5),
                usage(1000, 500, 200, 0),
                0.00725,
            ),
            // gpt-4o-mini: $0.15 in, $0.60 out, $0.075 cached; 10,000 in (8,192 cached), 100 out:
            // 1,808 × 0.15 + 8,192 × 0.075 + 100 × 0.6 = 271.2 + 614.4 + 60 = 945.6.
            (
                "gpt-4o-mini",
                price(0.15, 0.6, 0.075, 0.15),
                usage(10_000, 100, 8_192, 0),
                0.0009456,
            ),
            // Claude Sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 cache write.
            // 1,500 prompt = 100 plain + 1,000 read + 400 written; 20 out:
            // 100 × 3 + 1,000 × 0.3 + 400 × 3.75 + 20 × 15 = 300 + 300 + 1,500 + 300 = 2,400.
            (
                "claude-sonnet-4-5",
                price(3.0, 15.0, 0.3, 3.75),
                usage(1500, 20, 1000, 400),
                0.0024,
            ),
            // Gemini 2.5 Flash: $0.30 in, $2.50 out, $0.075 cached; 4,000 in (no cache), 1,000 out:
            // 4,000 × 0.3 + 1,000 × 2.5 = 1,200 + 2,500 = 3,700.
            (
                "gemini-2.5-flash",
                price(0.3, 2.5, 0.075, 0.3),
                usage(4000, 1000, 0, 0),
                0.0037,
            ),
            // DeepSeek chat: $0.27 in, $1.10 out, $0.07 cache hit; 2,000 in (1,500 hit), 300 out:
            // 500 × 0.27 + 1,500 × 0.07 + 300 × 1.1 = 135 + 105 + 330 = 570.
            (
                "deepseek-chat",
                price(0.27, 1.1, 0.07, 0.27),
                usage(2000, 300, 1500, 0),
                0.00057,
            ),
            // Groq Llama 3.3 70B: $0.59 in, $0.79 out; 1,000,000 in, 1,000,000 out = $1.38.
            (
                "llama-3.3-70b",
                price(0.59, 0.79, 0.59, 0.59),
                usage(1_000_000, 1_000_000, 0, 0),
                1.38,
            ),
        ];
        for (name, p, u, want) in cases {
            let got = cost_usd(&p, &u);
            assert!(close(got, want), "{name}: {got} != {want}");
        }
    }

    #[test]
    fn an_inconsistent_split_is_clamped_never_billed_twice() {
        let p = price(1.0, 2.0, 0.5, 4.0);
        // More cached than prompt tokens: all of the prompt at the cache rate.
        assert!(close(cost_usd(&p, &usage(100, 0, 500, 0)), 50.0 / 1e6));
        // Reads and writes over the prompt: writes take what reads left.
        assert!(close(
            cost_usd(&p, &usage(100, 0, 60, 100)),
            (60.0 * 0.5 + 40.0 * 4.0) / 1e6
        ));
        assert_eq!(cost_usd(&p, &Usage::default()), 0.0);
    }
}
