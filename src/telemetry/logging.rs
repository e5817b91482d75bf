//! Structured logs (JSON or text) through a non-blocking writer, so a slow stdout never blocks
//! a shard, with every line passed through secret redaction.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static SECRETS: OnceLock<ArcSwap<Vec<String>>> = OnceLock::new();
/// `llmux.logging.redact_pii`: mask personal data in every line.
static REDACT_PII: AtomicBool = AtomicBool::new(false);
/// The installed filter, swapped on reload (`llmux.logging.level`).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn secrets() -> &'static ArcSwap<Vec<String>> {
    SECRETS.get_or_init(|| ArcSwap::from_pointee(Vec::new()))
}

/// Replaces the exact secret values redacted from every log line (called on each config load).
pub fn set_secrets(values: &[String]) {
    secrets().store(Arc::new(values.to_vec()));
}

/// Turns the masking of personal data in log lines on or off (called on each config load).
pub fn set_redact_pii(on: bool) {
    REDACT_PII.store(on, Ordering::Relaxed);
}

/// Replaces the log filter of the running process (a reload that changed
/// `llmux.logging.level`): `spec` as [`filter_spec`] makes it. A spec that does not parse
/// leaves the filter as it is (the config check refuses it before this).
pub fn set_filter(spec: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(spec).map_err(|e| e.to_string())?;
    match FILTER.get() {
        Some(h) => h.reload(filter).map_err(|e| e.to_string()),
        None => Err("logging is not initialised".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(format!("unknown log format `{other}` (json or text)")),
        }
    }
}

/// The filter directives for `LLMUX_LOG` (as the caller's environment resolver read it) or,
/// without it, the config's level.
///
/// The file watcher's crate logs every inotify event of the watched directory at trace level
/// (through the `log` bridge); with the log file in the config's directory each logged event
/// is itself an event, a loop of some 20,000 lines a second. `notify` is therefore capped at
/// `info` unless the directives name it explicitly.
pub fn filter_spec(llmux_log: Option<&str>, level: &str) -> String {
    let spec = llmux_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(level);
    if spec.contains("notify") {
        spec.to_owned()
    } else {
        format!("{spec},notify=info")
    }
}

/// Installs the global subscriber with the filter `spec` (see [`filter_spec`]; an invalid one
/// falls back to `info`). The environment is not read here. Keep the guard alive until exit:
/// dropping it flushes.
pub fn init(format: LogFormat, spec: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8 * 1024)
        .lossy(true)
        .finish(io::stdout());
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info,notify=info"));
    let (filter, handle) = reload::Layer::new(filter);
    let make = Redacting { inner: writer };
    let registry = tracing_subscriber::registry().with(filter);
    let res = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(make),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(make),
            )
            .try_init(),
    };
    if res.is_ok() {
        let _ = FILTER.set(handle);
    }
    // Otherwise already installed (tests start several servers in one process).
    guard
}

#[derive(Clone)]
struct Redacting<W> {
    inner: W,
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Redacting<W> {
    type Writer = RedactingWriter<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Buffers one log line and redacts it when dropped (the formatter writes a line, then drops).
struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let line = super::redact::redact(&self.buf, &secrets().load());
        if REDACT_PII.load(Ordering::Relaxed) {
            let _ = self.inner.write_all(&super::pii::redact_pii(&line));
        } else {
            let _ = self.inner.write_all(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_crate_is_capped_unless_named() {
        assert_eq!(filter_spec(Some("trace"), "info"), "trace,notify=info");
        assert_eq!(filter_spec(None, "debug"), "debug,notify=info");
        assert_eq!(filter_spec(Some(" "), "warn"), "warn,notify=info");
        assert_eq!(filter_spec(Some("notify=trace"), "info"), "notify=trace");
        // The result is a valid filter.
        assert!(EnvFilter::try_new(filter_spec(Some("llmux=debug,trace"), "info")).is_ok());
    }
}
