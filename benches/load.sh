#!/usr/bin/env bash
# End-to-end load benchmark: the llmux gateway in front of llmux's own mock upstream, against the same
# mock called directly. Prints a markdown table (for BENCHMARKS.md) of:
#   - start-up time: process start -> first successful POST /v1/chat/completions (curl every 5 ms)
#   - idle RSS of the gateway (VmRSS)
#   - max throughput, non-stream, 64 connections for 10 s: gateway vs direct, and the ratio
#   - p50/p99 latency at a fixed 1000 req/s for 10 s: gateway vs direct, and the added latency
#   - streaming with 20 chunks, time to last byte p50/p99 at a fixed rate: gateway vs direct
#   - RSS while 10,000 idle connections are open, and the loaded RSS (VmHWM after the throughput run)
#   - the CPU time each process spends per request during the throughput runs (utime + stime from
#     /proc), a cost that holds where the machine's load makes req/s noisy
#   - when nginx is installed, a plain nginx reverse proxy (keep-alive upstream, same worker count
#     as the gateway) in front of the same mock, measured in the same run: the like-for-like
#     yardstick for a proxy's throughput on this machine
#
# Usage: benches/load.sh            (from anywhere; it works in the repository root)
# Knobs (environment):
#   BENCH_SKIP_BUILD=1              use the existing binary, no cargo build
#   BENCH_BIN=path                  the llmux binary to run (default: target/release/llmux)
#   BENCH_TOOL=oha|wrk              force the load generator (default: oha, installed with
#                                   `cargo install oha --locked` if missing; wrk if that fails)
#   BENCH_DURATION=10s  BENCH_CONNS=64  BENCH_RATE=1000  BENCH_STREAM_RATE=200  BENCH_WARMUP=2s
#   BENCH_IDLE_CONNS=10000  BENCH_IDLE_HOLD=5
#   BENCH_GW_PORT=18080  BENCH_MOCK_PORT=18081
#   BENCH_GATEWAY_WORKERS / BENCH_MOCK_WORKERS   LLMUX_WORKERS for each process (default: unset)
#   BENCH_NGINX=path|0              the nginx binary for the yardstick (default: nginx on PATH;
#                                   0 skips it); BENCH_NGINX_PORT=18082
#   BENCH_KEEP=1                    keep the work directory (configs, logs, raw results)
# All traffic goes to 127.0.0.1. Every loop is bounded in count and time; all processes started here
# are stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-64}
RATE=${BENCH_RATE:-1000}
STREAM_RATE=${BENCH_STREAM_RATE:-200}
STREAM_CHUNKS=20
WARMUP=${BENCH_WARMUP:-2s}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
IDLE_HOLD=${BENCH_IDLE_HOLD:-5}
GW_PORT=${BENCH_GW_PORT:-18080}
MOCK_PORT=${BENCH_MOCK_PORT:-18081}
NGINX_PORT=${BENCH_NGINX_PORT:-18082}
BIN=${BENCH_BIN:-$ROOT/target/release/llmux}
GW_URL=http://127.0.0.1:$GW_PORT/v1/chat/completions
MOCK_URL=http://127.0.0.1:$MOCK_PORT/v1/chat/completions
MSG='"messages":[{"role":"user","content":"hi"}]'

# Loopback only: never route the benchmark through a proxy from the environment.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
# Keep logging off the measured path (llmux's log filter; override by exporting LLMUX_LOG).
export LLMUX_LOG=${LLMUX_LOG:-warn}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench.XXXXXX")
RESULTS=$WORK/results.txt
: >"$RESULTS"
PIDS=()

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
record() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid _
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 1 50); do # up to 5 s for a graceful stop, then SIGKILL
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    local f
    for f in "$WORK"/gateway.log "$WORK"/mock.log; do
      [[ -s $f ]] || continue
      log "last lines of $(basename "$f"):"
      tail -n 20 "$f" >&2 || true
    done
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_us() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s\n' "$t"
  else
    printf '%s\n' "$(($(date +%s%N) / 1000))"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# cpu_ticks PID... -> utime + stime of the processes (all their threads), in clock ticks.
