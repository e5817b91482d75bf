//! Request and response heads on arbitrary bytes: errors, never panics; a parsed head's fields
//! all lie inside the bytes it consumed.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use llmux::http1::head::{parse_request, parse_response};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = parse_request(&mut buf) {
        let _ = (head.path(), head.query());
        for (name, value) in head.headers.iter() {
            assert!(name.len() + value.len() <= data.len());
        }
        assert!(buf.len() < data.len());
    }
    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = parse_response(&mut buf) {
        assert_eq!(head.headers.iter().count(), head.headers.len());
        assert!(buf.len() < data.len());
    }
});
