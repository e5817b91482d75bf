#!/usr/bin/env bash
# Instructions per request of the yardstick itself: `llmux mock` under callgrind (one worker, the
# epoll driver), called directly or behind the gateway (one shard, run natively). The mock is
# every load run's upstream and shares the machine with the proxies it measures, so its own
# cost, and any extra cost a proxy's requests cause it, shows in their throughput.
#
# Usage: benches/mock_callgrind.sh
# Knobs (environment):
#   BENCH_MOCK_BIN=path   the binary that runs the mock (default: target/release/llmux)
#   BENCH_BIN=path        the gateway in front of it (default: the mock's binary)
#   BENCH_N=2000          measured requests (streams: half as many)
# Prints a markdown table: path (direct / behind the gateway), kind, instructions per request.
# All traffic goes to 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOCK_BIN=${BENCH_MOCK_BIN:-$ROOT/target/release/llmux}
GW_BIN=${BENCH_BIN:-$MOCK_BIN}
N=${BENCH_N:-2000}
MOCK_PORT=18291
GW_PORT=18290
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH" LLMUX_LOG=${LLMUX_LOG:-warn}
for tool in valgrind callgrind_control callgrind_annotate oha curl; do
  command -v $tool >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/llmux-mockcg.XXXXXX")
PIDS=()
cleanup() {
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_http() { # url
  local i
  for i in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

cat >"$WORK/gw.yaml" <<YAML
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
  - model_name: bench-stream
    litellm_params:
      model: openai/bench-model-mock-chunks-20
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
YAML
valgrind --tool=callgrind --callgrind-out-file="$WORK/mock.%p.out" \
  "$MOCK_BIN" mock --listen 127.0.0.1:$MOCK_PORT --workers 1 --io-driver epoll >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=($MOCK_PID)
"$GW_BIN" serve --config "$WORK/gw.yaml" --listen 127.0.0.1:$GW_PORT --workers 1 >"$WORK/gw.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/health"
wait_http "http://127.0.0.1:$GW_PORT/health/ready"

printf '| path | request | mock instructions / request |\n| --- | --- | ---: |\n'
for path in direct gateway; do
  for kind in non-stream stream; do
    if [[ $path == direct ]]; then
      url=http://127.0.0.1:$MOCK_PORT/v1/chat/completions model=bench-model
      [[ $kind == stream ]] && model=bench-model-mock-chunks-20
    else
      url=http://127.0.0.1:$GW_PORT/v1/chat/completions model=bench
      [[ $kind == stream ]] && model=bench-stream
    fi
    stream="" n=$N
    [[ $kind == stream ]] && stream='"stream":true,' n=$((N / 2))
    body="{\"model\":\"$model\",$stream\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
    load() {
      oha --no-tui --output-format json -n "$1" -c 8 -m POST -H 'content-type: application/json' \
        -d "$body" "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["statusCodeDistribution"])'
    }
    load 200 >/dev/null
    callgrind_control -z $MOCK_PID >/dev/null
    codes=$(load "$n")
    [[ $codes == "{'200': $n}" ]] || { echo "not all 200: $codes" >&2; exit 1; }
    rm -f "$WORK"/mock.*.out.*
    callgrind_control -d $MOCK_PID >/dev/null
    dump=$(ls "$WORK"/mock.*.out.* | head -1)
    total=$(awk '/^(totals|summary):/ { print $2; exit }' "$dump")
    printf '| %s | %s | %s |\n' "$path" "$kind" $((total / n))
  done
done