cpu_ticks() {
  local sum=0 pid t
  for pid in "$@"; do
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    t=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    sum=$((sum + ${t:-0}))
  done
  printf '%s\n' "$sum"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# us_per_req TICKS REQUESTS -> microseconds of CPU per request.
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }'; }

# post URL BODY [HEADER...] -> prints the HTTP status (000 when nothing answered).
post() {
  local url=$1 body=$2
  shift 2
  local hdr=() h
  for h in "$@"; do hdr+=(-H "$h"); done
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 --noproxy '*' \
    -H 'Content-Type: application/json' ${hdr[@]+"${hdr[@]}"} -d "$body" "$url" || true
}

# count_chunks URL MODEL [HEADER...] -> number of `data: {...}` events in a streamed answer.
count_chunks() {
  local url=$1 model=$2
  shift 2
  local hdr=() h
  for h in "$@"; do hdr+=(-H "$h"); done
  { curl -sN --max-time 10 --noproxy '*' -H 'Content-Type: application/json' ${hdr[@]+"${hdr[@]}"} \
      -d "{\"model\":\"$model\",\"stream\":true,$MSG}" "$url" || true; } | grep -c '^data: *{' || true
}

# start NAME LLMUX_WORKERS ARGS... -> starts target/release/llmux ARGS in the background, sets STARTED_PID.
start() {
  local name=$1 workers=$2
  shift 2
  if [[ -n $workers ]]; then
    LLMUX_WORKERS=$workers "$BIN" "$@" >"$WORK/$name.log" 2>&1 &
  else
    "$BIN" "$@" >"$WORK/$name.log" 2>&1 &
  fi
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# wait_ok NAME PID URL BODY T0_US -> polls every 5 ms until a POST answers 200 (at most 3000 polls
# and 20 s); prints the milliseconds from T0_US.
wait_ok() {
  local name=$1 pid=$2 url=$3 body=$4 t0=$5 deadline i
  deadline=$((t0 + 20000000))
  for ((i = 0; i < 3000; i++)); do
    if [[ $(post "$url" "$body") == 200 ]]; then
      printf '%s\n' "$((($(now_us) - t0) / 1000))"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
    (($(now_us) < deadline)) || break
    sleep 0.005
  done
  die "$name did not answer 200 on $url within 20 s"
}

# --------------------------------------------------------------------------------------------------
# Helpers in Python (stdlib only): result parsing, the idle-connection holder, the report.

cat >"$WORK/idle_conns.py" <<'PY'
"""Open N idle TCP connections to HOST:PORT, hold them while sampling PID's VmRSS, close them."""
import json
import resource
import socket
import sys
import time

host, port, n, pid, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])


def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


want = n + 256
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < want:
    try:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= want else want
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)

before = rss_kb()
socks, failed, last_error = [], 0, ""
deadline = time.monotonic() + 60
for _ in range(n):
    if time.monotonic() > deadline or failed > 100:
        break
    try:
        socks.append(socket.create_connection((host, port), timeout=5))
    except OSError as e:
        failed += 1
        last_error = str(e)

peak = rss_kb()
end = time.monotonic() + hold
while time.monotonic() < end:
    time.sleep(0.25)
    peak = max(peak, rss_kb())

still_open = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1, socket.MSG_PEEK):
            still_open += 1
    except BlockingIOError:
        still_open += 1
    except OSError:
        pass
for s in socks:
    s.close()

json.dump({"requested": n, "opened": len(socks), "failed": failed, "last_error": last_error,
           "still_open": still_open, "rss_before_kb": before, "rss_peak_kb": peak,
           "nofile": soft}, sys.stdout)
print()
PY

