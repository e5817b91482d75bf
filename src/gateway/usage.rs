//! Token usage read from OpenAI-shaped bodies and stream events.

/// Prompt and completion tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

/// Reads `usage.prompt_tokens` / `usage.completion_tokens` if present (cheap when absent: a
/// substring check comes first).
pub fn extract(json: &[u8]) -> Option<Usage> {
    memchr::memmem::find(json, b"\"usage\"")?;
    let usage = sonic_rs::get(json, ["usage"]).ok()?;
    let raw = usage.as_raw_str();
    if !raw.trim_start().starts_with('{') {
        return None;
    }
    let get = |k: &str| {
        sonic_rs::get(raw, [k])
            .ok()
            .and_then(|v| v.as_raw_str().parse::<u64>().ok())
    };
    Some(Usage {
        prompt: get("prompt_tokens").unwrap_or(0),
        completion: get("completion_tokens").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage() {
        let u = extract(
            br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#,
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt: 12,
                completion: 5
            })
        );
        assert_eq!(extract(br#"{"usage":null}"#), None);
        assert_eq!(extract(br#"{"choices":[]}"#), None);
    }
}
