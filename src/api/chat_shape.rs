//! The chat request's check without its tree: the same parser `json::parse` runs (sonic-rs,
//! through serde), reading the body with visitors that keep only what
//! [`ChatRequestView`](super::ChatRequestView) checks and build nothing else. The gateway
//! forwards most requests as their bytes, so the tree it used to build for the check (every
//! string copied, every object a map) was mostly thrown away unread.
//!
//! It answers "well-formed, with these routing fields" or "not": for any problem the caller
//! runs the tree-building check, which words the error. Both must accept the same bodies, so
//! every value goes through the parser's `deserialize_any` as the tree's does (strings are
//! checked for UTF-8 and escapes, numbers for range), and each judge mirrors what the tree
//! would hold: a repeated member counts as its last occurrence, a non-negative integer read
//! as signed is still a count, and a float past f64's range is a `null` (all in [`Shaped`]).
//! A test compares the two on generated bodies.

use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::chat::ROLES;
use crate::dsl::schema as field;
use crate::json::TopMembers;

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
    /// Where its top-level members are (`None` when a name had an escape, or there were more
    /// than [`TopMembers::MAX`]).
    pub members: Option<TopMembers>,
}

/// `Some` when the body passes every check, its arrays and objects nested at most `max_depth`
/// deep. The bound is kept by the visitors as they open each level ([`Level`]), in the same
/// pass: a separate scan for it cost about 0.7 instructions a byte (9.6k on a 13 KB body)
/// before the parser ran. Each level the parser opens goes through [`Shaped`], so no level
/// past the bound is entered (the recursion, and the stack it takes, stays bounded).
pub(super) fn check(body: &[u8], max_depth: usize) -> Option<Shape> {
    let outer = LEVELS.replace((0, max_depth));
    let top: Result<Top, _> = sonic_rs::from_slice(body);
    LEVELS.set(outer);
    top.ok()?.judge(body)
}

thread_local! {
    /// The levels open in the check running on this thread, and the most it allows. A check
    /// runs start to end without awaiting, so one runs on a thread at a time.
    static LEVELS: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, usize::MAX)) };
}

/// An array or object open in the check: refused past the bound, closed when dropped (on an
/// error too).
struct Level;

impl Level {
    fn enter<E: serde::de::Error>() -> Result<Level, E> {
        let (open, max) = LEVELS.get();
        if open >= max {
            return Err(E::custom(format_args!("nested deeper than {max} levels")));
        }
        LEVELS.set((open + 1, max));
        Ok(Level)
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        let (open, max) = LEVELS.get();
        LEVELS.set((open.saturating_sub(1), max));
    }
}

/// What a check makes of one value, by the kind the tree would hold. A kind it does not
/// override is [`Judge::other`] (arrays and objects read through first).
trait Judge<'de>: Sized {
    type Out;
    /// Any kind the check does not take.
    fn other(self) -> Self::Out;
    /// `null`, and a float past f64's range (the tree holds it as `null`).
    fn null(self) -> Self::Out {
        self.other()
    }
    fn boolean(self, _: bool) -> Self::Out {
        self.other()
    }
    /// A non-negative integer.
    fn count(self, _: u64) -> Self::Out {
        self.other()
    }
    fn string(self, _: &str) -> Self::Out {
        self.other()
    }
    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Out, A::Error> {
        Skip::read_seq(seq).map(|_| self.other())
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Out, A::Error> {
        Skip::read_map(map).map(|_| self.other())
    }
}

/// A [`Judge`] as serde's seed and visitor: the value read with `deserialize_any`, each kind
/// handed over as the tree's visitor would have held it.
struct Shaped<J>(J);