cat >"$WORK/bench.py" <<'PY'
"""parse TOOL FILE: one load-generator result -> `ok_rps p50_ms p99_ms ok non2xx errors`.
report RESULTS: the markdown table."""
import json
import re
import sys

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_oha(text):
    d = json.loads(text[text.index("{"):])
    s = d.get("summary", {})
    codes = {str(k): int(v) for k, v in (d.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    non2xx = sum(v for k, v in codes.items() if not k.startswith("2"))
    errors = sum(int(v) for k, v in (d.get("errorDistribution") or {}).items()
                 if "deadline" not in k)
    total_s = s.get("total") or 0
    lat = d.get("latencyPercentiles") or {}
    ms = lambda v: "n/a" if v is None else f"{v * 1e3:.3f}"
    rps = f"{ok / total_s:.1f}" if total_s else "n/a"
    return [rps, ms(lat.get("p50")), ms(lat.get("p99")), ok, non2xx, errors]


def parse_wrk(text):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    total = int(m.group(1)) if m else 0
    secs = float(m.group(2)) * UNIT_MS[m.group(3)] / 1e3 if m else 0
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(x) for x in errs.groups()) if errs else 0

    def pct(p):
        m = re.search(rf"^\s*{p}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return f"{float(m.group(1)) * UNIT_MS[m.group(2)]:.3f}" if m else "n/a"

    ok = total - non2xx
    rps = f"{ok / secs:.1f}" if secs else "n/a"
    return [rps, pct(50), pct(99), ok, non2xx, errors]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def report(path):
    r = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            r[k] = v
    g = lambda k: r.get(k, "n/a") or "n/a"

    def mib(k):
        v = num(r.get(k))
        return "n/a" if v is None else f"{v / 1024:.1f} MiB"

    def ratio(a, b):
        a, b = num(r.get(a)), num(r.get(b))
        return f"{a / b:.2f}x" if a is not None and b else "n/a"

    def delta(a, b):
        a, b = num(r.get(a)), num(r.get(b))
        return f"+{a - b:.3f} ms" if a is not None and b is not None else "n/a"

    def ms(k):
        v = num(r.get(k))
        return "n/a" if v is None else f"{v:.3f} ms"

    rows = [
        ("Start-up: process start to first 200 on POST /v1/chat/completions",
         f"{g('startup_ms')} ms", "", ""),
        ("Idle RSS (after start-up and one request)", mib("idle_rss_kb"), "", ""),
        (f"Throughput, non-stream, {g('conns')} connections, {g('duration')}",
         f"{g('tput_gw_rps')} req/s", f"{g('tput_mock_rps')} req/s",
         ratio("tput_gw_rps", "tput_mock_rps")),
        ("Throughput via nginx (yardstick, same run)",
         f"{g('tput_nginx_rps')} req/s", f"{g('tput_mock_rps')} req/s",
         ratio("tput_nginx_rps", "tput_mock_rps") + " (gateway vs nginx: "
         + ratio("tput_gw_rps", "tput_nginx_rps") + ")"),
        ("CPU per request in the throughput run: proxy process (mock in brackets)",
         f"{g('cpu_gw_proxy_us')} µs ({g('cpu_gw_mock_us')} µs)",
         f"({g('cpu_mock_mock_us')} µs)",
         f"nginx: {g('cpu_nginx_proxy_us')} µs ({g('cpu_nginx_mock_us')} µs)"),
        (f"Latency p50 at {g('rate')} req/s, non-stream", ms("lat_gw_p50"), ms("lat_mock_p50"),
         delta("lat_gw_p50", "lat_mock_p50")),
        (f"Latency p99 at {g('rate')} req/s, non-stream", ms("lat_gw_p99"), ms("lat_mock_p99"),
         delta("lat_gw_p99", "lat_mock_p99")),
        (f"Stream, {g('stream_chunks')} chunks, time to last byte p50 at {g('stream_rate')} req/s",
         ms("stream_gw_p50"), ms("stream_mock_p50"), delta("stream_gw_p50", "stream_mock_p50")),
        (f"Stream, {g('stream_chunks')} chunks, time to last byte p99 at {g('stream_rate')} req/s",
         ms("stream_gw_p99"), ms("stream_mock_p99"), delta("stream_gw_p99", "stream_mock_p99")),
        (f"RSS with {g('idle_conns_open')} idle connections open", mib("idle_conns_rss_kb"), "",
         f"{g('idle_conns_per_conn_kib')} KiB/conn over idle"),
        ("Loaded RSS (VmHWM after the throughput run)", mib("loaded_hwm_kb"), "", ""),
    ]
    if "tput_nginx_rps" not in r:
        rows = [row for row in rows if "nginx" not in row[0]]
    print("| Metric | llmux gateway | mock direct | gateway vs direct |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, b, c in rows:
        print(f"| {name} | {a} | {b or '-'} | {c or '-'} |")


if __name__ == "__main__":
    if sys.argv[1] == "parse":
        with open(sys.argv[3], errors="replace") as f:
            text = f.read()
        try:
            out = parse_oha(text) if sys.argv[2] == "oha" else parse_wrk(text)
        except (ValueError, KeyError, AttributeError):
            out = ["n/a", "n/a", "n/a", 0, 0, 0]
        print(*out)
    else:
        report(sys.argv[2])
PY

# --------------------------------------------------------------------------------------------------
# Build and tools.

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release"
  cargo build --release
fi
[[ -x $BIN ]] || die "$BIN not found or not executable"
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TOOL=${BENCH_TOOL:-}
if [[ -z $TOOL ]]; then
  if command -v oha >/dev/null; then
    TOOL=oha
  else
    log "oha not found: cargo install oha --locked"
    if cargo install oha --locked; then
      TOOL=oha
    elif command -v wrk >/dev/null; then
      log "oha could not be installed; falling back to wrk"
      TOOL=wrk
    else
      die "no load generator: install oha (cargo install oha --locked) or wrk"
    fi
  fi
fi
command -v "$TOOL" >/dev/null || die "$TOOL not found"
OHA_FMT=()
WRK_RATE=0
case $TOOL in
  oha)
    # Current oha: --output-format json; older releases: -j.
    help=$(oha --help 2>&1 || true)
    if [[ $help == *--output-format* ]]; then OHA_FMT=(--output-format json); else OHA_FMT=(-j); fi
    TOOL_VERSION=$(oha --version 2>&1 || true)
    TOOL_VERSION=${TOOL_VERSION%%$'\n'*}
    ;;
  wrk)
    # wrk2 (often installed as wrk) has a fixed-rate mode, -R; plain wrk has none.
    help=$(wrk --help 2>&1 || true)
    if [[ $help == *--rate* ]]; then WRK_RATE=1; fi
    TOOL_VERSION=$(wrk -v 2>&1 || true)
    TOOL_VERSION=${TOOL_VERSION%%$'\n'*}
    ;;
  *) die "BENCH_TOOL must be oha or wrk" ;;
