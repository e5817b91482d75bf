//! Configuration: the LiteLLM-compatible YAML file, secret references, validation, and the
//! immutable [`Snapshot`] that the shards read through an `ArcSwap`.

mod cloud;
mod deployment;
mod diag;
pub mod env;
pub mod keys;
pub mod locate;
pub mod number;
pub mod provider_names;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod schema;
pub mod secrets;
mod snapshot;
mod tls;
pub mod tracing;

pub use env::Env;
pub use proxy::ProxySettings;
pub use snapshot::{
    Deployment, MediaSettings, ModelGroup, ServerSettings, Snapshot, UpstreamSettings,
};
pub use tracing::{OtlpProtocol, TracingSettings};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dsl::ProviderSet;
pub use providers::ProvidersSource;

/// The config shipped inside the binary, used when no config file exists.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/llmux.yaml");

/// Where a config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    pub fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Embedded => "<embedded default config>".to_owned(),
        }
    }

    fn read(&self) -> Result<String, ConfigError> {
        match self {
            ConfigSource::File(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Io {
                file: p.display().to_string(),
                reason: e.to_string(),
            }),
            ConfigSource::Embedded => Ok(EMBEDDED_DEFAULT.to_owned()),
        }
    }

    fn base_dir(&self) -> PathBuf {
        match self {
            ConfigSource::File(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            ConfigSource::Embedded => PathBuf::from("."),
        }
    }
}

/// What the config loader asks of the provider files.
pub trait ProviderCatalog {
    /// Every provider name, in sorted order.
    fn names(&self) -> Vec<&str>;
    /// The deployment parameters `provider`'s file declares `param NAME required` (empty for an
    /// unknown provider).
    fn required_params(&self, provider: &str) -> Vec<&str>;
    /// Every parameter `provider`'s file declares other than `api_base` and `api_version`
    /// (which have fields of their own).
    fn provider_params(&self, provider: &str) -> Vec<&str>;
    /// The provider file that serves `model` under `prefix` and the model it is sent (a
    /// dispatching file picks one by the model); `Err` lists the rules when none matches.
    fn resolve(&self, prefix: &str, model: &str) -> Result<(String, String), String>;
    /// The compiled provider (its `auth` decides the deployment's credentials).
    fn provider(&self, name: &str) -> Option<&crate::dsl::Provider>;
}

impl ProviderCatalog for ProviderSet {
    fn names(&self) -> Vec<&str> {
        ProviderSet::names(self).collect()
    }

    fn required_params(&self, provider: &str) -> Vec<&str> {
        self.get(provider)
            .map(|p| p.required_params().collect())
            .unwrap_or_default()
    }

    fn provider(&self, name: &str) -> Option<&crate::dsl::Provider> {
        self.get(name)
    }

    fn resolve(&self, prefix: &str, model: &str) -> Result<(String, String), String> {
        match ProviderSet::resolve(self, prefix, model) {
            Some((file, m)) => Ok((file.to_owned(), m.to_owned())),
            None => {
                let rules: Vec<String> = self
                    .get(prefix)
                    .map(|p| {
                        p.dispatch()
                            .iter()
                            .map(|r| format!("`{}`", r.pattern))
                            .collect()
                    })
                    .unwrap_or_default();
                Err(format!(
                    "provider `{prefix}` serves models by pattern ({}), and `{model}` matches none",
                    rules.join(", ")
                ))
            }
        }
    }

