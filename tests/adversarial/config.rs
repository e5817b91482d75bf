//! A careless operator's config: typos, nonsense numbers, an empty master key, missing files.
//! Through the real binary: `llmux config check FILE` and hot reloads of a running gateway.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{config_for, eventually, metric, request, Gateway, Mock, TempDir, BIN};

const HI: &str = r#"{"model":"MODEL","messages":[{"role":"user","content":"hi"}]}"#;

fn hi(model: &str) -> String {
    HI.replace("MODEL", model)
}

/// Runs `llmux config check` on `yaml`; (exit success, stdout, stderr, the file's path).
fn check(yaml: &str) -> (bool, String, String, String) {
    let dir = TempDir::new("cfgcheck");
    let path = dir.0.join("llmux.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", path.to_str().unwrap()])
        .env_remove("LLMUX_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

fn reloads(gw: &Gateway, result: &str) -> f64 {
    metric(
        &gw.metrics(),
        &format!(r#"llmux_config_reloads_total{{result="{result}"}}"#),
    )
    .unwrap_or(0.0)
}

#[test]
fn a_typo_in_a_provider_prefix_is_an_error_with_a_suggestion() {
    let (ok, stdout, stderr, file) = check(
        "model_list:\n  - model_name: gpt\n    litellm_params:\n      model: opneai/gpt-4o\n      api_key: k\n",
    );
    assert!(!ok, "{stdout}{stderr}");
    let want =
        format!("{file}:4:14: model_list[0].litellm_params.model: unknown provider `opneai`");
    assert!(stderr.contains(&want), "{stderr}");
    assert!(stderr.contains("did you mean `openai`"), "{stderr}");
    assert!(!stdout.contains("ok ("), "{stdout}");
}

#[test]
fn every_error_of_a_file_is_reported_with_its_position() {
    let yaml = "\
model_list:
  - model_name: a
    litellm_params: { model: openai/x, api_key: k, timeout: -1, stream_timeout: 0, weight: .nan, rpm: 0, tpm: 1.5 }
  - model_name: az
    litellm_params:
      model: azure/deployment
      api_key: k
litellm_settings: { request_timeout: 1e300 }
router_settings: { timeout: .inf }
general_settings:
  master_key: \"\"
llmux:
  mock: { listen: not-an-address }
  server:
    max_request_body_bytes: 0
    max_header_bytes: -1
    max_json_depth: 100000
    body_timeout: .nan
    header_timeout: 0
    idle_timeout: 1e300
    shutdown_timeout: -5
    shutdown_delay: 0
    tls: { cert_file: missing.crt, key_file: missing.key }
  upstream:
    ca_file: missing-ca.pem
    max_connections_per_host: 0
    pool_idle_timeout: 0
    connect_timeout: -1
    dns_ttl: .inf
    max_response_body_bytes: 1e300
    max_stream_event_bytes: 0
  media: { max_bytes: 0, timeout: 0, max_redirects: 1000, max_images: -1 }
";
    let (ok, _, stderr, file) = check(yaml);
    assert!(!ok, "{stderr}");
    let want = [
        "3:61: model_list[0].litellm_params.timeout:",
        "3:81: model_list[0].litellm_params.stream_timeout:",
        "3:92: model_list[0].litellm_params.weight:",
        "3:103: model_list[0].litellm_params.rpm:",
        "3:111: model_list[0].litellm_params.tpm:",
        "4:5: model_list[1]: `litellm_params.api_base` is required for provider `azure`",
        "8:38: litellm_settings.request_timeout:",
        "9:29: router_settings.timeout:",
        "11:15: general_settings.master_key: is empty",
        "13:19: llmux.mock.listen:",
        "15:29: llmux.server.max_request_body_bytes:",
        "16:23: llmux.server.max_header_bytes:",
        "17:21: llmux.server.max_json_depth:",
        "18:19: llmux.server.body_timeout:",
        "19:21: llmux.server.header_timeout:",
        "20:19: llmux.server.idle_timeout:",
        "21:23: llmux.server.shutdown_timeout:",
        "23:23: llmux.server.tls.cert_file: cannot read",
        "23:46: llmux.server.tls.key_file: cannot read",
        "25:14: llmux.upstream.ca_file: cannot read",
        "26:31: llmux.upstream.max_connections_per_host:",
        "27:24: llmux.upstream.pool_idle_timeout:",
        "28:22: llmux.upstream.connect_timeout:",
        "29:14: llmux.upstream.dns_ttl:",
        "30:30: llmux.upstream.max_response_body_bytes:",
        "31:29: llmux.upstream.max_stream_event_bytes:",
        "32:23: llmux.media.max_bytes:",
        "32:35: llmux.media.timeout:",
        "32:53: llmux.media.max_redirects:",
        "32:71: llmux.media.max_images:",
    ];
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")) && !l.ends_with("error(s)"))
        .collect();
    for w in want {
        let line = format!("{file}:{w}");
        assert!(
            errors.iter().any(|e| e.starts_with(&line)),
            "{line}\nnot in\n{stderr}"
        );
    }
    assert_eq!(errors.len(), want.len(), "{stderr}");
    assert!(stderr.contains(&format!("{file}: {} error(s)", want.len())));
    // `shutdown_delay: 0` means something ("close at once") and is accepted.
    assert!(!stderr.contains("shutdown_delay"), "{stderr}");
}

#[test]
fn master_key_resolving_to_empty_is_an_error() {
    let (ok, _, stderr, _) = check(
        "environment_variables: { EMPTY_KEY: \"\" }\ngeneral_settings: { master_key: os.environ/EMPTY_KEY }\n",
    );
    assert!(!ok);
    assert!(
        stderr.contains(
            "general_settings.master_key: `os.environ/EMPTY_KEY` resolves to an empty value"
        ),
        "{stderr}"
    );
    // Absent: no authentication, said as a warning, and the check passes.
    let (ok, _, stderr, _) = check("model_list: []\n");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("requests are not authenticated"),
        "{stderr}"
    );
}

#[test]
fn a_litellm_provider_without_a_file_is_disabled_and_the_rest_serves() {
    let mock = Mock::start();
    let cfg = config_for(
        &mock,
        &[("m", "up")],
        "  - model_name: sm\n    litellm_params: { model: sagemaker/my-endpoint }\n",
    );
    let (ok, stdout, stderr, _) = check(&cfg);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (1 model groups)"), "{stdout}");
    assert!(
        stderr.contains("provider `sagemaker` is a LiteLLM provider that LLMux does not ship yet"),
        "{stderr}"
    );
    let gw = Gateway::start(&cfg);
    assert_eq!(gw.chat(&hi("m")).status, 200);
    assert_eq!(gw.chat(&hi("sm")).status, 404);
    assert!(
        gw.proc.output().contains("sagemaker"),
        "{}",
        gw.proc.output()
    );
}

#[test]
fn a_reload_with_an_unknown_prefix_keeps_the_old_groups_serving() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up")], ""));
    assert_eq!(gw.chat(&hi("m")).status, 200);
    let typo = config_for(&mock, &[("m", "up")], "").replace("openai/", "opneai/");
    std::fs::write(&gw.config, typo).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || reloads(&gw, "error") >= 1.0),
        "{}",
        gw.proc.output()
    );
    assert_eq!(gw.chat(&hi("m")).status, 200, "the old snapshot serves");
    assert_eq!(reloads(&gw, "success"), 0.0);
    // The metric is counted before the error is logged: wait for the line itself.
    let line = gw
        .proc
        .wait_line("unknown provider `opneai`", Duration::from_secs(30));
    assert!(line.contains("did you mean `openai`"), "{line}");
}

