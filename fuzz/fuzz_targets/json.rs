//! Bounded JSON (`llmux::json`) on arbitrary bytes: nothing overflows the stack however deep
//! the input nests; the depth check agrees with a count made here; and within the bound, the
//! bounded parse and the validator agree with serde_json on what is valid JSON, and the
//! structural check never refuses valid JSON (and refuses whatever it must: cut, spliced,
//! unbalanced, bad UTF-8), its SSE2 block version agreeing with its scalar reference.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::json::{
    check_depth, check_structure, check_structure_members, check_structure_members_scalar,
    check_structure_scalar, parse, validate, JsonError,
};

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
    // And they find the same top-level members.
    const NAMES: [&[u8]; 3] = [b"usage", b"error", b"model"];
    let members = check_structure_members(data, MAX, &NAMES);
    assert_eq!(members.is_ok(), structure.is_ok());
    assert_eq!(members.ok(), check_structure_members_scalar(data, MAX, &NAMES).ok());
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
    // The validator judges the grammar and makes no Rust values: an escaped lone surrogate
    // (`"\ud800"`, RFC 8259 §8.2) and a number past f64 (`1e309`) are JSON to it, as to
    // JavaScript and Python, though serde_json cannot make a `Value` of them. Its reference is
    // serde_json skipping the document (grammar and escapes, but not UTF-8 inside strings) on
    // text that is UTF-8 throughout.
    let grammar = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
        && std::str::from_utf8(data).is_ok();
    assert_eq!(valid.is_ok(), grammar, "validate disagrees with serde_json");
    if reference {
        assert!(structure.is_ok(), "structure check refused valid JSON: {structure:?}");
    }
});
