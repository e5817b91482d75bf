//! The shipped providers' stream mappings on arbitrary upstream transcripts: frames decoded
//! from bytes split at arbitrary points and mapped event by event, then the end of the
//! stream (`finish_stream`, the `on end` hooks), never panic; a stream that reached `done` is
//! complete.
//!
//! Input layout: byte 0 selects the provider (low 5 bits, index into `set.names()` modulo
//! the count) and the framing (top 3 bits: 0..=4 the provider's own, 5 SSE, 6 NDJSON,
//! 7 JSON array). Byte 1: piece size `(b & 0x3f) + 1` and 0x40 include_usage (0x80 is
//! unused). The rest is the transcript.
#![no_main]
#[path = "common.rs"]
mod common;

use common::providers;
use libfuzzer_sys::fuzz_target;
use llmux::dsl::framing::{FrameDecoder, Framing};
use llmux::dsl::{RequestCtx, StreamControl, StreamEnd};

fuzz_target!(|data: &[u8]| {
    let [sel, opts, transcript @ ..] = data else {
        return;
    };
    let (set, names) = providers();
    let name = &names[usize::from(sel & 0x1f) % names.len()];
    let p = set.get(name).expect("listed provider exists");
    let framing = match sel >> 5 {
        4 => Framing::AwsEventStream,
        5 => Framing::Sse,
        6 => Framing::Ndjson,
        7 => Framing::JsonArray,
        _ => p.framing(),
    };
    let piece = usize::from(opts & 0x3f) + 1;
    let ctx = RequestCtx {
        model: "fuzz-model".into(),
        api_key: Some("sk-fuzz".into()),
        stream: true,
        include_usage: opts & 0x40 != 0,
        request_id: "fuzz-request".into(),
        now: 1_700_000_000,
        ..RequestCtx::default()
    };

    let mut state = p.stream_state(&ctx);
    let mut decoder = FrameDecoder::new(framing);
    let mut frames = Vec::new();
    let mut chunks = Vec::new();
    let mut done = false;
    let mut failed = false;
    let mut run = |frames: &mut Vec<llmux::dsl::Frame>, done: &mut bool, failed: &mut bool| {
        for f in frames.drain(..) {
            if *done {
                break;
            }
            // A mapping error ends the stream in the gateway; keep going here to reach more
            // states (after an error or `done`, map_event must keep answering `Done`).
            match p.map_frame(&mut state, &f, &mut chunks) {
                Ok(StreamControl::Done) => *done = true,
                Ok(StreamControl::Continue) => {}
                Err(_) => *failed = true,
            }
        }
    };
    for part in transcript.chunks(piece) {
        if decoder.feed(part, &mut frames).is_err() {
            break;
        }
        run(&mut frames, &mut done, &mut failed);
    }
    if decoder.finish(&mut frames).is_ok() {
        run(&mut frames, &mut done, &mut failed);
    }
    // The upstream is over: the mapping's end hook decides whether that was its end. A stream
    // that reached `done` without an error is complete whatever the hook would say (after a
    // `raise`, `map_event` keeps answering `Done`, so `done` alone does not say it).
    let ended = p.finish_stream(&mut state, &mut chunks);
    if done && !failed {
        assert!(matches!(ended, Ok(StreamEnd::Complete)), "done, yet {ended:?}");
    }
    for c in &chunks {
        let _ = serde_json::to_vec(c).expect("chunks serialise");
    }
    let _ = state.usage();
});