#[test]
fn a_reload_with_a_bad_number_keeps_the_old_snapshot() {
    let mock = Mock::start();
    let gw = Gateway::start(&config_for(&mock, &[("m", "up")], ""));
    let bad = config_for(
        &mock,
        &[("m", "up"), ("new", "up")],
        "llmux:\n  server:\n    max_request_body_bytes: 0\n",
    );
    std::fs::write(&gw.config, bad).unwrap();
    assert!(eventually(Duration::from_secs(10), || reloads(
        &gw, "error"
    ) >= 1.0));
    assert_eq!(
        gw.chat(&hi("new")).status,
        404,
        "the new file was not applied"
    );
    assert_eq!(gw.chat(&hi("m")).status, 200);
    assert!(gw
        .proc
        .output()
        .contains("llmux.server.max_request_body_bytes: must be more than 0"));
}

#[test]
fn environment_variables_resolve_keys_without_changing_the_process_environment() {
    let mock = Mock::start();
    let name = "LLMUX_ADV_KEY_FROM_CONFIG";
    let cfg = format!(
        "environment_variables:\n  {name}: sk-adv-config-123456\nmodel_list:\n  - model_name: m\n    litellm_params:\n      model: openai/up\n      api_base: {}/v1\n      api_key: os.environ/{name}\n",
        mock.base()
    );
    let gw = Gateway::start(&cfg);
    // Without the config's variable the deployment would be disabled (404).
    assert_eq!(gw.chat(&hi("m")).status, 200, "{}", gw.proc.output());
    let environ = std::fs::read(format!("/proc/{}/environ", gw.proc.pid())).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        !vars.iter().any(|v| v.starts_with(name.as_bytes())),
        "the process environment is never written"
    );
    // Everything the request logged is in once its access line is.
    let r = request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-request-id", "env-resolver-last")],
        hi("m").as_bytes(),
    );
    assert_eq!(r.status, 200);
    gw.proc
        .wait_line("env-resolver-last", Duration::from_secs(30));
    assert!(!gw.proc.output().contains("sk-adv-config-123456"));
}