impl<'de, J: Judge<'de>> DeserializeSeed<'de> for Shaped<J> {
    type Value = J::Out;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<J::Out, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, J: Judge<'de>> Visitor<'de> for Shaped<J> {
    type Value = J::Out;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<J::Out, E> {
        Ok(self.0.null())
    }
    fn visit_none<E>(self) -> Result<J::Out, E> {
        Ok(self.0.null())
    }
    fn visit_bool<E>(self, v: bool) -> Result<J::Out, E> {
        Ok(self.0.boolean(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J::Out, E> {
        Ok(self.0.count(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J::Out, E> {
        Ok(match u64::try_from(v) {
            Ok(n) => self.0.count(n),
            Err(_) => self.0.other(),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<J::Out, E> {
        Ok(if v.is_finite() {
            self.0.other()
        } else {
            self.0.null()
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<J::Out, E> {
        Ok(self.0.string(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<J::Out, A::Error> {
        let _level = Level::enter()?;
        self.0.seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<J::Out, A::Error> {
        let _level = Level::enter()?;
        self.0.map(map)
    }
}

/// Any value, parsed and dropped.
struct Skip;

impl Skip {
    fn read_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(())
    }
    fn read_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(())
    }
}

impl<'de> Judge<'de> for Skip {
    type Out = Skip;
    fn other(self) -> Skip {
        Skip
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        Shaped(Skip).deserialize(d)
    }
}

/// What a member holds, as far as the checks look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool(bool),
    /// A non-negative integer.
    Count(u64),
    /// A string, and whether it passed the test the judge was given.
    Str(bool),
    /// Anything else: a negative or fractional number, an array, an object.
    Other,
}

/// A value as its [`Kind`]; a string is tested with the function.
struct KindOf(fn(&str) -> bool);

impl<'de> Judge<'de> for KindOf {
    type Out = Kind;
    fn null(self) -> Kind {
        Kind::Null
    }
    fn other(self) -> Kind {
        Kind::Other
    }
    fn boolean(self, v: bool) -> Kind {
        Kind::Bool(v)
    }
    fn count(self, v: u64) -> Kind {
        Kind::Count(v)
    }
    fn string(self, v: &str) -> Kind {
        Kind::Str((self.0)(v))
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

/// A member name (unescaped, as the tree's keys are): its index in the list, `N` for another.
struct Name<const N: usize>(&'static [&'static str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Name<N> {
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

/// Reads an object member by member: `on(index of the name, map)` reads each value of a name
/// in `names`; the others are read through.
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

/// The [`Kind`] of the next value of `map`, its strings tested with `test`.
fn kind<'de, A: MapAccess<'de>>(map: &mut A, test: fn(&str) -> bool) -> Result<Kind, A::Error> {
    map.next_value_seed(Shaped(KindOf(test)))
}

/// Whether an array (of messages, tools, content parts) is there, empty, and all its elements
/// pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Null,
    Good { empty: bool },
    Bad,
}

/// An array whose elements the judges that `elem` makes must find `true`.
struct ListOf<E>(E);

impl<'de, E: Fn() -> F, F: Judge<'de, Out = bool>> Judge<'de> for ListOf<E> {
    type Out = List;
    fn null(self) -> List {
        List::Null
    }
    fn other(self) -> List {
        List::Bad
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
        let mut empty = true;
        let mut good = true;
        // Every element is read (the parser checks them all), judged while all were good.
        while let Some(ok) = seq.next_element_seed(Element(good.then(&self.0)))? {
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

/// One element: judged, or read through once the list is already bad.
struct Element<F>(Option<F>);

impl<'de, F: Judge<'de, Out = bool>> DeserializeSeed<'de> for Element<F> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        match self.0 {
            Some(judge) => Shaped(judge).deserialize(d),
            None => Skip::deserialize(d).map(|_| false),
        }
    }
}

/// A message: `role` one of the roles; `content` null, a string, or content parts.
struct Message;

impl<'de> Judge<'de> for Message {
    type Out = bool;
    fn other(self) -> bool {
        false
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        let mut role = None;
        let mut content = true;
        object_members(map, &["role", "content"], |i, map| {
            match i {
                0 => role = Some(kind(map, is_role)?),
                _ => content = map.next_value_seed(Shaped(Content))?,
            }
            Ok(())
        })?;
        Ok(role == Some(Kind::Str(true)) && content)
    }
}

/// A message's `content`: null, a string, or content parts.
struct Content;

impl<'de> Judge<'de> for Content {
    type Out = bool;
    fn other(self) -> bool {
        false
    }
    fn null(self) -> bool {
        true
    }
    fn string(self, _: &str) -> bool {
        true
    }
    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        Ok(ListOf(|| PART).seq(seq)? != List::Bad)
    }
}

/// An object whose member of this name is a string: a content part (`type`), a tool's
/// `function` (`name`).
struct StringMember(&'static [&'static str; 1]);

impl<'de> Judge<'de> for StringMember {
    type Out = bool;
    fn other(self) -> bool {
        false
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        let mut member = None;
        object_members(map, self.0, |_, map| {
            member = Some(kind(map, any_str)?);
            Ok(())
        })?;
        Ok(matches!(member, Some(Kind::Str(_))))
    }
}

const PART: StringMember = StringMember(&["type"]);
const FUNCTION: StringMember = StringMember(&["name"]);

/// A tool: its `type` a string; a function tool's `function` an object with a string `name`.
struct Tool;

impl<'de> Judge<'de> for Tool {
    type Out = bool;
    fn other(self) -> bool {
        false
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        let mut kind_of_type = None;
        let mut function = None;
        object_members(map, &["type", "function"], |i, map| {
            match i {
                0 => kind_of_type = Some(kind(map, is_function)?),
                _ => function = Some(map.next_value_seed(Shaped(FUNCTION))?),
            }
            Ok(())
        })?;
        Ok(match kind_of_type {
            Some(Kind::Str(true)) => function == Some(true),
            Some(Kind::Str(false)) => true,
            _ => false,
        })
    }
}

/// `stream_options`, by its `include_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Options {
    Null,
    IncludeUsage(bool),
    Bad,
}

struct StreamOptions;

impl<'de> Judge<'de> for StreamOptions {
    type Out = Options;
    fn null(self) -> Options {
        Options::Null
    }
    fn other(self) -> Options {
        Options::Bad
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<Options, A::Error> {
        let mut include = None;
        object_members(map, &["include_usage"], |_, map| {
            include = Some(kind(map, any_str)?);
            Ok(())
        })?;
        Ok(match include {
            None | Some(Kind::Null) => Options::IncludeUsage(false),
            Some(Kind::Bool(b)) => Options::IncludeUsage(b),
            Some(_) => Options::Bad,
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

struct ModelName;

impl<'de> Judge<'de> for ModelName {
    type Out = Model;
    fn null(self) -> Model {
        Model::Null
    }
    fn other(self) -> Model {
        Model::Bad
    }
    fn string(self, v: &str) -> Model {
        if v.is_empty() {
            Model::Bad
        } else {
            Model::Named(v.to_owned())
        }
    }
}

/// The request's top level, member by member (the last of a repeated name counts).
#[derive(Default)]
struct Top<'de> {
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
    /// Where the member names are, while every name was handed over as a slice of the body
    /// (it holds no escape) and they fit: as offsets from the first name's address (the
    /// visitor does not know where the body starts), `None` once the layout is unknown.
    /// Offsets, not the names themselves: the visitor's answer is moved through every layer
    /// of the parser.
    names: Option<(usize, TopMembers)>,
    _body: std::marker::PhantomData<&'de [u8]>,
}

impl<'de> Top<'de> {
    /// Notes the next member's name: `borrowed` when the parser handed it over as a slice of
    /// the body.
    fn name(&mut self, borrowed: Option<&'de str>) {
        let Some((first, notes)) = &mut self.names else {
            return;
        };
        let Some(name) = borrowed else {
            self.names = None;
            return;
        };
        let at = name.as_ptr() as usize;
        if notes.is_empty() {
            *first = at;
        }
        if !notes.push(at.wrapping_sub(*first)) {
            self.names = None;
        }
    }

    fn judge(self, body: &[u8]) -> Option<Shape> {
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
        let members = self.names.and_then(|(first, notes)| {
            let shift = first.wrapping_sub(body.as_ptr() as usize);
            (shift < body.len()).then(|| notes.rebased(body, shift))?
        });
        Some(Shape {
            model,
            stream,
            include_usage,
            has_cache: self.has_cache,
            fields: self.fields,
            members,
        })
    }
}

/// A top-level member's name: an OpenAI request field (by id), the gateway's `cache`, or
/// another.
enum TopKey {
    Field(u8),
    Cache,
    Other,
}

/// A top-level member's name, read as a [`TopKey`] and, when the parser handed it over as a
/// slice of the body (it holds no escape), that slice.
struct TopKeySeed;

impl TopKey {
    fn of(name: &str) -> Self {
        match field::request_field(name) {
            Some(id) => TopKey::Field(id),
            None if name == "cache" => TopKey::Cache,
            None => TopKey::Other,
        }
    }
}

impl<'de> DeserializeSeed<'de> for TopKeySeed {
    type Value = (TopKey, Option<&'de str>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TopKeySeed {
    type Value = (TopKey, Option<&'de str>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok((TopKey::of(v), Some(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((TopKey::of(v), None))
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

/// The whole request: anything but an object is an empty [`Top`], which fails the check.
struct Request;

impl<'de> Judge<'de> for Request {
    type Out = Top<'de>;
    fn other(self) -> Top<'de> {
        Top::default()
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut top = Top {
            object: true,
            names: Some((0, TopMembers::new())),
            ..Top::default()
        };
        while let Some((key, borrowed)) = map.next_key_seed(TopKeySeed)? {
            top.name(borrowed);
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
                MODEL => top.model = Some(map.next_value_seed(Shaped(ModelName))?),
                MESSAGES => top.messages = Some(map.next_value_seed(Shaped(ListOf(|| Message)))?),
                STREAM => top.stream = Some(kind(&mut map, any_str)?),
                STREAM_OPTIONS => {
                    top.stream_options = Some(map.next_value_seed(Shaped(StreamOptions))?)
                }
                N => top.counts[0] = Some(kind(&mut map, any_str)?),
                MAX_TOKENS => top.counts[1] = Some(kind(&mut map, any_str)?),
                MAX_COMPLETION_TOKENS => top.counts[2] = Some(kind(&mut map, any_str)?),
                TOOLS => top.tools = Some(map.next_value_seed(Shaped(ListOf(|| Tool)))?),
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(top)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top<'de>, D::Error> {
        Shaped(Request).deserialize(d)
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
        let fast = check(text, 128);
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
                let mut walked = Vec::new();
                let whole = crate::json::members::for_each_quoted_member(text, |k, v| {
                    walked.push((k, v));
                    true
                });
                assert!(whole, "{shown}");
                match &shape.members {
                    Some(notes) => {
                        let mut noted = Vec::new();
                        let visited = notes.for_each(text, |k, v| {
                            noted.push((k, v));
                            true
                        });
                        assert_eq!(visited, Some(true), "{shown}");
                        assert_eq!(noted, walked, "{shown}");
                    }
                    // Only an escaped name or too many members leave the layout unknown.
                    None => assert!(
                        walked.len() > TopMembers::MAX
                            || walked.iter().any(|(k, _)| k.contains(&b'\\')),
                        "{shown}"
                    ),
                }
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
            b"{ \"model\" :\t\"m\" ,\n\"messages\" : [ {\"role\":\"user\"} ] , \"n\" : 2 }",
            br#"{"model":"m","messages":[{"role":"user"}]}{}"#,
            b"[]",
            b"null",
        ] {
            agree(text);
        }
    }

    /// Nesting is bounded as the tree's check bounds it: at the limit a body passes, one level
    /// past it fails (and the tree's check then words the error), wherever the level is opened;
    /// a refused check leaves no level counted for the next.
    #[test]
    fn nesting_is_bounded_in_the_pass() {
        // Where the nested arrays go, and how many levels are open around them there.
        let places: [(&str, usize); 3] = [
            (r#"{"model":"m","messages":[{"role":"user"}],"x":#}"#, 1),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"t","x":#}]}]}"#,
                5,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function","function":{"name":"f","parameters":#}}]}"#,
                4,
            ),
        ];
        for (template, outer) in places {
            let nested = |levels: usize| {
                let inner = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
                template.replace('#', &inner).into_bytes()
            };
            for max in [8, 64] {
                let at_limit = nested(max - outer);
                let past = nested(max - outer + 1);
                assert!(check(&at_limit, max).is_some(), "{template}, {max}");
                assert!(
                    ChatRequestView::parse(&at_limit, max).is_ok(),
                    "{template}, {max}"
                );
                assert!(check(&past, max).is_none(), "{template}, {max}");
                assert!(
                    ChatRequestView::parse(&past, max).is_err(),
                    "{template}, {max}"
                );
                assert!(
                    check(&at_limit, max).is_some(),
                    "{template}, {max}: after a refusal"
                );
            }
        }
        // A body past the bound recurses no deeper than one at it does, on a shard's stack.
        // (512 levels: a debug build's frames take 8 to 16 KiB a level here, so 1024 would not
        // fit; a release build's take a fraction of that, and the largest bound, 1024, fits.)
        let deepest = std::thread::Builder::new()
            .stack_size(crate::server::SHARD_STACK_BYTES)
            .spawn(|| {
                let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
                let at_limit = format!("{}{}", "[".repeat(512), "]".repeat(512));
                (
                    check(deep.as_bytes(), 512).is_none(),
                    check(at_limit.as_bytes(), 512).is_none(),
                )
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        // Neither is a request (not an object), and neither overflows.
        assert_eq!(deepest, (true, true));
        assert!(check(br#"{"model":"m","messages":[{"role":"user"}]}"#, 3).is_some());
        assert!(check(br#"{"model":"m","messages":[{"role":"user"}]}"#, 2).is_none());
    }
}