esac
log "load generator: $TOOL_VERSION"

# load NAME URL BODY CONNS QPS(empty = as fast as possible) DURATION [HEADER...]
# -> runs the load generator, leaves `ok_rps p50_ms p99_ms ok non2xx errors` in $WORK/NAME.res.
load() {
  local name=$1 url=$2 body=$3 conns=$4 qps=$5 dur=$6
  shift 6
  local out=$WORK/$name.out h
  case $TOOL in
    oha)
      local args=(--no-tui "${OHA_FMT[@]}" -z "$dur" -c "$conns" -m POST -T application/json -d "$body")
      [[ -z $qps ]] || args+=(-q "$qps" --latency-correction)
      for h in "$@"; do args+=(-H "$h"); done
      oha "${args[@]}" "$url" >"$out" 2>"$WORK/$name.err" || log "oha exited non-zero for $name"
      ;;
    wrk)
      if [[ -n $qps && $WRK_RATE != 1 ]]; then
        log "$name: skipped (plain wrk has no fixed-rate mode; install oha or wrk2)"
        echo "n/a n/a n/a 0 0 0" >"$WORK/$name.res"
        return 0
      fi
      local lua=$WORK/$name.lua threads
      {
        printf 'wrk.method = "POST"\n'
        printf 'wrk.headers["Content-Type"] = "application/json"\n'
        for h in "$@"; do printf 'wrk.headers["%s"] = "%s"\n' "${h%%:*}" "${h#*: }"; done
        printf 'wrk.body = [==[%s]==]\n' "$body"
      } >"$lua"
      threads=$(nproc)
      ((threads <= conns)) || threads=$conns
      local args=(-t "$threads" -c "$conns" -d "$dur" --latency -s "$lua")
      [[ -z $qps ]] || args+=(-R "$qps")
      wrk "${args[@]}" "$url" >"$out" 2>&1 || log "wrk exited non-zero for $name"
      ;;
  esac
  python3 "$WORK/bench.py" parse "$TOOL" "$out" >"$WORK/$name.res"
  local r
  read -r -a r <"$WORK/$name.res"
  log "$name: ${r[0]} ok req/s, p50 ${r[1]} ms, p99 ${r[2]} ms (2xx ${r[3]}, non-2xx ${r[4]}, errors ${r[5]})"
  if [[ ${r[4]} != 0 || ${r[5]} != 0 ]]; then
    record warn_"$name" "non-2xx ${r[4]}, errors ${r[5]}"
  fi
}
res() { # res NAME FIELD(0..5)
  local r
  read -r -a r <"$WORK/$1.res"
  printf '%s\n' "${r[$2]}"
}