    fn provider_params(&self, provider: &str) -> Vec<&str> {
        self.get(provider)
            .map(|p| {
                p.params()
                    .iter()
                    .map(|x| x.name.as_str())
                    .filter(|n| !crate::dsl::params::BUILT_IN.contains(n))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Every error of the file, one `file:line:col: key: message` line each, and the warnings
    /// found on the way (so `config check` can print both).
    #[error("{}", errors.join("\n"))]
    Invalid {
        errors: Vec<String>,
        warnings: Vec<String>,
    },
    #[error("provider files in {source_name}:\n{message}")]
    Providers {
        source_name: String,
        message: String,
    },
}

/// A loaded config and the warnings found on the way.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}

/// Reads, parses and validates a config, with its provider files, into a snapshot.
pub fn load(source: &ConfigSource) -> Result<Loaded, ConfigError> {
    let text = source.read()?;
    let name = source.name();
    let base_dir = source.base_dir();
    let mut warnings = Vec::new();
    let parsed = parse(&name, &text, &mut warnings)?;
    let providers_source =
        ProvidersSource::resolve(parsed.llmux.providers_dir.as_deref(), &base_dir);
    let mut providers = providers_source
        .load()
        .map_err(|message| ConfigError::Providers {
            source_name: providers_source.describe(),
            message,
        })?;
    // An out-of-range depth is reported by the snapshot build, and the load fails.
    if let Some(Ok(depth)) =
        (parsed.llmux.server.max_json_depth.as_ref()).map(|n| number::Limit::JSON_DEPTH.check(n))
    {
        providers.set_max_json_depth(depth as usize);
    }
    build(
        &name,
        &text,
        parsed,
        &base_dir,
        Arc::new(providers),
        providers_source,
        warnings,
    )
}

/// Parses and validates config text against an already loaded provider set.
pub fn load_str(
    file: &str,
    text: &str,
    base_dir: &Path,
    providers: Arc<ProviderSet>,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let parsed = parse(file, text, &mut warnings)?;
    build(
        file,
        text,
        parsed,
        base_dir,
        providers,
        ProvidersSource::Embedded,
        warnings,
    )
}

fn parse(
    file: &str,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<schema::ConfigFile, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_ignored::deserialize(de, |path| {
        warnings.push(format!("{file}: unknown key `{path}` ignored"));
    })
    .map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError::Syntax {
            file: file.to_owned(),
            line,
            column,
            message: e.to_string(),
        }
    })
}

fn build(
    file: &str,
    text: &str,
    parsed: schema::ConfigFile,
    base_dir: &Path,
    providers: Arc<ProviderSet>,
    providers_source: ProvidersSource,
    mut warnings: Vec<String>,
) -> Result<Loaded, ConfigError> {
    let mut diag = diag::Diagnostics::default();
    let inputs = snapshot::Inputs {
        base_dir,
        providers,
        providers_source,
    };
    let snapshot = snapshot::build(parsed, inputs, &mut diag);
    let (errors, more) = diag.render(file, text);
    warnings.extend(more);
    match snapshot {
        Some(snapshot) if errors.is_empty() => Ok(Loaded { snapshot, warnings }),
        _ => Err(ConfigError::Invalid { errors, warnings }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(t: &str) -> Result<Loaded, ConfigError> {
        let providers = Arc::new(providers::embedded().unwrap());
        load_str("test.yaml", t, Path::new("."), providers)
    }

    #[test]
    fn dispatch_and_declared_parameters_reach_the_deployment() {
        let providers = crate::dsl::load_str(
            "t.llmux",
            r#"provider cloud { dispatch { "claude-*" => cloud_claude, "converse/*" => cloud_main strip "converse/", "*" => cloud_main } }
               provider cloud_main { param project required param region default "r1" param secret_token default "" base_url "https://{region}.test" url "/{project}" request { model = ctx.model } }
               provider cloud_claude extends cloud_main { }"#,
        )
        .unwrap();
        let text = "environment_variables: { LLMUX_TEST_CLOUD_TOKEN: tok-123 }\nmodel_list:
  - model_name: a
    litellm_params: { model: cloud/claude-x, project: p1, secret_token: os.environ/LLMUX_TEST_CLOUD_TOKEN, not_a_param: 1 }
  - model_name: b
    litellm_params: { model: cloud/converse/m-2, project: p2, region: r9 }
  - model_name: c
    litellm_params: { model: cloud/m-3, project: 7 }
";
        let l = load_str("test.yaml", text, Path::new("."), Arc::new(providers)).unwrap();
        let a = &l.snapshot.group("a").unwrap().deployments[0];
        assert_eq!(
            (a.provider.as_str(), a.upstream_model.as_str()),
            ("cloud_claude", "claude-x")
        );
        assert_eq!(a.params.get("project"), Some(&serde_json::json!("p1")));
        assert_eq!(
            a.params.get("secret_token"),
            Some(&serde_json::json!("tok-123"))
        );
        assert!(l.snapshot.secrets.iter().any(|s| s == "tok-123"));
        assert!(!l.snapshot.secrets.iter().any(|s| s == "p1"));
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("unknown key `not_a_param` ignored")),
            "{:?}",
            l.warnings
        );
        let b = &l.snapshot.group("b").unwrap().deployments[0];
        assert_eq!(
            (b.provider.as_str(), b.upstream_model.as_str()),
            ("cloud_main", "m-2")
        );
        assert_eq!(b.params.get("region"), Some(&serde_json::json!("r9")));
        let c = &l.snapshot.group("c").unwrap().deployments[0];
        assert_eq!(c.params.get("project"), Some(&serde_json::json!(7)));

        let providers = crate::dsl::load_str(
            "t.llmux",
            r#"provider cloud { dispatch { "claude-*" => cloud_main } }
               provider cloud_main { param project required base_url "https://x.test" request { model = ctx.model } }"#,
        )
        .unwrap();
        let text = "model_list:\n  - model_name: a\n    litellm_params: { model: cloud/gpt-x, project: p }\n  - model_name: b\n    litellm_params: { model: cloud/claude-y }\n";
        let e = match load_str(
            "test.yaml",
            &text.replace("\\n", "\n"),
            Path::new("."),
            Arc::new(providers),
        ) {
            Err(ConfigError::Invalid { errors, .. }) => errors.join("\n"),
            other => panic!("expected errors, got {:?}", other.map(|_| ())),
        };
        assert!(e.contains("test.yaml:3:30: model_list[0].litellm_params.model: provider `cloud` serves models by pattern (`claude-*`), and `gpt-x` matches none"), "{e}");
        assert!(
            e.contains("`litellm_params.project` is required for provider `cloud_main`"),
            "{e}"
        );
    }

    #[test]
    fn requests_are_checked_without_their_tree_when_a_provider_forwards_bytes() {
        let with = |models: &[&str]| {
            let list: String = models
                .iter()
                .map(|m| {
                    format!(
                        "  - model_name: g\n    litellm_params: {{ model: {m}, api_key: k, api_base: http://127.0.0.1:9 }}\n"
                    )
                })
                .collect();
            load_text(&format!("model_list:\n{list}"))
                .unwrap()
                .snapshot
                .check_without_tree
        };
        assert!(with(&["openai/a"]));
        assert!(with(&["anthropic/a", "openai/b"]));
        assert!(!with(&["anthropic/a"]));
    }

    #[test]
    fn loads_litellm_shape_with_warnings() {
        let l = load_text(
            r#"
model_list:
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-test
      rpm: 10
      some_future_key: 1
    model_info:
      id: dep-1
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1/
      api_key: sk-2
litellm_settings:
  drop_params: true
  success_callback: ["langfuse"]
general_settings:
  master_key: sk-master
"#,
        )
        .unwrap();
        let g = l.snapshot.group("gpt").unwrap();
        assert_eq!(g.deployments.len(), 2);
        assert_eq!(g.deployments[0].id, "dep-1");
        assert_eq!(
            g.deployments[0].api_base, None,
            "the provider file's base URL applies"
        );
        assert_eq!(
            g.deployments[1].api_base.as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
        assert_eq!(l.snapshot.master_key.as_deref(), Some("sk-master"));
        assert!(
            l.warnings.iter().any(|w| w.contains("some_future_key")),
            "{:?}",
            l.warnings
        );
        assert!(l.warnings.iter().any(|w| w.contains("success_callback")));
    }

    #[test]
    fn type_errors_have_line_numbers() {
        let e = load_text("model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      rpm: lots\n")
            .err()
            .unwrap();
        let s = e.to_string();
        assert!(s.starts_with("test.yaml:5:"), "{s}");
    }

    #[test]
    fn unset_env_key_disables_the_deployment() {
        let l = load_text(
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      api_key: os.environ/LLMUX_TEST_DEFINITELY_UNSET\n",
        )
        .unwrap();
        assert!(l.snapshot.group("x").is_none());
        assert!(
            l.warnings
                .iter()
                .any(|w| w.starts_with("test.yaml:5:16: model_list[0].litellm_params.api_key:")),
            "{:?}",
            l.warnings
        );
        assert!(l
            .warnings
            .iter()
            .any(|w| w.contains("LLMUX_TEST_DEFINITELY_UNSET")));
    }

    /// The error lines of a config that must fail.
    fn errors_of(t: &str) -> Vec<String> {
        match load_text(t) {
            Err(ConfigError::Invalid { errors, .. }) => errors,
            Err(e) => panic!("not a validation error: {e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    #[test]
    fn provider_prefixes_are_checked() {
        // A typo: an error at the model value, with the nearest shipped name.
        let e = errors_of(
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: opneai/gpt-4o\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "test.yaml:4:14: model_list[0].litellm_params.model: unknown provider `opneai`"
            ),
            "{}",
            e[0]
        );
        assert!(e[0].contains("did you mean `openai`"), "{}", e[0]);
        // A LiteLLM provider without a file: disabled with a warning, the rest loads.
        let l = load_text(
            "model_list:\n  - model_name: s\n    litellm_params: { model: sagemaker/x }\n  - model_name: o\n    litellm_params: { model: openai/x, api_key: k }\n",
        )
        .unwrap();
        assert!(l.snapshot.group("s").is_none());
        assert!(l.snapshot.group("o").is_some());
        let w = l.warnings.iter().find(|w| w.contains("sagemaker")).unwrap();
        assert!(w.starts_with("test.yaml:3:30:"), "{w}");
        assert!(w.contains("does not ship"), "{w}");
        // A base URL that is not http(s) stays an error.
        let e = errors_of("model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      api_base: ftp://h\n");
        assert!(e[0].starts_with("test.yaml:5:17:"), "{e:?}");
    }

    #[test]
    fn bad_numbers_are_all_reported_with_positions() {
        let e = errors_of(
            "model_list:\n  - model_name: x\n    litellm_params: { model: openai/x, timeout: -1, weight: .nan, rpm: 0 }\nlitellm_settings:\n  request_timeout: 1e300\nrouter_settings: { timeout: .inf }\nllmux:\n  server:\n    max_request_body_bytes: 0\n    max_json_depth: 5000\n    body_timeout: ten\n    shutdown_delay: 0\n  upstream: { max_stream_event_bytes: 1.5 }\n  media: { max_redirects: -2 }\n",
        );
        let want = [
            "test.yaml:6:29: router_settings.timeout: must be finite",
            "test.yaml:5:20: litellm_settings.request_timeout: must be at most 86400 seconds (got 1e300)",
            "test.yaml:9:29: llmux.server.max_request_body_bytes: must be more than 0",
            "test.yaml:10:21: llmux.server.max_json_depth: must be at most 1024",
            "test.yaml:11:19: llmux.server.body_timeout: must be a number, not the string \"ten\"",
            "test.yaml:13:39: llmux.upstream.max_stream_event_bytes: must be a whole number",
            "test.yaml:14:27: llmux.media.max_redirects: must not be negative",
            "test.yaml:3:49: model_list[0].litellm_params.timeout: must not be negative",
            "test.yaml:3:61: model_list[0].litellm_params.weight: must be a number, not NaN",
            "test.yaml:3:72: model_list[0].litellm_params.rpm: must be more than 0",
        ];
        for w in want {
            assert!(
                e.iter().any(|l| l.starts_with(w)),
                "{w}\nnot in\n{}",
                e.join("\n")
            );
        }
        assert_eq!(e.len(), want.len(), "{}", e.join("\n"));
    }

    #[test]
    fn an_empty_master_key_is_an_error() {
        let e = errors_of("general_settings:\n  master_key: \"\"\n");
        assert!(
            e[0].starts_with("test.yaml:2:15: general_settings.master_key: is empty"),
            "{e:?}"
        );
        let e = errors_of("environment_variables: { MK: \"\" }\ngeneral_settings: { master_key: os.environ/MK }\n");
        assert!(e[0].contains("resolves to an empty value"), "{e:?}");
        // Absent: no authentication, with a warning.
        let l = load_text("model_list: []\n").unwrap();
        assert!(l.snapshot.master_key.is_none());
        assert!(l.warnings.iter().any(|w| w.contains("not authenticated")));
    }

    #[test]
    fn names_that_would_split_a_header_and_oversized_groups_are_errors() {
        let e = errors_of(
            "model_list:\n  - model_name: \"a\\nb\"\n    litellm_params: { model: openai/x, api_key: k }\n    model_info: { id: \"x\\r\\ny\" }\n",
        );
        assert!(
            e.iter().any(|m| m
                .contains("model_name: a model group name must not contain control characters")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("model_info.id: a deployment id must not contain")),
            "{e:?}"
        );
        let mut yaml = String::from("model_list:\n");
        for _ in 0..65 {
            yaml.push_str(
                "  - model_name: big\n    litellm_params: { model: openai/x, api_key: k }\n",
            );
        }
        let e = errors_of(&yaml);
        assert!(
            e.iter().any(|m| m.contains("more than 64 deployments")),
            "{e:?}"
        );
    }

    #[test]
    fn environment_variables_feed_references_without_touching_the_process() {
        let name = "LLMUX_TEST_FROM_CONFIG_ONLY";
        let l = load_text(&format!(
            "environment_variables: {{ {name}: sk-from-config, HTTPS_PROXY: \"proxy.test:3128\" }}\nmodel_list:\n  - model_name: x\n    litellm_params: {{ model: openai/x, api_key: os.environ/{name} }}\n"
        ))
        .unwrap();
        let d = &l.snapshot.group("x").unwrap().deployments[0];
        assert_eq!(d.api_key.as_deref(), Some("sk-from-config"));
        assert_eq!(l.snapshot.env.get(name), Some("sk-from-config"));
        let proxy = l.snapshot.upstream.proxy.https.as_ref().unwrap();
        assert_eq!(proxy.host, "proxy.test");
        assert!(std::env::var_os(name).is_none());
    }

    #[test]
    fn required_api_base_is_checked_at_the_entry() {
        let e = errors_of("model_list:\n  - model_name: a\n    litellm_params: { model: openai/x }\n  - model_name: az\n    litellm_params:\n      model: azure/dep\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("test.yaml:4:5: model_list[1]: `litellm_params.api_base` is required for provider `azure`"), "{}", e[0]);
    }

    #[test]
    fn mock_listen_tls_and_logging_are_checked() {
        let e = errors_of("llmux:\n  mock: { listen: not-an-address }\n  server: { tls: { cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem } }\n  upstream: { ca_file: /nonexistent/ca.pem }\n  logging: { format: xml }\n");
        for w in [
            "test.yaml:2:19: llmux.mock.listen:",
            "test.yaml:3:31: llmux.server.tls.cert_file: cannot read /nonexistent/c.pem",
            "test.yaml:3:61: llmux.server.tls.key_file: cannot read",
            "test.yaml:4:24: llmux.upstream.ca_file: cannot read",
            "test.yaml:5:22: llmux.logging.format:",
        ] {
            assert!(
                e.iter().any(|l| l.starts_with(w)),
                "{w}\nnot in\n{}",
                e.join("\n")
            );
        }
        assert!(load_text("llmux: { mock: { listen: \"localhost:4010\" } }\n").is_ok());
        assert!(load_text("llmux: { mock: { listen: \"[::1]:4010\" } }\n").is_ok());
    }

    #[test]
    fn embedded_default_loads() {
        let l = load_text(EMBEDDED_DEFAULT).unwrap();
        assert!(l.snapshot.group("demo").is_some());
    }
}
