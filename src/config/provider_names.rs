//! What a deployment's provider prefix (`openai` in `openai/gpt-4o`) names: a provider file
//! LLMux has, a LiteLLM provider it has no file for (the deployment is disabled with a warning,
//! so LiteLLM configs still load), or nothing (a typo: an error with the nearest names).
//!
//! LiteLLM's names are data: `litellm_providers.txt` beside this file, with its LiteLLM version.

const LITELLM_PROVIDERS: &str = include_str!("litellm_providers.txt");

/// LiteLLM's provider names, in file order (sorted).
pub fn litellm_providers() -> impl Iterator<Item = &'static str> {
    LITELLM_PROVIDERS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

pub fn is_litellm_provider(name: &str) -> bool {
    litellm_providers().any(|p| p == name)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Prefix {
    /// A provider file of the loaded set.
    Available,
    /// A LiteLLM provider without a provider file here.
    LiteLlmOnly,
    /// Neither; the nearest names (provider files first, then LiteLLM's), at most three.
    Unknown { suggestions: Vec<String> },
}

/// Classifies `prefix` against the loaded provider files' names.
pub fn classify(prefix: &str, available: &[&str]) -> Prefix {
    if available.contains(&prefix) {
        return Prefix::Available;
    }
    if is_litellm_provider(prefix) {
        return Prefix::LiteLlmOnly;
    }
    Prefix::Unknown {
        suggestions: nearest(prefix, available),
    }
}

/// ` (did you mean `a` or `b`?)`, or nothing.
pub fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean `{one}`?)"),
        [init @ .., last] => format!(
            " (did you mean {} or `{last}`?)",
            init.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Close names: the available provider files first (what would work now), then LiteLLM's.
fn nearest(prefix: &str, available: &[&str]) -> Vec<String> {
    let lower = prefix.to_ascii_lowercase();
    // Up to two edits for short names, a quarter of the length for long ones.
    let close = |name: &str| {
        let d = edit_distance(&lower, name);
        (d <= 2.max(name.len() / 4) && d < name.len()).then_some(d)
    };
    let ranked = |names: &mut dyn Iterator<Item = &str>| {
        let mut v: Vec<(usize, String)> = names
            .filter_map(|n| close(n).map(|d| (d, n.to_owned())))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
    };
    let mut out = ranked(&mut available.iter().copied());
    for n in ranked(&mut litellm_providers()) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out.truncate(3);
    out
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit (`opneai`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &[&str] = &[
        "anthropic",
        "azure",
        "openai",
        "openai_compatible",
        "gemini",
    ];

    #[test]
    fn the_table_holds_litellm_names() {
        for n in [
            "openai",
            "azure",
            "sagemaker",
            "bedrock",
            "vertex_ai",
            "hosted_vllm",
        ] {
            assert!(is_litellm_provider(n), "{n}");
        }
        assert!(!is_litellm_provider("opneai"));
        assert!(litellm_providers().count() > 150);
    }

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify("openai", SHIPPED), Prefix::Available);
        assert_eq!(classify("sagemaker", SHIPPED), Prefix::LiteLlmOnly);
        // Not a LiteLLM name, but a provider file of this set.
        assert_eq!(classify("openai_compatible", SHIPPED), Prefix::Available);
        match classify("opneai", SHIPPED) {
            Prefix::Unknown { suggestions } => assert_eq!(suggestions[0], "openai"),
            other => panic!("{other:?}"),
        }
        match classify("zzzzzzzzzz", SHIPPED) {
            Prefix::Unknown { suggestions } => assert!(suggestions.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn available_files_are_suggested_before_litellm_names() {
        // `gemin` is one edit from `gemini` (shipped here) and far from most LiteLLM names.
        let Prefix::Unknown { suggestions } = classify("gemin", SHIPPED) else {
            panic!()
        };
        assert_eq!(suggestions[0], "gemini");
        let Prefix::Unknown { suggestions } = classify("sagemakr", SHIPPED) else {
            panic!()
        };
        assert!(
            suggestions.contains(&"sagemaker".to_owned()),
            "{suggestions:?}"
        );
    }

    #[test]
    fn suggestion_text() {
        assert_eq!(did_you_mean(&[]), "");
        assert_eq!(did_you_mean(&["a".into()]), " (did you mean `a`?)");
        assert_eq!(
            did_you_mean(&["a".into(), "b".into(), "c".into()]),
            " (did you mean `a`, `b` or `c`?)"
        );
        assert_eq!(edit_distance("opneai", "openai"), 1);
    }
}
