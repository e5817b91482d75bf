//! The byte scan that finds the top-level `usage` member of relayed bodies and stream events:
//! never panics, and agrees with a full JSON parse on valid bodies whose member names are
//! unique and unescaped.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::usage::{extract, Usage};

fuzz_target!(|data: &[u8]| {
    let got = extract(data);
    if data.contains(&b'\\') {
        return;
    }
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return;
    };
    let dupes = |m: &serde_json::Map<String, serde_json::Value>| {
        // serde keeps the last of repeated names, the scan the first: compare only unique ones.
        let text = String::from_utf8_lossy(data);
        m.keys().any(|k| text.matches(&format!("\"{k}\"")).count() > 1)
    };
    if dupes(&top) {
        return;
    }
    let want = match top.get("usage") {
        Some(serde_json::Value::Object(u)) if dupes(u) => return,
        Some(serde_json::Value::Object(u))
            if u
                .get("prompt_tokens_details")
                .and_then(|d| d.as_object())
                .is_some_and(dupes) =>
        {
            return
        }
        Some(u @ serde_json::Value::Object(_)) => Some(Usage::from_value(u)),
        _ => None,
    };
    assert_eq!(got, want);
});
