#!/usr/bin/env bash
# llama.cpp beside kvq on the same GGUF file, for the peer figures in docs/PERFORMANCE.md. Never
# run by the build, and by the tests only against fake engines (tests/scripts); the only script
# that downloads anything: Debian's own llama.cpp binaries (unstable, "sid": bookworm has none),
# unpacked into a folder of their own with the glibc and C++ runtime they were built against,
# and run through that glibc's loader.
# Nothing is installed on the machine; no source is built.
#
#   scripts/llamacpp-peer.sh fetch [DIR]
#       downloads and unpacks into DIR (default build/peer/llama.cpp) and writes DIR/llama-bench,
#       a wrapper that picks ggml's CPU variant for this CPU (GGML_BACKEND_PATH).
#   scripts/llamacpp-peer.sh compare -m MODEL [-d DEPTH] [-p PROMPT] [-n GEN] [-t THREADS]
#                                    [--cache f16,q8_0,q4_0] [--rounds R] [--reps K] [--dir DIR]
#                                    [--kvq BIN] [-- extra kvq bench flags]
#       decode tokens/s of both on the same file and depth, in R rounds (default 4) that
#       alternate which runs first (this VM alternates fast and slow processes), each tool
#       timing K repetitions (default 3) per round; llama.cpp with flash attention (its
#       quantized caches need it) and, for f16, also without; then each cache's median over the
#       rounds and the median of the rounds' ratios kvq / llama.cpp (best of llama.cpp's two
#       f16 modes in each round).
#       Depth: kvq fills it by replaying one prefilled window (kvq bench -d, then -p 1 token),
#       llama.cpp by a real prefill (llama-bench -d); both then decode GEN tokens. With -d 0 the
#       prompt (-p, default 512) is a real prefill in both (kvq bench -p P; llama-bench -d P).
set -euo pipefail

