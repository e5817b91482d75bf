//! Configuration: the LiteLLM-compatible YAML file, secret references, validation, and the
//! immutable [`Snapshot`] that the shards read through an `ArcSwap`.

pub mod providers;
pub mod reload;
pub mod schema;
pub mod secrets;
mod snapshot;

pub use snapshot::{
    Deployment, MediaSettings, ModelGroup, ServerSettings, Snapshot, UpstreamSettings,
};

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

/// Tells the config loader which providers exist and their default `api_base`.
pub trait ProviderCatalog {
    /// `None` when the provider is unknown; `Some(None)` when it has no default base URL.
    fn default_api_base(&self, provider: &str) -> Option<Option<String>>;
}

impl ProviderCatalog for ProviderSet {
    fn default_api_base(&self, provider: &str) -> Option<Option<String>> {
        let p = self.get(provider)?;
        let base = p.base_url();
        Some((!base.is_empty()).then(|| base.to_owned()))
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
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
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
    if let Some(depth) = parsed.llmux.server.max_json_depth {
        providers.set_max_json_depth(depth);
    }
    build(
        &name,
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
    parsed: schema::ConfigFile,
    base_dir: &Path,
    providers: Arc<ProviderSet>,
    providers_source: ProvidersSource,
    mut warnings: Vec<String>,
) -> Result<Loaded, ConfigError> {
    let snapshot = snapshot::build(parsed, base_dir, providers, providers_source, &mut warnings)
        .map_err(|message| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        })?;
    Ok(Loaded { snapshot, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(t: &str) -> Result<Loaded, ConfigError> {
        let providers = Arc::new(providers::embedded().unwrap());
        load_str("test.yaml", t, Path::new("."), providers)
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
