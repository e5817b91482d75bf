//! The config loader on arbitrary text: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = llmux::config::load_str("fuzz.yaml", text, std::path::Path::new("/nonexistent"), &llmux::gateway::Catalog);
    }
});
