//! Chunked body decoding on arbitrary bytes: errors, never panics, never yields more than given.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use llmux::http1::body::{BodyDecoder, Step};
use llmux::http1::head::Headers;

fuzz_target!(|data: &[u8]| {
    let headers = Headers::from_pairs(&[("transfer-encoding", "chunked")]);
    let Ok(mut d) = BodyDecoder::from_headers(&headers, false) else {
        return;
    };
    let mut buf = BytesMut::from(data);
    let mut total = 0;
    for _ in 0..10_000 {
        match d.step(&mut buf) {
            Ok(Step::Data(b)) => total += b.len(),
            Ok(_) | Err(_) => break,
        }
    }
    assert!(total <= data.len());
});
