//! Chunked body decoding on arbitrary bytes: errors, never panics, never yields more than
//! given, and decodes the same when the bytes arrive in two reads (split at a few points).
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use llmux::http1::body::{BodyDecoder, Step};
use llmux::http1::head::Headers;

/// The body decoded so far, and whether it ended (`Some(true)`), needs more (`Some(false)`) or
/// was refused (`None`).
fn decode(data: &[u8], cut: usize) -> (Vec<u8>, Option<bool>) {
    let headers = Headers::from_pairs(&[("transfer-encoding", "chunked")]);
    let Ok(d) = BodyDecoder::from_headers(&headers, false) else {
        return (Vec::new(), None);
    };
    // Small, so that inputs reach the limit.
    let mut d = d.with_metadata_limit(1024);
    let mut out = Vec::new();
    let mut buf = BytesMut::from(&data[..cut]);
    let mut rest = &data[cut..];
    for _ in 0..100_000 {
        match d.step(&mut buf) {
            Ok(Step::Data(b)) => {
                assert!(!b.is_empty());
                out.extend_from_slice(&b);
            }
            Ok(Step::End) => return (out, Some(true)),
            Ok(Step::NeedMore) if rest.is_empty() => return (out, Some(false)),
            Ok(Step::NeedMore) => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            Err(_) => return (out, None),
        }
    }
    panic!("the decoder did not make progress");
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, data.len());
    assert!(whole.0.len() <= data.len());
    for cut in [1, data.len() / 2, data.len().saturating_sub(1)] {
        if cut < data.len() {
            assert_eq!(decode(data, cut), whole, "split at {cut}");
        }
    }
});
