//! The one way the gateway reads environment variables.
//!
//! Lookups go to the config's `environment_variables:` map first, then to the process
//! environment as it was when first read. The process environment is never changed after start:
//! `setenv` racing `getenv` (which `getaddrinfo` on the DNS threads calls) is undefined behaviour
//! in glibc, so the config's variables live in this map instead of being exported.
//!
//! Libraries are handed the values they need (the log filter, proxies) rather than reading the
//! environment themselves, so a config reload changes what they see. The only exception is
//! clap's `env = "LLMUX_*"` defaults for command-line flags, read once before any config exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// The process environment, captured once (read-only from then on).
fn process() -> Arc<HashMap<String, String>> {
    static PROCESS: OnceLock<Arc<HashMap<String, String>>> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            // Variables whose name or value is not UTF-8 cannot be named in a config anyway.
            Arc::new(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect(),
            )
        })
        .clone()
}

/// Environment lookups: the config's map, then the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    config: BTreeMap<String, String>,
    process: Arc<HashMap<String, String>>,
}

impl Env {
    /// The process environment with the config's `environment_variables` in front of it.
    pub fn with_config(config: BTreeMap<String, String>) -> Self {
        Env {
            config,
            process: process(),
        }
    }

    /// The process environment alone (before any config is read).
    pub fn process_only() -> Self {
        Self::with_config(BTreeMap::new())
    }

    /// Explicit maps, for tests: nothing is read from the process.
    pub fn from_maps(config: BTreeMap<String, String>, process: HashMap<String, String>) -> Self {
        Env {
            config,
            process: Arc::new(process),
        }
    }

    /// The value of `name`, if set (an empty value counts as set).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.config
            .get(name)
            .or_else(|| self.process.get(name))
            .map(String::as_str)
    }

    /// The first of `names` that is set and not blank (`HTTPS_PROXY`, then `https_proxy`).
    pub fn first_nonblank(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .filter_map(|n| self.get(n))
            .find(|v| !v.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(config: &[(&str, &str)], process: &[(&str, &str)]) -> Env {
        let own = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        Env::from_maps(
            own(config).into_iter().collect(),
            own(process).into_iter().collect(),
        )
    }

    #[test]
    fn config_map_comes_first() {
        let e = env(
            &[("A", "from-config")],
            &[("A", "from-process"), ("B", "b")],
        );
        assert_eq!(e.get("A"), Some("from-config"));
        assert_eq!(e.get("B"), Some("b"));
        assert_eq!(e.get("C"), None);
    }

    #[test]
    fn first_nonblank_skips_blank_values() {
        let e = env(&[("HTTPS_PROXY", " ")], &[("https_proxy", "http://p:1")]);
        assert_eq!(
            e.first_nonblank(&["HTTPS_PROXY", "https_proxy"]),
            Some("http://p:1")
        );
    }
}
