//! Hot reload: a file watcher (notify) and SIGHUP both trigger a rebuild of the snapshot off the
//! hot path. A valid result is swapped in by the caller's `apply`; an invalid one is reported
//! and the old snapshot keeps serving.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{load, ConfigError, ConfigSource, Loaded};

#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Signal,
    FileChanged,
}

/// Changes often come in bursts (editors write twice, Kubernetes swaps symlinks): wait this long
/// for the burst to end before reloading once.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts the reload thread. `apply` receives every reload's result.
pub fn spawn_reloader<F>(source: ConfigSource, apply: F) -> Sender<Trigger>
where
    F: Fn(Result<Loaded, ConfigError>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("llmux-reload".into())
        .spawn(move || reload_loop(rx, source, apply));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the config reload thread; hot reload is off");
    }
    tx
}

fn reload_loop<F>(rx: Receiver<Trigger>, source: ConfigSource, apply: F)
where
    F: Fn(Result<Loaded, ConfigError>),
{
    while let Ok(first) = rx.recv() {
        // Swallow the rest of a burst.
        while rx.recv_timeout(DEBOUNCE).is_ok() {}
        tracing::debug!(trigger = ?first, "reloading config");
        apply(load(&source));
    }
}

/// Watches the config file's directory (so that atomic renames and Kubernetes' symlink swaps are
/// seen). Returns the watcher, which must be kept alive; `None` for the embedded config.
pub fn watch(source: &ConfigSource, tx: Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    let ConfigSource::File(path) = source else {
        return None;
    };
    let file_name = path.file_name()?.to_owned();
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                n == file_name.as_os_str() || n.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            let _ = tx.send(Trigger::FileChanged);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}
