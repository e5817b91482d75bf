//! The request view and the passthrough patch on arbitrary bytes: never panics, and a patched
//! body is valid JSON carrying the new model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::api::ChatRequestView;
use llmux::dsl::out::Out;
use llmux::dsl::passthrough::patch_top_level;

fuzz_target!(|data: &[u8]| {
    if ChatRequestView::parse(data, 128).is_err() {
        return;
    }
    let model = serde_json::Value::String("fuzz-model".into());
    let set = [("model", Out::Ref(&model))];
    if let Some(out) = patch_top_level(data, &set, &["max_tokens".to_owned()]) {
        let v: serde_json::Value = serde_json::from_slice(&out).expect("patched body is JSON");
        assert_eq!(v["model"], "fuzz-model");
        assert!(v.get("max_tokens").is_none());
    }
});
