//! Configuration: the LiteLLM-compatible YAML file, secret references, validation, and the
//! immutable [`Snapshot`] that the shards read through an `ArcSwap`.

pub mod reload;
pub mod schema;
pub mod secrets;
mod snapshot;

pub use snapshot::{Deployment, ModelGroup, ServerSettings, Snapshot, UpstreamSettings};

use std::path::{Path, PathBuf};

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

/// Tells the config loader which providers exist and their default `api_base`.
pub trait ProviderCatalog {
    /// `None` when the provider is unknown; `Some(None)` when it has no default base URL.
    fn default_api_base(&self, provider: &str) -> Option<Option<String>>;
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
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// A loaded config and the warnings found on the way.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}

/// Reads, parses and validates a config into a snapshot.
pub fn load(source: &ConfigSource, catalog: &dyn ProviderCatalog) -> Result<Loaded, ConfigError> {
    let text = source.read()?;
    load_str(&source.name(), &text, &source.base_dir(), catalog)
}

pub fn load_str(
    file: &str,
    text: &str,
    base_dir: &Path,
    catalog: &dyn ProviderCatalog,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let de = serde_yaml::Deserializer::from_str(text);
    let parsed: Result<schema::ConfigFile, _> = serde_ignored::deserialize(de, |path| {
        warnings.push(format!("{file}: unknown key `{path}` ignored"));
    });
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            return Err(ConfigError::Syntax {
                file: file.to_owned(),
                line,
                column,
                message: e.to_string(),
            });
        }
    };
    let snapshot =
        snapshot::build(parsed, base_dir, catalog, &mut warnings).map_err(|message| {
            ConfigError::Invalid {
                file: file.to_owned(),
                message,
            }
        })?;
    Ok(Loaded { snapshot, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OnlyOpenAi;
    impl ProviderCatalog for OnlyOpenAi {
        fn default_api_base(&self, p: &str) -> Option<Option<String>> {
            (p == "openai").then(|| Some("https://api.openai.com/v1".to_owned()))
        }
    }

    fn load_text(t: &str) -> Result<Loaded, ConfigError> {
        load_str("test.yaml", t, Path::new("."), &OnlyOpenAi)
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
      api_base: http://127.0.0.1:9/v1
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
        assert_eq!(g.deployments[0].base.host, "api.openai.com");
        assert_eq!(g.deployments[1].base.port, 9);
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
        assert!(l
            .warnings
            .iter()
            .any(|w| w.contains("LLMUX_TEST_DEFINITELY_UNSET")));
    }

    #[test]
    fn unknown_provider_is_a_warning_and_bad_base_is_an_error() {
        let l = load_text(
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: nosuch/x\n",
        )
        .unwrap();
        assert!(l.snapshot.group("x").is_none());
        let e = load_text("model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      api_base: ftp://h\n");
        assert!(e.is_err());
    }

    #[test]
    fn embedded_default_loads() {
        let l = load_text(EMBEDDED_DEFAULT).unwrap();
        assert!(l.snapshot.group("demo").is_some());
    }
}
