#!/usr/bin/env bash
# Instructions per request of the gateway, counted by callgrind: deterministic for the same
# binary and inputs whatever else the machine is doing, so a cost of a few percent shows where
# req/s on a shared 2-core machine cannot. Each variant is the same build with one config
# setting changed (a feature on and off).
#
# Usage: benches/callgrind.sh                 (from anywhere; works in the repository root)
# Knobs (environment):
#   BENCH_SKIP_BUILD=1        use the existing binary (default: cargo build --release)
#   BENCH_BIN=path            the llmux binary (default: target/release/llmux)
#   BENCH_MOCK_BIN=path       the binary that runs the mock (default: BENCH_BIN): two builds
#                             measured against the same upstream
#   BENCH_N=300               measured requests per kind
#   BENCH_KEEP=1              keep the work directory (callgrind dumps for callgrind_annotate)
#   BENCH_CHUNKS=20           events per streamed answer
#   BENCH_MAPPED=1            the deployment is an Anthropic-format upstream (the mock's
#                             /v1/messages): the mapped path instead of the OpenAI passthrough
#   BENCH_KEEPALIVE=1         send over 8 keep-alive connections (oha) instead of one new
#                             connection per request (curl): what a loaded gateway sees, without
#                             the accept and connection set-up each curl request adds
#   BENCH_BODY_FILE=path      the non-stream request body (default: one short message); its
#                             `model` must be `m`
#   BENCH_VARIANTS="name=yaml;name=yaml"  the `llmux:` section of each variant (YAML flow
#                             style); default: relayed-JSON checks on and off. A variant may
#                             add `|params|top`: deployment parameters (`rpm: 5, tpm: 9`) and
#                             top-level sections (`router_settings: {num_retries: 0}`)
# Prints a markdown table: variant, kind (non-stream / stream), instructions per request.
# The gateway runs on the epoll driver with one shard: valgrind serialises threads and does not
# treat io_uring_enter as a blocking call, so under it an io_uring shard can stall the process.
# All traffic goes to 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${BENCH_BIN:-$ROOT/target/release/llmux}
N=${BENCH_N:-300}
CHUNKS=${BENCH_CHUNKS:-20}
MOCK_PORT=${BENCH_MOCK_PORT:-18191}
GW_PORT=${BENCH_GW_PORT:-18190}
if [[ -n ${BENCH_MAPPED:-} ]]; then
  DEPLOYMENT_MODEL=anthropic/up-mock-chunks-$CHUNKS
  DEPLOYMENT_BASE=http://127.0.0.1:$MOCK_PORT
else
  DEPLOYMENT_MODEL=openai/up-mock-chunks-$CHUNKS
  DEPLOYMENT_BASE=http://127.0.0.1:$MOCK_PORT/v1
fi
VARIANTS=${BENCH_VARIANTS:-"checks-on={upstream: {check_relayed_json: true}};checks-off={upstream: {check_relayed_json: false}}"}

unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export LLMUX_LOG=${LLMUX_LOG:-warn}
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "callgrind_control is required" >&2; exit 1; }

if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  cargo build --release >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/llmux-callgrind.XXXXXX")
PIDS=()
cleanup() {
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  if [[ -n ${BENCH_KEEP:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

wait_http() { # url, attempts of 100 ms
  local i
  for i in $(seq 1 "$2"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

"${BENCH_MOCK_BIN:-$BIN}" mock --listen 127.0.0.1:$MOCK_PORT --workers 1 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/health" 100

send() { # kind, count
  local body
  if [[ $1 == stream ]]; then
    body='{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
  elif [[ -n ${BENCH_BODY_FILE:-} ]]; then
    body=$(cat "$BENCH_BODY_FILE")
  else
    body='{"model":"m","messages":[{"role":"user","content":"hi"}]}'
  fi
  if [[ -n ${BENCH_KEEPALIVE:-} ]]; then
    command -v oha >/dev/null || { echo "BENCH_KEEPALIVE needs oha" >&2; exit 1; }
    local codes
    codes=$(oha --no-tui --output-format json -n "$2" -c 8 -m POST \
      -H 'content-type: application/json' -d "$body" \
      "http://127.0.0.1:$GW_PORT/v1/chat/completions" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["statusCodeDistribution"])')
    # Every answer must be a 200: a failing upstream would measure the error path instead.
    [[ $codes == "{'200': $2}" ]] || { echo "not all 200: $codes" >&2; exit 1; }
    return
  fi
  local i
  for i in $(seq 1 "$2"); do
    curl -sS -N -o /dev/null -H 'content-type: application/json' \
      -d "$body" "http://127.0.0.1:$GW_PORT/v1/chat/completions"
  done
}

# The counted part of a dump: its `totals:` (or `summary:`) line.
instructions() {
  awk '/^(totals|summary):/ { print $2; exit }' "$1"
}

printf '| variant | request | instructions / request |\n| --- | --- | ---: |\n'
IFS=';' read -r -a variant_list <<<"$VARIANTS"
for v in "${variant_list[@]}"; do
  name=${v%%=*}
  IFS='|' read -r extra params top <<<"${v#*=}"
  params_lines=""
  if [[ -n ${params:-} ]]; then
    params_lines="      ${params//, /$'\n'      }"
  fi
  cfg=$WORK/$name.yaml
  cat >"$cfg" <<EOF
model_list:
  - model_name: m
    litellm_params:
      model: $DEPLOYMENT_MODEL
      api_base: $DEPLOYMENT_BASE
      api_key: sk-bench
$params_lines
llmux: $extra
${top:-}
EOF
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p.out" \
    "$BIN" serve --config "$cfg" --listen 127.0.0.1:$GW_PORT --workers 1 --io-driver epoll \
    >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  wait_http "http://127.0.0.1:$GW_PORT/health/ready" 600
  for kind in non-stream stream; do
    send "$kind" 20 # warm-up: pools, caches, lazily built state
    callgrind_control -z "$pid" >/dev/null
    send "$kind" "$N"
    callgrind_control -d "$kind" "$pid" >/dev/null
    dump=$(ls -t "$WORK/$name.$pid.out".* | head -1)
    total=$(instructions "$dump")
    printf '| %s | %s | %s |\n' "$name" "$kind" "$((total / N))"
  done
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
done
