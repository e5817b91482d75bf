//! The request view and the passthrough patch on arbitrary bytes: never panics, the check
//! without a tree agrees with the tree's, a patched body is valid JSON carrying the new
//! model, and patching from the check's notes of where the members are gives the same bytes
//! as walking them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmux::api::ChatRequestView;
use llmux::dsl::out::Out;
use llmux::dsl::passthrough::patch_top_level;

fuzz_target!(|data: &[u8]| {
    // The check without a tree accepts what the tree's check accepts, with the same view
    // (`tree` is `None` when it alone decided).
    let checked = ChatRequestView::check(data, 128);
    let Ok((view, _)) = ChatRequestView::parse(data, 128) else {
        assert!(checked.is_err(), "accepted without the tree only");
        return;
    };
    let checked = checked.expect("the tree's check accepts it");
    assert!(checked.tree.is_none(), "refused without the tree only");
    assert_eq!(
        (&checked.view.model, checked.view.stream, checked.view.include_usage),
        (&view.model, view.stream, view.include_usage)
    );
    let model = serde_json::Value::String("fuzz-model".into());
    let set = [("model", Out::Ref(&model))];
    let remove = ["max_tokens".to_owned()];
    let walked = patch_top_level(data, None, &set, &remove);
    if let Some(out) = &walked {
        let v: serde_json::Value = serde_json::from_slice(out).expect("patched body is JSON");
        assert_eq!(v["model"], "fuzz-model");
        assert!(v.get("max_tokens").is_none());
    }
    if checked.members.is_some() {
        let noted = patch_top_level(data, checked.members.as_ref(), &set, &remove);
        assert_eq!(noted, walked, "the notes and the walk patch alike");
    }
});
