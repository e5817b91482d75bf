//! Where a value is written in the config text, for `file:line:col` on checks made after parsing.
//!
//! serde_yaml 0.9 keeps no spans, but it does put the position of the value being read on an
//! error raised while reading it. So [`locate`] parses the text again, walks to the key path,
//! fails on purpose at the value it names and reads the position off that error. It uses the
//! same parser as the load, so flow style (`{ a: 1 }`), quoting, anchors and comments need no
//! special handling. One parse per located problem: problems are few, and this runs only when
//! there is something to report.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path such as `model_list[2].litellm_params.model`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// A path of mapping keys, from `"llmux.server.idle_timeout"`.
    pub fn keys(dotted: &str) -> Self {
        KeyPath(
            dotted
                .split('.')
                .filter(|k| !k.is_empty())
                .map(|k| Seg::Key(k.to_owned()))
                .collect(),
        )
    }

    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// `(line, column)`, both 1-based, of the value at `path`; `None` when the path is not in the
/// text (a default, or a value that came from elsewhere).
pub fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Seek { rest: &path.0 }).deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// The message of the deliberate error; a document cannot produce it by accident.
const FOUND: &str = "\u{1}llmux-locate-found";

struct Seek<'p> {
    rest: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Seek<'_> {
    /// At a scalar: found if the path ends here, else the path goes nowhere.
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.rest.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.rest.split_first() else {
            return if self.rest.is_empty() {
                Err(de::Error::custom(FOUND))
            } else {
                Ok(())
            };
        };
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let matches = match &key {
                serde_yaml::Value::String(s) => s == want,
                serde_yaml::Value::Number(n) => n.to_string() == *want,
                serde_yaml::Value::Bool(b) => b.to_string() == *want,
                _ => false,
            };
            if matches {
                return map.next_value_seed(Seek { rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.rest.split_first() else {
            return if self.rest.is_empty() {
                Err(de::Error::custom(FOUND))
            } else {
                Ok(())
            };
        };
        let mut i = 0;
        loop {
            if i == *want {
                return seq.next_element_seed(Seek { rest }).map(|_| ());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# a comment
model_list:
  - model_name: a
    litellm_params: { model: openai/x, timeout: -1 }
  - model_name: b
    litellm_params:
      model: \"other/y\"
llmux:
  server:
    idle_timeout: .nan
  mock: { listen: nowhere }
";

    #[test]
    fn finds_block_flow_and_sequence_values() {
        let at = |p: KeyPath| locate(DOC, &p);
        assert_eq!(
            at(KeyPath::keys("llmux.server.idle_timeout")),
            Some((10, 19))
        );
        assert_eq!(at(KeyPath::keys("llmux.mock.listen")), Some((11, 19)));
        let list = KeyPath::keys("model_list");
        assert_eq!(
            at(list.index(0).key("litellm_params").key("timeout")),
            Some((4, 49))
        );
        assert_eq!(
            at(list.index(1).key("litellm_params").key("model")),
            Some((7, 14))
        );
        // A whole entry points at its first key.
        assert_eq!(at(list.index(1)), Some((5, 5)));
    }

    #[test]
    fn missing_paths_have_no_position() {
        assert_eq!(locate(DOC, &KeyPath::keys("llmux.upstream.dns_ttl")), None);
        assert_eq!(locate(DOC, &KeyPath::keys("model_list").index(7)), None);
        assert_eq!(
            locate(DOC, &KeyPath::keys("llmux.mock.listen.deeper")),
            None
        );
        assert_eq!(locate("{ bad yaml", &KeyPath::keys("a")), None);
    }

    #[test]
    fn paths_display_like_the_config() {
        let p = KeyPath::keys("model_list").index(3).key("litellm_params");
        assert_eq!(p.to_string(), "model_list[3].litellm_params");
    }
}
