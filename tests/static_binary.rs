//! The shipped flavour of the binary (the Dockerfile's): release profile, linked statically
//! against glibc. It is static, it stays within its size budget, and it serves a chat
//! completion from an empty root holding only what the container image holds — the binary,
//! /etc/llmux, CA certificates, /etc/hosts and /etc/resolv.conf — resolving `localhost` itself
//! (a static glibc cannot load NSS modules).
//!
//! The binary is built here by tools/build-static.sh, which `.ci/run` runs before the tests (a
//! no-op then; the first run on a fresh machine builds it, which takes minutes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// The binary's budget: its size when the budget was set (16.8 MB, 2026-12-06) plus
/// headroom. The image is this plus distroless/static (about 2 MB) and must stay under 20 MB
/// (BENCHMARKS.md "Binary and image size").
const BUDGET_BYTES: u64 = 17_700_000;

/// Builds (or finds up to date) the static release binary; its path.
fn static_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // The environment .ci/run builds in: cargo test's own variables would make cargo see
        // a different build and start over.
        let mut cmd = Command::new("bash");
        cmd.arg("tools/build-static.sh")
            .env_clear()
            .current_dir(root);
        for var in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
        ] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        let out = cmd.output().expect("run tools/build-static.sh");
        assert!(
            out.status.success(),
            "building the static binary failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        root.join(String::from_utf8_lossy(&out.stdout).trim())
    })
}

#[test]
fn the_shipped_binary_is_static_and_within_its_budget() {
    let bin = static_binary();
    let file = Command::new("file").arg(bin).output().expect("file(1)");
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    let ldd = Command::new("ldd").arg(bin).output().expect("ldd(1)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd: {said}"
    );
    let size = std::fs::metadata(bin).unwrap().len();
    assert!(
        size <= BUDGET_BYTES,
        "the binary is {size} bytes, over its budget of {BUDGET_BYTES}: find what grew (cargo bloat) or raise the budget in BENCHMARKS.md and here"
    );
}

/// An empty root with what the image holds, the config pointing at `upstream` by name.
fn image_root(upstream_port: u16) -> TempDir {
    let root = TempDir::new("image-root");
    let r = &root.0;
    let put = |path: &str, bytes: &[u8]| {
        let p = r.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    };
    put(
        "usr/local/bin/llmux",
        &std::fs::read(static_binary()).unwrap(),
    );
    std::fs::set_permissions(
        r.join("usr/local/bin/llmux"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(repo.join("providers")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "llmux") {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            put(
                &format!("etc/llmux/providers/{name}"),
                &std::fs::read(&p).unwrap(),
            );
        }
    }
    put(
        "etc/llmux/config/llmux.yaml",
        format!(
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: http://localhost:{upstream_port}/v1\n      api_key: sk-test-key-123456\n"
        )
        .as_bytes(),
    );
    let certs = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    put("etc/ssl/certs/ca-certificates.crt", &certs);
    put("etc/hosts", b"127.0.0.1 localhost\n");
    // A name server nobody answers on: only /etc/hosts may resolve `localhost`.
    put(
        "etc/resolv.conf",
        b"nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    root
}

#[test]
fn it_serves_from_an_empty_root_as_the_image_holds_it() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs the binary in a chroot and must run as root (as CI does)"
    );
    let mock = Mock::start();
    let port: u16 = mock.addr.rsplit(':').next().unwrap().parse().unwrap();
    let root = image_root(port);
    let mut cmd = Command::new("/usr/local/bin/llmux");
    cmd.args([
        "serve",
        "--config",
        "/etc/llmux/config/llmux.yaml",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ])
    .env_clear()
    .env("LLMUX_LOG", "info");
    let dir = std::ffi::CString::new(root.0.as_os_str().as_encoded_bytes()).unwrap();
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // Into the root, then the image's user (nonroot, 65532).
            if libc::chroot(dir.as_ptr()) != 0
                || libc::chdir(c"/etc/llmux".as_ptr()) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65532) != 0
                || libc::setuid(65532) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let proc = Proc::spawn_command(cmd);
    let line = proc.wait_line("llmux listening", Duration::from_secs(20));
    let addr = addr_from(&line);
    let r = request(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), proc.output());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(mock.stats()["requests"].as_u64(), Some(1));
}
