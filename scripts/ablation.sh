#!/usr/bin/env bash
# KVQuant ablation on the testbed (docs/QUALITY.md): codebook and weighting at 3 bits with and
# without 1% outliers, and 2 bits with and without Q-Norm. Calibrates on the TinyStories train
# text, evaluates on the held-out validation text. Writes docs/quality/ablation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${KVQ:-build/release/bin/kvq}
M=../shared/models/tinystories-l6-d256-h64.gguf
T=../shared/text/tinystories/validation_head.txt
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
EVAL=(-m "$M" -f "$T" -c 1024 --chunks 10)
/usr/bin/time -f "calibration: %e s, peak RSS %M KB" \
  "$K" calibrate -m "$M" --weighting none,fisher,fisher-s2 --outliers 0,0.01 -o "$W/tb.kvqc" 2>&1 | grep -v "^progress"
"$K" ppl "${EVAL[@]}" --save-logits "$W/f16.kvql" > /dev/null 2>&1
row() {  # label, calibration file or "", then cache flags
  local label=$1 calib=$2; shift 2
  local extra=()
  [ -n "$calib" ] && extra=(--calib "$W/$calib")
  "$K" ppl "${EVAL[@]}" "$@" "${extra[@]}" --kl-base "$W/f16.kvql" 2>/dev/null |
    awk -v l="$label" '/bits\/value/ {bits=$3} /^PPL =/ {ppl=$3} /KL mean/ {
      gsub(",", ""); printf "| %s | %s | %s | %s %s %s | %s | %s |\n", l, bits, ppl, $7, $8, $9, $12, $NF }'
}
{
  echo "| configuration (K and V) | bits/value | PPL | ΔPPL ± s.e. | KL mean | top-1 |"
  echo "|---|---|---|---|---|---|"
  for o in 0 0.01; do
    tag=$([ "$o" = 0 ] && echo "no outliers" || echo "1% outliers")
    if [ "$o" = 0 ]; then row "int3 per-token, $tag" "" --cache int3; fi
    row "nf3, $tag" "tb.none.o$o.kvqc" --cache "kvquant-3:outliers=$o:codebook=nf"
    row "nuq3 unweighted k-means, $tag" "tb.none.o$o.kvqc" --cache "kvquant-3:outliers=$o"
    row "nuq3 weighted by F, $tag" "tb.fisher.o$o.kvqc" --cache "kvquant-3:outliers=$o"
    row "nuq3 weighted by F·s², $tag" "tb.fisher-s2.o$o.kvqc" --cache "kvquant-3:outliers=$o"
  done
  for o in 0 0.01; do
    tag=$([ "$o" = 0 ] && echo "no outliers" || echo "1% outliers")
    row "nuq2 F·s², $tag" "tb.fisher-s2.o$o.kvqc" --cache "kvquant-2:outliers=$o"
    row "nuq2 F·s² + Q-Norm, $tag" "tb.fisher-s2.o$o.kvqc" --cache "kvquant-2:outliers=$o:qnorm=1"
  done
} | tee docs/quality/ablation.md
