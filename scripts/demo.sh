#!/usr/bin/env bash
# The main job: install what is missing, build Release, generate with the shared stories260K.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
model=../shared/models/stories260K.gguf
[ -f "$model" ] || { echo "kvq: missing $model (the shared/ folder must sit beside this repo)" >&2; exit 1; }
./build/release/bin/kvq run -m "$model" -p "Once upon a time" -n 60 --temp 0
