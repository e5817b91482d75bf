//! The chat request's check without its tree: the same parser `json::parse` runs (sonic-rs,
//! through serde), reading the body with visitors that keep only what
//! [`ChatRequestView`](super::ChatRequestView) checks and build nothing else. The gateway
//! forwards most requests as their bytes, so the tree it used to build for the check (every
//! string copied, every object a map) was mostly thrown away unread.
//!
//! It answers "well-formed, with these routing fields" or "not": for any problem the caller
//! runs the tree-building check, which words the error. Both must accept the same bodies, so
//! every value goes through the parser's `deserialize_any` as the tree's does (strings are
//! checked for UTF-8 and escapes, numbers for range), and each visitor mirrors what the tree
//! would hold: a repeated member counts as its last occurrence, a non-negative integer read
//! as signed is still a count, and a float past f64's range is a `null`. A test compares the
//! two on generated bodies.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::chat::ROLES;
use crate::dsl::schema as field;

/// The routing fields of a body that passes the check, and whether it carries the gateway's
/// own `cache` member.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Shape {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub has_cache: bool,
    /// The OpenAI request fields at its top level, bit per id (`dsl::schema::REQUEST_FIELDS`).
    pub fields: u64,
}

/// `Some` when the body (already within the depth bound) passes every check.
pub(super) fn check(body: &[u8]) -> Option<Shape> {
    let top: Top = sonic_rs::from_slice(body).ok()?;
    top.judge()
}

/// What a member holds, as far as the checks look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool(bool),
    /// A non-negative integer.
    Count(u64),
    /// A string, and whether it passed the test the visitor was given.
    Str(bool),
    /// Anything else: a negative or fractional number, an array, an object.
    Other,
}

/// Reads one value as its [`Kind`]; a string is tested with `test`.
struct KindOf(fn(&str) -> bool);

