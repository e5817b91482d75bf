//! Problems found while building a snapshot: every error and warning is collected (so that
//! `config check` reports them all at once) with the key path of the value it is about, and
//! rendered as `file:line:col: path: message` at the end.

use super::locate::{locate, KeyPath};

#[derive(Debug, Clone)]
struct Issue {
    path: KeyPath,
    message: String,
}

#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Diagnostics {
    /// An error: the load fails (a reload keeps the previous snapshot).
    pub fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.errors.push(Issue {
            path,
            message: message.into(),
        });
    }

    /// A warning: logged, and the load goes on.
    pub fn warn(&mut self, path: KeyPath, message: impl Into<String>) {
        self.warnings.push(Issue {
            path,
            message: message.into(),
        });
    }

    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// `(errors, warnings)` as lines, each located in `text` where the value is written there.
    pub fn render(self, file: &str, text: &str) -> (Vec<String>, Vec<String>) {
        let line = |i: Issue| {
            let at = if i.path.is_empty() {
                None
            } else {
                locate(text, &i.path)
            };
            match (at, i.path.is_empty()) {
                (Some((l, c)), _) => format!("{file}:{l}:{c}: {}: {}", i.path, i.message),
                (None, false) => format!("{file}: {}: {}", i.path, i.message),
                (None, true) => format!("{file}: {}", i.message),
            }
        };
        (
            self.errors.into_iter().map(line).collect(),
            self.warnings.into_iter().map(line).collect(),
        )
    }
}
