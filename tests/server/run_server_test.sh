#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kvq serve end to end (ctest label `server`): starts servers on 127.0.0.1 at free ports,
# drives them with the pinned openai npm client (openai_client_test.mjs) and with curl for
# every bad input, 200 concurrent connections, clients that leave mid-stream and API keys,
# slots (save / erase / restore, prefix reuse, bad file names, corrupt files), checks through
# /metrics that the KV pool holds nothing once the idle slots are erased, and stops them with
# SIGTERM.
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

# expect_idle_and_empty PORT N_SLOTS: waits until nothing runs or waits, erases the N_SLOTS
# idle slots' caches (the server needs --slot-save-path) and checks the pool is then empty:
# no pages leak beside what the slots keep.
expect_idle_and_empty() {
  local port=$1 n_slots=$2 used active queued
  for _ in $(seq 1 100); do
    active=$(metric "$port" kvq_sequences_active); queued=$(metric "$port" kvq_sequences_queued)
    [ "$active" = "0" ] && [ "$queued" = "0" ] && break
    sleep 0.1
  done
  for i in $(seq 0 $((n_slots - 1))); do
    curl -s -o /dev/null -d "" -H "Authorization: Bearer $KEY" "http://127.0.0.1:$port/slots/$i?action=erase"
  done
  used=$(metric "$port" kvq_kv_bytes_used)
  [ "$used" = "0" ] && [ "$active" = "0" ] && [ "$queued" = "0" ] && return 0
  fail "server on $port not idle: kv_bytes_used=$used (slots erased) active=$active queued=$queued"
}

# jget FILE EXPR: EXPR (JavaScript, over the JSON in FILE as `j`) printed.
jget() { node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(eval(process.argv[2]))' "$1" "$2"; }

# A Llama-3-vocabulary model with random weights: its GGUF carries the Llama-3 chat template.
"$KVQ" synth -o "$TMP/chat.gguf" --vocab-from "$SHARED/fixtures/bpe/vocab/ggml-vocab-llama-bpe.gguf" \
  --dim 64 --heads 2 --layers 1 --ffn 128 --type f16 --ctx 512 > "$TMP/synth.log" 2>&1 ||
  { cat "$TMP/synth.log"; die "kvq synth failed"; }

mkdir -p "$TMP/slots_main" "$TMP/slots_small" "$TMP/slots"
start main -m "$MODEL" -c 512 -np 16 --cache kivi-2 --kv-budget 256MiB --api-key "$KEY" -t 2 \
  --slot-save-path "$TMP/slots_main"
start chat -m "$TMP/chat.gguf" -c 256 --api-key "$KEY" -t 1
M=http://127.0.0.1:$PORT_main

echo "== openai npm client (${SECONDS}s)"
node "$HERE/openai_client_test.mjs" "$M/v1" "$KEY" "http://127.0.0.1:$PORT_chat/v1" || fail "openai client checks"

echo "== bad input (${SECONDS}s)"
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
expect 501 not_supported -d '{"filename": "a.bin"}' "http://127.0.0.1:$PORT_chat/slots/0?action=save"
expect 400 invalid_type "${J[@]}" -d '{"prompt": "x", "cache_prompt": 1}' "$M/v1/completions"
expect 400 invalid_type "${J[@]}" -d '{"prompt": "x", "ignore_eos": "yes"}' "$M/v1/completions"
expect 400 invalid_request "${J[@]}" -d '{"prompt": "x", "id_slot": 16}' "$M/v1/completions"

echo "== API key (${SECONDS}s)"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' "${J[@]}" -d '{"prompt": "x"}' "$M/v1/completions")
[ "$got" = 401 ] && grep -q '"code":"invalid_api_key"' "$TMP/body" || fail "no key: HTTP $got $(cat "$TMP/body")"
got=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'Authorization: Bearer nope' "$M/v1/models")
[ "$got" = 401 ] && grep -q '"type":"authentication_error"' "$TMP/body" || fail "wrong key: HTTP $got"
got=$(curl -s -o /dev/null -w '%{http_code}' "$M/health")
[ "$got" = 200 ] || fail "/health needs no key: HTTP $got"

echo "== clients leaving mid-stream (${SECONDS}s)"
# Each client leaves as soon as its first event arrives (or after 10 s): a fixed stay would
# race the generation, and three 500-token streams take about a second on a quiet machine
# (ignore_eos: a story may end after ~100 tokens, before a loaded machine's client leaves).
for i in 1 2 3; do
  curl -s -N --max-time 60 -H "Authorization: Bearer $KEY" "${J[@]}" \
    -d '{"prompt": "Once upon a time", "max_tokens": 500, "stream": true, "temperature": 1, "ignore_eos": true}' \
    "$M/v1/completions" > "$TMP/left$i" &
  CLIENTS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do grep -q '^data: ' "$TMP/left$i" && break; sleep 0.1; done
  kill "${CLIENTS[$((i - 1))]}" 2>/dev/null || true
