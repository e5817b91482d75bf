//! The output form of a mapping: the objects and lists a file builds, kept as entry lists
//! until they are written out.
//!
//! Building a `serde_json::Value` for every object literal costs a `String` per key, a
//! B-tree insert per field, a deep clone of every borrowed subtree (a tool's `parameters`)
//! and, at the end, freeing it all. An [`Out`] object is a vector of entries whose keys
//! borrow the program's field names and whose leaves borrow the input documents; it is
//! written straight to bytes, or turned into a `Value` once where a caller needs one.

use serde_json::{Map, Number, Value};
use sonic_rs::format::{CompactFormatter, Formatter};

/// Entries of an output object, in the order the file sets them. Keys are unique: every
/// write goes through [`put`] unless the compiler already guarantees it (distinct literal
/// fields).
pub type Fields<'a> = Vec<(&'a str, Out<'a>)>;

#[derive(Debug, Clone)]
pub enum Out<'a> {
    /// No value: the field is left out.
    Absent,
    Ref(&'a Value),
    Own(Value),
    Obj(Fields<'a>),
    Arr(Vec<Out<'a>>),
}

impl<'a> Out<'a> {
    /// A document value (`None` for the built forms, which are never null).
    pub fn value(&self) -> Option<&Value> {
        match self {
            Out::Ref(v) => Some(v),
            Out::Own(v) => Some(v),
            Out::Absent | Out::Obj(_) | Out::Arr(_) => None,
        }
    }

    pub fn is_nullish(&self) -> bool {
        matches!(
            self,
            Out::Absent | Out::Ref(Value::Null) | Out::Own(Value::Null)
        )
    }

    /// What `nonempty` drops: absent, null, and empty strings, lists and objects.
    pub fn is_empty(&self) -> bool {
        match self {
            Out::Absent => true,
            Out::Obj(f) => f.is_empty(),
            Out::Arr(a) => a.is_empty(),
            Out::Ref(v) => is_empty(v),
            Out::Own(v) => is_empty(v),
        }
    }

    /// The items of a list, or the value back when it is not one.
    pub fn into_items(self) -> Result<Vec<Out<'a>>, Out<'a>> {
        match self {
            Out::Arr(a) => Ok(a),
            other => {
                let mut items = Vec::new();
                extend(&mut items, other).map(|()| items)
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Out::Obj(_) => "object",
            Out::Arr(_) => "array",
            other => super::builtins::type_name(other.value()),
        }
    }

    /// Field `key` of an object (a copy: borrowed leaves stay borrowed).
    pub fn field(&self, key: &str) -> Option<Out<'a>> {
        match self {
            Out::Obj(f) => f.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
            Out::Ref(Value::Object(m)) => m.get(key).map(Out::Ref),
            Out::Own(Value::Object(m)) => m.get(key).cloned().map(Out::Own),
            _ => None,
        }
    }

    /// The value as a `Value` tree (`None` when absent).
    pub fn into_value(self) -> Option<Value> {
        match self {
            Out::Absent => None,
            Out::Ref(v) => Some(v.clone()),
            Out::Own(v) => Some(v),
            Out::Obj(f) => Some(Value::Object(into_map(f))),
            Out::Arr(a) => Some(Value::Array(
                a.into_iter().filter_map(Out::into_value).collect(),
            )),
        }
    }
}

/// JSON equality of two output values.
pub fn same(a: &Out<'_>, b: &Out<'_>) -> bool {
    match (a.value(), b.value()) {
        (Some(x), Some(y)) => x == y,
        // A built object or list: compared as trees (rare: merge keys are scalars).
        _ => a.clone().into_value() == b.clone().into_value(),
    }
}

/// What `nonempty` drops of a document value: null, and empty strings, lists and objects.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Append the items of a list to `items`; a value that is not a list comes back.
pub fn extend<'a>(items: &mut Vec<Out<'a>>, list: Out<'a>) -> Result<(), Out<'a>> {
    match list {
        Out::Arr(a) => items.extend(a),
        Out::Ref(Value::Array(a)) => items.extend(a.iter().map(Out::Ref)),
        Out::Own(Value::Array(a)) => items.extend(a.into_iter().map(Out::Own)),
        other => return Err(other),
    }
    Ok(())
}

/// Set `key`, replacing an earlier value of the same key in place.
pub fn put<'a>(fields: &mut Fields<'a>, key: &'a str, v: Out<'a>) {
    match fields.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = v,
        None => fields.push((key, v)),
    }
}

