//! A shard's side of span export: ended spans are buffered on the shard and handed to the
//! exporter thread in batches, so the cross-thread hand-off (a channel send) is paid once per
//! [`BATCH`] spans, not per request, and never waited on: a full queue drops the batch and
//! counts it.

use std::cell::RefCell;
use std::time::Duration;

use crate::util::{flush_periodically, FlushSignal};

use super::export;
use super::proto::EncodedSpans;

/// Spans handed over at once.
const BATCH: usize = 64;
/// Longest a span waits on its shard when traffic is light.
pub const FLUSH_AFTER: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct ShardSpans {
    buf: RefCell<EncodedSpans>,
    /// Wakes the flush task at a first span.
    signal: FlushSignal,
}

impl ShardSpans {
    pub fn push(&self, spans: &EncodedSpans) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            if buf.is_empty() {
                self.signal.wake();
            }
            buf.append(spans);
            buf.len() >= BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Hands what is buffered to the exporter (or drops and counts it if its queue is full).
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.buf.borrow_mut());
        if !batch.is_empty() {
            export::submit(batch);
        }
    }

    /// The shard's flush task: spans of light traffic leave within [`FLUSH_AFTER`]. It sleeps
    /// on no timer while nothing is buffered (tracing off costs no wake-ups).
    pub async fn flush_loop(&self) {
        flush_periodically(
            &self.signal,
            || self.buf.borrow().is_empty(),
            FLUSH_AFTER,
            || self.flush(),
        )
        .await
    }
}
