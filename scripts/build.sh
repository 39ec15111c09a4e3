#!/usr/bin/env bash
# Configures and builds kvq in Release into build/release (binaries in build/release/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build/release -j"$(nproc)"