# --------------------------------------------------------------------------------------------------
# Start the mock upstream and the gateway.

port_in_use "$MOCK_PORT" && die "127.0.0.1:$MOCK_PORT is already in use"
port_in_use "$GW_PORT" && die "127.0.0.1:$GW_PORT is already in use"

# Both processes and the idle-connection holder need many file descriptors.
want_fd=$((IDLE_CONNS + 1024))
hard_fd=$(ulimit -Hn)
if [[ $hard_fd != unlimited ]] && ((hard_fd < want_fd)); then
  ulimit -Hn "$want_fd" 2>/dev/null || true
  hard_fd=$(ulimit -Hn)
fi
if [[ $hard_fd == unlimited ]] || ((hard_fd >= want_fd)); then ulimit -Sn "$want_fd"; else ulimit -Sn "$hard_fd"; fi
soft_fd=$(ulimit -Sn)
[[ $soft_fd == unlimited ]] || ((soft_fd >= want_fd)) ||
  log "warning: open-file limit $soft_fd < $want_fd; the idle-connection test may fall short"

CFG=$WORK/gateway.yaml
cat >"$CFG" <<EOF
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
  # Used only if the gateway does not forward the x-mock-* headers: the mock also reads its knobs
  # from the model name.
  - model_name: bench-stream
    litellm_params:
      model: openai/bench-model-mock-chunks-$STREAM_CHUNKS
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
EOF

GW_BODY="{\"model\":\"bench\",$MSG}"
MOCK_BODY="{\"model\":\"bench-model\",$MSG}"

log "starting the mock upstream on 127.0.0.1:$MOCK_PORT"
t0=$(now_us)
start mock "${BENCH_MOCK_WORKERS:-}" mock --listen "127.0.0.1:$MOCK_PORT"
MOCK_PID=$STARTED_PID
mock_ms=$(wait_ok mock "$MOCK_PID" "$MOCK_URL" "$MOCK_BODY" "$t0")
log "mock ready after $mock_ms ms"

log "starting the gateway on 127.0.0.1:$GW_PORT"
t0=$(now_us)
start gateway "${BENCH_GATEWAY_WORKERS:-}" serve --config "$CFG" --listen "127.0.0.1:$GW_PORT"
GW_PID=$STARTED_PID
startup_ms=$(wait_ok gateway "$GW_PID" "$GW_URL" "$GW_BODY" "$t0")
log "gateway answered 200 after $startup_ms ms"
record startup_ms "$startup_ms"

