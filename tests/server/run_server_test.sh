#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kvq serve end to end (ctest label `server`): starts servers on 127.0.0.1 at free ports,
# drives them with the pinned openai npm client (openai_client_test.mjs) and with curl for
# every bad input, 200 concurrent connections, clients that leave mid-stream and API keys,
# checks through /metrics that the KV pool is empty afterwards, and stops them with SIGTERM.
# Needs node and `npm ci` in this folder (scripts/test.sh does it): missing, it fails.
# Usage: run_server_test.sh KVQ_BINARY SHARED_DIR
set -uo pipefail
KVQ=$1
SHARED=$2
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$SHARED/models/tinystories-l6-d256-h64.gguf
KEY=test-key-$$
TMP=$(mktemp -d)
PIDS=()
fails=0

cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
die() { echo "FAIL: $*"; exit 1; }

command -v node >/dev/null || die "node is not installed (apt-get install nodejs npm); the server test needs it"
[ -f "$HERE/node_modules/openai/package.json" ] ||
  die "the openai npm client is not installed: run 'npm ci' in $HERE (scripts/test.sh does)"
command -v curl >/dev/null || die "curl is not installed"

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# start NAME ARGS...: starts kvq serve on a free port; sets PORT_<NAME> and PID_<NAME>.
start() {
  local name=$1; shift
  local port; port=$(free_port)
  "$KVQ" serve --host 127.0.0.1 --port "$port" "$@" > "$TMP/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$port/health" && break
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log"; die "kvq serve ($name) exited at start"; }
    sleep 0.1
  done
  curl -s -o /dev/null "http://127.0.0.1:$port/health" || die "kvq serve ($name) not ready"
  eval "PORT_$name=$port PID_$name=$pid"
}

# expect STATUS CODE [curl args...] against the main server (with the key): the status, and an
# OpenAI error body naming CODE (when CODE is not "-").
expect() {
  local status=$1 code=$2; shift 2
  local got
  got=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$@")
  if [ "$got" != "$status" ]; then fail "$* -> HTTP $got, expected $status: $(head -c 300 "$TMP/body")"; return; fi
  if [ "$code" != "-" ] && ! node -e '
      const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      const e = b.error;
      if (!e || typeof e.message !== "string" || !e.message || typeof e.type !== "string" || e.code !== process.argv[2]) process.exit(1);
    ' "$TMP/body" "$code"; then
    fail "$* -> body is not an error with code $code: $(head -c 300 "$TMP/body")"
  fi
}

# Waits for the background clients (a bare `wait` would wait for the servers too).
CLIENTS=()
wait_clients() {
  for p in "${CLIENTS[@]}"; do wait "$p"; done
  CLIENTS=()
}

