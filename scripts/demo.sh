#!/usr/bin/env bash
# The main job: install what is missing, build Release, then generate with a 3-bit KVQuant
# cache (calibrated on the shared TinyStories train text) and show its memory against f16.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
models=../shared/models
[ -f "$models/stories260K.gguf" ] || { echo "kvq: missing $models (the shared/ folder must sit beside this repo)" >&2; exit 1; }
kvq=./build/release/bin/kvq
echo "== stories260K, kvquant-3 cache" >&2
$kvq run -m "$models/stories260K.gguf" -p "Once upon a time" -n 250 -c 512 --temp 0 --cache kvquant-3 --calib auto
echo "== tinystories-l6-d256-h64 (head_dim 64), kvquant-3 cache" >&2
$kvq run -m "$models/tinystories-l6-d256-h64.gguf" -p "Once upon a time" -n 400 -c 1024 --temp 0 --cache kvquant-3 --calib auto
