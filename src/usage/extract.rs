//! Token usage read from OpenAI-shaped bodies and stream events.
//!
//! This runs on every relayed response and on every stream event, so it does not parse the
//! body: a byte scan from the end finds the top-level `usage` member (skipping strings and
//! matching brackets only) and only that small object is read.

use std::sync::LazyLock;

use super::Usage;
pub use crate::json::members::top_level_member;
use crate::json::members::{skip_ws, string_end, value_end};

/// Reads the top-level `usage` object if the body has one (cheap when absent: a substring
/// check comes first): `prompt_tokens`, `completion_tokens`, and the cache split of the prompt
/// (`prompt_tokens_details.cached_tokens`; cache writes from
/// `prompt_tokens_details.cache_creation_tokens` or Anthropic's `cache_creation_input_tokens`).
pub fn extract(json: &[u8]) -> Option<Usage> {
    from_value(usage_value(json)?)
}

/// The raw value of the top-level `usage` member, looked for only when some `"usage"` in the
/// text is followed by an object (cheap when there is none: a substring search comes first);
/// [`from_value`] refuses a value that is not an object.
pub fn usage_value(json: &[u8]) -> Option<&[u8]> {
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
    top_level_member(json, b"usage")
}

/// The usage object `usage` (the raw value of a `usage` member); `None` when it is not an
/// object.
pub fn from_value(usage: &[u8]) -> Option<Usage> {
    if usage.first() != Some(&b'{') {
        return None;
    }
    // One backward pass over the usage object (and one over its details, if any).
    let mut u = Usage::default();
    let mut details: Option<&[u8]> = None;
    let mut top_write: Option<u64> = None;
    for_each_small_member(usage, |key, value| match key {
        b"prompt_tokens" => u.prompt = parse_u64(value).unwrap_or(0),
        b"completion_tokens" => u.completion = parse_u64(value).unwrap_or(0),
        b"prompt_tokens_details" if value.first() == Some(&b'{') => details = Some(value),
        b"cache_creation_input_tokens" => top_write = parse_u64(value),
        _ => {}
    });
    let mut details_write: Option<u64> = None;
    if let Some(d) = details {
        for_each_small_member(d, |key, value| match key {
            b"cached_tokens" => u.cached = parse_u64(value).unwrap_or(0),
            b"cache_creation_tokens" => details_write = parse_u64(value),
            _ => {}
        });
    }
    u.cache_write = details_write.or(top_write).unwrap_or(0);
    Some(u)
}

/// Calls `f(name, raw value)` for the members of the object `obj`, first to last (of a
/// repeated name the last one read wins, as with a JSON parser), stopping silently at anything
/// malformed. Made for usage objects: a handful of members whose values are mostly integers,
/// which are crossed digit by digit as they are met; names are crossed to their closing quote
/// (and not unescaped). Nested values are crossed by their brackets.
fn for_each_small_member<'a>(obj: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8])) {
    if obj.first() != Some(&b'{') {
        return;
    }
    let mut i = skip_ws(obj, 1);
    while obj.get(i) == Some(&b'"') {
        let Some(name_end) = string_end(obj, i) else {
            return;
        };
        let colon = skip_ws(obj, name_end);
        if obj.get(colon) != Some(&b':') {
            return;
        }
        let start = skip_ws(obj, colon + 1);
        let digits = obj
            .get(start..)
            .map_or(0, |v| v.iter().take_while(|b| b.is_ascii_digit()).count());
        // An integer ends at a separator; anything else (a fraction, a string, an object) is
        // crossed as a JSON value.
        let end = match obj.get(start + digits) {
            Some(b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') if digits > 0 => start + digits,
            _ => match value_end(obj, start) {
                Some(end) => end,
                None => return,
            },
        };
        f(&obj[i + 1..name_end - 1], &obj[start..end]);
        i = skip_ws(obj, end);
        if obj.get(i) != Some(&b',') {
            return;
        }
        i = skip_ws(obj, i + 1);
    }
}

/// Whether `json[at..]` is `: {` (with any whitespace).
fn object_follows(json: &[u8], at: usize) -> bool {
    let at = skip_ws(json, at);
    json.get(at) == Some(&b':') && json.get(skip_ws(json, at + 1)) == Some(&b'{')
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    crate::util::parse_decimal(v)
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

    /// Values other than plain integers are crossed, not misread; a repeated name's last
    /// value counts; malformed objects stop the read without a panic.
    #[test]
    fn usage_members_of_every_shape() {
        let odd = br#"{"total_tokens":1.5e3,"note":"a,\"}b","prompt_tokens":4,"x":[1,{"y":2}],"completion_tokens":6}"#;
        assert_eq!(from_value(odd), Some(Usage::reported(4, 6)));
        let repeated = br#"{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":3}"#;
        assert_eq!(from_value(repeated), Some(Usage::reported(3, 2)));
        let spaced = b"{ \"prompt_tokens\" :\t8 ,\n\"completion_tokens\":9\r}";
        assert_eq!(from_value(spaced), Some(Usage::reported(8, 9)));
        assert_eq!(
            from_value(br#"{"prompt_tokens":-1,"completion_tokens":2}"#),
            Some(Usage::reported(0, 2))
        );
        for bad in [
            &b"{"[..],
            b"{\"",
            b"{\"prompt_tokens\"",
            b"{\"prompt_tokens\":",
            b"{\"prompt_tokens\":5",
            b"{\"prompt_tokens\":5,",
            b"{\"prompt_tokens\":[",
            b"{\"prompt_tokens\" 5}",
            b"{prompt_tokens:5}",
        ] {
            let u = from_value(bad);
            assert!(u.is_none_or(|u| u.completion == 0), "{bad:?}");
        }
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
    }
}
