//! Unit tests of the language as a whole: load errors, interpreter semantics,
//! and every golden case found on disk.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

fn load(src: &str) -> ProviderSet {
    match load_str("t.llmux", src) {
        Ok(s) => s,
        Err(e) => panic!("{}", format_errors(&e)),
    }
}

fn load_err(src: &str) -> String {
    match load_str("t.llmux", src) {
        Ok(_) => panic!("expected load errors"),
        Err(e) => format_errors(&e),
    }
}

#[test]
fn minimal_provider_builds_request() {
    let set = load(
        r#"provider p { base_url "https://x.test/v1" url "/chat" request { model = ctx.model } }"#,
    );
    let p = set.get("p").expect("p");
    let ctx = RequestCtx {
        model: "m".into(),
        api_key: Some("k".into()),
        ..RequestCtx::default()
    };
    let up = p
        .build_request(&ctx, &json!({"model": "x"}))
        .expect("built");
    assert_eq!(up.url, "https://x.test/v1/chat");
    assert_eq!(
        serde_json::from_slice::<Value>(&up.body).expect("json"),
        json!({"model": "m"})
    );
    assert!(up
        .headers
        .contains(&("authorization".into(), "Bearer k".into())));
}

/// `providers/` of the source tree: `$LLMUX_PROVIDERS_DIR`, else relative to
/// this source file (absolute in the scratch crate, crate-relative in llmux),
/// else found by walking up from the current directory.
fn providers_dir() -> PathBuf {
    if let Ok(d) = std::env::var("LLMUX_PROVIDERS_DIR") {
        return PathBuf::from(d);
    }
    let from_file = Path::new(file!())
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|root| root.join("providers"));
    if let Some(d) = from_file.filter(|d| d.join("openai.llmux").is_file()) {
        return d;
    }
    let mut dir = std::env::current_dir().expect("cwd");
    loop {
        if dir.join("providers/openai.llmux").is_file() {
            return dir.join("providers");
        }
        if !dir.pop() {
            panic!("providers/ not found; set LLMUX_PROVIDERS_DIR");
        }
    }
}

#[test]
fn shipped_providers_load() {
    let dir = providers_dir();
    if let Err(e) = load_dir(&dir) {
        panic!("{}", format_errors(&e));
    }
}

