//! The members of a top-level JSON object, found without parsing it: strings are skipped by
//! their quotes and nested values by counting brackets outside strings, so a walk costs what
//! it passes over and never recurses. OpenAI-shaped answers put their small members around the
//! one large value (`choices`): `id`, `object`, `created` and `model` first, `usage` last (or,
//! from servers that sort their keys, `choices` first). The walks here read from either end
//! towards it, so the messages are not crossed to find what surrounds them.
//!
//! Invalid JSON yields `None` or some value, never a panic. Member names are not unescaped:
//! OpenAI-shaped bodies never escape theirs.

/// The raw values of the top-level members named in `keys` (`None` for one not found). The
/// members are read from the first while their values are scalars, then from the last back to
/// the first nested value: both ends of a chat completion (its names and its usage), without
/// crossing the messages between them unless a key is only found there.
pub fn top_level_members<'a, const N: usize>(
    json: &'a [u8],
    keys: [&[u8]; N],
) -> [Option<&'a [u8]>; N] {
    let mut found = [None; N];
    let mut missing = N;
    let mut take = |key: &[u8], value: &'a [u8]| {
        for (k, slot) in keys.iter().zip(found.iter_mut()) {
            if slot.is_none() && *k == key {
                *slot = Some(value);
                missing -= 1;
            }
        }
        missing > 0
    };
    let Some(nested) = leading_scalars(json, &mut take) else {
        return found;
    };
    let nested_at = json[nested..].as_ptr() as usize;
    for_each_member(json, |key, value| {
        value.as_ptr() as usize >= nested_at && take(key, value)
    });
    found
}

/// The raw value of the top-level member that `name` finds (a searcher for the quoted name and
/// its colon, `"model":`) when it is one of the members before the object's first nested value:
/// found by one vectorised search, not by walking the members. `None` when the search finds no
/// such member (the name is absent, spaced differently, or first met after a bracket: nested,
/// or only maybe so), and the caller then walks. Read from valid JSON, the name found is a
/// member's: outside strings every quote is unescaped, and inside them every quote is escaped.
pub fn leading_member<'a>(json: &'a [u8], name: &memchr::memmem::Finder<'_>) -> Option<&'a [u8]> {
    let open = skip_ws(json, 0);
    if json.get(open) != Some(&b'{') {
        return None;
    }
    // Depth one: searched for only before the first bracket after the object's own (a bracket
    // in a string makes this give up early; the walk then judges).
    let nested =
        memchr::memchr2(b'{', b'[', &json[open + 1..]).map_or(json.len(), |i| open + 1 + i);
    let at = open + name.find(&json[open..nested])?;
    // A name's opening quote comes after the object's `{` or a member's `,`: not a closing
    // quote (escaped or not) of some string.
    if !matches!(back_ws(json, at).map(|i| json[i]), Some(b'{' | b',')) {
        return None;
    }
    let start = skip_ws(json, at + name.needle().len());
    let end = scalar_end(json, start)?;
    Some(&json[start..end])
}

/// Where the value of a member starts, given where its name's opening quote is and the
/// name's length as written (as [`crate::json::check_structure_members`] found it); `None`
/// when no colon follows the name.
pub fn member_value_start(json: &[u8], quote: usize, name_len: usize) -> Option<usize> {
    let colon = skip_ws(json, quote + name_len + 2);
    (json.get(colon) == Some(&b':')).then(|| skip_ws(json, colon + 1))
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
pub fn for_each_member<'a>(json: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool) {
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

/// Calls `f(name, raw value)` for the members of the top-level object in `json`, first to
/// last, while it returns true; true when the walk crossed the whole object (and only
/// whitespace follows). For bytes already known to be JSON (a body that parsed): values are
/// crossed by [`value_end`]. Member names are not unescaped.
pub fn for_each_member_forward<'a>(
    json: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> bool {
    for_each_quoted_member(json, |quoted, value| f(&quoted[1..quoted.len() - 1], value))
}

/// [`for_each_quoted_member`] from `notes` (where the members of `json` are, as its parser met
/// them) when there are notes that fit, else by walking the bytes.
pub fn for_each_top_member<'a>(
    json: &'a [u8],
    notes: Option<&super::TopMembers>,
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> bool {
    // An empty object has no notes to go by.
    if let Some(notes) = notes.filter(|n| !n.is_empty()) {
        match notes.for_each(json, &mut f) {
            Some(all) => return all,
            None => tracing::error!("a document's noted members do not fit its bytes"),
        }
    }
    for_each_quoted_member(json, f)
}

/// [`for_each_member_forward`] with each name as written, between its quotes.
pub fn for_each_quoted_member<'a>(
    json: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> bool {
    let open = skip_ws(json, 0);
    if json.get(open) != Some(&b'{') {
        return false;
    }
    let mut i = skip_ws(json, open + 1);
    if json.get(i) == Some(&b'}') {
        return skip_ws(json, i + 1) == json.len();
    }
    loop {
        if json.get(i) != Some(&b'"') {
            return false;
        }
        let Some(name_end) = string_end(json, i) else {
            return false;
        };
        let colon = skip_ws(json, name_end);
        if json.get(colon) != Some(&b':') {
            return false;
        }
        let start = skip_ws(json, colon + 1);
        let Some(end) = value_end(json, start).filter(|end| *end > start) else {
            return false;
        };
        if !f(&json[i..name_end], &json[start..end]) {
            return false;
        }
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i = skip_ws(json, i + 1),
            Some(b'}') => return skip_ws(json, i + 1) == json.len(),
            _ => return false,
        }
    }
}

