//! The shipped providers' request and response mappings on arbitrary client and upstream
//! bodies: never panic.
//!
//! Input layout: byte 0 selects the provider (low 5 bits, index into `set.names()` modulo
//! the count) and the context flags (0x20 stream, 0x40 drop_params, 0x80 include_usage).
//! The rest is used three ways: as the client's OpenAI body (if it is JSON) for
//! `build_request_raw`, as a 200 upstream body for `parse_response`, and as a 429 error
//! body for `map_error`.
//!
//! Checked besides "no panic": a built request has a parseable URL, header values without
//! line breaks or NULs, and a JSON body; built from the body's bytes (`build_request_doc`),
//! it is the same request.
#![no_main]
#[path = "common.rs"]
mod common;

use common::providers;
use libfuzzer_sys::fuzz_target;
use llmux::dsl::RequestCtx;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (set, names) = providers();
    let name = &names[usize::from(sel & 0x1f) % names.len()];
    let p = set.get(name).expect("listed provider exists");

    let req: Option<Value> = serde_json::from_slice(rest).ok();
    let model = req
        .as_ref()
        .and_then(|r| r.get("model"))
        .and_then(Value::as_str)
        .unwrap_or("fuzz-model")
        .to_owned();
    let ctx = RequestCtx {
        model: model.into(),
        // Providers without a default base URL (azure, openai_compatible, ...) need one.
        api_base: p
            .base_url()
            .is_empty()
            .then(|| "https://fuzz.example.com/v1".into()),
        api_key: Some("sk-fuzz".into()),
        api_version: None,
        drop_params: sel & 0x40 != 0,
        stream: sel & 0x20 != 0,
        include_usage: sel & 0x80 != 0,
        max_output_tokens: Some(4096),
        // Every parameter a file requires, so its URL and body can be built.
        params: std::borrow::Cow::Owned(
            p.required_params()
                .map(|n| (n.to_owned(), Value::String(format!("fuzz-{n}"))))
                .collect(),
        ),
        request_id: "fuzz-request".into(),
        now: 1_700_000_000,
    };

    if let Some(req) = &req {
        if let Ok(up) = p.build_request_raw(&ctx, req, rest) {
            assert!(
                up.url.parse::<http::Uri>().is_ok(),
                "{name}: built an invalid URL {:?}",
                up.url
            );
            for (k, v) in &up.headers {
                assert!(
                    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
                    "{name}: header {k} has a line break"
                );
            }
            assert!(
                serde_json::from_slice::<Value>(&up.body).is_ok(),
                "{name}: built a body that is not JSON"
            );
        }
        // From the bytes (the gateway's way: only the fields the file reads parsed), the same
        // request or the same error.
        if llmux::json::parse(rest, 128).is_ok() {
            let fields = req.as_object().map_or(0, |o| {
                o.keys()
                    .filter_map(|k| llmux::dsl::schema::request_field(k))
                    .fold(0u64, |m, id| m | 1 << id)
            });
            let tree = std::cell::OnceCell::new();
            let doc = llmux::json::LazyDoc::new(rest, &tree, 128);
            let from_doc = p.build_request_doc(&ctx, None, &doc, fields);
            match (p.build_request_raw(&ctx, req, rest), from_doc) {
                (Ok(a), Ok(b)) => assert!(a == b, "{name}: built from the bytes, the request differs"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{name}"),
                (a, b) => panic!("{name}: from the tree {:?}, from the bytes {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }

    let _ = p.parse_response(200, rest, &ctx);
    let e = p.map_error(429, rest);
    let _ = e.to_string();
});