impl<'de> de::DeserializeSeed<'de> for KindOf {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindOf {
    type Value = Kind;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Count(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(u64::try_from(v).map_or(Kind::Other, Kind::Count))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        // The tree holds a float it cannot represent as `null`.
        Ok(if v.is_finite() {
            Kind::Other
        } else {
            Kind::Null
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str((self.0)(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Kind, A::Error> {
        Skip::seq(seq).map(|_| Kind::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Kind, A::Error> {
        Skip::map(map).map(|_| Kind::Other)
    }
}

fn any_str(_: &str) -> bool {
    true
}

fn is_role(s: &str) -> bool {
    ROLES.contains(&s)
}

fn is_function(s: &str) -> bool {
    s == "function"
}

/// Any value, parsed and dropped.
struct Skip;

impl Skip {
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        Skip::seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        Skip::map(map)
    }
}

/// A member name, matched against the names a visitor looks for (after unescaping, as the
/// tree's keys are).
struct Name<const N: usize>(&'static [&'static str; N]);

impl<'de, const N: usize> de::DeserializeSeed<'de> for Name<N> {
    /// The index of the name in the list, `N` for any other.
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Name<N> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        Ok(self.0.iter().position(|n| *n == v).unwrap_or(N))
    }
}

/// Whether an array (of messages, tools) is present, empty, and all its elements pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// `null` (or a float out of range, which the tree holds as `null`).
    Null,
    Good {
        empty: bool,
    },
    Bad,
}

/// Reads an array whose elements `elem` judges; anything but an array (or `null`) is bad.
struct ListOf<E>(E);

impl<'de, E: Fn() -> F, F: de::DeserializeSeed<'de, Value = bool>> de::DeserializeSeed<'de>
    for ListOf<E>
{
    type Value = List;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<List, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: Fn() -> F, F: de::DeserializeSeed<'de, Value = bool>> Visitor<'de> for ListOf<E> {
    type Value = List;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_unit<Er>(self) -> Result<List, Er> {
        Ok(List::Null)
    }
    fn visit_none<Er>(self) -> Result<List, Er> {
        Ok(List::Null)
    }
    fn visit_bool<Er>(self, _: bool) -> Result<List, Er> {
        Ok(List::Bad)
    }
    fn visit_u64<Er>(self, _: u64) -> Result<List, Er> {
        Ok(List::Bad)
    }
    fn visit_i64<Er>(self, _: i64) -> Result<List, Er> {
        Ok(List::Bad)
    }
    fn visit_f64<Er>(self, v: f64) -> Result<List, Er> {
        Ok(if v.is_finite() { List::Bad } else { List::Null })
    }
    fn visit_str<Er>(self, _: &str) -> Result<List, Er> {
        Ok(List::Bad)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List, A::Error> {
        Skip::map(map).map(|_| List::Bad)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
        let mut empty = true;
        let mut good = true;
        // Every element is read (the parser checks them all), judged or not.
        while let Some(ok) = seq.next_element_seed(ElementSeed {
            judge: good.then(&self.0),
        })? {
            empty = false;
            good &= ok;
        }
        Ok(if good {
            List::Good { empty }
        } else {
            List::Bad
        })
    }
}

/// One element: judged by its seed, or skipped once the list is already bad.
struct ElementSeed<F> {
    judge: Option<F>,
}

impl<'de, F: de::DeserializeSeed<'de, Value = bool>> de::DeserializeSeed<'de> for ElementSeed<F> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        match self.judge {
            Some(judge) => judge.deserialize(d),
            None => Skip::deserialize(d).map(|_| false),
        }
    }
}

/// Reads an object member by member: `on(index of the name, map)` reads each value (index
/// `N` for a name not in the list) and says whether the object is still fine.
fn object_members<'de, A: MapAccess<'de>, const N: usize>(
    mut map: A,
    names: &'static [&'static str; N],
    mut on: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    while let Some(i) = map.next_key_seed(Name(names))? {
        if i < N {
            on(i, &mut map)?;
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok(())
}

/// A visitor for values that must be objects: any other value is `false` (after it is read).
macro_rules! object_visitor {
    ($name:ident, $expecting:literal, |$map:ident| $body:block) => {
        struct $name;
        impl<'de> de::DeserializeSeed<'de> for $name {
            type Value = bool;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de> Visitor<'de> for $name {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($expecting)
            }
            fn visit_unit<E>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_none<E>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
                Skip::seq(seq).map(|_| false)
            }
            fn visit_map<A: MapAccess<'de>>(self, $map: A) -> Result<bool, A::Error> {
                $body
            }
        }
    };
}

// A message: `role` one of the roles; `content` null, a string, or content parts.
object_visitor!(Message, "a message object", |map| {
    let mut role = None;
    let mut content = Content::Absent;
    object_members(map, &["role", "content"], |i, map| {
        match i {
            0 => role = Some(map.next_value_seed(KindOf(is_role))?),
            _ => content = map.next_value_seed(ContentSeed)?,
        }
        Ok(())
    })?;
    Ok(role == Some(Kind::Str(true)) && content != Content::Bad)
});

// A content part: its `type` a string.
object_visitor!(Part, "a content part", |map| {
    let mut kind = None;
    object_members(map, &["type"], |_, map| {
        kind = Some(map.next_value_seed(KindOf(any_str))?);
        Ok(())
    })?;
    Ok(matches!(kind, Some(Kind::Str(_))))
});

// A tool: its `type` a string; a function tool's `function` an object with a string `name`.
object_visitor!(Tool, "a tool", |map| {
    let mut kind = None;
    let mut function = None;
    object_members(map, &["type", "function"], |i, map| {
        match i {
            0 => kind = Some(map.next_value_seed(KindOf(is_function))?),
            _ => function = Some(map.next_value_seed(Function)?),
        }
        Ok(())
    })?;
    Ok(match kind {
        Some(Kind::Str(true)) => function == Some(true),
        Some(Kind::Str(false)) => true,
        _ => false,
    })
});

// A tool's `function`: its `name` a string.
object_visitor!(Function, "a function", |map| {
    let mut name = None;
    object_members(map, &["name"], |_, map| {
        name = Some(map.next_value_seed(KindOf(any_str))?);
        Ok(())
    })?;
    Ok(matches!(name, Some(Kind::Str(_))))
});

// `stream_options`: its `include_usage` absent, null or a boolean (`Options` says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Options {
    Null,
    IncludeUsage(bool),
    Bad,
}

struct OptionsSeed;

