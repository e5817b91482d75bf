//! The provider's key order for objects a mapping writes out as JSON text.
//!
//! Documents are parsed into `serde_json::Value`s, whose objects keep their keys sorted: an
//! order-preserving map costs every parse and lookup about a third more (measured: one mapped
//! stream event 1.02 → 1.41 µs), for the one place where order shows. That place is
//! `to_json(x)` of an object the provider sent — a tool call's `arguments` from Anthropic's
//! `input` or Gemini's `args`, JSON-mode content from a forced tool — where sorted keys would
//! reorder the model's own JSON answer.
//!
//! So the order is recovered only there, from the raw text. When `x` is a part of the parsed
//! document itself (the usual case: `b.input` borrows from `res`), its path is found by address
//! in the parsed tree, only that part of the raw text is located (sonic-rs skips the rest
//! without building anything) and parsed again into a `sonic_rs::Value`, whose objects keep the
//! text's order; `x` is then written following that order, nested objects included. When `x`
//! is a copy made by the mapping (`with_index` copies what it wraps), the whole document is
//! parsed again, once per evaluation, and the first object equal to `x` gives the order. An
//! object found nowhere in the document (built by the mapping, or altered) is written sorted,
//! as before. Values without an object of two or more keys never trigger any of this.

use std::cell::OnceCell;

use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use super::out;

/// The raw text of the upstream document an evaluation reads, parsed again on demand.
pub struct SourceOrder<'a> {
    raw: &'a [u8],
    /// The document parsed from `raw`, to find a borrowed value's path in.
    parsed: Option<&'a Value>,
    tree: OnceCell<Option<sonic_rs::Value>>,
}

impl<'a> SourceOrder<'a> {
    /// `raw` has already been parsed (and its depth checked) into `parsed`.
    pub fn new(raw: &'a [u8], parsed: Option<&'a Value>) -> Self {
        SourceOrder {
            raw,
            parsed,
            tree: OnceCell::new(),
        }
    }

    /// The raw text of `v` re-parsed, when `v` is a part of the parsed document.
    fn part_of(&self, v: &Value) -> Option<sonic_rs::Value> {
        let mut path = Vec::new();
        if !path_to(self.parsed?, v, &mut path) {
            return None;
        }
        let lazy = sonic_rs::get_from_slice(self.raw, &path).ok()?;
        // A repeated key can make the text's first member differ from the parse's last one.
        sonic_rs::from_str(lazy.as_raw_str())
            .ok()
            .filter(|part| same(part, v))
    }

    fn tree(&self) -> Option<&sonic_rs::Value> {
        self.tree
            .get_or_init(|| sonic_rs::from_slice(self.raw).ok())
            .as_ref()
    }
}

/// Compact JSON text of `v`, with the key order its source gave it where one is known.
pub fn json_text(v: &Value, source: Option<&SourceOrder<'_>>) -> String {
    let mut buf = Vec::with_capacity(64);
    let Some(source) = source.filter(|_| order_can_differ(v)) else {
        out::write_value(&mut buf, v);
        return String::from_utf8(buf).unwrap_or_default();
    };
    if let Some(part) = source.part_of(v) {
        write_guided(&mut buf, v, &part);
    } else {
        match source.tree().and_then(|t| find(t, v)) {
            Some(guide) => write_guided(&mut buf, v, guide),
            None => out::write_value(&mut buf, v),
        }
    }
    // Only UTF-8 is written: strings come from `&str`s, everything else is ASCII.
    String::from_utf8(buf).unwrap_or_default()
}

/// Whether `v` holds an object with two or more keys (else sorted order is the only order).
fn order_can_differ(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.len() > 1 || m.values().any(order_can_differ),
        Value::Array(a) => a.iter().any(order_can_differ),
        _ => false,
    }
}

