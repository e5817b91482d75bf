//! The config loader on arbitrary text: errors, never panics.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use llmux::dsl::ProviderSet;

fn providers() -> Arc<ProviderSet> {
    static SET: OnceLock<Arc<ProviderSet>> = OnceLock::new();
    SET.get_or_init(|| {
        Arc::new(llmux::config::providers::embedded().expect("shipped providers load"))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = llmux::config::load_str(
            "fuzz.yaml",
            text,
            std::path::Path::new("/nonexistent"),
            providers(),
        );
    }
});
