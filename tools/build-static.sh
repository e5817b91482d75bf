#!/usr/bin/env bash
# Builds the shipped binary — the one the container image holds and the release attaches — and
# prints its path. One place for its flags, used by .ci/run, the Dockerfile, release.yml and
# tests/static_binary.rs:
#   - the release profile (fat LTO, one codegen unit, stripped; Cargo.toml);
#   - glibc linked statically (`+crt-static`); an explicit --target keeps that flag off build
#     scripts and proc-macros, which must stay dynamic;
#   - getrandom calling getrandom(2) through glibc, never falling back to /dev/urandom (a static
#     binary cannot find the function by dlsym, and a bare root has no /dev).
# Usage: tools/build-static.sh [TRIPLE]   (default: this machine's <arch>-unknown-linux-gnu)
# Output: target/static/<triple>/release/llmux (LLMUX_STATIC_TARGET_DIR overrides target/static).
set -euo pipefail
cd "$(dirname "$0")/.."
triple=${1:-$(uname -m)-unknown-linux-gnu}
target_dir=${LLMUX_STATIC_TARGET_DIR:-target/static}
export RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
cargo build --release --locked --bin llmux --target "$triple" --target-dir "$target_dir" >&2
echo "$target_dir/$triple/release/llmux"