#[test]
fn golden_cases() {
    let dir = providers_dir();
    let set = match load_dir(&dir) {
        Ok(s) => s,
        Err(e) => panic!("{}", format_errors(&e)),
    };
    let cases = golden::discover(&dir.join("tests")).expect("discover cases");
    assert!(!cases.is_empty(), "no golden cases under {}", dir.display());
    let mut failures = Vec::new();
    for c in &cases {
        if let Err(e) = golden::run_case(&set, c) {
            failures.push(format!("{} [{}]: {e}", c.path.display(), c.name));
        }
    }
    eprintln!("golden: {} cases, {} failed", cases.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn syntax_error_points_at_the_text() {
    let e = load_err("provider p {\n  base_url \"https://x\"\n  request { model = }\n}\n");
    assert!(
        e.starts_with("t.llmux:3:21: syntax error: expected an expression"),
        "{e}"
    );
    assert!(
        e.contains("3 |   request { model = }\n  |                     ^"),
        "{e}"
    );
}

#[test]
fn all_compile_errors_are_collected() {
    let src = r#"provider p {
  request {
    model = req.modle
    a = mapp(req.messages, m -> m)
    b = join(req.messages)
    c = lookup(nope, req.model)
    d = ctx.colour
    e = map(req.messages, 1)
    f = undefined_name
    unsupported bogus
  }
  errors { when status == 1 => weird }
}"#;
    let e = load_err(src);
    for want in [
        "t.llmux:3:13: `req.modle` is not an OpenAI chat-completions request field (did you mean `model`?)",
        "t.llmux:4:9: unknown function `mapp` (did you mean `map`?)",
        "t.llmux:5:9: `join` takes 2 argument(s), 1 given",
        "t.llmux:6:16: unknown table `nope`",
        "t.llmux:7:9: unknown context field `ctx.colour`",
        "t.llmux:8:27: argument 2 of `map` must be a function",
        "t.llmux:9:9: unknown name `undefined_name`",
        "t.llmux:10:17: `bogus` is not an OpenAI chat-completions request field",
        "t.llmux:12:32: unknown error class `weird`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn context_rules_are_enforced() {
    let e = load_err(
        r#"provider p {
  request { x = res.id  emit ev }
  response { y = req.model }
  stream { on "a" { undeclared = 1 } }
  url "/{modle}"
}"#,
    );
    for want in [
        "2:17: `res` is not available here",
        "2:25: `emit` is only allowed in stream handlers",
        "3:18: `req` is not available here",
        "4:21: `undeclared` is not a state variable",
        "5:9: unknown placeholder `{modle}`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn constant_type_misuse_and_fn_arity() {
    let e = load_err(
        r#"provider p {
  fn two(a, b) = a
  request { x = "a" - 1  y = two(1)  z = clamp(req.temperature, "0", 1) }
}"#,
    );
    for want in [
        "3:17: operator cannot combine a string and a number",
        "3:30: fn `two` takes 2 argument(s), 1 given",
        "3:65: expected a number here, found a string",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn extends_errors() {
    let e = load_err(
        "provider a extends b {}\nprovider c extends d {}\nprovider d extends c {}\nprovider a {}",
    );
    assert!(e.contains("1:20: unknown provider `b`"), "{e}");
    assert!(e.contains("`extends` cycle"), "{e}");
    assert!(
        e.contains("4:10: provider `a` is already defined at t.llmux:1:10"),
        "{e}"
    );
}

#[test]
fn errors_across_files_are_all_reported() {
    let r = load_sources(&[
        (
            "a.llmux".into(),
            "provider a { request { x = nope() } }".into(),
        ),
        ("b.llmux".into(), "provider b {".into()),
    ]);
    let e = format_errors(&r.expect_err("errors"));
    assert!(e.contains("a.llmux:1:28: unknown function `nope`"), "{e}");
    assert!(e.contains("b.llmux:1:13: syntax error"), "{e}");
}

#[test]
fn extends_inherits_and_overrides() {
    let set = load(
        r#"provider base {
  base_url "https://base.test/v1"
  url "/chat/completions"
  header "x-a" = "1"
  header "x-b" = "2"
  request passthrough { model = ctx.model }
  errors { when status == 418 => rate_limit }
}
provider child extends base {
  base_url "https://child.test/v1"
  header "x-b" = "3"
  errors { when status == 418 => timeout }
}"#,
    );
    let child = set.get("child").expect("child");
    let ctx = RequestCtx {
        model: "m".into(),
        ..RequestCtx::default()
    };
    let up = child
        .build_request_raw(
            &ctx,
            &json!({"model": "x", "n": 1}),
            br#"{"model":"x","n":1}"#,
        )
        .expect("built");
    assert_eq!(up.url, "https://child.test/v1/chat/completions");
    assert_eq!(String::from_utf8_lossy(&up.body), r#"{"model":"m","n":1}"#);
    assert!(up.headers.contains(&("x-a".into(), "1".into())));
    assert!(up.headers.contains(&("x-b".into(), "3".into())));
    // The child's rule is tried before the parent's.
    assert_eq!(child.map_error(418, b"{}").class, ErrorClass::Timeout);
    assert_eq!(
        set.get("base").expect("base").map_error(418, b"{}").class,
        ErrorClass::RateLimit
    );
}

fn eval_body(body: &str, req: Value) -> Value {
    let set = load(&format!("provider p {{ base_url \"https://x.test\" fn twice(x) = x * 2 table t {{ \"a\" => 1 _ => 0 }} request {{ {body} }} }}"));
    let up = set
        .get("p")
        .expect("p")
        .build_request(&RequestCtx::default(), &req)
        .expect("built");
    serde_json::from_slice(&up.body).expect("json")
}

#[test]
fn expression_semantics() {
    let req = json!({
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "temperature": 1.5, "stop": "END", "n": 2, "user": null, "tools": []
    });
    let got = eval_body(
        r#"
        a = req.temperature ?? 0.7
        b = req.top_p ?? 0.9
        c = req.user ?? "absent-or-null"
        d = clamp(req.temperature, 0, 1)
        e = req.stop | as_list
        f = req.messages | leading(m -> m.role == "system") | map(m -> m.content)
        g = req.messages | after_leading(m -> m.role == "system") | map(m -> text_of(m.content))
        h.nested.path = twice(req.n)
        i = lookup(t, "a") + lookup(t, "zzz")
        j = if req.n > 1 then "many" else "one"
        k = match req.stop { array => "list" string => "str" }
        l = { keep: 1, drop: omit, ...{ spread: true } }
        m = [1, omit, ...[2, 3]]
        n = req.tools | nonempty
        o = "Rate LIMIT reached" ~ "rate limit"
        p = "x" in ["x", "y"] and not ("z" in ["x"])
        q = to_json({ a: [1] })
        r = parse_json("{\"k\": 2}").k
        s = data_url("data:image/png;base64,QUJD")
        t = req.messages[1].content[0].text
        u = invert(false)
        v = invert(req.parallel_tool_calls)
        w = with_index(["a"])
        "x-y" = 1
    "#,
        req,
    );
    assert_eq!(
        got,
        json!({
            "a": 1.5, "b": 0.9, "c": "absent-or-null", "d": 1, "e": ["END"],
            "f": ["s"], "g": ["ab"], "h": {"nested": {"path": 4}}, "i": 1, "j": "many",
            "k": "str", "l": {"keep": 1, "spread": true}, "m": [1, 2, 3],
            "o": true, "p": true, "q": "{\"a\":[1]}", "r": 2,
            "s": {"mime_type": "image/png", "data": "QUJD"}, "t": "a", "u": true,
            "w": [{"index": 0, "value": "a"}], "x-y": 1
        })
    );
}

/// Request bodies and responses are built as entries and written out directly: spreads that
/// repeat keys, nested sets over constant, borrowed and scalar values, `merge_adjacent` over
/// built objects, and the rest must give the documents a `Value` tree would.
#[test]
fn output_entries_build_the_expected_documents() {
    let fns = r#"
        fn block(t) = { type: "text", text: t }
        fn msg(m) = { role: m.role, content: [block(m.content)] }
    "#;
    let body = r#"
        a = { x: 1, ...{ x: 2, y: 3 }, ...doc.obj, z: omit }
        b = { g: 4, d: "scalar" }
        b.c = 1
        b.d.e = 2
        b.d.f = 3
        o = doc.obj
        o.added = true
        g = doc.msgs | map(msg) | merge_adjacent("role", "content")
        h = doc.msgs | flat_map(m -> [m.role, omit, ...[m.content]])
        i = doc.msgs | map(m -> { k: m.none }) | nonempty
        j = [] | nonempty
        k = if doc.obj.x == 5 then [block("yes")] else omit
        l = match doc.obj { object => { ...doc.obj, w: null } }
        m = doc.nothing ?? { fallback: [block("f")] }
        n = doc.msgs | filter(m -> m.role == "user") | map(m -> m.content)
    "#;
    let doc = json!({
        "obj": {"x": 5, "v": [1]},
        "msgs": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}
        ]
    });
    let want = json!({
        "a": {"x": 5, "y": 3, "v": [1]},
        "b": {"g": 4, "c": 1, "d": {"e": 2, "f": 3}},
        "o": {"x": 5, "v": [1], "added": true},
        "g": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
            {"role": "user", "content": [{"type": "text", "text": "d"}]}
        ],
        "h": ["user", "a", "user", "b", "assistant", "c", "user", "d"],
        "i": [{}, {}, {}, {}],
        "k": [{"type": "text", "text": "yes"}],
        "l": {"x": 5, "v": [1], "w": null},
        "m": {"fallback": [{"type": "text", "text": "f"}]},
        "n": ["a", "b", "d"]
    });
    let set = load(&format!(
        "provider p {{ base_url \"https://x.test\" {fns} request {{ {} }} response {{ {} }} }}",
        body.replace("doc.", "extra."),
        body.replace("doc.", "res."),
    ));
    let p = set.get("p").expect("p");
    let ctx = RequestCtx::default();
    let up = p.build_request(&ctx, &doc).expect("built");
    let body: Value = serde_json::from_slice(&up.body).expect("json");
    assert_eq!(body, want);
    // Written in the order set, a key that is set again keeping its place: no duplicates.
    let text = String::from_utf8(up.body).expect("utf8");
    assert!(
        text.starts_with(r#"{"a":{"x":5,"y":3,"v":[1]},"b":{"d":{"e":2,"f":3},"g":4,"c":1}"#),
        "{text}"
    );
    let got = p
        .parse_response(200, doc.to_string().as_bytes(), &ctx)
        .expect("mapped");
    assert_eq!(
        serde_json::from_slice::<Value>(&got.body).expect("json"),
        want
    );
}

/// A fn passed by name runs as a lambda over its body; one that passes itself by name
/// (a tree walk) still recurses, and runaway recursion is still stopped.
#[test]
fn fns_passed_by_name_and_recursion() {
    let set = load(
        r#"provider p {
          base_url "https://x.test"
          fn node(n) = { name: n.name, kids: map(n.kids, node) | nonempty }
          fn down(n) = if n > 0 then down(n - 1) else 0
          request {
            tree = map(extra.nodes, node)
            big = filter(extra.nodes, n -> n.name != "a") | map(node)
            loop = if extra.spin then down(extra.spin)
          }
        }"#,
    );
    let p = set.get("p").expect("p");
    let req = json!({"nodes": [
        {"name": "a", "kids": [{"name": "b", "kids": [{"name": "c"}]}]},
        {"name": "d"}
    ]});
    let up = p
        .build_request(&RequestCtx::default(), &req)
        .expect("built");
    let body: Value = serde_json::from_slice(&up.body).expect("json");
    assert_eq!(
        body,
        json!({
            "tree": [
                {"name": "a", "kids": [{"name": "b", "kids": [{"name": "c"}]}]},
                {"name": "d"}
            ],
            "big": [{"name": "d"}]
        })
    );
    let up = p
        .build_request(&RequestCtx::default(), &json!({"spin": 20}))
        .expect("a bounded recursion runs");
    let body: Value = serde_json::from_slice(&up.body).expect("json");
    assert_eq!(body["loop"], 0);
    let e = p
        .build_request(&RequestCtx::default(), &json!({"spin": 1_000_000}))
        .expect_err("runaway");
    assert!(e.to_string().contains("recursed deeper"), "{e}");
}

