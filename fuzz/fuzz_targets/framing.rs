//! The stream decoders (SSE, NDJSON, JSON array) on arbitrary bytes: never panic, and
//! feeding the input whole or split into arbitrary pieces yields the same frames, the same
//! error and the same end-of-stream result.
//!
//! Input layout: byte 0 selects the framing (`% 3`); byte 1 gives `k = (b % 8) + 1`; the
//! next `k` bytes are piece sizes (0 means an empty feed), used cyclically; the rest is the
//! stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::dsl::framing::{Frame, FrameDecoder, Framing, FramingError};

/// Frames produced, the first feed error (if any), and the result of `finish` when no feed
/// failed.
type Outcome = (
    Vec<Frame>,
    Option<FramingError>,
    Option<Result<(), FramingError>>,
);

fn decode<'a>(framing: Framing, pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut d = FrameDecoder::new(framing);
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, &mut out) {
            return (out, Some(e), None);
        }
    }
    let fin = d.finish(&mut out);
    (out, None, Some(fin))
}

fuzz_target!(|data: &[u8]| {
    let [sel, k, rest @ ..] = data else { return };
    let framing = match sel % 4 {
        0 => Framing::Sse,
        1 => Framing::Ndjson,
        2 => Framing::JsonArray,
        _ => Framing::AwsEventStream,
    };
    let k = usize::from(k % 8) + 1;
    if rest.len() < k {
        return;
    }
    let (sizes, input) = rest.split_at(k);

    let whole = decode(framing, std::iter::once(input));

    let mut pieces = Vec::new();
    let mut at = 0;
    for &s in sizes.iter().cycle() {
        if at >= input.len() {
            break;
        }
        let end = (at + usize::from(s)).min(input.len());
        pieces.push(&input[at..end]);
        at = end;
        if pieces.len() > 4 * input.len() + 8 {
            // All sizes zero: finish with the remainder in one piece.
            pieces.push(&input[at..]);
            break;
        }
    }
    let split = decode(framing, pieces.into_iter());
    assert_eq!(whole, split, "{framing:?}: whole vs pieces differ");

    // Byte by byte, the finest split.
    let bytes = decode(framing, input.chunks(1));
    assert_eq!(whole, bytes, "{framing:?}: whole vs byte-by-byte differ");

    for f in &whole.0 {
        if framing == Framing::Ndjson {
            assert!(!f.data.is_empty(), "ndjson frames are not empty");
            assert!(!f.data.contains(&b'\n'), "ndjson frames hold one line");
        }
    }
});
