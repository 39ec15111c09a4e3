#!/usr/bin/env bash
# Installs the Debian packages kvq needs, only those that are missing. Nothing else is
# downloaded: no FetchContent, no vendored sources.
set -euo pipefail
packages=(cmake make g++ clang libclang-rt-14-dev libhwy-dev libgtest-dev libgmock-dev nlohmann-json3-dev libcpp-httplib-dev
          libbenchmark-dev gnuplot-nox pkg-config)
# Commands the server test needs (tests/server), from Debian only where the machine has none:
# a Node.js from elsewhere (e.g. nodesource's, which bundles npm) conflicts with Debian's npm.
commands=(node:nodejs npm:npm curl:curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for c in "${commands[@]}"; do
  command -v "${c%%:*}" >/dev/null || missing+=("${c##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "kvq: installing Debian packages: ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "kvq: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