#[test]
fn recursion_without_an_end_is_a_load_error() {
    let e = load_err(
        r#"provider p {
          base_url "https://x.test"
          fn forever(x) = forever(x)
          fn ping(x) = pong(x) + 1
          fn pong(x) = if x then ping(x) else ping(0)
          fn fine(x) = if x > 0 then fine(x - 1) else 0
          fn lazy(x) = x ?? lazy(x)
          fn mapped(xs) = map(xs, x -> mapped(x))
          request { a = forever(1) }
        }"#,
    );
    assert!(
        e.contains("fn `forever` calls itself on every path (forever → forever)"),
        "{e}"
    );
    assert!(e.contains("(ping → pong → ping)"), "{e}");
    assert!(e.contains("(pong → ping → pong)"), "{e}");
    for ok in ["fine", "lazy", "mapped"] {
        assert!(!e.contains(&format!("fn `{ok}`")), "{ok}: {e}");
    }
}

#[test]
fn deep_upstream_json_is_an_error_not_a_crash() {
    let set = load(
        r#"provider p {
          base_url "https://x.test"
          request { model = ctx.model }
          framing sse
          response { id = res.id  x = parse_json(res.text) }
          stream { on _ { emit ev } }
        }"#,
    );
    let p = set.get("p").expect("p");
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for n in [1_000, 10_000, 100_000] {
        let body = format!(r#"{{"id":"x","text":"1","a":{}}}"#, deep(n));
        let e = p
            .parse_response(200, body.as_bytes(), &RequestCtx::default())
            .expect_err("too deep");
        assert_eq!(e.status, 502, "{e}");
        assert!(e.message.contains("deeper than the limit of 128"), "{e}");
        let e = p.map_error(500, body.as_bytes());
        assert_eq!(e.status, 502, "{e}");
        let mut st = p.stream_state(&RequestCtx::default());
        let mut out = Vec::new();
        let e = p
            .map_event(&mut st, None, body.as_bytes(), &mut out)
            .expect_err("too deep");
        assert_eq!(e.status, 502, "{e}");
    }
    // A JSON string inside the body is bounded too.
    let body = serde_json::json!({"id": "x", "text": deep(5_000)}).to_string();
    let e = p
        .parse_response(200, body.as_bytes(), &RequestCtx::default())
        .expect_err("too deep");
    assert!(e.message.contains("deeper than the limit"), "{e}");
}

#[test]
fn json_writer_matches_sonic_rs() {
    let v = json!({
        "s": "q\"uote\\ \n\t\r\u{1}\u{1f}\u{7f} é 😀 </script>",
        "n": [0, -1, u64::MAX, i64::MIN, 0.1, 1e300, -0.0, 2.5, 1e-7],
        "b": [true, false, null],
        "e": {}, "l": [], "nested": {"b": {"a": [{}]}}, "": ""
    });
    // Byte for byte what sonic-rs wrote before (serde_json differs only in `1e+300`).
    let text = to_json_vec(&v);
    assert_eq!(
        String::from_utf8(text.clone()).expect("utf8"),
        sonic_rs::to_string(&v).expect("json")
    );
    assert_eq!(serde_json::from_slice::<Value>(&text).expect("json"), v);
}

#[test]
fn runtime_errors_are_translate_errors() {
    let set = load(
        r#"provider p { base_url "https://x.test" request { a = parse_json(req.user)  b = invalid("no") } }"#,
    );
    let p = set.get("p").expect("p");
    let e = p
        .build_request(&RequestCtx::default(), &json!({"user": "{not json"}))
        .expect_err("invalid");
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("invalid JSON"), "{e}");
}

#[test]
fn unsupported_params_error_or_drop() {
    let set = load(
        r#"provider p { base_url "https://x.test" request passthrough { model = ctx.model  unsupported n when req.n > 1  unsupported seed } }"#,
    );
    let p = set.get("p").expect("p");
    let raw = br#"{"model":"a","n":2,"seed":1,"x":true}"#;
    let req: Value = serde_json::from_slice(raw).expect("json");
    let mut ctx = RequestCtx::default();
    let e = p
        .build_request_raw(&ctx, &req, raw)
        .expect_err("unsupported");
    assert_eq!(e.param(), Some("n"));
    assert_eq!(e.status(), 400);
    ctx.drop_params = true;
    let up = p.build_request_raw(&ctx, &req, raw).expect("dropped");
    assert_eq!(
        String::from_utf8_lossy(&up.body),
        r#"{"model":"","x":true}"#
    );
}