# The yardstick: nginx as a plain keep-alive reverse proxy in front of the same mock.
NGINX_BIN=${BENCH_NGINX:-$(command -v nginx || true)}
[[ $NGINX_BIN != 0 ]] || NGINX_BIN=
NGINX_PIDS=()
if [[ -n $NGINX_BIN ]]; then
  port_in_use "$NGINX_PORT" && die "127.0.0.1:$NGINX_PORT is already in use"
  nginx_workers=${BENCH_GATEWAY_WORKERS:-$(nproc)}
  mkdir -p "$WORK/nginx"
  {
    # As root, nginx's workers would switch to `nobody`, who cannot use this private directory.
    [[ $(id -u) != 0 ]] || echo "user root;"
    cat <<EOF
daemon off;
worker_processes $nginx_workers;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$WORK/nginx/nginx.conf"
  "$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  NGINX_URL=http://127.0.0.1:$NGINX_PORT/v1/chat/completions
  nginx_ms=$(wait_ok nginx "$NGINX_PID" "$NGINX_URL" "$MOCK_BODY" "$(now_us)")
  mapfile -t NGINX_PIDS < <(pgrep -P "$NGINX_PID")
  NGINX_PIDS+=("$NGINX_PID")
  NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 || true)
  log "nginx yardstick ready after $nginx_ms ms ($NGINX_VERSION, $nginx_workers workers)"
else
  log "nginx not found: the nginx yardstick is skipped (apt-get install nginx-light, or BENCH_NGINX=path)"
fi

sleep 1
record idle_rss_kb "$(rss_kb "$GW_PID")"

# Which streaming knob reaches the mock through the gateway: the header, or the model name.
STREAM_HDR="x-mock-chunks: $STREAM_CHUNKS"
direct_chunks=$(count_chunks "$MOCK_URL" bench-model "$STREAM_HDR")
gw_chunks=$(count_chunks "$GW_URL" bench "$STREAM_HDR")
if ((gw_chunks >= STREAM_CHUNKS)); then
  STREAM_MODE="header x-mock-chunks forwarded by the gateway"
  GW_STREAM_MODEL=bench
  MOCK_STREAM_MODEL=bench-model
  STREAM_HDRS=("$STREAM_HDR")
else
  STREAM_MODE="model name bench-model-mock-chunks-$STREAM_CHUNKS (header not forwarded)"
  GW_STREAM_MODEL=bench-stream
  MOCK_STREAM_MODEL=bench-model-mock-chunks-$STREAM_CHUNKS
  STREAM_HDRS=()
  direct_chunks=$(count_chunks "$MOCK_URL" "$MOCK_STREAM_MODEL")
  gw_chunks=$(count_chunks "$GW_URL" "$GW_STREAM_MODEL")
fi
log "streaming knob: $STREAM_MODE (events: gateway $gw_chunks, direct $direct_chunks)"
((gw_chunks >= STREAM_CHUNKS)) || record warn_stream_gateway "gateway stream had $gw_chunks events, expected >= $STREAM_CHUNKS"
((direct_chunks >= STREAM_CHUNKS)) || record warn_stream_direct "mock stream had $direct_chunks events, expected >= $STREAM_CHUNKS"

# --------------------------------------------------------------------------------------------------
# Measurements.

if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
  log "warm-up ($WARMUP each)"
  load warmup_gw "$GW_URL" "$GW_BODY" "$CONNS" "" "$WARMUP"
  load warmup_mock "$MOCK_URL" "$MOCK_BODY" "$CONNS" "" "$WARMUP"
fi

