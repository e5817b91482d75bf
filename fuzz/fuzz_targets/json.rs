//! Bounded JSON (`llmux::json`) on arbitrary bytes: nothing overflows the stack however deep
//! the input nests; the depth check agrees with a count made here; and within the bound, the
//! bounded parse and the validator agree with serde_json on what is valid JSON, and the
//! structural check never refuses valid JSON (and refuses whatever it must: cut, spliced,
//! unbalanced, bad UTF-8), its SSE2 block version agreeing with its scalar reference.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::json::{check_depth, check_structure, check_structure_scalar, parse, validate, JsonError};

/// A bound small enough for the fuzzer to cross it often, well under serde_json's own 128.
const MAX: usize = 24;

/// Deepest nesting outside strings, counted the slow and obvious way.
fn depth(data: &[u8]) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in data {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `data` with every `\uD800`–`\uDFFF` escape inside a string replaced by `\u0041` (same
/// length, same structure); `None` when there is none.
fn without_surrogate_escapes(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = data.to_vec();
    let (mut i, mut in_str, mut found) = (0, false, false);
    while i < out.len() {
        match (in_str, out[i]) {
            (false, b'"') => in_str = true,
            (true, b'"') => in_str = false,
            (true, b'\\') => {
                let esc = out.get(i + 1..i + 6);
                let surrogate = esc.is_some_and(|e| {
                    e[0] == b'u'
                        && e[1].eq_ignore_ascii_case(&b'd')
                        && matches!(e[2].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
                        && e[3].is_ascii_hexdigit()
                        && e[4].is_ascii_hexdigit()
                });
                if surrogate {
                    out[i + 2..i + 6].copy_from_slice(b"0041");
                    found = true;
                }
                // Skip the escaped character (a `\\` or `\"` must not end or start anything).
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    found.then_some(out)
}

fuzz_target!(|data: &[u8]| {
    let deep = depth(data) > MAX;
    assert_eq!(check_depth(data, MAX).is_err(), deep, "depth check disagrees");
    let parsed = parse(data, MAX);
    let valid = validate(data, MAX);
    let structure = check_structure(data, MAX);
    // The block-at-a-time check and its scalar reference agree, on whatever comes in.
    let scalar = check_structure_scalar(data, MAX);
    assert_eq!(
        structure.is_ok(),
        scalar.is_ok(),
        "block {structure:?} vs scalar {scalar:?}"
    );
    assert_eq!(
        structure.as_ref().err().map(JsonError::is_too_deep),
        scalar.as_ref().err().map(JsonError::is_too_deep)
    );
    if deep {
        assert!(matches!(parsed, Err(JsonError::TooDeep { .. })));
        assert!(matches!(valid, Err(JsonError::TooDeep { .. })));
        // The structural check reports the first problem it meets, which may come before
        // the depth (a stray byte): any error will do.
        assert!(structure.is_err());
        return;
    }
    // Into a `Value`: serde_json checks UTF-8 in strings only when it keeps them.
    let reference = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    assert_eq!(parsed.is_ok(), reference, "parse disagrees with serde_json");
    // An escaped lone surrogate (`"\ud800"`) is JSON by the grammar (RFC 8259 §8.2 leaves
    // its meaning open); serde_json refuses it because it cannot make a Rust string of it.
    // The validator, which makes no strings, accepts it, as JavaScript and Python do: its
    // reference is serde_json on the same text with every escaped surrogate made a letter.
    let lenient = match without_surrogate_escapes(data) {
        Some(plain) => serde_json::from_slice::<serde_json::Value>(&plain).is_ok(),
        None => reference,
    };
    assert_eq!(valid.is_ok(), lenient, "validate disagrees with serde_json");
    if reference {
        assert!(structure.is_ok(), "structure check refused valid JSON: {structure:?}");
    }
});
