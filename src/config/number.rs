//! Numeric settings: read as written, then checked against their [`Limit`] after parsing, so that
//! every bad value of a file is reported (with its position) instead of only the first, and so
//! that no value is silently turned into another (`0` into "no limit", `-1` or `.nan` into zero,
//! `1e300` into a saturated duration).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A number as written in the config, or what was written instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Num {
    Value(f64),
    /// Not a number: what the YAML value was (`a string "ten"`, `a list`, ...).
    Other(String),
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::Value(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::Value(v as f64))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Num, E> {
        Ok(Num::Value(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Num, E> {
        Ok(Num::Value(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(Num::Value(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Num, E> {
        Ok(Num::Other(format!("`{v}`")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
        Ok(Num::Other(format!("the string {v:?}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
        Ok(Num::Other("null".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Num::Other("a mapping".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Num::Other("a list".into()))
    }
}

/// One day: the largest timeout, TTL or delay accepted.
pub const MAX_SECONDS: f64 = 86_400.0;
/// 1 GiB: the largest byte size accepted.
pub const MAX_BYTES: f64 = (1u64 << 30) as f64;

/// The values a setting accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Smallest accepted value (0 only where 0 means something: "no delay", "no redirects").
    pub min: f64,
    pub max: f64,
    /// Counts and sizes must be whole numbers.
    pub whole: bool,
    pub unit: &'static str,
}

impl Limit {
    /// More than 0 seconds, at most a day.
    pub const SECONDS: Limit = Limit {
        min: f64::MIN_POSITIVE,
        max: MAX_SECONDS,
        whole: false,
        unit: "seconds",
    };
    /// 0 (meaning "none") up to a day.
    pub const SECONDS_OR_ZERO: Limit = Limit {
        min: 0.0,
        ..Limit::SECONDS
    };
    /// 1 byte to 1 GiB.
    pub const BYTES: Limit = Limit {
        min: 1.0,
        max: MAX_BYTES,
        whole: true,
        unit: "bytes",
    };

    /// `llmux.server.max_json_depth`.
    pub const JSON_DEPTH: Limit = Limit::count(1, 1024);

    /// A whole number in `min..=max`.
    pub const fn count(min: u32, max: u64) -> Limit {
        Limit {
            min: min as f64,
            max: max as f64,
            whole: true,
            unit: "",
        }
    }

    /// The value if it is within the limit, else why not.
    pub fn check(&self, n: &Num) -> Result<f64, String> {
        let v = match n {
            Num::Value(v) => *v,
            Num::Other(what) => return Err(format!("must be a number, not {what}")),
        };
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        if v.is_nan() {
            return Err("must be a number, not NaN".into());
        }
        if v.is_infinite() {
            return Err(format!("must be finite (at most {}{unit})", self.max));
        }
        if v > self.max {
            // `1e300`, not three hundred digits.
            let shown = if v >= 1e15 {
                format!("{v:e}")
            } else {
                v.to_string()
            };
            return Err(format!("must be at most {}{unit} (got {shown})", self.max));
        }
        if v < 0.0 {
            return Err(format!("must not be negative (got {v})"));
        }
        if self.whole && v.fract() != 0.0 {
            return Err(format!("must be a whole number (got {v})"));
        }
        if v < self.min {
            return Err(if v == 0.0 {
                format!("must be more than 0{unit} (0 does not mean \"no limit\")")
            } else {
                format!("must be at least {}{unit} (got {v})", self.min)
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(yaml: &str) -> Num {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn reads_what_yaml_wrote() {
        assert_eq!(num("10"), Num::Value(10.0));
        assert_eq!(num("-1"), Num::Value(-1.0));
        assert_eq!(num("1e300"), Num::Value(1e300));
        assert!(matches!(num(".nan"), Num::Value(v) if v.is_nan()));
        assert!(matches!(num(".inf"), Num::Value(v) if v.is_infinite()));
        assert!(matches!(num("ten"), Num::Other(_)));
        assert!(matches!(num("[1]"), Num::Other(_)));
        assert!(matches!(num("{a: 1}"), Num::Other(_)));
    }

    #[test]
    fn limits_reject_what_would_be_misread() {
        let s = Limit::SECONDS;
        assert_eq!(s.check(&num("2.5")), Ok(2.5));
        for bad in ["0", "-1", ".nan", ".inf", "-.inf", "1e300", "86401", "x"] {
            assert!(s.check(&num(bad)).is_err(), "{bad}");
        }
        assert_eq!(Limit::SECONDS_OR_ZERO.check(&num("0")), Ok(0.0));
        let b = Limit::BYTES;
        assert!(b.check(&num("1.5")).is_err());
        assert!(b.check(&num("0")).unwrap_err().contains("more than 0"));
        assert_eq!(b.check(&num("1024")), Ok(1024.0));
        let depth = Limit::count(1, 1024);
        assert!(depth.check(&num("1025")).is_err());
        assert_eq!(depth.check(&num("1")), Ok(1.0));
    }
}