#[test]
fn missing_api_base_is_a_config_error() {
    let set = load(r#"provider p { url "/chat/completions" }"#);
    let e = set
        .get("p")
        .expect("p")
        .build_request(&RequestCtx::default(), &json!({}))
        .expect_err("config");
    assert!(matches!(e, TranslateError::Config { .. }), "{e}");
}

#[test]
fn url_templates_queries_and_query_auth() {
    let set = load(
        r#"provider p {
  base_url "https://x.test/v1beta"
  url when ctx.stream "/models/{model}:streamGenerateContent?alt=sse"
  url "/models/{model}:generateContent"
  query "api-version" = ctx.api_version
  api_version "2024-01-01"
  auth query "key"
}"#,
    );
    let p = set.get("p").expect("p");
    let mut ctx = RequestCtx {
        model: "vendor/2.0 flash".into(),
        api_key: Some("k&1".into()),
        ..RequestCtx::default()
    };
    let up = p.build_request(&ctx, &json!({})).expect("built");
    assert_eq!(
        up.url,
        "https://x.test/v1beta/models/vendor%2F2.0%20flash:generateContent?api-version=2024-01-01&key=k%261"
    );
    ctx.stream = true;
    ctx.api_version = Some("v2".into());
    let up = p.build_request(&ctx, &json!({})).expect("built");
    assert_eq!(
        up.url,
        "https://x.test/v1beta/models/vendor%2F2.0%20flash:streamGenerateContent?alt=sse&api-version=v2&key=k%261"
    );
    assert!(!up.headers.iter().any(|(k, _)| k == "authorization"));
}

#[test]
fn header_injection_is_refused() {
    let set = load(r#"provider p { base_url "https://x.test" header "x-user" = req.user }"#);
    let e = set
        .get("p")
        .expect("p")
        .build_request(&RequestCtx::default(), &json!({"user": "a\r\nx-evil: 1"}))
        .expect_err("refused");
    assert_eq!(e.status(), 400);
}

#[test]
fn load_error_display_format() {
    let e = LoadError::at("f.llmux", "ab\n\tcd ef\n", ast::Span::new(7, 9), "bad");
    assert_eq!(
        e.to_string(),
        "f.llmux:2:5: bad\n  |\n2 | \tcd ef\n  | \t   ^^"
    );
}

#[test]
fn truncated_sources_never_panic() {
    let dir = providers_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("providers dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "llmux"))
        .collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x.llmux")
            .to_owned();
        let name = name.as_str();
        let src = std::fs::read_to_string(&path).expect("read");
        let mut cut = 0;
        while cut < src.len() {
            if src.is_char_boundary(cut) {
                let _ = load_str(name, &src[..cut]);
            }
            // About 60 cut points per file keeps this quick in debug builds.
            cut += 61.max(src.len() / 60);
        }
    }
}

#[test]
fn odd_json_never_panics() {
    let set = load_dir(&providers_dir()).expect("load");
    let inputs = [
        json!(null),
        json!([]),
        json!({"messages": "x"}),
        json!({"messages": [1, null, {"role": 5}, {"role": "user", "content": 3}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "[1]"}}]}], "tools": [1], "tool_choice": 7, "stop": [1], "n": "x", "temperature": "hot"}),
    ];
    for name in set.names() {
        let p = set.get(name).expect("provider");
        for (i, req) in inputs.iter().enumerate() {
            let ctx = RequestCtx {
                model: "m".into(),
                stream: i % 2 == 0,
                ..RequestCtx::default()
            };
            let _ = p.build_request(&ctx, req);
            let body = req.to_string();
            let _ = p.parse_response(200, body.as_bytes(), &ctx);
            let _ = p.map_error(400, body.as_bytes());
            let mut st = p.stream_state(&ctx);
            let mut out = Vec::new();
            for ev in [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "message_delta",
                "error",
            ] {
                let _ = p.map_event(&mut st, Some(ev), body.as_bytes(), &mut out);
            }
        }
    }
}

#[test]
fn identity_detection_for_the_openai_fast_path() {
    let set = super::load_str(
        "t.llmux",
        "provider a {\n  base_url \"https://x\"\n  url \"/c\"\n  auth bearer\n  framing sse\n  request passthrough { model = ctx.model }\n  stream { on _ { emit ev } }\n}\n",
    )
    .unwrap();
    let p = set.get("a").unwrap();
    assert!(p.response_is_identity());
    assert!(p.stream_is_identity());
    assert_eq!(p.base_url(), "https://x");
}

#[test]
fn a_huge_source_line_is_shown_as_a_window() {
    let junk = "x".repeat(100_000);
    let src = format!(r#"provider p {{ base_url "https://x.test" request {{ a = 1 {junk} }} }}"#);
    let e = load_err(&src);
    assert!(e.len() < 2_000, "{} bytes of error", e.len());
    assert!(e.contains('…'), "{e}");
    assert!(e.contains('^'), "{e}");
}

// ---- the end-of-stream hook (`on end`) ------------------------------------------------------

/// Maps `events` (`(event name, data)`) until one says `Done` or fails, then asks for the verdict
/// at EOF the way the gateway does: `(chunks, verdict)`.
fn run_to_eof(
    p: &Provider,
    ctx: &RequestCtx,
    events: &[(Option<&str>, &str)],
) -> (Vec<Value>, Result<StreamEnd, MappedError>) {
    let mut st = p.stream_state(ctx);
    let mut out = Vec::new();
    for (name, data) in events {
        match p.map_event(&mut st, *name, data.as_bytes(), &mut out) {
            Ok(StreamControl::Continue) => {}
            Ok(StreamControl::Done) => break,
            Err(e) => return (out, Err(e)),
        }
    }
    let verdict = p.finish_stream(&mut st, &mut out);
    (out, verdict)
}

fn stream_ctx() -> RequestCtx<'static> {
    RequestCtx {
        model: "m".into(),
        stream: true,
        include_usage: true,
        request_id: "t".into(),
        now: 1,
        ..RequestCtx::default()
    }
}

