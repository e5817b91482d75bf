//! A shard's side of span export: ended spans are buffered on the shard and handed to the
//! exporter's queue in batches, so the cross-thread hand-off (a short lock) is paid once per
//! [`BATCH`] spans, not per request, and never waited on: a full queue drops what does not fit
//! and counts it.

use std::cell::RefCell;
use std::time::Duration;

use crate::util::{flush_periodically, FlushSignal};

use super::export;
use super::proto::EncodedSpans;

/// Spans handed over at once (about 32 KB). A hand-off wakes nobody (the exporter is woken
/// only when a full export batch waits, see `export::submit`), so it can be small: a batch
/// that stays in the shard's cache while it fills, and little memory held per shard. (When
/// every hand-off woke the exporter, 256-span ones were cheaper; measured with 64 and 256
/// since, the shard's CPU per request did not tell them apart.)
const BATCH: usize = 64;
/// The most a shard reserves for its next batch up front: spans that carry messages
/// (`capture_content`, up to 64 KiB each) would otherwise make it hold tens of MB idle.
const MAX_RESERVED: usize = 1 << 20;
/// Longest a span waits on its shard when traffic is light.
pub const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Room for each span of a shard's first batch: a traced request writes two spans of about
/// 300 and 600 bytes.
const FIRST_SPAN_ROOM: usize = 512;

pub struct ShardSpans {
    buf: RefCell<EncodedSpans>,
    /// Wakes the flush task at a first span.
    signal: FlushSignal,
    /// Spans handed over at once: [`BATCH`], or less for a small exporter queue.
    hand_off: std::cell::Cell<usize>,
}

impl Default for ShardSpans {
    fn default() -> Self {
        Self {
            buf: RefCell::default(),
            signal: FlushSignal::default(),
            hand_off: std::cell::Cell::new(BATCH),
        }
    }
}

impl ShardSpans {
    /// Sizes hand-offs for an exporter queue of `max_queue_spans`: at most half of it, so a
    /// hand-off fits while the exporter sends what it holds; and at most an export batch
    /// (`max_export_batch`), as the exporter never splits a hand-off.
    pub fn fit_queue(&self, max_queue_spans: usize, max_export_batch: usize) {
        self.hand_off
            .set(BATCH.min(max_queue_spans / 2).min(max_export_batch).max(1));
    }

    /// Buffers the span(s) that `write` writes at the end of the batch being filled
    /// (`SpanWriter::begin` on it: spans are written where they are handed over from).
    pub fn write(&self, write: impl FnOnce(&mut EncodedSpans)) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            if buf.is_empty() {
                self.signal.wake();
                if buf.byte_capacity() == 0 {
                    // The first batch; later ones are sized from the batch before them (see
                    // `flush`).
                    buf.reserve((self.hand_off.get() * FIRST_SPAN_ROOM).min(MAX_RESERVED));
                }
            }
            write(&mut buf);
            buf.len() >= self.hand_off.get().max(1)
        };
        if full {
            self.flush();
        }
    }

    /// Hands what is buffered to the exporter (or drops and counts it if its queue is full).
    pub fn flush(&self) {
        let batch = {
            let mut buf = self.buf.borrow_mut();
            if buf.is_empty() {
                return;
            }
            // The next batch is likely a full hand-off of spans the size of these: room for it
            // now (and a quarter more, as spans differ in size), rather than growing and
            // copying it as spans come. (Sized from this batch's length alone, a batch the
            // timer handed over part-full left the next one too small.)
            let full = buf.byte_len() / buf.len() * self.hand_off.get();
            let room = EncodedSpans::with_capacity((full + full / 4 + 64).min(MAX_RESERVED));
            std::mem::replace(&mut *buf, room)
        };
        export::submit(batch);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes spans until `shard` hands them over: after exactly `n` of them.
    fn hands_off_after(shard: &ShardSpans, n: usize, why: &str) {
        let held = || shard.buf.borrow().len();
        for _ in 0..n - 1 {
            shard.write(|b| b.push(b"span"));
        }
        assert_eq!(held(), n - 1, "{why}");
        shard.write(|b| b.push(b"span"));
        assert_eq!(held(), 0, "{why}");
    }

    #[test]
    fn hand_offs_fit_half_the_exporter_queue() {
        let shard = ShardSpans::default();
        hands_off_after(&shard, BATCH, "a full batch is handed over");
        shard.fit_queue(64, 512);
        hands_off_after(&shard, 32, "32 spans: half of a 64-span queue");
        shard.fit_queue(2048, 10);
        hands_off_after(&shard, 10, "10 spans: an export batch");
    }

    #[test]
    fn batches_reserve_a_bounded_room() {
        fn room(shard: &ShardSpans) -> usize {
            shard.buf.borrow().byte_capacity()
        }
        let small = ShardSpans::default();
        small.write(|b| b.push(b"span"));
        assert!(
            room(&small) >= BATCH * FIRST_SPAN_ROOM,
            "the first batch has room for a hand-off"
        );
        // A span carrying messages (up to 64 KiB each) does not make the shard hold 16 MB.
        let shard = ShardSpans::default();
        let big = vec![0u8; 64 * 1024];
        shard.write(|b| b.push(&big));
        assert!(room(&shard) < 2 * MAX_RESERVED);
        for _ in 0..20 {
            shard.write(|b| b.push(&big));
        }
        assert!(room(&shard) > MAX_RESERVED, "grown as spans came");
        shard.flush();
        assert!(room(&shard) <= MAX_RESERVED);
        // A part-full batch (the timer's) sizes the next one for a full hand-off.
        let part = ShardSpans::default();
        for _ in 0..3 {
            part.write(|b| b.push(&[0u8; 100]));
        }
        part.flush();
        assert!(room(&part) >= BATCH * 100, "{}", room(&part));
        // Nothing buffered: nothing handed over, the room kept.
        let before = room(&part);
        part.flush();
        assert_eq!(room(&part), before);
    }
}