/// Removes the field at `path` (nested through objects being built), if set.
pub fn remove_path(fields: &mut Fields<'_>, path: &[String]) {
    match path {
        [] => {}
        [key] => fields.retain(|(k, _)| *k != key.as_str()),
        [key, rest @ ..] => {
            if let Some((_, Out::Obj(inner))) = fields.iter_mut().find(|(k, _)| *k == key.as_str())
            {
                remove_path(inner, rest);
            }
        }
    }
}

pub fn into_map(fields: Fields<'_>) -> Map<String, Value> {
    // Inserted one by one: for maps this small, collecting sorts and bulk-builds, which
    // costs more.
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v.into_value() {
            m.insert(k.to_string(), v);
        }
    }
    m
}

/// Something written out as JSON text.
pub trait WriteJson {
    fn write_json(&self, buf: &mut Vec<u8>);
}

impl WriteJson for Value {
    fn write_json(&self, buf: &mut Vec<u8>) {
        write_value(buf, self);
    }
}

impl WriteJson for super::Completion {
    fn write_json(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.body);
    }
}

/// Appends the JSON text of an output object's entries.
pub fn write_fields(buf: &mut Vec<u8>, fields: &[(&str, Out<'_>)]) {
    write_members(buf, fields.iter().map(|(k, v)| (*k, v)), write_out);
}

/// `{"k":v,...}` with each value written by `write`.
fn write_members<'v, V: 'v>(
    buf: &mut Vec<u8>,
    members: impl Iterator<Item = (&'v str, &'v V)>,
    write: impl Fn(&mut Vec<u8>, &V),
) {
    buf.push(b'{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, k);
        buf.push(b':');
        write(buf, v);
    }
    buf.push(b'}');
}

/// `[v,...]` with each item written by `write`.
fn write_items<V>(buf: &mut Vec<u8>, items: &[V], write: impl Fn(&mut Vec<u8>, &V)) {
    buf.push(b'[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write(buf, v);
    }
    buf.push(b']');
}

pub fn write_out(buf: &mut Vec<u8>, v: &Out<'_>) {
    match v {
        Out::Absent => buf.extend_from_slice(b"null"),
        Out::Ref(v) => write_value(buf, v),
        Out::Own(v) => write_value(buf, v),
        Out::Obj(f) => write_fields(buf, f),
        Out::Arr(a) => write_items(buf, a, write_out),
    }
}

/// Appends the compact JSON text of a value, byte for byte as sonic-rs writes it. Written
/// here rather than through `Serialize`, whose per-value dispatch costs more than the
/// writing itself for the small values of a request; strings still go through sonic-rs's
/// SIMD escaping.
pub fn write_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(true) => buf.extend_from_slice(b"true"),
        Value::Bool(false) => buf.extend_from_slice(b"false"),
        Value::Number(n) => write_number(buf, n),
        Value::String(s) => write_str(buf, s),
        Value::Array(a) => write_items(buf, a, write_value),
        Value::Object(m) => write_members(buf, m.iter().map(|(k, v)| (k.as_str(), v)), write_value),
    }
}

// Writing into a `Vec` cannot fail, hence the ignored results below.

pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Short strings with nothing to escape (member names, models, roles) are copied as they
    // are: sonic-rs first reserves room for the worst case (six bytes a byte), which made
    // a buffer sized for the usual output grow and copy itself for a one-letter model.
    if s.len() <= SHORT_STRING && s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        return;
    }
    let _ = CompactFormatter.write_string_fast(buf, s, true);
}

/// The longest string [`write_str`] checks byte by byte rather than hand to sonic-rs's SIMD.
const SHORT_STRING: usize = 32;

fn write_number(buf: &mut Vec<u8>, n: &Number) {
    let mut f = CompactFormatter;
    // Without `arbitrary_precision` every number is one of the three, and floats are finite.
    let _ = if let Some(u) = n.as_u64() {
        f.write_u64(buf, u)
    } else if let Some(i) = n.as_i64() {
        f.write_i64(buf, i)
    } else if let Some(x) = n.as_f64() {
        f.write_f64(buf, x)
    } else {
        f.write_null(buf)
    };
}

#[cfg(test)]
mod tests {
    use super::write_str;

    #[test]
    fn strings_are_written_as_json_whatever_their_length_and_bytes() {
        let long = "x".repeat(40);
        let long_escaped = format!("{}\"\n", "y".repeat(40));
        for s in [
            "",
            "m",
            "model",
            "gpt-4o",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "\u{1f}",
            "é ü 漢字",
            "\u{7f}",
            "exactly thirty-two bytes long!!!",
            &long,
            &long_escaped,
        ] {
            let mut buf = b"[".to_vec();
            write_str(&mut buf, s);
            let expected = format!("[{}", serde_json::to_string(s).expect("string"));
            assert_eq!(String::from_utf8(buf).expect("utf-8"), expected, "{s:?}");
        }
    }
}
