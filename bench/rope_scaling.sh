#!/usr/bin/env bash
# A Llama-architecture model past the context it was trained on: held-out loss
# and perplexity at 1x, 2x and 4x its context, RoPE unscaled (extrapolated),
# with linear position interpolation, and with YaRN. Character-level Tiny
# Shakespeare (the King James Bible when it is absent): the last 10% held out.
#   bench/rope_scaling.sh [THREADS=2] [ITERS=1500] [CONTEXT=128]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
iters=${2:-1500}
context=${3:-128}
work=${WORK:-out/rope-scaling}
mkdir -p "$work"
text=../shared/data/tinyshakespeare.txt
[[ -f $text ]] || { bible -f Gen1:1-Rev22:21 | sed -E 's/^[^ ]+ //' > "$work/all.txt"; text=$work/all.txt; }
lines=$(wc -l < "$text")
head -n $((lines * 9 / 10)) "$text" > "$work/train.txt"
tail -n $((lines - lines * 9 / 10)) "$text" > "$work/held_out.txt"
if [[ ! -f $work/model/model.safetensors ]]; then
  build/gpt train --data "$work/train.txt" --out "$work/model" --arch llama --n-layer 4 --n-head 4 --n-kv-head 2 \
    --n-embd 128 --block-size "$context" --batch-size 16 --max-iters "$iters" --eval-interval "$iters" --quiet \
    --threads "$threads" > /dev/null
fi
printf '| context | RoPE | held-out loss | perplexity |\n|---|---|---|---|\n'
for factor in 1 2 4; do
  for scaling in none linear yarn; do
    [[ $factor == 1 && $scaling != none ]] && continue
    flags=()
    [[ $factor != 1 ]] && flags=(--rope-factor "$factor" --rope-scaling "$scaling")
    out=$(build/gpt eval --model "$work/model" --data "$work/held_out.txt" --threads "$threads" "${flags[@]}")
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("| %s | %s | %.4f | %.3f |" % (sys.argv[2], sys.argv[3], j["loss"], j["perplexity"]))' \
      "$out" "$((context * factor))" "$([[ $factor == 1 ]] && echo trained || echo "$scaling")"
  done
done