done
for p in "${CLIENTS[@]}"; do wait "$p" 2>/dev/null || true; done
CLIENTS=()
for i in 1 2 3; do grep -q '^data: ' "$TMP/left$i" || fail "stream $i sent nothing before the client left"; done
for i in 1 2 3; do ! grep -q '^data: \[DONE\]' "$TMP/left$i" || fail "stream $i ended before its client left"; done
expect_idle_and_empty "$PORT_main" 16
[ "$(metric "$PORT_main" kvq_requests_cancelled_total)" -ge 3 ] || fail "leaving clients were not cancelled"

echo "== 200 concurrent connections (${SECONDS}s)"
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
expect_idle_and_empty "$PORT_main" 16

echo "== queue full: 503 with Retry-After (${SECONDS}s)"
start small -m "$MODEL" -c 256 -np 1 --max-queue 1 -t 1 --slot-save-path "$TMP/slots_small"
for i in $(seq 1 12); do
  curl -s -D "$TMP/h$i" -o "$TMP/q$i" -w '%{http_code}\n' -d '{"prompt": "Once", "max_tokens": 100, "ignore_eos": true}' \
    "http://127.0.0.1:$PORT_small/v1/completions" > "$TMP/qc$i" &
  CLIENTS+=($!)
done
wait_clients
n503=$(cat "$TMP"/qc* | grep -c '^503$')
[ "$n503" -ge 1 ] || fail "no 503 with -np 1 --max-queue 1 and 12 clients"
# The first client answered 503; its headers and body share its number (only the
# file name is rewritten: the temporary directory's random name may contain "qc").
i503=$(grep -l '^503$' "$TMP"/qc* | head -1); i503=${i503##*/qc}
grep -qi '^Retry-After: 1' "$TMP/h$i503" || fail "503 without Retry-After"
grep -q '"code":"queue_full"' "$TMP/q$i503" || fail "503 body"
expect_idle_and_empty "$PORT_small" 1

echo "== slots (${SECONDS}s)"
# f16, whose chunked prefill is bit-identical to a whole one: reused prefixes change no text.
start slots -m "$MODEL" -c 1024 -np 2 --cache f16 -t 2 --slot-save-path "$TMP/slots"
S=http://127.0.0.1:$PORT_slots
P='Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day,'
body() { node -e 'const o = {prompt: process.argv[1], max_tokens: 24, temperature: 0}; for (const kv of process.argv.slice(2)) { const [k, v] = kv.split("="); o[k] = JSON.parse(v); } console.log(JSON.stringify(o))' "$P" "$@"; }
expect 200 - "${J[@]}" -d "$(body id_slot=1 cache_prompt=false)" "$S/v1/completions"
fresh=$(jget "$TMP/body" 'j.choices[0].text'); n_prompt=$(jget "$TMP/body" 'j.usage.prompt_tokens')
expect 200 - "${J[@]}" -d "$(body id_slot=0)" "$S/v1/completions"
[ "$(jget "$TMP/body" 'j.choices[0].text')" = "$fresh" ] || fail "slot 0 text differs from slot 1's"
expect 200 - "${J[@]}" -d '{"filename": "s0.bin"}' "$S/slots/0?action=save"
n_saved=$(jget "$TMP/body" 'j.n_saved')
[ "$(jget "$TMP/body" 'j.id_slot')" = 0 ] && [ "$(jget "$TMP/body" 'j.filename')" = s0.bin ] &&
  [ "$(jget "$TMP/body" 'j.n_written')" = "$(stat -c %s "$TMP/slots/s0.bin")" ] &&
  [ "$(jget "$TMP/body" 'typeof j.timings.save_ms')" = number ] && [ "$n_saved" -ge "$n_prompt" ] ||
  fail "save: $(cat "$TMP/body")"
expect 200 - -d "" "$S/slots/0?action=erase"
[ "$(jget "$TMP/body" 'j.n_erased')" = "$n_saved" ] || fail "erase: $(cat "$TMP/body")"
expect 200 - "$S/slots"
[ "$(jget "$TMP/body" 'j.length + ":" + j[0].n_tokens + ":" + j[0].state')" = "2:0:empty" ] || fail "GET /slots: $(cat "$TMP/body")"
expect 200 - "${J[@]}" -d '{"filename": "s0.bin"}' "$S/slots/0?action=restore"
[ "$(jget "$TMP/body" 'j.n_restored')" = "$n_saved" ] &&
  [ "$(jget "$TMP/body" 'j.n_read')" = "$(stat -c %s "$TMP/slots/s0.bin")" ] &&
  [ "$(jget "$TMP/body" 'typeof j.timings.restore_ms')" = number ] || fail "restore: $(cat "$TMP/body")"
expect 200 - "$S/slots"
[ "$(jget "$TMP/body" 'j[0].n_tokens')" = "$n_saved" ] || fail "GET /slots after restore: $(cat "$TMP/body")"
reused=$(metric "$PORT_slots" kvq_prompt_tokens_reused_total)
# Any slot: the restored one shares the whole prompt, so the request goes there.
expect 200 - "${J[@]}" -d "$(body)" "$S/v1/completions"
[ "$(jget "$TMP/body" 'j.choices[0].text')" = "$fresh" ] || fail "text from the restored slot differs: $(cat "$TMP/body")"
[ $(($(metric "$PORT_slots" kvq_prompt_tokens_reused_total) - reused)) = $((n_prompt - 1)) ] ||
  fail "the restored prefix was not reused: reused $reused -> $(metric "$PORT_slots" kvq_prompt_tokens_reused_total)"
for name in '../x' '/etc/passwd' '' "$(head -c 201 /dev/zero | tr '\0' a)" '.hidden' 'a/b' 'a..b' 'x y'; do
  expect 400 invalid_filename "${J[@]}" -d "{\"filename\": \"$name\"}" "$S/slots/0?action=save"
done
[ ! -e "$TMP/x" ] && [ ! -e "$TMP/slots/.hidden" ] || fail "a bad file name wrote a file"
expect 400 invalid_filename "${J[@]}" -d '{"filename": "../slots/s0.bin"}' "$S/slots/0?action=restore"
ln -s /etc/passwd "$TMP/slots/link.bin"
expect 400 invalid_filename "${J[@]}" -d '{"filename": "link.bin"}' "$S/slots/0?action=save"
expect 400 missing_parameter "${J[@]}" -d '{}' "$S/slots/0?action=save"
expect 400 invalid_json "${J[@]}" -d 'nope' "$S/slots/0?action=save"
expect 400 invalid_slot "${J[@]}" -d '{"filename": "s.bin"}' "$S/slots/2?action=save"
expect 400 invalid_slot "${J[@]}" -d '{"filename": "s.bin"}' "$S/slots/99999999?action=save"
expect 400 invalid_slot "${J[@]}" -d '{"filename": "s.bin"}' "$S/slots/abc?action=save"
expect 400 invalid_action "${J[@]}" -d '{"filename": "s.bin"}' "$S/slots/0?action=load"
expect 404 file_not_found "${J[@]}" -d '{"filename": "missing.bin"}' "$S/slots/0?action=restore"
cp "$TMP/slots/s0.bin" "$TMP/slots/bad.bin"
size=$(stat -c %s "$TMP/slots/bad.bin")
printf '\x5a' | dd of="$TMP/slots/bad.bin" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect 400 invalid_session "${J[@]}" -d '{"filename": "bad.bin"}' "$S/slots/0?action=restore"
head -c 100 "$TMP/slots/s0.bin" > "$TMP/slots/short.bin"
expect 400 invalid_session "${J[@]}" -d '{"filename": "short.bin"}' "$S/slots/0?action=restore"
expect 200 - "$S/slots"
[ "$(jget "$TMP/body" 'j[0].n_tokens')" -gt 0 ] || fail "a refused restore changed the slot: $(cat "$TMP/body")"
# A file for another cache type: 400 naming both.
start slotsq -m "$MODEL" -c 1024 -np 1 --cache q8_0 -t 1 --slot-save-path "$TMP/slots"
expect 400 session_mismatch "${J[@]}" -d '{"filename": "s0.bin"}' "http://127.0.0.1:$PORT_slotsq/slots/0?action=restore"
grep -q 'f16' "$TMP/body" && grep -q 'q8_0' "$TMP/body" || fail "mismatch message: $(cat "$TMP/body")"
# A busy slot: 900 tokens whatever they are (ignore_eos: with seed 1 the story ended after ~110
# tokens, sometimes before the erase below arrived).
curl -s -N --max-time 20 "${J[@]}" -d "$(body id_slot=1 max_tokens=900 stream=true temperature=2 seed=1 ignore_eos=true)" \
  "$S/v1/completions" > /dev/null &
busy_client=$!
for _ in $(seq 1 100); do
  curl -s "$S/slots" > "$TMP/slots.json"; [ "$(jget "$TMP/slots.json" 'j[1].is_processing')" = true ] && break; sleep 0.05
done
expect 409 slot_busy "${J[@]}" -d '{"filename": "s1.bin"}' "$S/slots/1?action=save"
expect 409 slot_busy -d "" "$S/slots/1?action=erase"
kill "$busy_client" 2>/dev/null; wait "$busy_client" 2>/dev/null
expect_idle_and_empty "$PORT_slots" 2
expect_idle_and_empty "$PORT_slotsq" 1

echo "== metrics (${SECONDS}s)"
curl -s -H "Authorization: Bearer $KEY" "$M/metrics" > "$TMP/metrics"
for m in kvq_tokens_generated_total kvq_prompt_tokens_reused_total kvq_kv_bytes_cached kvq_decode_tokens_per_second kvq_sequences_active kvq_sequences_queued \
         kvq_kv_bytes_used kvq_kv_budget_bytes kvq_kv_bits_per_value; do
  grep -q "^# TYPE $m " "$TMP/metrics" || fail "/metrics lacks $m"
done
[ "$(metric "$PORT_main" kvq_kv_budget_bytes)" = 268435456 ] || fail "budget metric"
[ "$(metric "$PORT_main" kvq_kv_bytes_used)" = 0 ] || fail "KV bytes left after the load"

echo "== SIGTERM, SIGINT (${SECONDS}s)"
for name in main chat small slots slotsq; do
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