# tput NAME URL BODY PROXY_PIDS... -> a throughput run; records req/s and the CPU per request of
# the mock and of the proxy in front of it (if any).
tput() {
  local name=$1 url=$2 body=$3
  shift 3
  local m0 p0 m1 p1 n
  m0=$(cpu_ticks "$MOCK_PID")
  p0=$(cpu_ticks "$@")
  load "tput_$name" "$url" "$body" "$CONNS" "" "$DURATION"
  m1=$(cpu_ticks "$MOCK_PID")
  p1=$(cpu_ticks "$@")
  n=$(res "tput_$name" 3)
  record "tput_${name}_rps" "$(res "tput_$name" 0)"
  record "cpu_${name}_mock_us" "$(us_per_req $((m1 - m0)) "$n")"
  [[ $# == 0 ]] || record "cpu_${name}_proxy_us" "$(us_per_req $((p1 - p0)) "$n")"
}

log "throughput: $CONNS connections, $DURATION"
tput gw "$GW_URL" "$GW_BODY" "$GW_PID"
record loaded_hwm_kb "$(hwm_kb "$GW_PID")"
tput mock "$MOCK_URL" "$MOCK_BODY"
if [[ -n $NGINX_BIN ]]; then
  tput nginx "$NGINX_URL" "$MOCK_BODY" "${NGINX_PIDS[@]}"
fi

log "latency at $RATE req/s, $DURATION"
load lat_gw "$GW_URL" "$GW_BODY" "$CONNS" "$RATE" "$DURATION"
load lat_mock "$MOCK_URL" "$MOCK_BODY" "$CONNS" "$RATE" "$DURATION"
for t in gw mock; do
  record "lat_${t}_p50" "$(res "lat_$t" 1)"
  record "lat_${t}_p99" "$(res "lat_$t" 2)"
done

log "streaming, $STREAM_CHUNKS chunks, $STREAM_RATE req/s, $DURATION"
load stream_gw "$GW_URL" "{\"model\":\"$GW_STREAM_MODEL\",\"stream\":true,$MSG}" "$CONNS" "$STREAM_RATE" "$DURATION" \
  ${STREAM_HDRS[@]+"${STREAM_HDRS[@]}"}
load stream_mock "$MOCK_URL" "{\"model\":\"$MOCK_STREAM_MODEL\",\"stream\":true,$MSG}" "$CONNS" "$STREAM_RATE" "$DURATION" \
  ${STREAM_HDRS[@]+"${STREAM_HDRS[@]}"}
for t in gw mock; do
  record "stream_${t}_p50" "$(res "stream_$t" 1)"
  record "stream_${t}_p99" "$(res "stream_$t" 2)"
done

log "idle connections: $IDLE_CONNS, held ${IDLE_HOLD}s"
sleep 1
idle_json=$(python3 "$WORK/idle_conns.py" 127.0.0.1 "$GW_PORT" "$IDLE_CONNS" "$GW_PID" "$IDLE_HOLD")
log "idle connections: $idle_json"
read -r opened still_open before_kb peak_kb < <(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print(d["opened"], d["still_open"], d["rss_before_kb"], d["rss_peak_kb"])' "$idle_json")
record idle_conns_open "$opened"
record idle_conns_rss_kb "$peak_kb"
if ((opened > 0)); then
  record idle_conns_per_conn_kib "$(awk -v a="$peak_kb" -v b="$before_kb" -v n="$opened" 'BEGIN { printf "%.2f", (a - b) / n }')"
fi
((opened >= IDLE_CONNS)) || record warn_idle_opened "only $opened of $IDLE_CONNS connections opened"
((still_open >= opened)) || record warn_idle_closed "the gateway closed $((opened - still_open)) idle connections within ${IDLE_HOLD}s"
kill -0 "$GW_PID" 2>/dev/null || die "the gateway died during the benchmark"

record conns "$CONNS"
record duration "$DURATION"
record rate "$RATE"
record stream_rate "$STREAM_RATE"
record stream_chunks "$STREAM_CHUNKS"

# --------------------------------------------------------------------------------------------------
# Report.

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo
echo "## llmux end-to-end load benchmark"
echo
echo "- Command: \`benches/load.sh\` (commit $rev, $(date -u +%Y-%m-%dT%H:%MZ))"
echo "- Machine: ${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r); gateway, mock and load generator share it"
if [[ $TOOL == oha ]]; then rate_note="oha -q with --latency-correction"; else rate_note="wrk2 -R; n/a with plain wrk"; fi
echo "- Load generator: $TOOL_VERSION; fixed-rate runs: $rate_note"
echo "- Gateway LLMUX_WORKERS=${BENCH_GATEWAY_WORKERS:-unset}, mock LLMUX_WORKERS=${BENCH_MOCK_WORKERS:-unset}; streaming knob: $STREAM_MODE"
if [[ -n $NGINX_BIN ]]; then
  echo "- Yardstick: $NGINX_VERSION, $nginx_workers workers, keep-alive upstream to the same mock"
fi
echo
python3 "$WORK/bench.py" report "$RESULTS"
if grep -q '^warn_' "$RESULTS"; then
  echo
  echo "Warnings:"
  grep '^warn_' "$RESULTS" | sed -e 's/^warn_\([^=]*\)=/- \1: /'
fi
