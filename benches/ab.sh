#!/usr/bin/env bash
# A/B of one config setting on the same build: req/s and the gateway's CPU time per request,
# in alternating runs (A, B, A, B, ...) so that a change in the machine's load hits both alike.
# Report the median of each, the exporter thread's share of the gateway's CPU, and each round's
# B/A ratio with their median; CPU per request is the steadier number on a shared machine. The
# mock also answers OTLP/HTTP at /v1/traces, so a variant may export spans to it
# (`{tracing: {enabled: true, endpoint: "http://127.0.0.1:18281"}}`): the exporter thread's CPU
# is the gateway's.
#
# Usage: benches/ab.sh                      (from anywhere; works in the repository root)
# Knobs (environment):
#   BENCH_SKIP_BUILD=1   use the existing binary (default: cargo build --release)
#   BENCH_BIN=path       the llmux binary (default: target/release/llmux)
#   BENCH_A / BENCH_B    the `llmux:` section of each variant, YAML flow style
#                        (default: relayed-JSON checks on / off)
#   BENCH_STREAM=true    streamed requests (BENCH_CHUNKS=20 events each) or false
#   BENCH_GENERAL        a `general_settings:` section for both (YAML flow style)
#   BENCH_AUTH_A / BENCH_AUTH_B   the key each variant's requests send (Authorization: Bearer);
#                        with the same config for both, this compares the master key with a
#                        virtual key
#   BENCH_ROUNDS=5  BENCH_DURATION=8s  BENCH_CONNS=32  BENCH_WORKERS=1
# Needs oha (`cargo install oha --locked`). All traffic goes to 127.0.0.1; every process
# started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${BENCH_BIN:-$ROOT/target/release/llmux}
A=${BENCH_A:-"{upstream: {check_relayed_json: true}}"}
B=${BENCH_B:-"{upstream: {check_relayed_json: false}}"}
STREAM=${BENCH_STREAM:-true}
CHUNKS=${BENCH_CHUNKS:-20}
ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-8s}
CONNS=${BENCH_CONNS:-32}
WORKERS=${BENCH_WORKERS:-1}
GENERAL=${BENCH_GENERAL:-"{}"}
MOCK_PORT=${BENCH_MOCK_PORT:-18281}
GW_PORT=${BENCH_GW_PORT:-18280}

unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export LLMUX_LOG=${LLMUX_LOG:-warn}
command -v oha >/dev/null || { echo "oha is required: cargo install oha --locked" >&2; exit 1; }
[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/llmux-ab.XXXXXX")
PIDS=()
cleanup() {
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ticks() { sed -e 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# The span exporter's thread alone (0 when it never started): its share of the gateway's CPU.
otel_ticks() {
  local t sum=0
  for t in /proc/"$1"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == llmux-otel ]] || continue
    sum=$((sum + $(sed -e 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')))
  done
  echo "$sum"
}
# Minor page faults: fresh memory touched (a large buffer allocated per batch shows here, in
# kernel time that instruction counts miss).
faults() { sed -e 's/^.*) //' "/proc/$1/stat" | awk '{print $8}'; }
HZ=$(getconf CLK_TCK)
wait_ready() {
  local i
  for i in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  return 1
}

"$BIN" mock --listen 127.0.0.1:$MOCK_PORT --workers 1 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
mock_pid=$!
wait_ready "http://127.0.0.1:$MOCK_PORT/health"

body="{\"model\":\"m\",\"stream\":$STREAM,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
url=http://127.0.0.1:$GW_PORT/v1/chat/completions
declare -A RPS CPU P99 MOCK FLT OTEL
RATIOS=
for round in $(seq 1 "$ROUNDS"); do
  for v in A B; do
    extra=$A
    [[ $v == B ]] && extra=$B
    cat >"$WORK/$v.yaml" <<EOF
model_list:
  - model_name: m
    litellm_params:
      model: openai/up-mock-chunks-$CHUNKS
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
llmux: $extra
general_settings: $GENERAL
EOF
    "$BIN" serve --config "$WORK/$v.yaml" --listen 127.0.0.1:$GW_PORT --workers "$WORKERS" \
      >"$WORK/gw.log" 2>&1 &
    pid=$!
    wait_ready "http://127.0.0.1:$GW_PORT/health/ready"
    auth=${BENCH_AUTH_A:-}
    [[ $v == B ]] && auth=${BENCH_AUTH_B:-}
    hdr=(-H 'content-type: application/json')
    [[ -n $auth ]] && hdr+=(-H "authorization: Bearer $auth")
    oha -z 2s -c "$CONNS" --no-tui -m POST "${hdr[@]}" -d "$body" "$url" \
      >/dev/null 2>&1 # warm-up
    t0=$(ticks "$pid") m0=$(ticks "$mock_pid") f0=$(faults "$pid") o0=$(otel_ticks "$pid")
    oha -z "$DURATION" -c "$CONNS" --no-tui --output-format json -m POST \
      "${hdr[@]}" -d "$body" "$url" >"$WORK/out.json" 2>/dev/null
    t1=$(ticks "$pid") m1=$(ticks "$mock_pid") f1=$(faults "$pid") o1=$(otel_ticks "$pid")
    read -r rps ok p99 < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ok = sum(v for k, v in (d.get("statusCodeDistribution") or {}).items() if k.startswith("2"))
p99 = (d.get("latencyPercentiles") or {}).get("p99") or 0
print(round(ok / d["summary"]["total"]), ok, round(p99 * 1000, 3))' "$WORK/out.json")
    cpu=$(awk -v t=$((t1 - t0)) -v n="$ok" -v hz="$HZ" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    mcpu=$(awk -v t=$((m1 - m0)) -v n="$ok" -v hz="$HZ" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    flt=$(awk -v f=$((f1 - f0)) -v n="$ok" 'BEGIN { printf "%.3f", f / n }')
    ocpu=$(awk -v t=$((o1 - o0)) -v n="$ok" -v hz="$HZ" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    OTEL[$v]+="$ocpu "
    [[ $v == A ]] && round_a=$rps
    [[ $v == B ]] && RATIOS+="$(awk -v a="$round_a" -v b="$rps" 'BEGIN { printf "%.3f", b / a }') "
    MOCK[$v]+="$mcpu "
    FLT[$v]+="$flt "
    RPS[$v]+="$rps "
    CPU[$v]+="$cpu "
    P99[$v]+="$p99 "
    echo "round $round $v: $rps req/s, $cpu µs CPU/request (mock $mcpu, exporter thread $ocpu), $flt faults/request, p99 $p99 ms" >&2
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END { print a[int((NR + 1) / 2)] }'; }
ra=$(echo "${RPS[A]}" | median) rb=$(echo "${RPS[B]}" | median)
ca=$(echo "${CPU[A]}" | median) cb=$(echo "${CPU[B]}" | median)
pa=$(echo "${P99[A]}" | median) pb=$(echo "${P99[B]}" | median)
ma=$(echo "${MOCK[A]}" | median) mb=$(echo "${MOCK[B]}" | median)
fa=$(echo "${FLT[A]}" | median) fb=$(echo "${FLT[B]}" | median)
oa=$(echo "${OTEL[A]}" | median) ob=$(echo "${OTEL[B]}" | median)
rr=$(echo "$RATIOS" | median)
echo "| variant | req/s (median of $ROUNDS) | gateway CPU µs/request (median) | of it the exporter thread | mock CPU µs/request | gateway minor faults/request | p99 ms under load (median) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| A: \`$A\` | $ra | $ca | $oa | $ma | $fa | $pa |"
echo "| B: \`$B\` | $rb | $cb | $ob | $mb | $fb | $pb |"
awk -v ra="$ra" -v rb="$rb" -v ca="$ca" -v cb="$cb" -v pa="$pa" -v pb="$pb" \
  'BEGIN { printf "| A vs B | %.3fx | %+.1f %% | | | | %+.3f ms |\n", ra / rb, (ca / cb - 1) * 100, pa - pb }'
# Each round's B against the A just before it: steadier than the ratio of the medians when
# the machine's load drifts during the run.
echo "B / A per round: $RATIOS(median $rr)"