impl<'de> de::DeserializeSeed<'de> for OptionsSeed {
    type Value = Options;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Options, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptionsSeed {
    type Value = Options;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("stream options")
    }
    fn visit_unit<E>(self) -> Result<Options, E> {
        Ok(Options::Null)
    }
    fn visit_none<E>(self) -> Result<Options, E> {
        Ok(Options::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Options, E> {
        Ok(Options::Bad)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Options, E> {
        Ok(Options::Bad)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Options, E> {
        Ok(Options::Bad)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Options, E> {
        Ok(if v.is_finite() {
            Options::Bad
        } else {
            Options::Null
        })
    }
    fn visit_str<E>(self, _: &str) -> Result<Options, E> {
        Ok(Options::Bad)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Options, A::Error> {
        Skip::seq(seq).map(|_| Options::Bad)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Options, A::Error> {
        let mut include = None;
        object_members(map, &["include_usage"], |_, map| {
            include = Some(map.next_value_seed(KindOf(any_str))?);
            Ok(())
        })?;
        Ok(match include {
            None | Some(Kind::Null) => Options::IncludeUsage(false),
            Some(Kind::Bool(b)) => Options::IncludeUsage(b),
            Some(_) => Options::Bad,
        })
    }
}

/// A message's `content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Absent,
    Fine,
    Bad,
}

struct ContentSeed;

impl<'de> de::DeserializeSeed<'de> for ContentSeed {
    type Value = Content;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ContentSeed {
    type Value = Content;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("message content")
    }
    fn visit_unit<E>(self) -> Result<Content, E> {
        Ok(Content::Fine)
    }
    fn visit_none<E>(self) -> Result<Content, E> {
        Ok(Content::Fine)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Content, E> {
        Ok(Content::Bad)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Content, E> {
        Ok(Content::Bad)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Content, E> {
        Ok(Content::Bad)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Content, E> {
        Ok(if v.is_finite() {
            Content::Bad
        } else {
            Content::Fine
        })
    }
    fn visit_str<E>(self, _: &str) -> Result<Content, E> {
        Ok(Content::Fine)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
        Skip::map(map).map(|_| Content::Bad)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
        Ok(match ListOf(|| Part).visit_seq(seq)? {
            List::Null | List::Good { .. } => Content::Fine,
            List::Bad => Content::Bad,
        })
    }
}

/// The model: a non-empty string, kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model {
    Null,
    Named(String),
    Bad,
}

struct ModelSeed;

impl<'de> de::DeserializeSeed<'de> for ModelSeed {
    type Value = Model;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Model, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ModelSeed {
    type Value = Model;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a model name")
    }
    fn visit_unit<E>(self) -> Result<Model, E> {
        Ok(Model::Null)
    }
    fn visit_none<E>(self) -> Result<Model, E> {
        Ok(Model::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Model, E> {
        Ok(Model::Bad)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Model, E> {
        Ok(Model::Bad)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Model, E> {
        Ok(Model::Bad)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Model, E> {
        Ok(if v.is_finite() {
            Model::Bad
        } else {
            Model::Null
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Model, E> {
        Ok(if v.is_empty() {
            Model::Bad
        } else {
            Model::Named(v.to_owned())
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Model, A::Error> {
        Skip::seq(seq).map(|_| Model::Bad)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Model, A::Error> {
        Skip::map(map).map(|_| Model::Bad)
    }
}

/// The request's top level, member by member (the last of a repeated name counts).
#[derive(Default)]
struct Top {
    /// Whether the document is an object at all.
    object: bool,
    model: Option<Model>,
    messages: Option<List>,
    stream: Option<Kind>,
    stream_options: Option<Options>,
    counts: [Option<Kind>; 3],
    tools: Option<List>,
    has_cache: bool,
    /// The OpenAI request fields present, bit per id.
    fields: u64,
}

/// A top-level member's name: an OpenAI request field (by id), the gateway's `cache`, or
/// another.
enum TopKey {
    Field(u8),
    Cache,
    Other,
}

struct TopKeySeed;

impl<'de> de::DeserializeSeed<'de> for TopKeySeed {
    type Value = TopKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TopKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TopKeySeed {
    type Value = TopKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, v: &str) -> Result<TopKey, E> {
        Ok(match field::request_field(v) {
            Some(id) => TopKey::Field(id),
            None if v == "cache" => TopKey::Cache,
            None => TopKey::Other,
        })
    }
}

const MODEL: u8 = field::field_id("model");
const MESSAGES: u8 = field::field_id("messages");
const STREAM: u8 = field::field_id("stream");
const STREAM_OPTIONS: u8 = field::field_id("stream_options");
const N: u8 = field::field_id("n");
const MAX_TOKENS: u8 = field::field_id("max_tokens");
const MAX_COMPLETION_TOKENS: u8 = field::field_id("max_completion_tokens");
const TOOLS: u8 = field::field_id("tools");

impl Top {
    fn judge(self) -> Option<Shape> {
        if !self.object {
            return None;
        }
        let Some(Model::Named(model)) = self.model else {
            return None;
        };
        if self.messages != Some(List::Good { empty: false }) {
            return None;
        }
        let stream = match self.stream {
            None | Some(Kind::Null) => false,
            Some(Kind::Bool(b)) => b,
            Some(_) => return None,
        };
        let include_usage = match self.stream_options {
            None | Some(Options::Null) => false,
            Some(Options::IncludeUsage(b)) => b,
            Some(Options::Bad) => return None,
        };
        for count in self.counts {
            match count {
                None | Some(Kind::Null) => {}
                Some(Kind::Count(n)) if n >= 1 => {}
                Some(_) => return None,
            }
        }
        match self.tools {
            None | Some(List::Null | List::Good { .. }) => {}
            Some(List::Bad) => return None,
        }
        Some(Shape {
            model,
            stream,
            include_usage,
            has_cache: self.has_cache,
            fields: self.fields,
        })
    }
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat request")
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_none<E>(self) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top, A::Error> {
        Skip::seq(seq).map(|_| Top::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut top = Top {
            object: true,
            ..Top::default()
        };
        while let Some(key) = map.next_key_seed(TopKeySeed)? {
            let id = match key {
                TopKey::Field(id) => id,
                TopKey::Cache => {
                    map.next_value::<Skip>()?;
                    top.has_cache = true;
                    continue;
                }
                TopKey::Other => {
                    map.next_value::<Skip>()?;
                    continue;
                }
            };
            top.fields |= 1 << id;
            match id {
                MODEL => top.model = Some(map.next_value_seed(ModelSeed)?),
                MESSAGES => top.messages = Some(map.next_value_seed(ListOf(|| Message))?),
                STREAM => top.stream = Some(map.next_value_seed(KindOf(any_str))?),
                STREAM_OPTIONS => top.stream_options = Some(map.next_value_seed(OptionsSeed)?),
                N => top.counts[0] = Some(map.next_value_seed(KindOf(any_str))?),
                MAX_TOKENS => top.counts[1] = Some(map.next_value_seed(KindOf(any_str))?),
                MAX_COMPLETION_TOKENS => {
                    top.counts[2] = Some(map.next_value_seed(KindOf(any_str))?)
                }
                TOOLS => top.tools = Some(map.next_value_seed(ListOf(|| Tool))?),
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChatRequestView;

    /// A random JSON value from pieces the checks look at (and some they don't).
    fn value(r: &mut fastrand::Rng, depth: u32) -> String {
        let scalars = [
            "null",
            "true",
            "false",
            "0",
            "1",
            "2",
            "-1",
            "1.5",
            "1.0",
            "1e400",
            "-1e400",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            r#""""#,
            r#""x""#,
            r#""user""#,
            r#""function""#,
            r#""assistant""#,
            r#""robot""#,
            r#""\u0075ser""#,
            r#""fun\u0063tion""#,
            r#""\ud800""#,
            r#""\ud83d\ude00""#,
            r#""a\"b""#,
            r#""é""#,
        ];
        if depth == 0 || r.u8(0..4) == 0 {
            return scalars[r.usize(0..scalars.len())].to_owned();
        }
        match r.u8(0..3) {
            0 => {
                let n = r.usize(0..4);
                let items: Vec<String> = (0..n).map(|_| value(r, depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => object(
                r,
                depth - 1,
                &[
                    "role",
                    "content",
                    "type",
                    "function",
                    "name",
                    "text",
                    "include_usage",
                    "x",
                ],
            ),
        }
    }

    fn object(r: &mut fastrand::Rng, depth: u32, names: &[&str]) -> String {
        let n = r.usize(0..5);
        let members: Vec<String> = (0..n)
            .map(|_| {
                let name = names[r.usize(0..names.len())];
                // Sometimes the name escaped, as only a parser reads it.
                let key = if r.u8(0..8) == 0 && !name.is_empty() {
                    format!("\\u{:04x}{}", name.as_bytes()[0], &name[1..])
                } else {
                    name.to_owned()
                };
                format!(r#""{key}":{}"#, member(r, name, depth))
            })
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// A value for `name`, usually of a shape that member takes.
    fn member(r: &mut fastrand::Rng, name: &str, depth: u32) -> String {
        if r.u8(0..4) == 0 || depth == 0 {
            return value(r, depth.min(2));
        }
        match name {
            "messages" => {
                let n = r.usize(0..3);
                let items: Vec<String> = (0..n)
                    .map(|_| object(r, depth - 1, &["role", "content", "name"]))
                    .collect();
                format!("[{}]", items.join(","))
            }
            "content" => {
                if r.bool() {
                    r#""hi""#.to_owned()
                } else {
                    let n = r.usize(0..3);
                    let items: Vec<String> = (0..n)
                        .map(|_| object(r, depth - 1, &["type", "text"]))
                        .collect();
                    format!("[{}]", items.join(","))
                }
            }
            "role" => [r#""user""#, r#""system""#, r#""tool""#, r#""robot""#, "3"][r.usize(0..5)]
                .to_owned(),
            "tools" => {
                let n = r.usize(0..3);
                let items: Vec<String> = (0..n)
                    .map(|_| object(r, depth - 1, &["type", "function"]))
                    .collect();
                format!("[{}]", items.join(","))
            }
            "function" => object(r, depth - 1, &["name", "parameters"]),
            "stream_options" => object(r, depth - 1, &["include_usage", "x"]),
            "model" => {
                [r#""m""#, r#""""#, "null", "7", r#""gpt-\u00e9""#][r.usize(0..5)].to_owned()
            }
            _ => value(r, depth - 1),
        }
    }

    fn body(r: &mut fastrand::Rng) -> Vec<u8> {
        let names = [
            "model",
            "messages",
            "stream",
            "stream_options",
            "n",
            "max_tokens",
            "max_completion_tokens",
            "tools",
            "cache",
            "temperature",
            "user",
        ];
        let n = r.usize(0..9);
        let mut members: Vec<String> = Vec::new();
        // Mostly a request that passes, so the routing fields are compared too.
        if r.u8(0..3) != 0 {
            members.push(r#""model":"gpt-4o""#.to_owned());
            members.push(r#""messages":[{"role":"user","content":"hi"}]"#.to_owned());
        }
        for _ in 0..n {
            let name = names[r.usize(0..names.len())];
            members.push(format!(r#""{name}":{}"#, member(r, name, 4)));
        }
        r.shuffle(&mut members);
        let mut text = format!("{{{}}}", members.join(",")).into_bytes();
        match r.u8(0..12) {
            // Broken: cut short, a byte changed (bad UTF-8 too), junk after, not an object.
            0 => text.truncate(r.usize(0..=text.len())),
            1 => {
                let i = r.usize(0..text.len());
                text[i] = [b'"', b'\\', b'{', b']', b',', 0xff, b'x'][r.usize(0..7)];
            }
            2 => text.extend_from_slice(if r.bool() { b" " } else { b" x" }),
            3 => text = value(r, 3).into_bytes(),
            _ => {}
        }
        text
    }

    fn agree(text: &[u8]) {
        let slow = ChatRequestView::parse(text, 128);
        let fast = check(text);
        let shown = String::from_utf8_lossy(text);
        match (slow, fast) {
            (Ok((view, tree)), Some(shape)) => {
                assert_eq!(view.model, shape.model, "{shown}");
                assert_eq!(view.stream, shape.stream, "{shown}");
                assert_eq!(view.include_usage, shape.include_usage, "{shown}");
                assert_eq!(tree.get("cache").is_some(), shape.has_cache, "{shown}");
                let fields = tree.as_object().map_or(0, |o| {
                    o.keys()
                        .filter_map(|k| field::request_field(k))
                        .fold(0u64, |m, id| m | 1 << id)
                });
                assert_eq!(fields, shape.fields, "{shown}");
            }
            (Err(_), None) => {}
            (slow, fast) => panic!(
                "the checks disagree on {shown}: with the tree {:?}, without {:?}",
                slow.map(|(v, _)| v).map_err(|e| e.message),
                fast
            ),
        }
    }

    #[test]
    fn agrees_with_the_tree_on_generated_bodies() {
        let mut r = fastrand::Rng::with_seed(0x5eed);
        let mut passed = 0;
        for _ in 0..60_000 {
            let text = body(&mut r);
            passed += usize::from(ChatRequestView::parse(&text, 128).is_ok());
            agree(&text);
        }
        // The generator reaches both verdicts.
        assert!(passed > 5_000, "{passed}");
    }

    #[test]
    fn agrees_on_edge_cases() {
        for text in [
            &br#"{"model":"m","messages":[{"role":"user"}],"n":1e400}"#[..],
            br#"{"model":"m","messages":[{"role":"user"}],"n":-0}"#,
            br#"{"model":"m","messages":[{"role":"user"}],"n":1.0}"#,
            br#"{"model":"m","model":"","messages":[{"role":"user"}]}"#,
            br#"{"model":"","model":"m","messages":[{"role":"user"}]}"#,
            br#"{"\u006dodel":"m","messages":[{"role":"user"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","role":"robot"}]}"#,
            br#"{"model":"m","messages":[{"role":"user"}],"cache":null}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
            br#"{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function","function":{"name":"f"}},{"type":"web"}]}"#,
            br#"{"model":"m","messages":[{"role":"user"}],"stream_options":{"include_usage":1e999}}"#,
            br#" {"model":"m","messages":[{"role":"user"}]} "#,
            br#"{"model":"m","messages":[{"role":"user"}]}{}"#,
            b"[]",
            b"null",
        ] {
            agree(text);
        }
    }
}
