//! Hot reload: a file watcher (notify) on the config file and on the provider files, and
//! SIGHUP, all trigger a rebuild of the snapshot off the hot path. A valid result is swapped in by
//! the caller's `apply`; an invalid one is reported and the old snapshot keeps serving.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{load, ConfigError, ConfigSource, Loaded, ProvidersSource};

#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Signal,
    FileChanged,
}

/// Changes often come in bursts (editors write twice, Kubernetes swaps symlinks): wait this long
/// for the burst to end before reloading once.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts the reload thread, which also owns the file watchers. `apply` receives every reload's
/// result. `providers` is where the running snapshot's provider files came from.
pub fn spawn_reloader<F>(
    source: ConfigSource,
    providers: ProvidersSource,
    apply: F,
) -> Sender<Trigger>
where
    F: Fn(Result<Loaded, ConfigError>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let own_tx = tx.clone();
    // Watch before returning, so that a change made right after start-up is not missed.
    let watchers = watch_all(&source, &providers, &tx);
    // Compiling provider files recurses once per expression level (the parser caps nesting at
    // 1,000); a roomy stack keeps a pathological file an error instead of a crash.
    let spawned = std::thread::Builder::new()
        .name("llmux-reload".into())
        .stack_size(32 * 1024 * 1024)
        .spawn(move || reload_loop(rx, own_tx, source, providers, watchers, apply));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the config reload thread; hot reload is off");
    }
    tx
}

fn reload_loop<F>(
    rx: Receiver<Trigger>,
    tx: Sender<Trigger>,
    source: ConfigSource,
    mut providers: ProvidersSource,
    mut watchers: Vec<notify::RecommendedWatcher>,
    apply: F,
) where
    F: Fn(Result<Loaded, ConfigError>),
{
    while let Ok(first) = rx.recv() {
        // Swallow the rest of a burst.
        while rx.recv_timeout(DEBOUNCE).is_ok() {}
        tracing::debug!(trigger = ?first, "reloading config");
        let res = load(&source);
        if let Ok(loaded) = &res {
            // The config may now point at another providers directory: follow it.
            if loaded.snapshot.providers_source != providers {
                providers = loaded.snapshot.providers_source.clone();
                watchers = watch_all(&source, &providers, &tx);
            }
        }
        apply(res);
    }
    drop(watchers);
}

/// What a watcher reacts to in its directory. Everything else there (a log file, an editor's
/// swap file) is ignored: reacting to it would reload for nothing, and a reload logs.
#[derive(Debug)]
enum Filter {
    /// The config file (and Kubernetes' `..data` symlink swaps beside it).
    FileName(OsString),
    /// Provider files.
    Extension(&'static str),
}

impl Filter {
    fn matches(&self, path: &Path) -> bool {
        match self {
            // Kubernetes mounts a ConfigMap as `..data` (a symlink swapped on update) and
            // `..<timestamp>` directories beside the file's own symlink.
            Filter::FileName(name) => path
                .file_name()
                .is_some_and(|n| n == name.as_os_str() || n.as_encoded_bytes().starts_with(b"..")),
            Filter::Extension(ext) => path.extension().is_some_and(|x| x == *ext),
        }
    }
}

fn watch_all(
    source: &ConfigSource,
    providers: &ProvidersSource,
    tx: &Sender<Trigger>,
) -> Vec<notify::RecommendedWatcher> {
    let mut out = Vec::new();
    if let ConfigSource::File(path) = source {
        if let Some(name) = path.file_name() {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            out.extend(watch_dir(
                &dir,
                Filter::FileName(name.to_owned()),
                tx.clone(),
            ));
        }
    }
    if let ProvidersSource::Dir(dir) = providers {
        out.extend(watch_dir(dir, Filter::Extension("llmux"), tx.clone()));
    }
    out
}

/// Watches a directory (not a file: atomic renames and symlink swaps replace the inode).
fn watch_dir(
    dir: &Path,
    filter: Filter,
    tx: Sender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| filter.matches(p)) {
            let _ = tx.send(Trigger::FileChanged);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a file watcher; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_config_and_provider_files_count() {
        let config = Filter::FileName("llmux.yaml".into());
        assert!(config.matches(Path::new("/etc/llmux/llmux.yaml")));
        assert!(config.matches(Path::new("/etc/llmux/..data")));
        assert!(config.matches(Path::new("/etc/llmux/..2024_01_01_00_00_00.1")));
        for other in [
            "llmux.log",
            "llmux.yaml.swp",
            ".llmux.yaml.swp",
            "llmux.yaml~",
            "x",
        ] {
            assert!(
                !config.matches(&Path::new("/etc/llmux").join(other)),
                "{other}"
            );
        }
        let providers = Filter::Extension("llmux");
        assert!(providers.matches(Path::new("p/openai.llmux")));
        assert!(!providers.matches(Path::new("p/llmux.log")));
        assert!(!providers.matches(Path::new("p/openai.llmux.tmp")));
    }
}
