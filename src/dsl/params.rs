//! Deployment parameters a provider file declares:
//!
//! - `param NAME required`: every deployment must give NAME (the config loader reports one that
//!   does not, with its position in the config);
//! - `param NAME default "TEXT"`: NAME is TEXT unless the deployment gives it.
//!
//! The older items are spellings of the same declarations: `base_url "URL"` is
//! `param api_base default "URL"` (and `base_url ""` is `param api_base required`), and
//! `api_version "V"` is `param api_version default "V"`. A child's declaration replaces its
//! parent's of the same name.
//!
//! Names are limited to what the gateway can supply today ([`SUPPLIED`]); the provider-language
//! work that opens `ctx.params.NAME` extends that list.

use std::collections::HashMap;

use super::ast::{Item, Span, Str};
use super::ir::Param;

/// Deployment parameters the gateway passes to provider files (`litellm_params.*`).
pub const SUPPLIED: &[&str] = &["api_base", "api_version"];

/// An error: the file it is in, where, and the message.
pub(crate) type Problem = (usize, Span, String);

/// One declaration as written.
#[derive(Clone, Copy)]
struct Decl<'a> {
    file: usize,
    name: &'a str,
    span: Span,
    /// `None` for `required`.
    default: Option<&'a Str>,
    /// How it was written: `param`, `base_url` or `api_version`.
    spelling: &'static str,
}

/// The declarations in force after `extends` has been applied.
#[derive(Default)]
pub(crate) struct Merged<'a> {
    decls: Vec<Decl<'a>>,
}

/// Names declared so far by one `provider` block, with how each was written.
pub(crate) type Own<'a> = HashMap<&'a str, &'static str>;

impl<'a> Merged<'a> {
    /// Takes in `item` if it declares a parameter (and returns true), from the block of
    /// `provider` in file `file`. Declaring a name twice in one block is an error.
    pub fn declare(
        &mut self,
        file: usize,
        provider: &str,
        item: &'a Item,
        own: &mut Own<'a>,
        problems: &mut Vec<Problem>,
    ) -> bool {
        let decl = match item {
            Item::Param(p) => Decl {
                file,
                name: &p.name.name,
                span: p.name.span,
                default: p.default.as_ref(),
                spelling: "param",
            },
            // `base_url ""` has always meant "the deployment must give api_base".
            Item::BaseUrl(s) => Decl {
                file,
                name: "api_base",
                span: s.span,
                default: (!s.value.is_empty()).then_some(s),
                spelling: "base_url",
            },
            Item::ApiVersion(s) => Decl {
                file,
                name: "api_version",
                span: s.span,
                default: Some(s),
                spelling: "api_version",
            },
            _ => return false,
        };
        if let Some(prev) = own.insert(decl.name, decl.spelling) {
            let msg = if prev == decl.spelling && prev != "param" {
                format!("`{prev}` is declared twice in `{provider}`")
            } else {
                format!(
                    "`{}` is declared twice in `{provider}` (`{}` and `{}`)",
                    decl.name,
                    spelled(prev, decl.name),
                    spelled(decl.spelling, decl.name)
                )
            };
            problems.push((file, decl.span, msg));
        }
        self.decls.retain(|d| d.name != decl.name);
        self.decls.push(decl);
        true
    }

    /// Checks the declarations in force and compiles them, in name order.
    pub fn compile(&self) -> (Vec<Param>, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for d in &self.decls {
            if !SUPPLIED.contains(&d.name) {
                problems.push((
                    d.file,
                    d.span,
                    format!(
                        "unknown deployment parameter `{}`{}; the gateway supplies {}",
                        d.name,
                        nearest(d.name),
                        SUPPLIED
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                continue;
            }
            if let (Some(s), "api_base") = (d.default, d.name) {
                let ok = s.value.starts_with("https://") || s.value.starts_with("http://");
                if !ok {
                    let msg = match (d.spelling, s.value.is_empty()) {
                        ("param", true) => "an empty default: write `param api_base required` \
                                            when every deployment must give it"
                            .to_owned(),
                        ("param", false) => {
                            "the default of `api_base` must start with https:// or http://"
                                .to_owned()
                        }
                        _ => "base_url must start with https:// or http://".to_owned(),
                    };
                    problems.push((d.file, s.span, msg));
                }
            }
            out.push(Param {
                name: d.name.to_owned(),
                default: d.default.map(|s| s.value.clone()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        (out, problems)
    }
}

/// The default of `name`, if declared with one.
pub fn default_of<'p>(params: &'p [Param], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.default.as_deref())
}

fn spelled(spelling: &str, name: &str) -> String {
    match spelling {
        "param" => format!("param {name}"),
        other => other.to_owned(),
    }
}

/// ` (did you mean `x`?)` for a supplied name within two edits.
fn nearest(name: &str) -> String {
    SUPPLIED
        .iter()
        .map(|s| (distance(name, s), *s))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, s)| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use crate::dsl::load_str;

    fn err(src: &str) -> String {
        match load_str("t.llmux", src) {
            Ok(_) => panic!("expected an error"),
            Err(e) => crate::dsl::format_errors(&e),
        }
    }

    #[test]
    fn required_and_default_compile() {
        let set = load_str(
            "t.llmux",
            r#"provider base { base_url "https://a/v1" url "/x" }
               provider child extends base { param api_base required param api_version default "v1" }
               provider legacy extends base { base_url "" }"#,
        )
        .unwrap();
        let base = set.get("base").unwrap();
        assert_eq!(base.base_url(), "https://a/v1");
        assert_eq!(base.required_params().count(), 0);
        let child = set.get("child").unwrap();
        assert_eq!(child.base_url(), "");
        assert_eq!(child.required_params().collect::<Vec<_>>(), ["api_base"]);
        let legacy = set.get("legacy").unwrap();
        assert_eq!(legacy.required_params().collect::<Vec<_>>(), ["api_base"]);
    }

    #[test]
    fn unknown_names_are_errors_with_a_suggestion() {
        let e = err(r#"provider p { param api_bsae required }"#);
        assert!(e.contains("t.llmux:1:20"), "{e}");
        assert!(e.contains("did you mean `api_base`"), "{e}");
    }

    #[test]
    fn two_spellings_of_one_name_are_an_error() {
        let e = err(r#"provider p { base_url "https://a" param api_base required }"#);
        assert!(e.contains("declared twice"), "{e}");
        let e = err(r#"provider p { param api_base default "" }"#);
        assert!(e.contains("param api_base required"), "{e}");
        let e = err(r#"provider p { param api_base default "ftp://x" }"#);
        assert!(e.contains("https://"), "{e}");
    }
}