metric() { curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# Waits until the server's pool is empty and nothing runs or waits.
expect_idle_and_empty() {
  local port=$1 used active queued
  for _ in $(seq 1 100); do
    used=$(metric "$port" kvq_kv_bytes_used); active=$(metric "$port" kvq_sequences_active)
    queued=$(metric "$port" kvq_sequences_queued)
    [ "$used" = "0" ] && [ "$active" = "0" ] && [ "$queued" = "0" ] && return 0
    sleep 0.1
  done
  fail "server on $port not idle: kv_bytes_used=$used active=$active queued=$queued"
}

# A Llama-3-vocabulary model with random weights: its GGUF carries the Llama-3 chat template.
"$KVQ" synth -o "$TMP/chat.gguf" --vocab-from "$SHARED/fixtures/bpe/vocab/ggml-vocab-llama-bpe.gguf" \
  --dim 64 --heads 2 --layers 1 --ffn 128 --type f16 --ctx 512 > "$TMP/synth.log" 2>&1 ||
  { cat "$TMP/synth.log"; die "kvq synth failed"; }

start main -m "$MODEL" -c 512 -np 16 --cache kivi-2 --kv-budget 256MiB --api-key "$KEY" -t 2
start chat -m "$TMP/chat.gguf" -c 256 --api-key "$KEY" -t 1
M=http://127.0.0.1:$PORT_main

echo "== openai npm client"
node "$HERE/openai_client_test.mjs" "$M/v1" "$KEY" "http://127.0.0.1:$PORT_chat/v1" || fail "openai client checks"

echo "== bad input"
J=(-H 'Content-Type: application/json')
expect 400 invalid_json "${J[@]}" -d '{"prompt": "x",' "$M/v1/completions"
expect 400 invalid_json "${J[@]}" -d '[1,2]' "$M/v1/completions"
expect 400 invalid_type "${J[@]}" -d '{"prompt": 5}' "$M/v1/completions"
expect 400 invalid_type "${J[@]}" -d '{"prompt": "x", "max_tokens": "5"}' "$M/v1/completions"
expect 400 invalid_type "${J[@]}" -d '{"prompt": "x", "temperature": "hot"}' "$M/v1/completions"
expect 400 invalid_type "${J[@]}" -d '{"prompt": "x", "stream": 1}' "$M/v1/completions"
expect 400 invalid_value "${J[@]}" -d '{"prompt": "x", "top_p": 1.5}' "$M/v1/completions"
expect 400 invalid_value "${J[@]}" -d '{"prompt": "x", "max_tokens": 0}' "$M/v1/completions"
expect 400 unknown_parameter "${J[@]}" -d '{"prompt": "x", "max_token": 5}' "$M/v1/completions"
expect 400 unsupported_parameter "${J[@]}" -d '{"prompt": "x", "n": 2}' "$M/v1/completions"
expect 400 missing_parameter "${J[@]}" -d '{"max_tokens": 5}' "$M/v1/completions"
expect 400 empty_prompt "${J[@]}" -d '{"prompt": ""}' "$M/v1/completions"
expect 400 context_length_exceeded "${J[@]}" -d '{"prompt": "x", "max_tokens": 600}' "$M/v1/completions"
node -e 'console.log(JSON.stringify({prompt: "Once upon a time ".repeat(200), max_tokens: 4}))' > "$TMP/long.json"
expect 400 context_length_exceeded "${J[@]}" --data-binary @"$TMP/long.json" "$M/v1/completions"
printf '{"prompt": "caf\xc3 \xff"}' > "$TMP/bad_utf8.json"
expect 400 invalid_utf8 "${J[@]}" --data-binary @"$TMP/bad_utf8.json" "$M/v1/completions"
head -c 10000000 /dev/zero | tr '\0' ' ' > "$TMP/big.json"
expect 413 payload_too_large "${J[@]}" --data-binary @"$TMP/big.json" "$M/v1/completions"
expect 400 no_chat_template "${J[@]}" -d '{"messages": [{"role": "user", "content": "hi"}]}' "$M/v1/chat/completions"
expect 400 invalid_type "${J[@]}" -d '{"messages": "hi"}' "http://127.0.0.1:$PORT_chat/v1/chat/completions"
expect 400 invalid_messages "${J[@]}" -d '{"messages": [{"role": "wizard", "content": "hi"}]}' \
  "http://127.0.0.1:$PORT_chat/v1/chat/completions"
expect 404 not_found "$M/v1/nothing"
expect 501 not_implemented -d '' "$M/slots/0?action=save"

echo "== API key"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' "${J[@]}" -d '{"prompt": "x"}' "$M/v1/completions")
[ "$got" = 401 ] && grep -q '"code":"invalid_api_key"' "$TMP/body" || fail "no key: HTTP $got $(cat "$TMP/body")"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'Authorization: Bearer nope' "$M/v1/models")
[ "$got" = 401 ] && grep -q '"type":"authentication_error"' "$TMP/body" || fail "wrong key: HTTP $got"
got=$(curl -s -o /dev/null -w '%{http_code}' "$M/health")
[ "$got" = 200 ] || fail "/health needs no key: HTTP $got"

echo "== clients leaving mid-stream"
for i in 1 2 3; do
  curl -s -N --max-time 2 -H "Authorization: Bearer $KEY" "${J[@]}" \
    -d '{"prompt": "Once upon a time", "max_tokens": 500, "stream": true, "temperature": 1}' \
    "$M/v1/completions" > "$TMP/left$i" &
  CLIENTS+=($!)