die() { echo "llamacpp-peer: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)

fetch() {
  local dir=${1:-$root/build/peer/llama.cpp}
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/root"
  dir=$(cd "$dir" && pwd)
  echo "deb http://deb.debian.org/debian sid main" >"$dir/apt/sources.list"
  local apt=(-o "Dir::Etc::sourcelist=$dir/apt/sources.list" -o "Dir::Etc::sourceparts=-"
             -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
             -o "Dir::State::status=/var/lib/dpkg/status" -o Debug::NoLocking=true
             -o "APT::Sandbox::User=$(id -un)")
  echo "llamacpp-peer: Debian sid's package lists (only into $dir/apt)" >&2
  apt-get "${apt[@]}" update -qq || die "apt-get update of Debian sid failed"
  local pkgs=(llama.cpp-tools libllama0 libggml0 libc6 libstdc++6 libgcc-s1 libgomp1 libssl3t64)
  echo "llamacpp-peer: downloading ${pkgs[*]}" >&2
  (cd "$dir/debs" && rm -f ./*.deb && apt-get "${apt[@]}" download "${pkgs[@]}" 2>/dev/null) ||
    die "download failed (a package missing from sid?)"
  local d
  for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir/root"; done
  local lib=$dir/root/usr/lib/x86_64-linux-gnu
  [ -x "$dir/root/usr/bin/llama-bench" ] && [ -e "$lib/ld-linux-x86-64.so.2" ] || die "unpacked files incomplete"
  # ggml's CPU variant: it looks for them only where the package installs them (/usr/lib), so
  # the wrapper names one: the newest x86 level this CPU has (ggml/src/ggml-cpu variant names).
  local flags variant=x64
  flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
  if [[ $flags == *avx512_bf16* && $flags == *avx512_vnni* ]]; then variant=zen4
  elif [[ $flags == *avx512_vnni* ]]; then variant=cascadelake
  elif [[ $flags == *avx512f* ]]; then variant=skylakex
  elif [[ $flags == *avx2* ]]; then variant=haswell
  elif [[ $flags == *sse4_2* ]]; then variant=sse42
  fi
  cat >"$dir/llama-bench" <<EOF
#!/usr/bin/env bash
# Debian sid's llama-bench through the glibc it was built against (written by llamacpp-peer.sh).
export GGML_BACKEND_PATH="$lib/ggml/backends0/libggml-cpu-$variant.so"
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:$lib/llama" "$dir/root/usr/bin/llama-bench" "\$@"
EOF
  chmod +x "$dir/llama-bench"
  local ver
  ver=$(dpkg-deb -f "$dir"/debs/llama.cpp-tools_*.deb Version)
  echo "$ver" >"$dir/VERSION"
  echo "llamacpp-peer: llama.cpp $ver, ggml CPU variant $variant: $dir/llama-bench" >&2
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

compare() {
  local model="" depth=0 prompt=512 gen=32 threads=2 caches=f16,q8_0,q4_0 rounds=4 reps=3
  local dir=$root/build/peer/llama.cpp kvq=$root/build/release/bin/kvq extra=()
  while [ $# -gt 0 ]; do
    case $1 in
      -m) model=$2; shift 2 ;;
      -d) depth=$2; shift 2 ;;
      -p) prompt=$2; shift 2 ;;
      -n) gen=$2; shift 2 ;;
      -t) threads=$2; shift 2 ;;
      --cache) caches=$2; shift 2 ;;
      --rounds) rounds=$2; shift 2 ;;
      --reps) reps=$2; shift 2 ;;
      --dir) dir=$2; shift 2 ;;
      --kvq) kvq=$2; shift 2 ;;
      --) shift; extra=("$@"); break ;;
      *) die "unknown flag '$1' (see the header of $0)" ;;
    esac
  done
  [ -n "$model" ] && [ -f "$model" ] || die "-m MODEL: a GGUF file is required"
  local n
  for n in "$depth" "$prompt" "$gen" "$threads" "$rounds" "$reps"; do
    [[ $n =~ ^[0-9]{1,9}$ ]] || die "'$n' is not a whole number"
  done
  [ "$gen" -ge 1 ] && [ "$threads" -ge 1 ] && [ "$rounds" -ge 1 ] && [ "$reps" -ge 1 ] ||
    die "-n, -t, --rounds and --reps must be at least 1"
  local c clist=()
  IFS=, read -r -a clist <<<"$caches"
  [ ${#clist[@]} -gt 0 ] || die "--cache: an empty list"
  for c in "${clist[@]}"; do
    case $c in f16 | q8_0 | q4_0) ;; *) die "cache '$c': both engines have f16, q8_0 and q4_0" ;; esac
  done
  [ -x "$dir/llama-bench" ] || die "no $dir/llama-bench: run '$0 fetch' first"
  [ -x "$kvq" ] || die "no kvq binary at $kvq (build first, or --kvq BIN)"
  local kvq_args=(bench -m "$model" -n "$gen" -r "$reps" -t "$threads" --cache "$caches")
  local lcpp_depth
  if [ "$depth" -gt 0 ]; then
    kvq_args+=(-d "$depth" -p 1)
    lcpp_depth=$depth
  else
    kvq_args+=(-p "$prompt")
    lcpp_depth=$prompt
  fi
  kvq_args+=("${extra[@]}")
  local out
  out=$(mktemp -d)
  trap 'rm -rf "$out"' RETURN
  echo "llama.cpp $(cat "$dir/VERSION" 2>/dev/null || echo '?'); $model; decode $gen tokens at depth $lcpp_depth; $threads threads; $rounds rounds of $reps repetitions" >&2
  run_kvq() {  # one kvq run: "cache tok/s" lines (the table's decode column)
    "$kvq" "${kvq_args[@]}" >"$out/kvq.txt" 2>&1 || { cat "$out/kvq.txt" >&2; die "kvq bench failed"; }
    awk -F'|' -v model="$model" 'index($2, model) && NF >= 9 {gsub(/ /, "", $3); gsub(/ /, "", $8); print $3, $8}' "$out/kvq.txt"
  }
  run_lcpp() {  # one llama-bench run per cache (and f16 without flash attention): "cache fa tok/s"
    local c fa
    for c in "${clist[@]}"; do
      for fa in 1 0; do
        [ "$fa" = 0 ] && [ "$c" != f16 ] && continue
        "$dir/llama-bench" -m "$model" -p 0 -n "$gen" -d "$lcpp_depth" -r "$reps" -t "$threads" -fa "$fa" \
          -ctk "$c" -ctv "$c" -o csv >"$out/lcpp.csv" 2>"$out/lcpp.err" || { tail -5 "$out/lcpp.err" >&2; die "llama-bench failed"; }
        # avg_ts, the next-to-last column (counted from the end: text columns may hold commas)
        awk -F, -v c="$c" -v fa="$fa" 'NR == 1 {if ($(NF - 1) != "avg_ts") exit 1; next}
             {v = $(NF - 1); gsub(/"/, "", v); print c, fa, v}' "$out/lcpp.csv" ||
          die "llama-bench's CSV has no avg_ts column where expected"
      done
    done
  }
  local r
  for ((r = 1; r <= rounds; ++r)); do
    if ((r % 2)); then
      run_kvq | sed "s/^/$r kvq /" >>"$out/all.txt"
      run_lcpp | sed "s/^/$r llama.cpp /" >>"$out/all.txt"
    else
      run_lcpp | sed "s/^/$r llama.cpp /" >>"$out/all.txt"
      run_kvq | sed "s/^/$r kvq /" >>"$out/all.txt"
    fi
    echo "round $r of $rounds:" >&2
    awk -v r="$r" '$1 == r' "$out/all.txt" | sed 's/^/  /' >&2
    for c in "${clist[@]}"; do  # every cache read from both, as a positive number
      awk -v r="$r" -v c="$c" '$1 == r && $2 == "kvq" && $3 == c && $4 + 0 > 0 {k = 1}
           $1 == r && $2 == "llama.cpp" && $3 == c && $5 + 0 > 0 {l = 1} END {exit !(k && l)}' "$out/all.txt" ||
        die "round $r: no decode rate for cache $c from both engines (their output changed?)"
    done
  done
  echo "| cache | kvq tok/s | llama.cpp tok/s (flash attention) | llama.cpp tok/s (without) | kvq / llama.cpp's best, median of rounds (range) |"
  echo "|---|---|---|---|---|"
  for c in "${clist[@]}"; do
    local k f1 f0 ratios
    k=$(awk -v c="$c" '$2 == "kvq" && $3 == c {print $4}' "$out/all.txt" | median)
    f1=$(awk -v c="$c" '$2 == "llama.cpp" && $3 == c && $4 == 1 {print $5}' "$out/all.txt" | median)
    f0=$(awk -v c="$c" '$2 == "llama.cpp" && $3 == c && $4 == 0 {print $5}' "$out/all.txt" | median)
    ratios=$(awk -v c="$c" '$2 == "kvq" && $3 == c {k[$1] = $4} $2 == "llama.cpp" && $3 == c && $5 > best[$1] {best[$1] = $5}
                END {for (r in k) if (best[r] > 0) printf "%.3f\n", k[r] / best[r]}' "$out/all.txt" | sort -g)
    printf "| %s | %.1f | %.1f | %s | %.2fx (%.2f-%.2fx) |\n" "$c" "$k" "$f1" \
      "$([ "$c" = f16 ] && printf '%.1f' "$f0" || echo '-')" "$(echo "$ratios" | median)" \
      "$(echo "$ratios" | head -1)" "$(echo "$ratios" | tail -1)"
  done
}

case ${1:-} in
  fetch) shift; fetch "$@" ;;
  compare) shift; compare "$@" ;;
  *) die "usage: $0 fetch [DIR] | compare -m MODEL [flags] (see the header of $0)" ;;
esac
