//! Bounded JSON: every document that comes from a client or an upstream is checked for its
//! nesting depth before it is parsed.
//!
//! Parsing into a `serde_json::Value`, dropping one, comparing, walking and writing one all
//! recurse once per nesting level, and sonic-rs's own recursion guard is not in effect. A
//! 12 KB body of brackets would otherwise overflow a shard's stack and abort the process. The
//! check here is a linear byte scan without recursion: strings are skipped with `memchr`,
//! and only brackets outside strings count.
//!
//! `members` finds a top-level object's members without parsing it (usage, model and id of
//! answers relayed as they came).
//!
//! `LazyDoc` holds a checked document's bytes and builds its tree only on first use, and
//! `TopMembers` where its top-level members are, as the check's parser met them.
//!
//! This is a leaf module (std, memchr, serde_json, sonic-rs, tracing): the provider language uses it
//! too and stays independent of the gateway.

mod lazy;
pub mod members;
mod structure;
mod top_members;

pub use lazy::LazyDoc;
pub use top_members::TopMembers;

use serde_json::Value;
pub use structure::{
    check_structure, check_structure_members, check_structure_members_scalar, check_structure_of,
    check_structure_scalar, MemberNames, MAX_STRUCTURE_DEPTH,
};

/// The default bound (`llmux.server.max_json_depth`): serde_json's own default, far above
/// what any API body needs (a chat request with tools nests about 10 deep).
pub const DEFAULT_MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("JSON nests deeper than the limit of {max} levels (at byte {offset})")]
    TooDeep { max: usize, offset: usize },
    #[error("{0}")]
    Invalid(String),
}

impl JsonError {
    pub fn is_too_deep(&self) -> bool {
        matches!(self, JsonError::TooDeep { .. })
    }
}

