//! Resolution of secret references in config values.
//!
//! - `os.environ/NAME`: the variable NAME, looked up through [`Env`] (the config's
//!   `environment_variables`, then the process environment; LiteLLM's syntax).
//! - `file:/path`: the contents of a file (a mounted Kubernetes secret), trailing newline trimmed.
//!
//! Both are re-read on every reload, so rotated secrets take effect without a restart.

use std::path::Path;

use super::env::Env;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Resolves `value` if it is a reference; plain values are returned unchanged.
pub fn resolve(value: &str, base_dir: &Path, env: &Env) -> Result<String, SecretError> {
    if let Some(name) = value.strip_prefix("os.environ/") {
        return env
            .get(name)
            .map(str::to_owned)
            .ok_or_else(|| SecretError::EnvMissing(name.to_owned()));
    }
    if let Some(path) = value.strip_prefix("file:") {
        let p = base_dir.join(path);
        return std::fs::read_to_string(&p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| SecretError::File {
                path: p.display().to_string(),
                reason: e.to_string(),
            });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_env_and_files() {
        // A map stands in for the environment: tests never change the process's.
        let env = Env::from_maps(
            [("LLMUX_TEST_SECRET_A".to_owned(), "s3cret".to_owned())].into(),
            Default::default(),
        );
        assert_eq!(
            resolve("os.environ/LLMUX_TEST_SECRET_A", Path::new("."), &env).unwrap(),
            "s3cret"
        );
        assert_eq!(
            resolve("os.environ/LLMUX_TEST_SECRET_UNSET", Path::new("."), &env),
            Err(SecretError::EnvMissing("LLMUX_TEST_SECRET_UNSET".into()))
        );
        let dir = std::env::temp_dir().join(format!("llmux-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), "from-file\n").unwrap();
        assert_eq!(resolve("file:key", &dir, &env).unwrap(), "from-file");
        assert_eq!(resolve("plain", &dir, &env).unwrap(), "plain");
        std::fs::remove_dir_all(&dir).ok();
    }
}
