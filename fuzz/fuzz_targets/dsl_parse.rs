//! The provider-language front end (pest grammar, AST conversion, compiler) on arbitrary
//! text: `load_str` returns providers or errors, and never panics. A load error renders to a
//! message (which slices the source around its span), so that is exercised too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match llmux::dsl::load_str("fuzz.llmux", text) {
        Ok(set) => {
            // Touch the public surface of what compiled.
            for name in set.names() {
                let p = set.get(name).expect("listed provider exists");
                let _ = (p.framing(), p.is_passthrough(), p.base_url());
                let _ = (p.response_is_identity(), p.stream_is_identity());
            }
        }
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "a failed load reports at least one error"
            );
            let _ = llmux::dsl::format_errors(&errors);
        }
    }
});
