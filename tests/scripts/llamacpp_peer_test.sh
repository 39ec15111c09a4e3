#!/usr/bin/env bash
# scripts/llamacpp-peer.sh without the network: its refusals of bad flags, and `compare` end to
# end against two fake engines that print what kvq bench and llama-bench print (a markdown row;
# a CSV whose next-to-last column is avg_ts), so that the parsing and the ratios are checked.
# Usage: llamacpp_peer_test.sh SCRIPT MODEL (any existing file)
set -uo pipefail
script=$1 model=$2
[ -f "$model" ] || { echo "FAIL: no model file $model (../shared missing?)"; exit 1; }
fails=0
expect_fail() {  # expect_fail "message part" args...
  local want=$1 out rc
  shift
  out=$("$script" "$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] || [[ $out != *"$want"* ]]; then
    echo "FAIL: '$*' gave rc $rc and '$out', wanted an error with '$want'"
    fails=$((fails + 1))
  fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect_fail "usage:"
expect_fail "usage:" frobnicate
expect_fail "unknown flag '-x'" compare -x
expect_fail "a GGUF file is required" compare
expect_fail "a GGUF file is required" compare -m "$tmp/none.gguf"
expect_fail "'abc' is not a whole number" compare -m "$model" -n abc
expect_fail "'-3' is not a whole number" compare -m "$model" -d -3
expect_fail "'99999999999999999999' is not a whole number" compare -m "$model" -d 99999999999999999999
expect_fail "must be at least 1" compare -m "$model" --rounds 0
expect_fail "cache 'kivi-2'" compare -m "$model" --cache f16,kivi-2
expect_fail "cache ';rm'" compare -m "$model" --cache ";rm"
expect_fail "run '$script fetch' first" compare -m "$model" --dir "$tmp/nothing"

# Fake engines: kvq gives each cache 100 tok/s times its position (f16 100, q8_0 200), llama.cpp
# 50 with flash attention and 80 without (f16), so kvq / llama.cpp's faster mode is 1.25x for f16
# and 4x for q8_0.
mkdir -p "$tmp/peer"
cat >"$tmp/peer/llama-bench" <<'F'
#!/usr/bin/env bash
fa=1 ctk=f16
while [ $# -gt 0 ]; do case $1 in -fa) fa=$2; shift 2 ;; -ctk) ctk=$2; shift 2 ;; *) shift ;; esac; done
ts=50; [ "$ctk" = f16 ] && [ "$fa" = 0 ] && ts=80
echo "build_commit,model_type,n_gen,avg_ns,stddev_ns,avg_ts,stddev_ts"
echo "\"Debian\",\"llama ?B, F16\",\"32\",\"1\",\"0\",\"$ts.000000\",\"0.0\""
F
cat >"$tmp/kvq" <<F
#!/usr/bin/env bash
m="" c=""
while [ \$# -gt 0 ]; do case \$1 in -m) m=\$2; shift 2 ;; --cache) c=\$2; shift 2 ;; *) shift ;; esac; done
echo "| model | cache | threads | kernels | depth | pp1 tok/s | tg32 tok/s | cache bytes/token | cache | peak RSS |"
i=1
for x in \${c//,/ }; do echo "| \$m | \$x | 2 | simd | 8192 | 1 | \$((100 * i)) | 1 | 1 | 1 |"; i=\$((i + 1)); done
F
chmod +x "$tmp/peer/llama-bench" "$tmp/kvq"
out=$("$script" compare -m "$model" -d 8192 --cache f16,q8_0 --rounds 3 --reps 1 --dir "$tmp/peer" --kvq "$tmp/kvq" 2>/dev/null)
rc=$?
want_f16="| f16 | 100.0 | 50.0 | 80.0 | 1.25x (1.25-1.25x) |"
want_q8="| q8_0 | 200.0 | 50.0 | - | 4.00x (4.00-4.00x) |"
if [ $rc -ne 0 ] || [[ $out != *"$want_f16"* ]] || [[ $out != *"$want_q8"* ]]; then
  echo "FAIL: compare with fake engines gave rc $rc and:"
  echo "$out"
  fails=$((fails + 1))
fi
# An engine whose output lacks the rate: an error, not a ratio of nothing.
cat >"$tmp/peer/llama-bench" <<'F'
#!/usr/bin/env bash
echo "build_commit,avg_ts,stddev_ts,something_new"
echo "\"Debian\",\"50.0\",\"0.0\",\"x\""
F
expect_fail "avg_ts" compare -m "$model" --cache f16 --rounds 1 --reps 1 --dir "$tmp/peer" --kvq "$tmp/kvq"
printf '#!/usr/bin/env bash\necho "no table"\n' >"$tmp/kvq"
printf '#!/usr/bin/env bash\necho "build_commit,avg_ts,stddev_ts"\necho "\\"x\\",\\"50.0\\",\\"0\\""\n' >"$tmp/peer/llama-bench"
expect_fail "no decode rate for cache f16" compare -m "$model" --cache f16 --rounds 1 --reps 1 --dir "$tmp/peer" --kvq "$tmp/kvq"

if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "llamacpp-peer.sh: all checks passed"