#[test]
fn on_end_parses_and_end_stays_an_ordinary_name() {
    // `end` as a state variable, a local, a body field, an object key and a payload field;
    // `on "end"` is an event-name match; `on end` and `on end when ...` are hooks.
    let set = load(
        r#"provider p {
  base_url "https://x.test"
  request { end = 1  let end = 2  x = { end: end }  y.end = req.model }
  response { end = res.end }
  stream {
    state end = 0
    on "end" { end = end + 1  emit { end: ev.end } }
    on _ when ev.end { done }
    on end when end > 1 { done }
    on end { }
  }
}"#,
    );
    let p = set.get("p").expect("p");
    assert!(p.has_end_hook());
    assert!(!p.stream_is_identity());
    let up = p
        .build_request(&RequestCtx::default(), &json!({"model": "q"}))
        .expect("request");
    assert_eq!(
        serde_json::from_slice::<Value>(&up.body).expect("json"),
        json!({"end": 1, "x": {"end": 2}, "y": {"end": "q"}})
    );

    // An SSE event named "end" runs the `on "end"` handler, not the hook.
    let mut st = p.stream_state(&stream_ctx());
    let mut out = Vec::new();
    let ctl = p
        .map_event(&mut st, Some("end"), br#"{"end": "x"}"#, &mut out)
        .expect("mapped");
    assert_eq!(ctl, StreamControl::Continue);
    assert_eq!(out, vec![json!({"end": "x"})]);
    assert_eq!(st.var(p, "end"), Some(&json!(1)));
    // One `on "end"` event is not enough for the first hook; the second hook matches, without
    // `done`: cut.
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Cut));

    let mut st = p.stream_state(&stream_ctx());
    for _ in 0..2 {
        p.map_event(&mut st, Some("end"), b"{}", &mut out)
            .expect("mapped");
    }
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Complete));
}

#[test]
fn on_end_syntax_errors_point_at_the_text() {
    let e = load_err("provider p {\n  stream { on ending { } }\n}\n");
    assert!(e.starts_with("t.llmux:2:15: syntax error: expected"), "{e}");
    assert!(e.contains("`end`"), "{e}");
    // The hook takes no event name and no string: `on end "x"` is an error, not a match.
    let e = load_err("provider p {\n  stream { on end \"x\" { } }\n}\n");
    assert!(e.starts_with("t.llmux:2:19: syntax error"), "{e}");
    // Its body is checked like a handler's.
    let e = load_err("provider p {\n  stream { on end { undeclared = 1  x = req.model } }\n}\n");
    assert!(
        e.contains("2:21: `undeclared` is not a state variable"),
        "{e}"
    );
    assert!(e.contains("2:41: `req` is not available here"), "{e}");
}

#[test]
fn identity_stream_stays_identity_and_a_hook_ends_it() {
    let src = |extra: &str| {
        format!("provider a {{\n  base_url \"https://x\"\n  framing sse\n  stream {{ on _ {{ emit ev }} {extra} }}\n}}\n")
    };
    let set = load(&src(""));
    let p = set.get("a").expect("a");
    assert!(p.stream_is_identity());
    assert!(!p.has_end_hook());
    let set = load(&src("on end { done }"));
    let p = set.get("a").expect("a");
    assert!(!p.stream_is_identity());
    assert!(p.has_end_hook());
    // The shipped OpenAI file keeps its fast path; Perplexity, whose streams end at EOF, trades
    // it for its hook.
    let shipped = load_dir(&providers_dir()).unwrap_or_else(|e| panic!("{}", format_errors(&e)));
    let openai = shipped.get("openai").expect("openai");
    assert!(openai.stream_is_identity());
    assert!(!openai.has_end_hook());
    let perplexity = shipped.get("perplexity").expect("perplexity");
    assert!(perplexity.has_end_hook());
    assert!(!perplexity.stream_is_identity());
    for name in ["groq", "deepseek", "xai", "openai_compatible"] {
        let p = shipped.get(name).expect(name);
        assert!(p.stream_is_identity() && !p.has_end_hook(), "{name}");
    }
}

const END_HOOK_SRC: &str = r#"provider p {
  base_url "https://x.test"
  stream {
    state finish = null
    on _ when ev.stop { done }
    on _ when present(ev.finish) { finish = ev.finish }
    on _ when ev.fail { raise 500 }
    on _ { emit delta { content: ev.text } }
    on end when present(ev) or present(event) { raise 400 }
    on end when finish == "cut" { emit delta { content: "never sent" }  raise 502 }
    on end when present(finish) { emit finish finish  emit usage { prompt_tokens: 1 }  done }
    on end when not present(finish) { emit delta { content: "partial" } }
  }
  errors {
    when status == 502 and text ~ "ended before" => service_unavailable no_fallback
  }
}"#;

