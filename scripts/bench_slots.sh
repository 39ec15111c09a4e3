#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Slot prompt reuse and slot save/restore in kvq serve (docs/PERFORMANCE.md, Serving: slots).
# For each cache type: a server with one slot; a ~1000-token prompt (the first 1990
# characters of the TinyStories validation text) sent with max_tokens 1 alternately with cache_prompt false
# (everything prefilled) and true (all but its last token found in the slot), REPS times each,
# timed by curl (time to the whole answer = time to first token); then the slot (prompt +
# generated tokens, filling -c 1024) saved and restored REPS times, with the server's timings and
# the file size.
# Usage: bench_slots.sh KVQ SHARED [REPS] [CACHES...]   (default 5, f16 kvquant-3)
set -euo pipefail
KVQ=$1
SHARED=$2
REPS=${3:-5}
shift 3 || shift $#
CACHES=("$@")
[ ${#CACHES[@]} -gt 0 ] || CACHES=(f16 kvquant-3)
MODEL=$SHARED/models/tinystories-l6-d256-h64.gguf
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"' EXIT
PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
U=http://127.0.0.1:$PORT
node -e 'const t = require("fs").readFileSync(process.argv[1], "utf8").slice(0, 1990);
  for (const c of [false, true]) require("fs").writeFileSync(process.argv[2] + "/" + c + ".json",
    JSON.stringify({prompt: t, max_tokens: 1, temperature: 0, cache_prompt: c}));
  require("fs").writeFileSync(process.argv[2] + "/prompt.txt", t);' \
  "$SHARED/text/tinystories/validation_head.txt" "$TMP"
j() { node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(eval(process.argv[1]))' "$1"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "load: $(uptime | sed 's/.*load average: //')"
for cache in "${CACHES[@]}"; do
  calib=()
  [[ $cache == kvquant* ]] && calib=(--calib auto)
  mkdir -p "$TMP/slots"
  "$KVQ" serve -m "$MODEL" --port "$PORT" -c 1024 -np 1 --cache "$cache" "${calib[@]}" -t 2 \
    --slot-save-path "$TMP/slots" > "$TMP/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null "$U/health" && break; sleep 0.1; done
  n_prompt=$(curl -s -d @"$TMP/false.json" "$U/v1/completions" | j 'j.usage.prompt_tokens')
  : > "$TMP/cold"; : > "$TMP/warm"
  for _ in $(seq 1 "$REPS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -d @"$TMP/false.json" "$U/v1/completions" >> "$TMP/cold"
    curl -s -o /dev/null -w '%{time_total}\n' -d @"$TMP/true.json" "$U/v1/completions" >> "$TMP/warm"
  done
  cold=$(median < "$TMP/cold"); warm=$(median < "$TMP/warm")
  echo "$cache: prompt $n_prompt tokens, time to first token (median of $REPS): not cached ${cold}s, cached ${warm}s, ratio $(awk -v a="$cold" -v b="$warm" "BEGIN { printf \"%.1f\", a / b }")x"
  # Fill the context: the slot then holds 1023 tokens (the last one sampled is never run).
  node -e 'console.log(JSON.stringify({prompt: require("fs").readFileSync(process.argv[1], "utf8"),
    max_tokens: 1024 - Number(process.argv[2]), temperature: 0}))' "$TMP/prompt.txt" "$n_prompt" > "$TMP/fill.json"
  curl -s -d @"$TMP/fill.json" "$U/v1/completions" > /dev/null
  : > "$TMP/save"; : > "$TMP/restore"
  for _ in $(seq 1 "$REPS"); do
    curl -s -d '{"filename": "s.bin"}' "$U/slots/0?action=save" > "$TMP/sv"
    j 'j.timings.save_ms' < "$TMP/sv" >> "$TMP/save"
    curl -s -d '{"filename": "s.bin"}' "$U/slots/0?action=restore" > "$TMP/rs"
    j 'j.timings.restore_ms' < "$TMP/rs" >> "$TMP/restore"
  done
  echo "$cache: slot of $(j 'j.n_saved' < "$TMP/sv") tokens, file $(j 'j.n_written' < "$TMP/sv") bytes, save $(median < "$TMP/save") ms, restore $(median < "$TMP/restore") ms (medians of $REPS)"
  kill "$PID"; wait "$PID" || true; PID=
  rm -rf "$TMP/slots"
done
echo "load: $(uptime | sed 's/.*load average: //')"