/// Issue 7, item 17: with trace logging appended to a file in the config's directory, the
/// watcher's own per-event logging used to feed back into the file without end.
#[test]
fn a_log_file_beside_the_config_does_not_feed_back_into_the_log() {
    let mock = Mock::start();
    let dir = TempDir::new("logloop");
    let config = dir.0.join("llmux.yaml");
    let log_path = dir.0.join("llmux.log");
    std::fs::write(&config, config_for(&mock, &[("m", "up")], "")).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .env("LLMUX_LOG", "trace")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let count = |needle: &str| read().lines().filter(|l| l.contains(needle)).count();
    let started = eventually(Duration::from_secs(20), || count("llmux listening") == 1);
    // Other files in the directory change often; none of them is a reason to reload.
    for i in 0..200 {
        std::fs::write(dir.0.join("notes.txt"), format!("{i}")).unwrap();
    }
    // A real edit reloads once; SIGHUP reloads once more.
    std::fs::write(&config, config_for(&mock, &[("m", "up"), ("n", "up")], "")).unwrap();
    let first = eventually(Duration::from_secs(10), || count("config reloaded") >= 1);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    let second = eventually(Duration::from_secs(10), || count("config reloaded") >= 2);
    let text = read();
    let _ = child.kill();
    let _ = child.wait();
    assert!(started && first && second, "{text}");
    assert_eq!(count("config reloaded"), 2, "{text}");
    assert_eq!(
        count("inotify event"),
        0,
        "the watcher's events are not logged"
    );
    let lines = text.lines().count();
    assert!(lines < 2_000, "{lines} log lines: the log feeds itself");
}

#[test]
fn config_check_defaults_still_load() {
    let (ok, stdout, stderr, _) = check(llmux::config::EMBEDDED_DEFAULT);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok ("), "{stdout}");
}

#[test]
fn a_deleted_provider_file_disables_its_deployments_and_says_so() {
    let dir = TempDir::new("cfgprov");
    let pdir = dir.0.join("providers");
    std::fs::create_dir_all(&pdir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    std::fs::copy(
        shipped.join("anthropic.llmux"),
        pdir.join("anthropic.llmux"),
    )
    .unwrap();
    let cfg = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{ model: openai/gpt-4o, api_key: k }}\n  - model_name: claude\n    litellm_params: {{ model: anthropic/claude, api_key: k }}\n  - model_name: typo\n    litellm_params: {{ model: anthropik/claude, api_key: k }}\nllmux:\n  providers_dir: {}\n",
        pdir.display()
    );
    let (ok, _, stderr, file) = check(&cfg);
    assert!(!ok, "the typo is still an error");
    assert!(
        stderr.contains(&format!(
            "{file}:3:30: model_list[0].litellm_params.model: deployment of model group `gpt` disabled: the provider file `openai.llmux` is missing from {}",
            pdir.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `anthropic`"), "{stderr}");
    let (ok, stdout, stderr, _) = check(&cfg.replace("anthropik", "anthropic"));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (2 model groups)"), "{stdout}");
}

/// `llmux providers test` on a directory of its own: a malformed case file fails alone, a
/// failing case names the JSON paths that differ, and a filter that matches nothing fails.
#[test]
fn providers_test_reports_paths_runs_past_a_broken_file_and_refuses_an_empty_filter() {
    let dir = TempDir::new("provtest");
    let p = dir.0.join("providers");
    std::fs::create_dir_all(p.join("tests/echo")).unwrap();
    std::fs::write(
        p.join("echo.llmux"),
        r#"provider echo { base_url "https://x.test" url "/c" request { model = ctx.model } response { text = res.a } }"#,
    )
    .unwrap();
    std::fs::write(
        p.join("tests/echo/good.yaml"),
        "name: maps a\nresponse: { body: { a: x } }\nexpect: { text: x }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("tests/echo/wrong.yaml"),
        "name: wrong text\nresponse: { body: { a: x } }\nexpect: { text: y }\n",
    )
    .unwrap();
    std::fs::write(p.join("tests/echo/broken.yaml"), "name: [unclosed\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["providers", "test", p.to_str().unwrap()])
            .args(extra)
            .env_remove("LLMUX_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = run(&[]);
    assert!(!ok, "{text}");
    assert!(text.contains("ok   echo/good: maps a"), "{text}");
    assert!(text.contains("FAIL echo/broken (unreadable)"), "{text}");
    assert!(text.contains("$.text: expected \"y\", got \"x\""), "{text}");
    assert!(
        !text.contains("--- expected"),
        "objects only when asked: {text}"
    );
    assert!(text.contains("1 passed, 2 failed"), "{text}");
    let (_, text) = run(&["--filter", "wrong", "--objects"]);
    assert!(text.contains("--- expected"), "{text}");
    let (ok, text) = run(&["--filter", "echo/good"]);
    assert!(ok, "the filter matches provider/name: {text}");
    assert!(text.contains("1 passed, 0 failed"), "{text}");
    let (ok, text) = run(&["--filter", "no such case"]);
    assert!(!ok, "{text}");
    assert!(text.contains("no golden case matches"), "{text}");
}
