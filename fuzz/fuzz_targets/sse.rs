//! SSE event splitting across arbitrary read boundaries: the concatenation of what is forwarded
//! equals the input, and every event payload found in a forwarded batch starts inside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::gateway::sse::{event_payloads, SseSplitter};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = (data[0] as usize % 17) + 1;
    let input = &data[1..];
    let mut s = SseSplitter::new(1 << 20);
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        if let Ok(Some(ev)) = s.push(piece) {
            let mut last = 0;
            for (at, payload) in event_payloads(&ev) {
                assert!(at >= last && at < ev.len(), "event start {at} in {} bytes", ev.len());
                assert!(payload.len() <= ev.len());
                last = at;
            }
            out.extend_from_slice(&ev);
        }
    }
    if let Some(rest) = s.finish() {
        out.extend_from_slice(&rest);
    }
    assert_eq!(out, input);
});
