//! Token usage read from OpenAI-shaped bodies and stream events.
//!
//! This runs on every relayed response and on every stream event, so it does not parse the
//! body: a byte scan from the end finds the top-level `usage` member (skipping strings and
//! matching brackets only) and only that small object is read.

use std::sync::LazyLock;

use super::Usage;

/// Reads the top-level `usage` object if the body has one (cheap when absent: a substring
/// check comes first): `prompt_tokens`, `completion_tokens`, and the cache split of the prompt
/// (`prompt_tokens_details.cached_tokens`; cache writes from
/// `prompt_tokens_details.cache_creation_tokens` or Anthropic's `cache_creation_input_tokens`).
pub fn extract(json: &[u8]) -> Option<Usage> {
    // Building a searcher costs more than searching a typical event: build it once.
    static USAGE_KEY: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    // Streams asked for usage carry `"usage":null` in every chunk but the last: the backward
    // scan only runs when some `"usage"` is followed by an object.
    if !USAGE_KEY
        .find_iter(json)
        .any(|i| object_follows(json, i + b"\"usage\"".len()))
    {
        return None;
    }
    let usage = top_level_member(json, b"usage")?;
    if usage.first() != Some(&b'{') {
        return None;
    }
    // One backward pass over the usage object (and one over its details, if any).
    let mut u = Usage::default();
    let mut details: Option<&[u8]> = None;
    let mut top_write: Option<u64> = None;
    for_each_member(usage, |key, value| {
        match key {
            b"prompt_tokens" => u.prompt = parse_u64(value).unwrap_or(0),
            b"completion_tokens" => u.completion = parse_u64(value).unwrap_or(0),
            b"prompt_tokens_details" if value.first() == Some(&b'{') => details = Some(value),
            b"cache_creation_input_tokens" => top_write = parse_u64(value),
            _ => {}
        }
        true
    });
    let mut details_write: Option<u64> = None;
    if let Some(d) = details {
        for_each_member(d, |key, value| {
            match key {
                b"cached_tokens" => u.cached = parse_u64(value).unwrap_or(0),
                b"cache_creation_tokens" => details_write = parse_u64(value),
                _ => {}
            }
            true
        });
    }
    u.cache_write = details_write.or(top_write).unwrap_or(0);
    Some(u)
}

/// Whether `json[at..]` is `: {` (with any whitespace).
fn object_follows(json: &[u8], at: usize) -> bool {
    let at = skip_ws(json, at);
    json.get(at) == Some(&b':') && json.get(skip_ws(json, at + 1)) == Some(&b'{')
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The raw value of member `key` of the top-level JSON object in `json`, or `None` if there is
/// none or the text is not an object. Escaped member names are not unescaped: OpenAI-shaped
/// bodies never escape theirs.
///
/// The members are walked from the last to the first, because `usage` comes last in OpenAI's
/// bodies and events: the scan then touches only the usage object, not the whole completion.
/// Going backwards is unambiguous in valid JSON: outside strings, every unescaped quote met
/// is a closing one. Invalid JSON yields `None` or some value, never a panic.
pub fn top_level_member<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut found = None;
    for_each_member(json, |k, v| {
        if k == key {
            found = Some(v);
            false
        } else {
            true
        }
    });
    found
}

