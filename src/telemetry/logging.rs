//! Structured logs (JSON or text) through a non-blocking writer, so a slow stdout never blocks
//! a shard, with every line passed through secret redaction.

use std::io::{self, Write};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

static SECRETS: OnceLock<ArcSwap<Vec<String>>> = OnceLock::new();

fn secrets() -> &'static ArcSwap<Vec<String>> {
    SECRETS.get_or_init(|| ArcSwap::from_pointee(Vec::new()))
}

/// Replaces the exact secret values redacted from every log line (called on each config load).
pub fn set_secrets(values: &[String]) {
    secrets().store(Arc::new(values.to_vec()));
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

/// Installs the global subscriber. Keep the guard alive until exit: dropping it flushes.
pub fn init(format: LogFormat, level: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8 * 1024)
        .lossy(true)
        .finish(io::stdout());
    let filter = EnvFilter::try_from_env("LLMUX_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let make = Redacting { inner: writer };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make);
    let res = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if res.is_err() {
        // Already installed (tests start several servers in one process).
    }
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
        let line = redact(&self.buf, &secrets().load());
        let _ = self.inner.write_all(&line);
    }
}

/// Masks configured secret values, `sk-…` style keys and bearer tokens.
pub fn redact(line: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = line.to_vec();
    for s in secrets {
        if s.is_empty() {
            continue;
        }
        out = replace_all(&out, s.as_bytes(), b"[REDACTED]");
    }
    mask_after(&mut out, b"sk-", 8);
    mask_after(&mut out, b"Bearer ", 1);
    mask_after(&mut out, b"bearer ", 1);
    out
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut out = Vec::with_capacity(hay.len());
    let mut last = 0;
    for at in finder.find_iter(hay) {
        if at < last {
            continue;
        }
        out.extend_from_slice(&hay[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&hay[last..]);
    out
}

/// Replaces the token characters following `prefix` with `*` when there are at least `min`.
fn mask_after(buf: &mut [u8], prefix: &[u8], min: usize) {
    let is_tok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let mut i = 0;
    while let Some(pos) = memchr::memmem::find(&buf[i..], prefix) {
        let start = i + pos + prefix.len();
        let mut end = start;
        while end < buf.len() && is_tok(buf[end]) {
            end += 1;
        }
        if end - start >= min {
            for b in &mut buf[start..end] {
                *b = b'*';
            }
        }
        i = end.max(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_and_key_patterns() {
        let line = b"key=sk-abcdefghijklmnop auth=Bearer tok123 custom=hunter2-secret";
        let out = String::from_utf8(redact(line, &["hunter2-secret".to_owned()])).unwrap();
        assert!(!out.contains("abcdefghijklmnop"), "{out}");
        assert!(!out.contains("tok123"));
        assert!(!out.contains("hunter2-secret"));
        assert!(out.contains("[REDACTED]"));
    }
}
