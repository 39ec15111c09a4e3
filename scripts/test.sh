#!/usr/bin/env bash
# The whole test suite: installs what is missing, then
#   1. Release build, every ctest test except the long `quality` label (the `server` label
#      needs the pinned openai npm client, installed here with npm ci: a failed install stops);
#   2. clang ASan+UBSan build of the same suite;
#   3. libFuzzer runs (GGUF reader byte-level and structure-aware, tokenizer, flag parser, cache
#      specs, calibration files, log-prob files, session files) under ASan/UBSan, ~20 s each.
# Exits non-zero on the first failure. KVQ_FUZZ_SECONDS overrides the fuzzing time per target.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
shared=../shared
[ -d "$shared/models" ] || { echo "kvq: missing $shared (the shared/ folder must sit beside this repo)" >&2; exit 1; }
jobs=$(nproc)

echo "== openai npm client for the server test (pinned by tests/server/package-lock.json)"
(cd tests/server && npm ci --ignore-scripts --no-audit --no-fund)

echo "== Release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$jobs"
(cd build/release && ctest -j"$jobs" --output-on-failure -LE quality)

echo "== ASan/UBSan build (clang) and tests, fuzz targets"
CC=clang CXX=clang++ cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVQ_SANITIZE=address,undefined -DKVQ_FUZZ=ON -DKVQ_BUILD_BENCH=OFF >/dev/null
cmake --build build/asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
secs=${KVQ_FUZZ_SECONDS:-20}
for f in gguf gguf_struct tokenizer bpe_tokenizer args cache_spec calib logprob session frontier; do
  corpus=$(mktemp -d)
  [ -d tests/fuzz/corpus/$f ] && cp tests/fuzz/corpus/$f/* "$corpus"/
  echo "-- fuzzing $f for ${secs}s"
  len=4096
  case $f in calib|logprob) len=16384 ;; session) len=65536 ;; esac  # their seeds (real files) are larger
  build/asan/bin/${f}_fuzz -max_total_time="$secs" -max_len=$len -print_final_stats=1 "$corpus" 2>&1 | tail -3
  rm -rf "$corpus"
done
(cd build/asan && ctest -j"$jobs" --output-on-failure -LE quality)
