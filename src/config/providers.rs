//! Where provider mapping files come from, and loading them with the config.
//!
//! Resolution: `llmux.providers_dir` when set (relative to the config file's directory); else a
//! `providers/` directory in the working directory if it holds `.llmux` files; else the files
//! embedded in the binary at build time.

use std::path::{Path, PathBuf};

use crate::dsl::{self, ProviderSet};

include!(concat!(env!("OUT_DIR"), "/embedded_providers.rs"));

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvidersSource {
    Dir(PathBuf),
    Embedded,
}

impl ProvidersSource {
    pub fn resolve(setting: Option<&str>, base_dir: &Path) -> Self {
        if let Some(dir) = setting {
            return ProvidersSource::Dir(base_dir.join(dir));
        }
        let cwd = PathBuf::from("providers");
        if has_provider_files(&cwd) {
            return ProvidersSource::Dir(cwd);
        }
        ProvidersSource::Embedded
    }

    pub fn describe(&self) -> String {
        match self {
            ProvidersSource::Dir(d) => d.display().to_string(),
            ProvidersSource::Embedded => "<embedded providers>".to_owned(),
        }
    }

    /// Loads and compiles every provider file; errors are `file:line:col` with a caret.
    pub fn load(&self) -> Result<ProviderSet, String> {
        let res = match self {
            ProvidersSource::Dir(d) => dsl::load_dir(d),
            ProvidersSource::Embedded => {
                let mut sources = Vec::with_capacity(EMBEDDED_PROVIDERS.len());
                for (name, packed) in EMBEDDED_PROVIDERS {
                    // Written by build.rs from files that were UTF-8 text.
                    let text = miniz_oxide::inflate::decompress_to_vec(packed)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| format!("{name}: the embedded copy is damaged"))?;
                    sources.push(((*name).to_owned(), text));
                }
                dsl::load_sources(&sources)
            }
        };
        res.map_err(|errors| dsl::format_errors(&errors))
    }
}

fn has_provider_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "llmux"))
        })
        .unwrap_or(false)
}

/// Whether the binary ships a provider file named after `provider` (`openai.llmux`).
pub fn is_shipped(provider: &str) -> bool {
    EMBEDDED_PROVIDERS
        .iter()
        .any(|(file, _)| file.strip_suffix(".llmux") == Some(provider))
}

/// The embedded provider set (used by tests and as the fallback).
pub fn embedded() -> Result<ProviderSet, String> {
    ProvidersSource::Embedded.load()
}
