//! Passthrough: rewrite a few top-level members of the client's JSON body in
//! place, copying every other byte verbatim (no full re-serialisation).

use std::borrow::Cow;

use super::out::Out;
use crate::json::members::for_each_top_member;
use crate::json::TopMembers;

/// `raw` with the top-level members in `set` replaced (or appended) and those
/// in `remove` deleted. `None` when `raw` is not an object (or `set` has more than 64
/// members), in which case the caller re-serialises instead. `raw` is the body the
/// request's value was parsed from: its members are found from `notes` (where the check's
/// parser met them) when given, else by crossing values by their brackets and strings
/// without validating them again (a byte-by-byte walk over the messages cost more than the
/// rest of the request's translation).
///
/// `set` is the request block's output as it was built (each key once, in the order first
/// set; an absent value sets nothing): looked up by a scan, where a map built from it cost
/// a hash of every key on both sides.
pub fn patch_top_level(
    raw: &[u8],
    notes: Option<&TopMembers>,
    set: &[(&str, Out<'_>)],
    remove: &[String],
) -> Option<Vec<u8>> {
    if set.len() > 64 {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.push(b'{');
    let mut first = true;
    // Bit per member of `set`: written already.
    let mut written = 0u64;
    let mut readable = true;
    let complete = for_each_top_member(raw, notes, |key, value| {
        let Some(name) = decode_key(key) else {
            readable = false;
            return false;
        };
        let removed = remove.iter().any(|r| r.as_bytes() == name.as_ref());
        let overridden = set
            .iter()
            .position(|(k, v)| k.as_bytes() == name.as_ref() && !matches!(v, Out::Absent));
        if let Some(i) = overridden {
            // A duplicate key is written once, with the override.
            if written & (1 << i) == 0 {
                sep(&mut out, &mut first);
                write_member(&mut out, set[i].0, &set[i].1);
                written |= 1 << i;
            }
        } else if !removed {
            sep(&mut out, &mut first);
            out.extend_from_slice(key);
            out.push(b':');
            out.extend_from_slice(value);
        }
        true
    });
    if !complete || !readable {
        return None;
    }
    for (i, (k, v)) in set.iter().enumerate() {
        if written & (1 << i) == 0 && !matches!(v, Out::Absent) {
            sep(&mut out, &mut first);
            write_member(&mut out, k, v);
        }
    }
    out.push(b'}');
    Some(out)
}

fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

/// Written as mapped bodies are (`out::write_out`): no value is built or cloned first.
fn write_member(out: &mut Vec<u8>, k: &str, v: &Out<'_>) {
    if matches!(v, Out::Absent) {
        return;
    }
    super::out::write_str(out, k);
    out.push(b':');
    super::out::write_out(out, v);
}

/// A member name's bytes, unescaped. Compared with names as bytes: without escapes the raw
/// bytes are the name (the body was checked as UTF-8 when it was parsed), so no second UTF-8
/// check runs per member.
fn decode_key(quoted: &[u8]) -> Option<Cow<'_, [u8]>> {
    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
    if !inner.contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_slice::<String>(quoted)
        .ok()
        .map(|s| Cow::Owned(s.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn patch(raw: &str, set: Value, remove: &[&str]) -> Option<String> {
        let set = set.as_object().cloned().unwrap_or_default();
        let set: Vec<(&str, Out<'_>)> =
            set.iter().map(|(k, v)| (k.as_str(), Out::Ref(v))).collect();
        let remove: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
        patch_top_level(raw.as_bytes(), None, &set, &remove)
            .map(|b| String::from_utf8(b).expect("utf8"))
    }

    #[test]
    fn overrides_keep_other_bytes() {
        let raw = r#"{ "model" : "gpt-x", "messages":[{"role":"user","content":"hi \"there\""}], "n": 1e0 }"#;
        let got = patch(raw, json!({"model": "gpt-4o"}), &["n"]).expect("patched");
        assert_eq!(
            got,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"there\""}]}"#
        );
    }

    #[test]
    fn appends_missing_and_handles_escaped_keys() {
        let got = patch(
            r#"{"mod\u0065l":"a"}"#,
            json!({"model": "b", "x": [1]}),
            &[],
        )
        .expect("patched");
        let v: Value = serde_json::from_str(&got).expect("json");
        assert_eq!(v, json!({"model": "b", "x": [1]}));
        assert_eq!(
            patch("{}", json!({"a": 1}), &[]).as_deref(),
            Some(r#"{"a":1}"#)
        );
    }

    #[test]
    fn deep_member_values_are_crossed_without_recursion() {
        let deep = format!(
            r#"{{"model":"a","x":{}{}}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        let got = patch(&deep, json!({"model": "b"}), &[]).expect("patched");
        assert!(got.starts_with(r#"{"model":"b","x":[[["#));
        assert_eq!(got.len(), deep.len());
    }

    /// Absent values set nothing; a member built by the block (an object) is written whole;
    /// a key the body repeats is written once.
    #[test]
    fn absent_values_keep_the_member_and_built_ones_are_written() {
        let obj = Out::Obj(vec![("include_usage", Out::Own(json!(true)))]);
        let set = [("max_tokens", Out::Absent), ("stream_options", obj)];
        let got =
            patch_top_level(br#"{"max_tokens":5,"a":1,"a":2}"#, None, &set, &[]).expect("patched");
        assert_eq!(
            String::from_utf8(got).expect("utf8"),
            r#"{"max_tokens":5,"a":1,"a":2,"stream_options":{"include_usage":true}}"#
        );
        let set = [("a", Out::Own(json!(3)))];
        let got = patch_top_level(br#"{"a":1,"b":0,"a":2}"#, None, &set, &[]).expect("patched");
        assert_eq!(String::from_utf8(got).expect("utf8"), r#"{"a":3,"b":0}"#);
        let many: Vec<(&str, Out<'_>)> = (0..65).map(|_| ("k", Out::Absent)).collect();
        assert_eq!(
            patch_top_level(b"{}", None, &many, &[]),
            None,
            "re-serialised instead"
        );
    }

    /// The members found from the check's notes patch as the walk's do.
    #[test]
    fn notes_patch_as_the_walk_does() {
        let obj = Out::Obj(vec![("include_usage", Out::Own(json!(true)))]);
        let set = [("model", Out::Own(json!("b"))), ("stream_options", obj)];
        let remove = ["max_tokens".to_owned()];
        for raw in [
            &br#"{"model":"a","messages":[{"role":"user","content":"}\",\""}]}"#[..],
            br#" { "max_tokens" : 5 , "model":"a" ,"stream_options":{"x":1}, "model":"c" }"#,
            br#"{"n":1,"max_tokens":2}"#,
        ] {
            let mut notes = TopMembers::new();
            crate::json::members::for_each_member_forward(raw, |name, _| {
                notes.note(raw, std::str::from_utf8(name).expect("utf8"))
            });
            let noted = patch_top_level(raw, Some(&notes), &set, &remove);
            assert!(noted.is_some());
            assert_eq!(noted, patch_top_level(raw, None, &set, &remove));
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(patch(r#"{"a":1"#, json!({}), &[]), None);
        assert_eq!(patch(r#"[1]"#, json!({}), &[]), None);
        assert_eq!(patch(r#"{"a":1} x"#, json!({}), &[]), None);
        assert_eq!(patch(r#"{"a":"#, json!({}), &[]), None);
    }
}