/// Calls `f(name, raw value)` for the members of the top-level object in `json`, from the last
/// to the first, while it returns true. Stops silently at anything that is not valid JSON.
/// Member names are not unescaped; a repeated name is seen once per occurrence (the last
/// first).
fn for_each_member<'a>(json: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool) {
    let open = skip_ws(json, 0);
    if json.get(open) != Some(&b'{') {
        return;
    }
    // `at` is the index of the `}` or `,` that follows the member to look at next.
    let Some(mut at) = back_ws(json, json.len()) else {
        return;
    };
    if json[at] != b'}' || at <= open {
        return;
    }
    loop {
        let Some(v_last) = back_ws(json, at) else {
            return;
        };
        if v_last <= open {
            return; // `{}`
        }
        let Some(v_start) = value_start(json, v_last) else {
            return;
        };
        let Some(colon) = back_ws(json, v_start) else {
            return;
        };
        if json[colon] != b':' {
            return;
        }
        let Some(k_last) = back_ws(json, colon) else {
            return;
        };
        if json[k_last] != b'"' {
            return;
        }
        let Some(k_open) = string_open(json, k_last) else {
            return;
        };
        let Some(sep) = back_ws(json, k_open) else {
            return;
        };
        // A member is only reported once its separator shows it is one of this object's.
        if !matches!(json[sep], b',' | b'{') || (json[sep] == b'{' && sep != open) {
            return;
        }
        if !f(&json[k_open + 1..k_last], &json[v_start..=v_last]) {
            return;
        }
        match json[sep] {
            b',' if sep > open => at = sep,
            _ => return,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while matches!(json.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index of the last non-whitespace byte before `end`.
fn back_ws(json: &[u8], end: usize) -> Option<usize> {
    let mut i = end.min(json.len());
    while i > 0 {
        i -= 1;
        if !matches!(json[i], b' ' | b'\t' | b'\n' | b'\r') {
            return Some(i);
        }
    }
    None
}

/// `json[close]` is the closing quote of a string: the index of its opening quote (the nearest
/// quote before it that an odd run of backslashes does not escape).
fn string_open(json: &[u8], close: usize) -> Option<usize> {
    let mut i = close;
    loop {
        i = memchr::memrchr(b'"', json.get(..i)?)?;
        let backslashes = json[..i].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(i);
        }
    }
}

/// `json[last]` is the last byte of a value: the index of its first byte.
fn value_start(json: &[u8], last: usize) -> Option<usize> {
    match json[last] {
        b'"' => string_open(json, last),
        close @ (b'}' | b']') => {
            // Brackets of one kind balance inside a valid value; strings are skipped whole.
            let open = if close == b'}' { b'{' } else { b'[' };
            let mut depth = 0usize;
            let mut i = last;
            loop {
                match json[i] {
                    b'"' => i = string_open(json, i)?,
                    b if b == close => depth += 1,
                    b if b == open => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => {}
                }
                i = i.checked_sub(1)?;
            }
        }
        _ => {
            let before = json[..last]
                .iter()
                .rposition(|b| matches!(b, b':' | b',' | b'[' | b' ' | b'\t' | b'\n' | b'\r'))?;
            Some(before + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage() {
        let u = extract(
            br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#,
        );
        assert_eq!(u, Some(Usage::reported(12, 5)));
        assert_eq!(extract(br#"{"usage":null}"#), None);
        assert_eq!(extract(br#"{"usage" : null, "x": 1}"#), None);
        // A string mentioning usage before the real member does not hide it.
        assert_eq!(
            extract(
                br#"{"note":""usage":null","usage" :  {"prompt_tokens":1,"completion_tokens":2}}"#
            ),
            Some(Usage::reported(1, 2))
        );
        assert_eq!(extract(br#"{"choices":[]}"#), None);
        assert_eq!(extract(b"not json \"usage\""), None);
    }

    #[test]
    fn reads_the_cache_split() {
        // OpenAI: cached reads inside prompt_tokens_details.
        let openai = br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}}"#;
        let u = extract(openai).unwrap();
        assert_eq!(
            (u.prompt, u.completion, u.cached, u.cache_write),
            (2006, 300, 1920, 0)
        );
        // Anthropic through its mapping: both in the details, writes also at the top.
        let anthropic = br#"{"usage":{"prompt_tokens":1500,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":1000,"cache_creation_tokens":400},"cache_creation_input_tokens":400}}"#;
        let u = extract(anthropic).unwrap();
        assert_eq!((u.cached, u.cache_write), (1000, 400));
        let top_only = br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"cache_creation_input_tokens":7}}"#;
        assert_eq!(extract(top_only).unwrap().cache_write, 7);
        let null_details =
            br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":null}}"#;
        assert_eq!(extract(null_details), Some(Usage::reported(10, 1)));
    }

    #[test]
    fn only_the_top_level_member_counts() {
        // A nested `usage` (some compatible providers add one under their own key) and the word
        // inside strings, escaped quotes included, are skipped.
        let body = br#" { "x_extra" : {"usage": {"prompt_tokens": 1}},
            "choices": [{"message": {"content": "say \"usage\": {\"prompt_tokens\": 2} [{"}}],
            "note": "back\\slash\\",
            "usage" : { "completion_tokens" : 7 , "prompt_tokens" : 30 } } "#;
        assert_eq!(extract(body), Some(Usage::reported(30, 7)));
        assert_eq!(
            top_level_member(br#"{"a": [1, {"b": "]"}], "c": true }"#, b"c"),
            Some(&b"true"[..])
        );
        assert_eq!(
            top_level_member(br#"{"a": [1, {"b": "]"}], "c": true }"#, b"a"),
            Some(&br#"[1, {"b": "]"}]"#[..])
        );
        assert_eq!(top_level_member(br#"{"a": 1"#, b"b"), None);
        assert_eq!(
            top_level_member(br#"{"a": "x\\", "b": "q\"}"}"#, b"a"),
            Some(&br#""x\\""#[..])
        );
        assert_eq!(
            top_level_member(br#"{"a": "x\\", "b": "q\"}"}"#, b"b"),
            Some(&br#""q\"}""#[..])
        );
        assert_eq!(top_level_member(b"{}", b"a"), None);
        assert_eq!(top_level_member(b"{ } ", b"a"), None);
        assert_eq!(
            top_level_member(br#"{"a":-1.5e3}"#, b"a"),
            Some(&b"-1.5e3"[..])
        );
        assert_eq!(top_level_member(br#""a": 1}"#, b"a"), None);
        assert_eq!(top_level_member(br#"{:1}"#, b"a"), None);
        assert_eq!(top_level_member(br#"{"a" 1}"#, b"a"), None);
        assert_eq!(top_level_member(br#"{"a": "unterminated"#, b"b"), None);
        assert_eq!(top_level_member(br#"[{"a": 1}]"#, b"a"), None);
    }
}
