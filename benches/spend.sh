#!/usr/bin/env bash
# Spend logging at full load: every request of a virtual key read from PostgreSQL becomes a
# LiteLLM_SpendLogs row, and the key's spend is incremented. Reports req/s, the gateway's RSS
# every 10 s of the run (memory must not grow), and rows written against requests served (must
# be equal). Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and oha; the database is
# the script's own and is dropped at the end.
#
# Usage: benches/spend.sh
# Knobs: BENCH_SKIP_BUILD=1  BENCH_BIN=path  BENCH_DURATION=60 (s)  BENCH_CONNS=32
#        BENCH_WORKERS=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${BENCH_BIN:-$ROOT/target/release/llmux}
DURATION=${BENCH_DURATION:-60}
CONNS=${BENCH_CONNS:-32}
WORKERS=${BENCH_WORKERS:-1}
MOCK_PORT=${BENCH_MOCK_PORT:-18381}
GW_PORT=${BENCH_GW_PORT:-18380}
DB=llmux_bench_spend_$$
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)

unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export LLMUX_LOG=${LLMUX_LOG:-warn}
command -v oha >/dev/null || { echo "oha is required: cargo install oha --locked" >&2; exit 1; }
[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/llmux-spend.XXXXXX")
PIDS=()
cleanup() {
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
wait_ready() {
  local i
  for i in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  return 1
}

"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
URL=postgres://postgres@127.0.0.1:5432/$DB
"$BIN" db migrate --database-url "$URL" >&2
KEY=sk-bench-spend-key-0001
TOKEN=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
"${PSQL[@]}" -d "$DB" -c "INSERT INTO \"LiteLLM_VerificationToken\" (token, models, spend) VALUES ('$TOKEN', ARRAY[]::TEXT[], 0)"

"$BIN" mock --listen 127.0.0.1:$MOCK_PORT --workers 1 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$MOCK_PORT/health"
cat >"$WORK/gw.yaml" <<YAML
model_list:
  - model_name: m
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench
general_settings:
  master_key: sk-bench-master-0001
  database_url: $URL
YAML
"$BIN" serve --config "$WORK/gw.yaml" --listen 127.0.0.1:$GW_PORT --workers "$WORKERS" \
  >"$WORK/gw.log" 2>&1 &
GW=$!
wait_ready "http://127.0.0.1:$GW_PORT/health/ready"

body='{"model":"m","messages":[{"role":"user","content":"hi"}]}'
oha -z "${DURATION}s" -c "$CONNS" --no-tui --output-format json -m POST \
  -H 'content-type: application/json' -H "authorization: Bearer $KEY" -d "$body" \
  "http://127.0.0.1:$GW_PORT/v1/chat/completions" >"$WORK/out.json" 2>/dev/null &
OHA=$!
rss=()
for _ in $(seq 10 10 "$DURATION"); do
  sleep 10
  rss+=("$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$GW/status")")
done
wait "$OHA"
read -r served rps < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ok = sum(v for k, v in (d.get("statusCodeDistribution") or {}).items() if k.startswith("2"))
print(ok, round(ok / d["summary"]["total"]))' "$WORK/out.json")
# A graceful stop writes what is buffered (within shutdown_timeout).
kill -TERM "$GW"
wait "$GW" || true
rows=$("${PSQL[@]}" -d "$DB" -c 'SELECT count(*) FROM "LiteLLM_SpendLogs"')
spend=$("${PSQL[@]}" -d "$DB" -c "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '$TOKEN'")
logged=$("${PSQL[@]}" -d "$DB" -c 'SELECT sum(spend) FROM "LiteLLM_SpendLogs"')
echo "| req/s | requests served | rows written | key spend | rows' spend | gateway RSS MiB every 10 s |"
echo "| ---: | ---: | ---: | ---: | ---: | --- |"
echo "| $rps | $served | $rows | $spend | $logged | ${rss[*]} |"