#[test]
fn finish_stream_without_a_hook_is_cut_unless_done() {
    let set = load(
        r#"provider p { base_url "https://x.test" stream { on _ when ev.stop { done } on _ { emit ev } } }"#,
    );
    let p = set.get("p").expect("p");
    let ctx = stream_ctx();
    assert!(!p.has_end_hook());

    // EOF before the end: cut; the chunks mapped so far stay.
    let (out, verdict) = run_to_eof(p, &ctx, &[(None, r#"{"a": 1}"#)]);
    assert_eq!(verdict, Ok(StreamEnd::Cut));
    assert_eq!(out, vec![json!({"a": 1})]);

    // Done by an event, or by `[DONE]`: complete.
    for last in [r#"{"stop": true}"#, "[DONE]"] {
        let (out, verdict) = run_to_eof(p, &ctx, &[(None, r#"{"a": 1}"#), (None, last)]);
        assert_eq!(verdict, Ok(StreamEnd::Complete), "{last}");
        assert_eq!(out, vec![json!({"a": 1})]);
    }

    // A second call gives the same verdict; the state says whether the stream is done.
    let mut st = p.stream_state(&ctx);
    let mut out = Vec::new();
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Cut));
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Cut));
    assert!(!st.is_done());
}

#[test]
fn finish_stream_runs_the_first_matching_hook() {
    let set = load(END_HOOK_SRC);
    let p = set.get("p").expect("p");
    let ctx = stream_ctx();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-ba6e19ef16b0da6d72f40d6c", "object": "chat.completion.chunk",
               "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };

    // Done by an event: the hooks do not run.
    let (out, verdict) = run_to_eof(p, &ctx, &[(None, r#"{"stop": true}"#)]);
    assert_eq!(verdict, Ok(StreamEnd::Complete));
    assert!(out.is_empty(), "{out:?}");

    // The hook says `done` (`ev` and `event` are absent in it): complete, with its chunks and
    // its usage recorded.
    let mut st = p.stream_state(&ctx);
    let mut out = Vec::new();
    for data in [r#"{"text": "Hi"}"#, r#"{"finish": "stop"}"#] {
        p.map_event(&mut st, Some("message"), data.as_bytes(), &mut out)
            .expect("mapped");
    }
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Complete));
    assert!(st.is_done());
    assert_eq!(st.usage(), Some(&json!({"prompt_tokens": 1})));
    let id = out[0]["id"].clone();
    let usage_chunk = json!({"id": id, "object": "chat.completion.chunk", "created": 1,
                             "model": "m", "choices": [], "usage": {"prompt_tokens": 1}});
    let mut want = vec![
        chunk(json!({"content": "Hi"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk,
    ];
    for w in &mut want {
        w["id"] = id.clone();
    }
    assert_eq!(out, want);
    // Done now: later events are not mapped and a second verdict runs nothing.
    assert_eq!(
        p.map_event(&mut st, None, br#"{"text": "late"}"#, &mut out),
        Ok(StreamControl::Done)
    );
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Complete));
    assert_eq!(out.len(), 3);

    // A hook that finishes without `done`: cut, its chunks still sent.
    let (out, verdict) = run_to_eof(p, &ctx, &[(None, r#"{"text": "Hi"}"#)]);
    assert_eq!(verdict, Ok(StreamEnd::Cut));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["choices"][0]["delta"], json!({"content": "partial"}));
}

#[test]
fn finish_stream_raise_is_classified_by_the_errors_block() {
    let set = load(END_HOOK_SRC);
    let p = set.get("p").expect("p");
    let ctx = stream_ctx();
    let (out, verdict) = run_to_eof(
        p,
        &ctx,
        &[(None, r#"{"text": "Hi"}"#), (None, r#"{"finish": "cut"}"#)],
    );
    let e = verdict.expect_err("the hook raises");
    assert_eq!(e.class, ErrorClass::ServiceUnavailable);
    assert_eq!(e.status, 503);
    assert_eq!(e.upstream_status, 502);
    assert!(e.retryable);
    assert!(!e.fallback, "the rule's no_fallback applies");
    assert_eq!(
        e.message,
        "the upstream stream ended before it was complete"
    );
    // The chunk the hook emitted before `raise` is dropped; the events' chunks stay.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["choices"][0]["delta"], json!({"content": "Hi"}));

    // A raise with no matching rule falls back to the status's class.
    let set = load(r#"provider p { base_url "https://x.test" stream { on end { raise 504 } } }"#);
    let p = set.get("p").expect("p");
    let mut st = p.stream_state(&ctx);
    let e = p
        .finish_stream(&mut st, &mut Vec::new())
        .expect_err("raises");
    assert_eq!(e.class, ErrorClass::Timeout);
    assert!(!st.is_done());
    // The hook ran once: the stream stays cut, not complete and not failing again.
    assert_eq!(
        p.finish_stream(&mut st, &mut Vec::new()),
        Ok(StreamEnd::Cut)
    );
}

#[test]
fn a_raised_stream_is_never_complete() {
    let set = load(END_HOOK_SRC);
    let p = set.get("p").expect("p");
    let mut st = p.stream_state(&stream_ctx());
    let mut out = Vec::new();
    p.map_event(&mut st, None, br#"{"finish": "stop"}"#, &mut out)
        .expect("mapped");
    let e = p
        .map_event(&mut st, None, br#"{"fail": true}"#, &mut out)
        .expect_err("raises");
    assert_eq!(e.class, ErrorClass::Internal);
    assert!(!st.is_done());
    // The stream is over: later events are not mapped, and at EOF the hook (which would say
    // `done` for this state) does not run.
    assert_eq!(
        p.map_event(&mut st, None, br#"{"text": "late"}"#, &mut out),
        Ok(StreamControl::Done)
    );
    assert_eq!(p.finish_stream(&mut st, &mut out), Ok(StreamEnd::Cut));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn genai_provider_names_only_its_own_provider() {
    let set = load(
        r#"provider base { base_url "https://x.test" url "/c" genai_provider "base.ai" request { model = ctx.model } }
           provider child extends base { }
           provider renamed extends base { genai_provider "renamed.ai" }"#,
    );
    assert_eq!(set.get("base").expect("base").genai_name(), "base.ai");
    assert_eq!(set.get("child").expect("child").genai_name(), "child");
    assert_eq!(
        set.get("renamed").expect("renamed").genai_name(),
        "renamed.ai"
    );
    let twice = load_err(
        r#"provider p { base_url "https://x.test" url "/c" genai_provider "a" genai_provider "b" request { model = ctx.model } }"#,
    );
    assert!(twice.contains("genai_provider"), "{twice}");
}

#[test]
fn an_error_object_keeps_the_providers_code_param_and_details() {
    let set = load(
        r#"provider p { base_url "https://x.test"
             errors {
               message = { message: res.err.text, code: res.err.code, param: res.err.param,
                           inner: res.err.inner, type: "ignored", nothing: res.err.missing }
               when status == 418 => rate_limit
             } }
           provider q extends p { }
           provider plain { base_url "https://x.test" errors { message = res.msg } }"#,
    );
    let p = set.get("p").expect("p");
    let e = p.map_error(
        400,
        br#"{"err": {"text": "no", "code": "content_filter", "param": "prompt", "inner": {"a": [1]}}}"#,
    );
    assert_eq!(e.message, "no");
    assert_eq!(e.code(), Some("content_filter"));
    assert_eq!(e.param(), Some("prompt"));
    let body = e.to_openai_body();
    assert_eq!(
        body,
        json!({"error": {
            "message": "litellm.BadRequestError: PException - no",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "content_filter",
            "inner": {"a": [1]},
        }})
    );

    // A numeric code is kept as text; an object code is not a code; no message field: the
    // default message. The child inherits the declaration.
    let e = set.get("q").expect("q").map_error(
        418,
        br#"{"err": {"code": 3051, "param": {"x": 1}}, "message": "m"}"#,
    );
    assert_eq!(e.class, ErrorClass::RateLimit);
    assert_eq!(e.message, "m");
    assert_eq!(e.code(), Some("3051"));
    assert_eq!(e.param(), None);
    assert_eq!(e.to_openai_body()["error"]["code"], "3051");
    assert_eq!(e.to_openai_body()["error"]["param"], Value::Null);

    // Absent code: the status; details past the size bound are dropped whole.
    let big = "x".repeat(error::MAX_DETAILS_BYTES);
    let e = p.map_error(
        500,
        format!(r#"{{"err": {{"text": "t", "inner": "{big}"}}}}"#).as_bytes(),
    );
    assert_eq!(e.code(), None);
    assert_eq!(
        e.kept, None,
        "nothing kept: no code, details past the bound"
    );
    assert_eq!(e.to_openai_body()["error"]["code"], "500");

    // A plain message declaration keeps the old shape.
    let e = set
        .get("plain")
        .expect("plain")
        .map_error(429, br#"{"msg": "slow down", "error": {"code": "x"}}"#);
    assert_eq!(e.message, "slow down");
    assert_eq!(
        e.to_openai_body(),
        json!({"error": {
            "message": "litellm.RateLimitError: PlainException - slow down",
            "type": "rate_limit_error",
            "param": null,
            "code": "429",
        }})
    );
}

#[test]
fn response_headers_are_readable_in_responses_errors_and_streams() {
    let set = load(
        r#"provider p {
             base_url "https://x.test" url "/c"
             request { model = ctx.model }
             response { request_id = headers["x-request-id"]; missing = headers["nope"] ?? "none" }
             stream { on _ { emit delta { content: headers["x-trace"] } done } }
             errors {
               message = { code: headers["x-amzn-errortype"] }
               when headers["x-amzn-errortype"] ~ "Throttling" => rate_limit
             }
           }"#,
    );
    let p = set.get("p").expect("p");
    assert!(p.reads_headers());
    let ctx = RequestCtx {
        model: "m".into(),
        ..RequestCtx::default()
    };
    let hs = vec![
        ("X-Request-Id".to_string(), "r-1".to_string()),
        (
            "x-amzn-errortype".to_string(),
            "ThrottlingException:http://internal".to_string(),
        ),
    ];
    let done = p
        .parse_response_with_headers(200, &hs, b"{}", &ctx)
        .expect("mapped");
    let v: Value = serde_json::from_slice(&done.body).expect("json");
    assert_eq!(v, json!({"request_id": "r-1", "missing": "none"}));
    // Classified by a header (the status alone would say bad request).
    let e = p.map_error_with_headers(400, &hs, br#"{"message":"slow down"}"#);
    assert_eq!(e.class, ErrorClass::RateLimit, "{e:?}");
    assert_eq!(
        e.kept.as_ref().and_then(|k| k.code.as_deref()),
        Some("ThrottlingException:http://internal")
    );
    assert_eq!(p.map_error(400, b"{}").class, ErrorClass::BadRequest);
    let mut st = p.stream_state(&ctx);
    st.set_headers(vec![("x-trace".into(), "t-9".into())]);
    let mut chunks = Vec::new();
    p.map_event(&mut st, None, b"{}", &mut chunks)
        .expect("event");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "t-9");
    // A file that never reads headers does not ask for them.
    let plain =
        load(r#"provider q { base_url "https://x.test" url "/c" request { model = ctx.model } }"#);
    assert!(!plain.get("q").expect("q").reads_headers());
    let e = load_err(r#"provider r { base_url "https://x.test" request { a = headers["x"] } }"#);
    assert!(e.contains("`headers` is not available here"), "{e}");
}

#[test]
fn lookup_gives_the_default_for_an_absent_key_and_base64_round_trips() {
    let set = load(
        r#"provider p {
             base_url "https://x.test" url "/c"
             table reasons { "a" => "A", _ => "other" }
             table bare { "a" => "A" }
             request {
               missing = lookup(reasons, extra.nope)
               bare_missing = lookup(bare, extra.nope) ?? "none"
               hit = lookup(reasons, "a")
               decoded = base64_decode(extra.b64)
               bad = base64_decode("%%%") ?? "invalid"
               encoded = base64_encode("{\"k\":1}")
             }
           }"#,
    );
    let p = set.get("p").expect("p");
    let up = p
        .build_request(
            &RequestCtx::default(),
            &json!({"model": "m", "b64": "eyJrIjoxfQ"}),
        )
        .expect("built");
    let body: Value = serde_json::from_slice(&up.body).expect("json");
    assert_eq!(
        body,
        json!({"missing": "other", "bare_missing": "none", "hit": "A", "decoded": "{\"k\":1}",
               "bad": "invalid", "encoded": "eyJrIjoxfQ=="})
    );
}

#[test]
fn an_event_stream_exception_frame_is_classified_by_the_error_rules() {
    let set = load(
        r#"provider p {
             base_url "https://x.test" url "/c"
             framing aws_eventstream
             request { model = ctx.model }
             stream { on "messageStop" { emit finish "stop" done } on _ { emit delta { content: ev.text } } }
             errors {
               when headers[":exception-type"] == "throttlingException" => rate_limit
               when headers[":exception-type"] == "validationException" => bad_request
             }
           }"#,
    );
    let p = set.get("p").expect("p");
    let mut bytes = eventstream::encode_event("delta", br#"{"text":"Hi"}"#);
    bytes.extend(eventstream::encode_exception(
        "throttlingException",
        br#"{"message":"Too many requests, please wait"}"#,
    ));
    let mut dec = FrameDecoder::new(p.framing());
    let mut frames = Vec::new();
    dec.feed(&bytes, &mut frames).expect("frames");
    let mut st = p.stream_state(&RequestCtx::default());
    let mut chunks = Vec::new();
    assert_eq!(
        p.map_frame(&mut st, &frames[0], &mut chunks)
            .expect("event"),
        StreamControl::Continue
    );
    let e = p
        .map_frame(&mut st, &frames[1], &mut chunks)
        .expect_err("an exception");
    assert_eq!(e.class, ErrorClass::RateLimit);
    assert!(e.message.contains("Too many requests"), "{e:?}");
    // The stream is over: later frames are not mapped.
    assert_eq!(
        p.map_frame(&mut st, &frames[0], &mut chunks).expect("done"),
        StreamControl::Done
    );
}

#[test]
fn super_runs_the_parents_block_and_later_fields_override_it() {
    let set = load(
        r#"provider base {
             base_url "https://x.test" url "/c"
             request { model = ctx.model; messages = req.messages; keep = "base" }
             response { text = res.a; from = "base" }
           }
           provider child extends base {
             request { let pre = "child-" + ctx.model; super; model = omit; version = pre }
             response { super; from = "child" }
           }
           provider grandchild extends child {
             request { super; extra_field = 1 }
           }"#,
    );
    let ctx = RequestCtx {
        model: "m".into(),
        ..RequestCtx::default()
    };
    let req = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});
    let body = |name: &str| -> Value {
        let up = set
            .get(name)
            .expect(name)
            .build_request(&ctx, &req)
            .expect("built");
        serde_json::from_slice(&up.body).expect("json")
    };
    assert_eq!(
        body("child"),
        json!({"messages": [{"role": "user", "content": "hi"}], "keep": "base", "version": "child-m"})
    );
    assert_eq!(
        body("grandchild"),
        json!({"messages": [{"role": "user", "content": "hi"}], "keep": "base", "version": "child-m", "extra_field": 1})
    );
    let done = set
        .get("grandchild")
        .expect("grandchild")
        .parse_response(200, br#"{"a":"t"}"#, &ctx)
        .expect("mapped");
    let v: Value = serde_json::from_slice(&done.body).expect("json");
    assert_eq!(v, json!({"text": "t", "from": "child"}));
    let e = load_err(r#"provider p { base_url "https://x.test" request { super } }"#);
    assert!(e.contains("no ancestor has one"), "{e}");
    let e = load_err(
        r#"provider p { base_url "https://x.test" request passthrough { model = ctx.model } }
           provider q extends p { request { super } }"#,
    );
    assert!(e.contains("passthrough"), "{e}");
}

#[test]
fn dispatch_picks_a_provider_by_model_and_is_checked_at_load() {
    let set = load(
        r#"provider cloud { dispatch { "claude-*" => claude_side, "invoke/*" => main_side strip "invoke/", "*" => main_side } }
           provider main_side { base_url "https://x.test" request { model = ctx.model } }
           provider claude_side extends main_side { }"#,
    );
    assert_eq!(
        set.resolve("cloud", "claude-3"),
        Some(("claude_side", "claude-3"))
    );
    assert_eq!(set.resolve("cloud", "invoke/m"), Some(("main_side", "m")));
    assert_eq!(set.resolve("cloud", "other"), Some(("main_side", "other")));
    assert_eq!(set.resolve("main_side", "x"), Some(("main_side", "x")));
    assert_eq!(set.resolve("nope", "x"), None);
    let e = load_err(
        r#"provider cloud { dispatch { "a*" => mian } base_url "https://x.test" }
           provider main { base_url "https://x.test" request { model = ctx.model } }
           provider d2 { dispatch { "*" => cloud } }"#,
    );
    assert!(e.contains("unknown provider `mian`"), "{e}");
    assert!(e.contains("did you mean `main`"), "{e}");
    assert!(e.contains("no `extends` and no other items"), "{e}");
    assert!(e.contains("`cloud` dispatches too"), "{e}");
    assert!(crate::dsl::ir::glob_match("a*b*c", "axxbyyc"));
    assert!(!crate::dsl::ir::glob_match("a*b*c", "axxc"));
    assert!(!crate::dsl::ir::glob_match("ab*ba", "aba"));
}

#[test]
fn cloud_auth_schemes_parse_and_a_bedrock_style_key_is_a_bearer() {
    let set = load(
        r#"provider s { param aws_region_name required base_url "https://x.{aws_region_name}.test" auth aws_sigv4 "bedrock" request { model = ctx.model } }
           provider g { param creds default "" base_url "https://x.test" auth google_oauth "creds" request { model = ctx.model } }
           provider t { param token_host default "iam.test" base_url "https://x.test"
                        auth token_exchange "https://{token_host}/identity/token" grant "urn:example:apikey" key "apikey"
                        request { model = ctx.model } }"#,
    );
    let s = set.get("s").expect("s");
    assert_eq!(
        s.auth(),
        &Auth::AwsSigV4 {
            service: "bedrock".into()
        }
    );
    let mut params = std::collections::BTreeMap::new();
    params.insert("aws_region_name".to_string(), json!("us-east-1"));
    let mut ctx = RequestCtx {
        model: "m".into(),
        params: std::borrow::Cow::Owned(params),
        ..RequestCtx::default()
    };
    let up = s
        .build_request(&ctx, &json!({"model": "x"}))
        .expect("built");
    assert!(!up.headers.iter().any(|(k, _)| k == "authorization"));
    ctx.api_key = Some("bedrock-api-key".into());
    let up = s
        .build_request(&ctx, &json!({"model": "x"}))
        .expect("built");
    assert!(up
        .headers
        .contains(&("authorization".into(), "Bearer bedrock-api-key".into())));
    assert_eq!(
        set.get("g").expect("g").auth(),
        &Auth::GoogleOAuth {
            credentials_param: Some("creds".into())
        }
    );
    let t = set.get("t").expect("t");
    assert_eq!(
        t.token_url(&ctx).expect("url").as_deref(),
        Some("https://iam.test/identity/token")
    );
    let e = load_err(r#"provider p { base_url "https://x.test" auth kerberos }"#);
    assert!(e.contains("header \"NAME\""), "{e}");
    assert!(e.contains("aws_sigv4 \"SERVICE\""), "{e}");
    let e = load_err(r#"provider p { base_url "https://x.test" auth google_oauth "creds" }"#);
    assert!(e.contains("does not declare"), "{e}");
}

#[test]
fn unsupported_stream_is_refused_at_load() {
    let e = load_err(
        r#"provider p { base_url "https://x.test" request { unsupported stream; model = ctx.model } }"#,
    );
    assert!(e.contains("`stream` cannot be `unsupported`"), "{e}");
}

#[test]
fn super_in_a_stream_handler_runs_the_parents_handler_for_the_event() {
    let set = load(
        r#"provider base {
             base_url "https://x.test" request { model = ctx.model }
             stream {
               state seen = 0
               on "text" { seen = seen + 1; emit delta { content: ev.t } }
               on "stop" { emit finish "stop"; done }
               on end when seen > 0 { done }
             }
           }
           provider child extends base {
             stream {
               state tagged = 0
               on "text" when ev.t == "secret" { tagged = tagged + 1; emit delta { content: "[hidden]" } }
               on _ { super }
               on end { super }
             }
           }"#,
    );
    let p = set.get("child").expect("child");
    let ctx = RequestCtx {
        model: "m".into(),
        stream: true,
        ..RequestCtx::default()
    };
    let mut st = p.stream_state(&ctx);
    let mut chunks = Vec::new();
    for (event, data) in [
        ("text", r#"{"t":"a"}"#),
        ("text", r#"{"t":"secret"}"#),
        ("text", r#"{"t":"b"}"#),
    ] {
        p.map_event(&mut st, Some(event), data.as_bytes(), &mut chunks)
            .expect("event");
    }
    let texts: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(texts, ["a", "[hidden]", "b"]);
    // The parent's end hook, reached through the child's: the parent's state was counted.
    assert_eq!(
        p.finish_stream(&mut st, &mut chunks).expect("end"),
        StreamEnd::Complete
    );
    let mut st = p.stream_state(&ctx);
    assert_eq!(
        p.map_event(&mut st, Some("stop"), b"{}", &mut chunks)
            .expect("stop"),
        StreamControl::Done
    );
    let e = load_err(
        r#"provider p { base_url "https://x.test" request { model = ctx.model } stream { on _ { super } } }"#,
    );
    assert!(e.contains("no ancestor has one"), "{e}");
}
