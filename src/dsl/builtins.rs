//! The library of built-in functions: their signatures (checked at load time)
//! and the pure value helpers the interpreter calls. Functions that take a
//! lambda (`map`, `filter`, ...) are evaluated by the interpreter itself.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Map,
    Filter,
    Reject,
    FlatMap,
    Find,
    Any,
    All,
    Leading,
    AfterLeading,
    Len,
    First,
    Last,
    Join,
    MergeAdjacent,
    WithIndex,
    Lookup,
    TextOf,
    AsList,
    Nonempty,
    Present,
    IsString,
    IsArray,
    IsObject,
    IsNumber,
    IsBool,
    TypeOf,
    ParseJson,
    TryParseJson,
    ToJson,
    DataUrl,
    Base64Decode,
    Base64Encode,
    StartsWith,
    EndsWith,
    Contains,
    Lower,
    Upper,
    Trim,
    Split,
    Replace,
    Clamp,
    Min,
    Max,
    Round,
    Int,
    ToString,
    ToNumber,
    Merge,
    Without,
    Keys,
    Get,
    Invert,
    NewId,
    Now,
    Invalid,
}

/// Signature of a built-in: arity bounds and which argument is a function
/// (a lambda `x -> ...` or the name of a one-parameter `fn`).
pub struct Spec {
    pub name: &'static str,
    pub builtin: Builtin,
    pub min: usize,
    pub max: usize,
    pub lambda_arg: Option<usize>,
    /// `lookup(table, key)`: the first argument names a table.
    pub table_arg: bool,
    pub doc: &'static str,
}

const VARIADIC: usize = usize::MAX;

macro_rules! spec {
    ($name:literal, $b:ident, $min:expr, $max:expr, $lam:expr, $tab:expr, $doc:literal) => {
        Spec {
            name: $name,
            builtin: Builtin::$b,
            min: $min,
            max: $max,
            lambda_arg: $lam,
            table_arg: $tab,
            doc: $doc,
        }
    };
}