done
wait_clients
grep -q '^data: ' "$TMP/left1" || fail "the stream sent nothing before the client left"
expect_idle_and_empty "$PORT_main"
[ "$(metric "$PORT_main" kvq_requests_cancelled_total)" -ge 3 ] || fail "leaving clients were not cancelled"

echo "== 200 concurrent connections"
for i in $(seq 1 200); do
  if [ $((i % 2)) = 0 ]; then stream=true; else stream=false; fi
  curl -s -o "$TMP/c$i" -w '%{http_code}\n' --max-time 120 -H "Authorization: Bearer $KEY" "${J[@]}" \
    -d "{\"prompt\": \"Tom had a ball $i\", \"max_tokens\": 16, \"seed\": $i, \"stream\": $stream}" \
    "$M/v1/completions" > "$TMP/code$i" &
  CLIENTS+=($!)
done
wait_clients
n200=$(cat "$TMP"/code* | grep -c '^200$')
[ "$n200" = 200 ] || fail "200 concurrent requests: $n200 answered 200 ($(sort "$TMP"/code* | uniq -c | tr '\n' ' '))"
expect 200 - "${J[@]}" -d '{"prompt": "Still serving", "max_tokens": 4}' "$M/v1/completions"
expect_idle_and_empty "$PORT_main"

echo "== queue full: 503 with Retry-After"
start small -m "$MODEL" -c 256 -np 1 --max-queue 1 -t 1
for i in $(seq 1 12); do
  curl -s -D "$TMP/h$i" -o "$TMP/q$i" -w '%{http_code}\n' -d '{"prompt": "Once", "max_tokens": 100}' \
    "http://127.0.0.1:$PORT_small/v1/completions" > "$TMP/qc$i" &
  CLIENTS+=($!)
done
wait_clients
n503=$(cat "$TMP"/qc* | grep -c '^503$')
[ "$n503" -ge 1 ] || fail "no 503 with -np 1 --max-queue 1 and 12 clients"
grep -l '^503$' "$TMP"/qc* | head -1 | sed 's/qc/h/' | xargs grep -qi '^Retry-After: 1' || fail "503 without Retry-After"
grep -l '^503$' "$TMP"/qc* | head -1 | sed 's/qc/q/' | xargs grep -q '"code":"queue_full"' || fail "503 body"
expect_idle_and_empty "$PORT_small"

echo "== metrics"
curl -s -H "Authorization: Bearer $KEY" "$M/metrics" > "$TMP/metrics"
for m in kvq_tokens_generated_total kvq_decode_tokens_per_second kvq_sequences_active kvq_sequences_queued \
         kvq_kv_bytes_used kvq_kv_budget_bytes kvq_kv_bits_per_value; do
  grep -q "^# TYPE $m " "$TMP/metrics" || fail "/metrics lacks $m"
done
[ "$(metric "$PORT_main" kvq_kv_budget_bytes)" = 268435456 ] || fail "budget metric"
[ "$(metric "$PORT_main" kvq_kv_bytes_used)" = 0 ] || fail "KV bytes left after the load"

echo "== SIGTERM, SIGINT"
for name in main chat small; do
  eval "pid=\$PID_$name"
  # SIGINT for one: a background job of a script starts with SIGINT ignored, which the server
  # must undo to hear it.
  if [ "$name" = chat ]; then kill -INT "$pid"; else kill -TERM "$pid"; fi
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then fail "$name did not stop on SIGTERM"; continue; fi
  wait "$pid"; rc=$?
  [ "$rc" = 0 ] || fail "$name exited $rc on SIGTERM"
  grep -q "KV pool holds 0 bytes" "$TMP/$name.log" || fail "$name: $(tail -2 "$TMP/$name.log")"
done

if [ "$fails" != 0 ]; then
  echo "--- server log (main)"; tail -20 "$TMP/main.log"
  echo "$fails server checks FAILED"
  exit 1
fi
echo "all server checks passed"