/// Fails when arrays and objects in `bytes` nest deeper than `max`. Brackets inside strings
/// do not count; the text need not be valid JSON (the parser reports that).
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), JsonError> {
    // Every level takes at least one byte.
    if bytes.len() <= max {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut i = 0usize;
    let n = bytes.len();
    while i < n {
        match bytes[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(j) = memchr::memchr2(b'"', b'\\', &bytes[i.min(n)..]) else {
                        // An unterminated string: nothing after it counts.
                        return Ok(());
                    };
                    i += j;
                    if bytes[i] == b'\\' {
                        i += 2;
                    } else {
                        break;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(JsonError::TooDeep { max, offset: i });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Parses one JSON document into a `Value` (sonic-rs's SIMD scanner), refusing nesting
/// deeper than `max_depth`.
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    check_depth(bytes, max_depth)?;
    sonic_rs::from_slice(bytes).map_err(|e| JsonError::Invalid(first_line(&e.to_string())))
}

/// Parses a JSON text held in a string (a tool call's `arguments`), with the same bound.
pub fn parse_str(text: &str, max_depth: usize) -> Result<Value, JsonError> {
    parse(text.as_bytes(), max_depth)
}

/// Checks that `bytes` is exactly one complete JSON value (surrounding whitespace allowed),
/// with valid UTF-8 in its strings and nesting within `max_depth`, without building a tree.
/// It judges the grammar: an escaped lone surrogate (`"\ud800"`, RFC 8259 §8.2) and a number
/// past f64 (`1e309`) pass, as they do in JavaScript's and Python's parsers; [`parse`], which
/// makes Rust values, refuses them.
pub fn validate(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check_depth(bytes, max_depth)?;
    // sonic-rs's skipping path underflows an index on empty input.
    if bytes.trim_ascii().is_empty() {
        return Err(JsonError::Invalid(
            "empty document: expected a JSON value".into(),
        ));
    }
    sonic_rs::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| JsonError::Invalid(first_line(&e.to_string())))?;
    // The skipping parser does not look inside escapes.
    check_escapes(bytes)
}

/// Every backslash escape of a document whose backslashes are all inside strings (it parsed)
/// is one JSON has: `\" \\ \/ \b \f \n \r \t`, or `\u` and four hex digits.
fn check_escapes(bytes: &[u8]) -> Result<(), JsonError> {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\\', &bytes[at..]) {
        let i = at + i;
        at = match bytes.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i + 2,
            Some(b'u')
                if bytes
                    .get(i + 2..i + 6)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                i + 6
            }
            _ => {
                return Err(JsonError::Invalid(format!(
                    "invalid escape in a string at byte {i}"
                )))
            }
        };
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn validation_looks_inside_escapes() {
        assert!(validate(br#"{"a":"\u00e9\n\"\\\/"}"#, 8).is_ok());
        assert!(
            validate(br#"{"a":"\ud800"}"#, 8).is_ok(),
            "a lone surrogate is JSON"
        );
        for bad in [
            &br#"{"a":"\ud;99"}"#[..],
            br#"{"a":"\x41"}"#,
            br#"["\u12"]"#,
        ] {
            assert!(
                validate(bad, 8).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn counts_levels_outside_strings_only() {
        assert!(check_depth(nested(128).as_bytes(), 128).is_ok());
        assert_eq!(
            check_depth(nested(129).as_bytes(), 128),
            Err(JsonError::TooDeep {
                max: 128,
                offset: 128
            })
        );
        let quoted = format!(r#"{{"a":"{}","b":[1]}}"#, "[{".repeat(500));
        assert!(check_depth(quoted.as_bytes(), 3).is_ok());
        // An escaped quote does not end the string.
        let escaped = format!(r#"["\"{}"]"#, "[".repeat(50));
        assert!(check_depth(escaped.as_bytes(), 2).is_ok());
        // A trailing backslash at the very end is not read past.
        assert!(check_depth(br#"["aaaaaaaaaaaa\"#, 1).is_ok());
        let objects = format!("{}1{}", r#"{"a":"#.repeat(10), "}".repeat(10));
        assert!(check_depth(objects.as_bytes(), 10).is_ok());
        assert!(check_depth(objects.as_bytes(), 9).is_err());
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        for depth in [1_000, 10_000, 100_000] {
            let e = parse(nested(depth).as_bytes(), DEFAULT_MAX_DEPTH).unwrap_err();
            assert!(e.is_too_deep(), "{e}");
            assert!(validate(nested(depth).as_bytes(), DEFAULT_MAX_DEPTH).is_err());
        }
        let v = parse(br#"{"a":[1,{"b":null}]}"#, 3).unwrap();
        assert_eq!(v["a"][1]["b"], Value::Null);
    }

    #[test]
    fn structure_check_catches_cut_spliced_and_bad_bytes() {
        for ok in [
            &br#"{"a":1}"#[..],
            b" [1,{\"b\":[]}] \n",
            br#"{"s":"[{\"}]"}"#,
            b"\"x\"",
            b"3",
            "{\"é\":\"ü\"}".as_bytes(),
        ] {
            assert!(
                check_structure(ok, 8).is_ok(),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"{not json"[..],
            br#"{"id": "broken"#,
            br#"{"a":1}{"b":2}"#,
            br#"{"a":1} x"#,
            b"",
            b"   ",
            b"{\"a\":\"\xff\xfe\"}",
            br#"{"a":[1}"#,
            br#"{"a":1]]"#,
            br#"{"a":"\"}"#,
            b"nope",
        ] {
            assert!(
                check_structure(bad, 8).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Long strings go through the eight-byte path: escapes and quotes at every offset.
        for at in 0..24 {
            let mut text = "a".repeat(at);
            text.push_str(r#"\"]}"#);
            text.push_str(&"b".repeat(17));
            let doc = format!(r#"{{"k":"{text}","é":"{text}ü"}}"#);
            assert!(check_structure(doc.as_bytes(), 8).is_ok(), "{doc}");
            let mut cut = doc.into_bytes();
            cut.truncate(cut.len() - 2);
            assert!(check_structure(&cut, 8).is_err());
            let mut bad = format!(r#"{{"k":"{}"}}"#, "a".repeat(at + 9)).into_bytes();
            bad[6 + at] = 0xff;
            assert!(check_structure(&bad, 8).is_err(), "0xff at {at}");
        }
        let deep = "[".repeat(2000) + &"]".repeat(2000);
        assert!(check_structure(deep.as_bytes(), 128)
            .unwrap_err()
            .is_too_deep());
        let at_bound = "[".repeat(1024) + &"]".repeat(1024);
        assert!(check_structure(at_bound.as_bytes(), 5000).is_ok());
        assert!(check_structure(format!("[{at_bound}]").as_bytes(), 5000)
            .unwrap_err()
            .is_too_deep());
    }

    #[test]
    fn validate_wants_one_complete_value() {
        for ok in [&br#"{"a":1}"#[..], b" [1,2] ", b"\"x\"", b"3"] {
            assert!(validate(ok, 8).is_ok(), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"{not json"[..],
            br#"{"id": "broken"#,
            br#"{"a":1}{"b":2}"#,
            br#"{"a":1} x"#,
            b"",
            b"\"\xff\xfe\"",
        ] {
            assert!(
                validate(bad, 8).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