pub const SPECS: &[Spec] = &[
    spec!("map", Map, 2, 2, Some(1), false, "map(xs, x -> e): apply to every item; absent results are dropped"),
    spec!("filter", Filter, 2, 2, Some(1), false, "filter(xs, x -> cond): keep items where cond holds"),
    spec!("reject", Reject, 2, 2, Some(1), false, "reject(xs, x -> cond): drop items where cond holds"),
    spec!("flat_map", FlatMap, 2, 2, Some(1), false, "flat_map(xs, x -> list): map and concatenate"),
    spec!("find", Find, 2, 2, Some(1), false, "find(xs, x -> cond): first matching item or absent"),
    spec!("any", Any, 2, 2, Some(1), false, "any(xs, x -> cond): true if some item matches"),
    spec!("all", All, 2, 2, Some(1), false, "all(xs, x -> cond): true if every item matches"),
    spec!("leading", Leading, 2, 2, Some(1), false, "leading(xs, x -> cond): the leading run of matching items"),
    spec!("after_leading", AfterLeading, 2, 2, Some(1), false, "after_leading(xs, x -> cond): what follows that run"),
    spec!("len", Len, 1, 1, None, false, "len(x): length of a string, array or object"),
    spec!("first", First, 1, 1, None, false, "first(xs): first item or absent"),
    spec!("last", Last, 1, 1, None, false, "last(xs): last item or absent"),
    spec!("join", Join, 2, 2, None, false, "join(strings, sep)"),
    spec!("merge_adjacent", MergeAdjacent, 3, 3, None, false, "merge_adjacent(xs, \"role\", \"content\"): merge neighbours with the same key, concatenating the list field"),
    spec!("with_index", WithIndex, 1, 1, None, false, "with_index(xs): [{index, value}, ...]"),
    spec!("lookup", Lookup, 2, 2, None, true, "lookup(table, key): table value, the table's `_` default, or absent"),
    spec!("text_of", TextOf, 1, 1, None, false, "text_of(content): an OpenAI content (string or parts) as plain text"),
    spec!("as_list", AsList, 1, 1, None, false, "as_list(x): wrap a scalar in a list; lists unchanged"),
    spec!("nonempty", Nonempty, 1, 1, None, false, "nonempty(x): absent if x is an empty string, list or object"),
    spec!("present", Present, 1, 1, None, false, "present(x): true unless x is absent"),
    spec!("is_string", IsString, 1, 1, None, false, "is_string(x)"),
    spec!("is_array", IsArray, 1, 1, None, false, "is_array(x)"),
    spec!("is_object", IsObject, 1, 1, None, false, "is_object(x)"),
    spec!("is_number", IsNumber, 1, 1, None, false, "is_number(x)"),
    spec!("is_bool", IsBool, 1, 1, None, false, "is_bool(x)"),
    spec!("type_of", TypeOf, 1, 1, None, false, "type_of(x): \"string\", \"number\", ..., \"absent\""),
    spec!("parse_json", ParseJson, 1, 1, None, false, "parse_json(s): parse a JSON string; invalid JSON is a 400"),
    spec!("try_parse_json", TryParseJson, 1, 1, None, false, "try_parse_json(s): parse, or absent if invalid"),
    spec!("to_json", ToJson, 1, 1, None, false, "to_json(v): serialise to a JSON string"),
    spec!("base64_decode", Base64Decode, 1, 1, None, false, "base64_decode(s): the UTF-8 text standard base64 encodes, else absent"),
    spec!("base64_encode", Base64Encode, 1, 1, None, false, "base64_encode(s): standard base64 of the string's UTF-8 bytes"),
    spec!("data_url", DataUrl, 1, 1, None, false, "data_url(s): {mime_type, data} of a base64 data: URL, else absent"),
    spec!("starts_with", StartsWith, 2, 2, None, false, "starts_with(s, prefix)"),
    spec!("ends_with", EndsWith, 2, 2, None, false, "ends_with(s, suffix)"),
    spec!("contains", Contains, 2, 2, None, false, "contains(s_or_list, x)"),
    spec!("lower", Lower, 1, 1, None, false, "lower(s)"),
    spec!("upper", Upper, 1, 1, None, false, "upper(s)"),
    spec!("trim", Trim, 1, 1, None, false, "trim(s)"),
    spec!("split", Split, 2, 2, None, false, "split(s, sep)"),
    spec!("replace", Replace, 3, 3, None, false, "replace(s, from, to)"),
    spec!("clamp", Clamp, 3, 3, None, false, "clamp(x, lo, hi)"),
    spec!("min", Min, 2, VARIADIC, None, false, "min(a, b, ...)"),
    spec!("max", Max, 2, VARIADIC, None, false, "max(a, b, ...)"),
    spec!("round", Round, 1, 1, None, false, "round(x): nearest integer"),
    spec!("int", Int, 1, 1, None, false, "int(x): truncate a number to an integer"),
    spec!("to_string", ToString, 1, 1, None, false, "to_string(x)"),
    spec!("to_number", ToNumber, 1, 1, None, false, "to_number(x): parse a numeric string"),
    spec!("merge", Merge, 2, VARIADIC, None, false, "merge(a, b, ...): shallow object merge, later wins"),
    spec!("without", Without, 2, VARIADIC, None, false, "without(obj, \"k\", ...): drop keys"),
    spec!("keys", Keys, 1, 1, None, false, "keys(obj)"),
    spec!("get", Get, 2, 2, None, false, "get(obj_or_list, key_or_index)"),
    spec!("invert", Invert, 1, 1, None, false, "invert(b): boolean not that keeps absent absent"),
    spec!("new_id", NewId, 1, 1, None, false, "new_id(prefix): prefix + 24 hex chars, unique per request"),
    spec!("now", Now, 0, 0, None, false, "now(): the request's unix time in seconds"),
    spec!("invalid", Invalid, 1, 1, None, false, "invalid(message): reject the request with a 400"),
];

pub fn lookup(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

pub fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "absent",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// OpenAI message content as text: a string as is, a list of parts as the
/// concatenation of its text parts.
pub fn text_of(v: &Value) -> Option<Value> {
    match v {
        Value::String(_) => Some(v.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p {
                    Value::String(s) => out.push_str(s),
                    Value::Object(o) => {
                        if let Some(Value::String(t)) = o.get("text") {
                            out.push_str(t);
                        }
                    }
                    _ => {}
                }
            }
            Some(Value::String(out))
        }
        Value::Null => None,
        other => Some(Value::String(other.to_string())),
    }
}

