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
//! Any `litellm_params` key can be declared (`param vertex_project required`), except the
//! gateway's own settings ([`GATEWAY_SETTINGS`]: read by the gateway, never by a file). A
//! declared parameter is `ctx.params.NAME` in expressions and `{NAME}` (or `{+NAME}`) in
//! `base_url` and `url` templates; the config loader passes exactly the declared ones to the
//! file, with `os.environ/` references resolved.

use std::collections::HashMap;

use super::ast::{Item, Span, Str};
use super::ir::Param;

/// Parameters with a `ctx` field of their own (`ctx.api_base`, `ctx.api_version`).
pub const BUILT_IN: &[&str] = &["api_base", "api_version"];

/// `litellm_params` keys the gateway itself reads: a file cannot declare them.
pub const GATEWAY_SETTINGS: &[&str] = &[
    "model",
    "api_key",
    "rpm",
    "tpm",
    "timeout",
    "stream_timeout",
    "connect_timeout",
    "weight",
    "drop_params",
    "max_retries",
    "order",
    "max_parallel_requests",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
];

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

    /// The file and text of the `api_base` default in force (`base_url "..."`).
    pub fn api_base_default(&self) -> Option<(usize, &'a Str)> {
        self.decls
            .iter()
            .find(|d| d.name == "api_base")
            .and_then(|d| d.default.map(|s| (d.file, s)))
    }

    /// Checks the declarations in force and compiles them, in name order.
    pub fn compile(&self) -> (Vec<Param>, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for d in &self.decls {
            if GATEWAY_SETTINGS.contains(&d.name) {
                let hint = if d.name == "api_key" {
                    "; the key reaches the file through `auth` (and `ctx.api_key`)"
                } else {
                    ""
                };
                problems.push((
                    d.file,
                    d.span,
                    format!(
                        "`{}` is a setting the gateway reads itself, not a provider parameter{hint}",
                        d.name
                    ),
                ));
                continue;
            }
            // A near miss of a built-in name is almost certainly a typo, which would otherwise
            // declare a parameter no deployment sets.
            if let Some(near) = nearest(d.name) {
                problems.push((
                    d.file,
                    d.span,
                    format!(
                        "unknown deployment parameter `{}` (did you mean `{near}`?)",
                        d.name
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
                default_value: d
                    .default
                    .map(|s| serde_json::Value::String(s.value.clone())),
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

/// The built-in name `name` is within two edits of, without being it.
fn nearest(name: &str) -> Option<&'static str> {
    BUILT_IN
        .iter()
        .map(|s| (distance(name, s), *s))
        .filter(|(d, _)| (1..=2).contains(d))
        .min()
        .map(|(_, s)| s)
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

#[cfg(test)]
mod deployment_parameter_tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use crate::dsl::{load_str, RequestCtx};

    const VERTEX_LIKE: &str = r#"
        provider v {
          param project required
          param location default "us-central1"
          param route default "a/b"
          base_url when ctx.params.location == "global" "https://api.test/v1/projects/{project}/locations/global"
          base_url "https://{location}-api.test/v1/projects/{project}/locations/{location}/"
          url when ctx.params.route != "a/b" "/raw/{+route}/{+model}"
          url "/models/{model}:generate"
          auth bearer
          header "x-project" = ctx.params.project
          request { model = ctx.model; where = ctx.params.location; key_seen = present(ctx.api_key) }
        }"#;

    fn ctx(params: Value) -> RequestCtx<'static> {
        let map: BTreeMap<String, Value> = serde_json::from_value(params).unwrap();
        RequestCtx {
            model: "m-1".into(),
            api_key: Some("k".into()),
            params: std::borrow::Cow::Owned(map),
            ..RequestCtx::default()
        }
    }

    #[test]
    fn parameters_fill_base_url_url_headers_and_expressions() {
        let set = load_str("t.llmux", VERTEX_LIKE).unwrap();
        let p = set.get("v").unwrap();
        let up = p
            .build_request(&ctx(json!({"project": "p 1"})), &json!({"model": "x"}))
            .unwrap();
        assert_eq!(
            up.url,
            "https://us-central1-api.test/v1/projects/p%201/locations/us-central1/models/m-1:generate"
        );
        assert!(up.headers.contains(&("x-project".into(), "p 1".into())));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["where"], "us-central1");
        assert_eq!(body["key_seen"], true);
        // The conditional base wins when its condition holds.
        let up = p
            .build_request(
                &ctx(json!({"project": "p", "location": "global"})),
                &json!({"model": "x"}),
            )
            .unwrap();
        assert_eq!(
            up.url,
            "https://api.test/v1/projects/p/locations/global/models/m-1:generate"
        );
    }

    #[test]
    fn the_raw_form_keeps_slashes_but_not_dot_segments() {
        let set = load_str("t.llmux", VERTEX_LIKE).unwrap();
        let p = set.get("v").unwrap();
        let mut c = ctx(json!({"project": "p", "route": "@cf/meta/x y"}));
        c.model = "owner/../name".into();
        let up = p.build_request(&c, &json!({"model": "x"})).unwrap();
        assert!(
            up.url.ends_with("/raw/@cf/meta/x%20y/owner/%2E%2E/name"),
            "{}",
            up.url
        );
    }

    #[test]
    fn a_missing_required_parameter_is_a_config_error_naming_it() {
        let set = load_str("t.llmux", VERTEX_LIKE).unwrap();
        let p = set.get("v").unwrap();
        assert_eq!(p.required_params().collect::<Vec<_>>(), ["project"]);
        let e = p
            .build_request(&ctx(json!({})), &json!({"model": "x"}))
            .unwrap_err();
        assert!(e.to_string().contains("`project`"), "{e}");
    }

    #[test]
    fn undeclared_names_and_gateway_settings_are_load_errors() {
        let e = |src: &str| match load_str("t.llmux", src) {
            Ok(_) => panic!("expected an error"),
            Err(e) => crate::dsl::format_errors(&e),
        };
        let msg = e(r#"provider p { param project required base_url "https://{projct}.test" }"#);
        assert!(msg.contains("t.llmux:1:"), "{msg}");
        assert!(msg.contains("unknown placeholder `{projct}`"), "{msg}");
        assert!(msg.contains("did you mean `project`"), "{msg}");
        let msg = e(r#"provider p { base_url "https://a" url "/{+nope}" }"#);
        assert!(msg.contains("`{+nope}`"), "{msg}");
        let msg = e(
            r#"provider p { param region required base_url "https://a" request { r = ctx.params.regoin } }"#,
        );
        assert!(msg.contains("`ctx.params.regoin` is not declared"), "{msg}");
        assert!(msg.contains("did you mean `region`"), "{msg}");
        let msg = e(r#"provider p { param timeout default "3" base_url "https://a" }"#);
        assert!(msg.contains("gateway reads itself"), "{msg}");
        let msg = e(r#"provider p { base_url "https://a" request { r = ctx.params } }"#);
        assert!(msg.contains("read by name"), "{msg}");
    }

    #[test]
    fn a_child_inherits_parameters_and_may_override_defaults() {
        let set = load_str(
            "t.llmux",
            &format!(
                "{VERTEX_LIKE}\nprovider w extends v {{ param location default \"europe-west4\" }}"
            ),
        )
        .unwrap();
        let p = set.get("w").unwrap();
        let up = p
            .build_request(&ctx(json!({"project": "p"})), &json!({"model": "x"}))
            .unwrap();
        assert!(
            up.url.starts_with("https://europe-west4-api.test/"),
            "{}",
            up.url
        );
    }
}