/// The path from `root` to the very value `target` (by address), as sonic-rs pointer nodes.
fn path_to(root: &Value, target: &Value, path: &mut Vec<sonic_rs::PointerNode>) -> bool {
    if std::ptr::eq(root, target) {
        return true;
    }
    match root {
        Value::Object(m) => {
            for (k, v) in m {
                if matches!(v, Value::Object(_) | Value::Array(_)) {
                    path.push(sonic_rs::PointerNode::Key(sonic_rs::FastStr::new(k)));
                    if path_to(v, target, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if matches!(v, Value::Object(_) | Value::Array(_)) {
                    path.push(sonic_rs::PointerNode::Index(i));
                    if path_to(v, target, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        _ => false,
    }
}

/// The first node of `tree` (depth first, document order) equal to `target`.
fn find<'t>(tree: &'t sonic_rs::Value, target: &Value) -> Option<&'t sonic_rs::Value> {
    // An explicit stack: the document's depth is bounded, but a shard's stack is not the place
    // to spend on it twice.
    let mut stack = vec![tree];
    while let Some(node) = stack.pop() {
        if same(node, target) {
            return Some(node);
        }
        if let Some(o) = node.as_object() {
            let at = stack.len();
            stack.extend(o.iter().map(|(_, v)| v).filter(|v| is_container(v)));
            stack[at..].reverse();
        } else if let Some(a) = node.as_array() {
            let at = stack.len();
            stack.extend(a.iter().filter(|v| is_container(v)));
            stack[at..].reverse();
        }
    }
    None
}

fn is_container(v: &sonic_rs::Value) -> bool {
    v.is_object() || v.is_array()
}

/// Whether the two parses hold the same JSON value (objects as sets of members).
fn same(s: &sonic_rs::Value, v: &Value) -> bool {
    match v {
        Value::Null => s.is_null(),
        Value::Bool(b) => s.as_bool() == Some(*b),
        Value::String(x) => s.as_str() == Some(x.as_str()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                s.as_u64() == Some(u)
            } else if let Some(i) = n.as_i64() {
                s.as_i64() == Some(i)
            } else {
                s.is_f64() && s.as_f64() == n.as_f64()
            }
        }
        Value::Array(a) => s
            .as_array()
            .is_some_and(|sa| sa.len() == a.len() && sa.iter().zip(a).all(|(x, y)| same(x, y))),
        // A source object with a repeated key has more members than its parse: no match.
        Value::Object(m) => s.as_object().is_some_and(|so| {
            so.len() == m.len() && so.iter().all(|(k, x)| m.get(k).is_some_and(|y| same(x, y)))
        }),
    }
}

/// Writes `v` with the key order of `guide`, a node [`same`] as `v`.
fn write_guided(buf: &mut Vec<u8>, v: &Value, guide: &sonic_rs::Value) {
    match (v, guide.as_object(), guide.as_array()) {
        (Value::Object(m), Some(order), _) => {
            buf.push(b'{');
            let mut first = true;
            for (k, g) in order.iter() {
                let Some((key, x)) = m.get_key_value(k) else {
                    continue;
                };
                if !first {
                    buf.push(b',');
                }
                first = false;
                out::write_str(buf, key);
                buf.push(b':');
                write_guided(buf, x, g);
            }
            buf.push(b'}');
        }
        (Value::Array(a), _, Some(order)) => {
            buf.push(b'[');
            for (i, (x, g)) in a.iter().zip(order.iter()).enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_guided(buf, x, g);
            }
            buf.push(b']');
        }
        _ => out::write_value(buf, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pick`'s value as a copy (found by content).
    fn text(raw: &str, pick: impl Fn(&Value) -> Value) -> String {
        let doc: Value = serde_json::from_str(raw).unwrap();
        let src = SourceOrder::new(raw.as_bytes(), Some(&doc));
        json_text(&pick(&doc), Some(&src))
    }

    #[test]
    fn a_borrowed_part_is_found_by_its_path() {
        let raw = r#"{"content": [{"type":"text"}, {"input": {"zeta": [1, {"b": 2, "a": 1}], "alpha": "\u00e9"}}]}"#;
        let doc: Value = serde_json::from_str(raw).unwrap();
        let src = SourceOrder::new(raw.as_bytes(), Some(&doc));
        let part = &doc["content"][1]["input"];
        assert!(src.part_of(part).is_some());
        assert_eq!(
            json_text(part, Some(&src)),
            "{\"zeta\":[1,{\"b\":2,\"a\":1}],\"alpha\":\"\u{e9}\"}"
        );
        // The whole document was not parsed again.
        assert!(src.tree.get().is_none());
    }

    #[test]
    fn an_object_keeps_its_source_order_nested_objects_too() {
        let raw = r#"{"content":[{"input":{"zeta":1,"alpha":{"y":2,"x":[{"b":1,"a":2}]}}}]}"#;
        let got = text(raw, |d| d["content"][0]["input"].clone());
        assert_eq!(got, r#"{"zeta":1,"alpha":{"y":2,"x":[{"b":1,"a":2}]}}"#);
    }

    #[test]
    fn a_copy_is_found_by_content_and_the_first_equal_object_wins() {
        let raw = r#"{"a":{"k":{"q":1,"p":2}},"b":{"k":{"p":2,"q":1}}}"#;
        assert_eq!(text(raw, |d| d["b"]["k"].clone()), r#"{"q":1,"p":2}"#);
        assert_eq!(text(raw, |d| d["a"].clone()), r#"{"k":{"q":1,"p":2}}"#);
    }

    #[test]
    fn an_object_not_in_the_source_is_written_sorted() {
        let raw = r#"{"input":{"b":1,"a":2}}"#;
        let got = text(raw, |_| serde_json::json!({"b": 1, "a": 3}));
        assert_eq!(got, r#"{"a":3,"b":1}"#);
    }

    #[test]
    fn numbers_strings_and_escapes_compare_as_values() {
        let raw =
            r#"{"x":{"n":-3,"f":1.5,"big":18446744073709551615,"s":"\u00e9\n","t":true,"z":null}}"#;
        let got = text(raw, |d| d["x"].clone());
        assert_eq!(
            got,
            "{\"n\":-3,\"f\":1.5,\"big\":18446744073709551615,\"s\":\"\u{e9}\\n\",\"t\":true,\"z\":null}"
        );
    }

    #[test]
    fn repeated_keys_fall_back_to_the_parse() {
        let raw = r#"{"x":{"b":1,"a":2,"b":3}}"#;
        assert_eq!(text(raw, |d| d["x"].clone()), r#"{"a":2,"b":3}"#);
        // Borrowed: the text's first `x` is not the parse's (the last one wins there).
        let raw = r#"{"x":{"q":1,"p":2},"x":{"n":1,"m":2}}"#;
        let doc: Value = serde_json::from_str(raw).unwrap();
        let src = SourceOrder::new(raw.as_bytes(), Some(&doc));
        assert_eq!(json_text(&doc["x"], Some(&src)), r#"{"n":1,"m":2}"#);
    }

    #[test]
    fn no_source_or_no_reorderable_object_writes_as_before() {
        let v = serde_json::json!({"b": [1, {"c": 2}], "a": 1});
        assert_eq!(json_text(&v, None), r#"{"a":1,"b":[1,{"c":2}]}"#);
        let raw = br#"not json"#;
        let src = SourceOrder::new(raw, None);
        assert_eq!(json_text(&v, Some(&src)), r#"{"a":1,"b":[1,{"c":2}]}"#);
        let single = serde_json::json!({"k": {"j": 1}});
        assert!(!order_can_differ(&single));
    }
}