/// `data:<mime>;base64,<data>` → `{mime_type, data}`.
pub fn data_url(s: &str) -> Option<Value> {
    let rest = s.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = mime.split(';').next().unwrap_or_default();
    let mut m = Map::new();
    m.insert(
        "mime_type".into(),
        Value::String(if mime.is_empty() {
            "application/octet-stream".into()
        } else {
            mime.to_string()
        }),
    );
    m.insert("data".into(), Value::String(data.to_string()));
    Some(Value::Object(m))
}

/// Merge neighbouring objects whose `key` field is equal by concatenating their
/// `field` lists (a non-list value is treated as a one-item list).
pub fn merge_adjacent(items: Vec<Value>, key: &str, field: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        let same = match (out.last(), &item) {
            (Some(Value::Object(prev)), Value::Object(cur)) => {
                prev.get(key).is_some() && prev.get(key) == cur.get(key)
            }
            _ => false,
        };
        if !same {
            out.push(item);
            continue;
        }
        let Value::Object(mut cur) = item else {
            continue;
        };
        let Some(Value::Object(prev)) = out.last_mut() else {
            continue;
        };
        // Updated in place when present: no new key string.
        let slot = match prev.get_mut(field) {
            Some(slot) => slot,
            None => prev.entry(field.to_string()).or_insert(Value::Null),
        };
        let mut list = match std::mem::take(slot) {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            v => vec![v],
        };
        match cur.remove(field) {
            Some(Value::Array(a)) => list.extend(a),
            Some(Value::Null) | None => {}
            Some(v) => list.push(v),
        }
        *slot = Value::Array(list);
    }
    out
}

/// Deterministic, well-mixed id material from the request id and a counter,
/// so golden cases are reproducible while ids stay unique per request: 24 lowercase hex
/// digits appended to `out`.
pub fn push_id_hex(out: &mut String, seed: &str, counter: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // FNV-1a over the seed, then splitmix64 rounds with the counter.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut x = h ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // Two rounds of 16 digits, of which the first 24 are kept.
    for digits in [16, 8] {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for i in 0..digits {
            let nibble = (z >> (60 - 4 * i)) & 0xf;
            out.push(char::from(HEX[nibble as usize]));
        }
    }
}

/// Truthiness used by `if`, `when`, `and`, `or`, `not`, `filter`:
/// absent, null, false, 0, "", [] and {} are false.
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Make a JSON number from an f64, as an integer when it is one.
pub fn num(f: f64) -> Option<Value> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        // Exact: |f| < 2^53 and integral.
        Some(Value::from(f as i64))
    } else {
        serde_json::Number::from_f64(f).map(Value::Number)
    }
}

/// `base64_decode`: standard base64 (padding optional) holding UTF-8 text (an event-stream
/// chunk's `bytes` is base64 JSON); `None` otherwise.
pub fn base64_decode(s: &str) -> Option<String> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(s.trim_ascii()).ok()?;
    String::from_utf8(bytes).ok()
}

/// `base64_encode`: standard base64 with padding.
pub fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_url_splits_mime_and_data() {
        assert_eq!(
            data_url("data:image/png;base64,iVBOR"),
            Some(json!({"mime_type": "image/png", "data": "iVBOR"}))
        );
        assert_eq!(data_url("https://x/y.png"), None);
        assert_eq!(data_url("data:text/plain,hello"), None);
    }

    #[test]
    fn merge_adjacent_concatenates_same_role() {
        let v = vec![
            json!({"role": "user", "content": [1]}),
            json!({"role": "user", "content": [2]}),
            json!({"role": "assistant", "content": [3]}),
            json!({"role": "user", "content": 4}),
        ];
        assert_eq!(
            merge_adjacent(v, "role", "content"),
            vec![
                json!({"role": "user", "content": [1, 2]}),
                json!({"role": "assistant", "content": [3]}),
                json!({"role": "user", "content": 4}),
            ]
        );
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let id = |seed: &str, n: u64| {
            let mut s = String::new();
            push_id_hex(&mut s, seed, n);
            s
        };
        assert_eq!(id("r1", 0), id("r1", 0));
        assert_ne!(id("r1", 0), id("r1", 1));
        assert_eq!(id("r1", 0).len(), 24);
    }

    #[test]
    fn every_spec_name_is_unique() {
        for (i, a) in SPECS.iter().enumerate() {
            assert!(
                SPECS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
    }
}
