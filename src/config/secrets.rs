//! Resolution of secret references in config values.
//!
//! - `os.environ/NAME`: the environment variable NAME (LiteLLM's syntax).
//! - `file:/path`: the contents of a file (a mounted Kubernetes secret), trailing newline trimmed.
//!
//! Both are re-read on every reload, so rotated secrets take effect without a restart.

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Resolves `value` if it is a reference; plain values are returned unchanged.
pub fn resolve(value: &str, base_dir: &Path) -> Result<String, SecretError> {
    if let Some(name) = value.strip_prefix("os.environ/") {
        return std::env::var(name).map_err(|_| SecretError::EnvMissing(name.to_owned()));
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
        std::env::set_var("LLMUX_TEST_SECRET_A", "s3cret");
        assert_eq!(
            resolve("os.environ/LLMUX_TEST_SECRET_A", Path::new(".")).unwrap(),
            "s3cret"
        );
        assert_eq!(
            resolve("os.environ/LLMUX_TEST_SECRET_UNSET", Path::new(".")),
            Err(SecretError::EnvMissing("LLMUX_TEST_SECRET_UNSET".into()))
        );
        let dir = std::env::temp_dir().join(format!("llmux-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), "from-file\n").unwrap();
        assert_eq!(resolve("file:key", &dir).unwrap(), "from-file");
        assert_eq!(resolve("plain", &dir).unwrap(), "plain");
        std::fs::remove_dir_all(&dir).ok();
    }
}
