#!/usr/bin/env bash
# End-to-end load benchmark: the llmux gateway in front of `llmux mock`, against the mock called
# directly and against nginx tuned as a production reverse proxy in front of the same mock, all
# in one run, in alternating rounds. Prints a markdown report (for BENCHMARKS.md) on stdout.
#
# The phases and what they report are described at the top of benches/load.py, which does the
# work; this script builds what it needs and checks the tools.
#
# Usage: benches/load.sh            (from anywhere; it works in the repository root)
# Knobs (environment):
#   BENCH_SKIP_BUILD=1              use the existing binaries (target/release/llmux and
#                                   target/release/examples/stream_hold)
#   BENCH_PHASES=startup,tput,large,stream,mapped,latency,features,idle,hold,routing   a subset
#                                   (and `ops`, not in the default set: operations per request,
#                                   with perf; see benches/load.py)
#   BENCH_FAILOVER_RATE=500         the routing phase's fixed rate (one failing deployment)
#   BENCH_DURATION=8s  BENCH_ROUNDS=5  BENCH_CONNS=64  BENCH_STREAM_CONNS=32  BENCH_CHUNKS=20
#   BENCH_RATE=1000  BENCH_STREAM_RATE=200  BENCH_LARGE_KB=12 (the `large` phase's body)
#   BENCH_STREAM_USAGE=1            streams ask for usage (stream_options.include_usage; the
#                                   default): the same upstream stream through nginx and the
#                                   gateway. 0: clients do not ask (the gateway still does)
#   BENCH_GATEWAY_WORKERS=<cores>  BENCH_MOCK_WORKERS=1  BENCH_NGINX_WORKERS=<gateway's>
#   BENCH_VARIANTS="name={llmux: section}|top-level yaml;..."   features on/off (load.py)
#   BENCH_IDLE_CONNS=10000
#   BENCH_HOLD_STREAMS=10000 (over several gateway processes on one port where RLIMIT_NOFILE
#                                   is too low for one)  BENCH_HOLD_CHUNKS=10
#   BENCH_HOLD_DELAY_MS=1000  BENCH_HOLD_RAMP=2000 (new streams per second)
#   BENCH_NGINX=path                the nginx binary (default: nginx on PATH; skipped if none:
#                                   apt-get install nginx-light)
#   BENCH_KEEP=1                    keep the work directory (configs, logs)
#   BENCH_MOCK_BIN=path             the binary that runs the mock (default: the gateway's), so
#                                   that two builds are measured against the same upstream
#   BENCH_IO_DRIVER=epoll           the gateway's I/O driver (default: auto, i.e. io_uring here)
#   BENCH_BIN_B=path                a second gateway build, measured in the same alternating
#                                   rounds as the first ("gateway B"): two builds compared at
#                                   the same moments of a noisy machine
# All traffic goes to 127.0.0.1. Every run is bounded in time; every process started is
# stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Loopback only: never route the benchmark through a proxy from the environment.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
# Keep logging off the measured path (llmux's log filter; override by exporting LLMUX_LOG).
export LLMUX_LOG=${LLMUX_LOG:-warn}
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  echo "[bench] cargo build --release (gateway and the stream_hold client)" >&2
  cargo build --release --bin llmux --example stream_hold >&2
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if ! command -v oha >/dev/null; then
  echo "[bench] oha not found: cargo install oha --locked" >&2
  cargo install oha --locked >&2
fi
# Many idle connections and held streams need descriptors: the soft limit up to the hard one.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$ROOT/benches/load.py"