/// Calls `f(raw element)` for the elements of the array in `json`, first to last, while it
/// returns true. Elements are crossed by [`value_end`] (for bytes known to be JSON: linear, no
/// recursion); stops silently at anything that is not an array.
pub fn for_each_element<'a>(json: &'a [u8], mut f: impl FnMut(&'a [u8]) -> bool) {
    let open = skip_ws(json, 0);
    if json.get(open) != Some(&b'[') {
        return;
    }
    let mut i = skip_ws(json, open + 1);
    if json.get(i) == Some(&b']') {
        return;
    }
    loop {
        let Some(end) = value_end(json, i).filter(|end| *end > i) else {
            return;
        };
        if !f(&json[i..end]) {
            return;
        }
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i = skip_ws(json, i + 1),
            _ => return,
        }
    }
}

pub fn skip_ws(json: &[u8], mut i: usize) -> usize {
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
            // Brackets of one kind balance inside a valid value; strings are skipped whole,
            // the few bytes between them looked at one by one (as in `value_end`).
            let open = if close == b'}' { b'{' } else { b'[' };
            let mut depth = 0usize;
            let mut i = last;
            loop {
                let b = json[i];
                if b == b'"' {
                    i = string_open(json, i)?.checked_sub(1)?;
                    continue;
                }
                if b == close {
                    depth += 1;
                } else if b == open {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
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

/// Calls `f(raw name, raw value)` for the members of the top-level object in `json`, first to
/// last, while it returns true and the values are scalars (strings, numbers, literals). Returns
/// where the first object or array value starts, if the walk stopped there: nested values are
/// not passed over (they hold the messages). Stops silently at anything that is not JSON.
/// Names are not unescaped.
fn leading_scalars<'a>(
    json: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> Option<usize> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None; // `}` of `{}`, or not JSON
        }
        let key_end = string_end(json, i)?;
        let key = &json[i + 1..key_end - 1];
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(json, i + 1);
        if matches!(json.get(start), Some(b'{' | b'[')) {
            return Some(start);
        }
        let end = scalar_end(json, start)?;
        if !f(key, &json[start..end]) {
            return None;
        }
        i = skip_ws(json, end);
        if json.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// The index just past the string whose opening quote is at `open`. The first bytes eight at
/// a time in a machine word (names and ids are short: a vectorised search costs more to set
/// up than it saves there, and a byte at a time cost about ten instructions a byte), the rest
/// of a long string (content) by `memchr`.
pub fn string_end(json: &[u8], open: usize) -> Option<usize> {
    const SHORT: usize = 48;
    let mut i = open + 1;
    let short_end = json.len().min(i + SHORT);
    while i < short_end {
        // Sixteen bytes at once where SSE2 is (every x86_64), else eight in a machine word.
        #[cfg(target_arch = "x86_64")]
        let found = match special_in_16(json, i) {
            Some(16) => {
                i += 16;
                continue;
            }
            Some(at) => {
                i += at;
                true
            }
            None => false,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let found = false;
        if let (false, Some(word)) = (found, json.get(i..i + 8)) {
            let word = u64::from_le_bytes(word.try_into().ok()?);
            let special = has_byte(word, b'"') | has_byte(word, b'\\');
            if special == 0 {
                i += 8;
                continue;
            }
            // The lowest flag marks the first quote or backslash exactly (a borrow can only
            // flag bytes after a true one).
            i += (special.trailing_zeros() / 8) as usize;
        }
        match json[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    loop {
        i += memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// Where the first quote or backslash is among the 16 bytes at `json[i..]` (16 if none is);
/// `None` when fewer than 16 bytes are left.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_in_16(json: &[u8], i: usize) -> Option<usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let bytes = json.get(i..i + 16)?;
    // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes of `bytes`, unaligned.
    let mask = unsafe {
        let v = _mm_loadu_si128(bytes.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(quote, backslash)) as u32
    };
    Some(if mask == 0 {
        16
    } else {
        mask.trailing_zeros() as usize
    })
}

/// The index just past the value that starts at `json[start]`. Nested values are crossed by
/// their brackets and strings only (strings skipped by [`string_end`], the bytes between them
/// looked at one by one), not validated: for bytes already known to be JSON, such as a body
/// that parsed. Linear, no recursion; `None` when the value does not end.
pub fn value_end(json: &[u8], start: usize) -> Option<usize> {
    let open = *json.get(start)?;
    let close = match open {
        b'{' => b'}',
        b'[' => b']',
        _ => return scalar_end(json, start),
    };
    // Between one string and the next quote or bracket there are only a few bytes (`":"`,
    // `","`, a number): a byte at a time beats a vectorised search's set-up on every stretch.
    let mut depth = 0usize;
    let mut i = start;
    loop {
        let b = *json.get(i)?;
        if b == b'"' {
            i = string_end(json, i)?;
            continue;
        }
        if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return Some(i + 1);
            }
        }
        i += 1;
    }
}

/// The high bit of each byte of `word` that equals `byte` (and possibly of bytes above the
/// first such one); zero when none does.
const fn has_byte(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = word ^ (ONES * byte as u64);
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

fn scalar_end(json: &[u8], start: usize) -> Option<usize> {
    if *json.get(start)? == b'"' {
        return string_end(json, start);
    }
    let len = json[start..]
        .iter()
        .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(json.len() - start);
    (len > 0).then_some(start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte at a time: what `string_end` must agree with.
    fn naive_string_end(json: &[u8], open: usize) -> Option<usize> {
        let mut i = open + 1;
        while i < json.len() {
            match json[i] {
                b'"' => return Some(i + 1),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        None
    }

    #[test]
    fn a_leading_member_is_found_by_one_search_or_left_to_the_walk() {
        let name = memchr::memmem::Finder::new(b"\"model\":");
        let find = |json: &str| leading_member(json.as_bytes(), &name).map(|v| v.to_vec());
        let v = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            find(r#"{"id":"a","model":"m-1","choices":[]}"#),
            v(r#""m-1""#)
        );
        assert_eq!(find(r#" { "model":null}"#), v("null"));
        // A quoted name inside a string is escaped: the real member after it is found.
        assert_eq!(find(r#"{"id":"x\"model\":\"y","model":"m"}"#), v(r#""m""#));
        // Nested, after a bracket, or after a bracket in a string: the walk's to judge.
        assert_eq!(
            find(r#"{"choices":[{"model":"inner"}],"model":"up"}"#),
            None
        );
        assert_eq!(find(r#"{"a":"[","model":"m"}"#), None);
        // Not found this way: spaced, absent, not an object, not in a name's place.
        assert_eq!(find(r#"{"model" : "m"}"#), None);
        assert_eq!(find(r#"{"id":"m"}"#), None);
        assert_eq!(find(r#"["model":"m"]"#), None);
        assert_eq!(find(r#"{"a":"b""model":"m"}"#), None);
        assert_eq!(find(r#"{"model":"#), None);
        // Whatever it finds, the walk finds too.
        for json in [
            r#"{"id":"a","model":"m-1","choices":[]}"#,
            r#"{"id":"x\"model\":\"y","model":"m"}"#,
        ] {
            let [walked] = top_level_members(json.as_bytes(), [b"model"]);
            assert_eq!(find(json).as_deref(), walked);
        }
    }

    #[test]
    fn strings_end_where_a_byte_at_a_time_says() {
        // Every placement of escapes and the closing quote across word boundaries, in strings
        // shorter and longer than the word-at-a-time stretch, and strings that never end.
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in 0..80 {
            let fill = b"abc\xe9\x80 {}[]:,";
            let body: Vec<u8> = (0..len).map(|i| fill[i % fill.len()]).collect();
            for at in 0..=len {
                for ins in [&b"\\\""[..], b"\\\\", b"\"", b"\\", b"\xff\"", b"\x7f\\\""] {
                    let mut s = vec![b'"'];
                    s.extend_from_slice(&body[..at]);
                    s.extend_from_slice(ins);
                    s.extend_from_slice(&body[at..]);
                    cases.push(s.clone());
                    s.push(b'"');
                    s.extend_from_slice(b",\"next\":1}");
                    cases.push(s);
                }
            }
        }
        for c in &cases {
            assert_eq!(
                string_end(c, 0),
                naive_string_end(c, 0),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(
            has_byte(u64::from_le_bytes(*b"ab\"cd\\ef"), b'"').trailing_zeros() / 8,
            2
        );
    }

    #[test]
    fn values_end_past_their_strings_and_brackets() {
        let json = br#"{"a":[{"b":"]}\"[{"},[1,{"c":[]}]],"d":"x\\","e":-1.5e3,"f":{}}"#;
        let after =
            |key: &[u8]| json.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let ends: Vec<&[u8]> = [&b"\"a\":"[..], b"\"d\":", b"\"e\":", b"\"f\":"]
            .iter()
            .map(|key| {
                let at = after(key);
                &json[at..value_end(json, at).unwrap()]
            })
            .collect();
        assert_eq!(ends[0], &br#"[{"b":"]}\"[{"},[1,{"c":[]}]]"#[..]);
        assert_eq!(ends[1], &br#""x\\""#[..]);
        assert_eq!(ends[2], &b"-1.5e3"[..]);
        assert_eq!(ends[3], &b"{}"[..]);
        assert_eq!(value_end(json, 0), Some(json.len()));
        // Nesting far past any parser's bound: counted, not recursed into.
        let deep = [vec![b'['; 200_000], vec![b']'; 200_000]].concat();
        assert_eq!(value_end(&deep, 0), Some(deep.len()));
        assert_eq!(value_end(&deep[..deep.len() - 1], 0), None);
        // Values that do not end.
        for open in [&b"[1,[2]"[..], b"{\"a\":\"}", b"\"abc", b""] {
            assert_eq!(
                value_end(open, 0),
                None,
                "{:?}",
                String::from_utf8_lossy(open)
            );
        }
    }

    #[test]
    fn finds_members_on_either_side_of_the_messages() {
        let openai = br#"{"id":"c-1","object":"chat.completion","created":1,"model":"m-1",
            "choices":[{"index":0,"message":{"content":"\"usage\": {} \"model\": \"no\""}}],
            "usage":{"prompt_tokens":1},"system_fingerprint":"fp"}"#;
        let [usage, model, id] = top_level_members(openai, [b"usage", b"model", b"id"]);
        assert_eq!(usage, Some(&br#"{"prompt_tokens":1}"#[..]));
        assert_eq!(model, Some(&br#""m-1""#[..]));
        assert_eq!(id, Some(&br#""c-1""#[..]));
        let sorted = br#"{"choices":[{"model":"no","id":"no"}],"created":1,"id":"c-2","model":"m-2","usage":{"id":"no"}}"#;
        let [usage, model, id, choices] =
            top_level_members(sorted, [b"usage", b"model", b"id", b"choices"]);
        assert_eq!(usage, Some(&br#"{"id":"no"}"#[..]));
        assert_eq!(model, Some(&br#""m-2""#[..]));
        assert_eq!(id, Some(&br#""c-2""#[..]));
        assert_eq!(choices, Some(&br#"[{"model":"no","id":"no"}]"#[..]));
        // A member between two nested values is found by crossing the last one.
        let middle = br#"{"a":{"id":"no"},"id":"yes","b":[1]}"#;
        assert_eq!(top_level_members(middle, [b"id"]), [Some(&br#""yes""#[..])]);
        // Only scalars: the forward walk sees them all.
        assert_eq!(
            top_level_members(br#"{"a":1,"b":"x"}"#, [b"b", b"c"]),
            [Some(&br#""x""#[..]), None]
        );
        for bad in [
            &b""[..],
            b"{",
            b"[1]",
            br#"{"a":{"#,
            br#"{"a":"x"#,
            br#"{"a" 1}"#,
        ] {
            assert_eq!(top_level_members(bad, [b"a"]), [None], "{bad:?}");
        }
    }

    #[test]
    fn only_the_top_level_member_counts() {
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

    #[test]
    fn elements_are_crossed_whole_and_in_order() {
        let elements = |json: &[u8]| {
            let mut out = Vec::new();
            for_each_element(json, |e| {
                out.push(String::from_utf8_lossy(e).into_owned());
                true
            });
            out
        };
        assert_eq!(
            elements(br#" [ {"a": [1, "],"]}, "x,]" , 3, null, [ [] ] ] "#),
            [r#"{"a": [1, "],"]}"#, r#""x,]""#, "3", "null", "[ [] ]"]
        );
        assert!(elements(b"[]").is_empty());
        assert!(elements(b"[ ]").is_empty());
        // Not an array, cut short, or a missing separator: what came before, then nothing.
        assert!(elements(br#"{"a": 1}"#).is_empty());
        assert_eq!(elements(br#"[1, {"a": 2"#), ["1"]);
        assert_eq!(elements(b"[1 2]"), ["1"]);
        // Nested 100,000 deep: no recursion.
        let deep = format!("[{}{}, 7]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(elements(deep.as_bytes()).len(), 2);
        // Stopping early.
        let mut seen = 0;
        for_each_element(b"[1, 2, 3]", |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 1);
    }
}
