#!/usr/bin/env bash
# What each weight type costs in quality and buys in speed, on a trained model:
# trains a GPT (BPE-tokenized Tiny Shakespeare by default, GPT-2's vocabulary,
# 6 layers x 384) on the first 90% of a text, converts it to GGUF in every type,
# and prints each file's size, its perplexity on the held-out last 10%, and its
# decode speed (one table, one run, same threads).
#   bench/quantized_quality.sh [TEXT=../shared/data/tinyshakespeare.txt] [ITERS=400] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
text=${1:-../shared/data/tinyshakespeare.txt}
iters=${2:-400}
threads=${3:-2}
work=${WORK:-out/quantized-quality}
mkdir -p "$work"
bytes=$(stat -c %s "$text")
head -c $((bytes * 9 / 10)) "$text" > "$work/train.txt"
tail -c +$((bytes * 9 / 10 + 1)) "$text" > "$work/heldout.txt"
tokenizer=../shared/data/gpt2
[[ -f $tokenizer/encoder.json ]] || tokenizer=byte
if [[ ! -f $work/model/model.safetensors ]]; then
  build/gpt train --data "$work/train.txt" --tokenizer "$tokenizer" --out "$work/model" --n-layer 6 --n-head 6 \
    --n-embd 384 --block-size 128 --batch-size 8 --max-iters "$iters" --lr 1e-3 --min-lr 1e-4 --warmup-iters 50 \
    --eval-interval 200 --threads "$threads" --val-fraction 0.05
fi
printf '%-6s %10s %12s %11s %9s %13s\n' type "file MB" "held-out loss" perplexity "vs f32" "decode tok/s"
base=""
for type in f32 f16 bf16 q8_0 q4_0; do
  file=$work/model-$type.gguf
  build/gpt convert --model "$work/model" --out "$file" --quantize "$type" --threads "$threads" >/dev/null
  loss=$(build/gpt eval --model "$file" --data "$work/heldout.txt" --threads "$threads" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
  [[ -n $base ]] || base=$loss
  speed=$(build/gpt generate --model "$file" --prompt "ROMEO:" --max-tokens 128 --seed 1 --threads "$threads" --verbose 2>&1 >/dev/null |
          sed -E 's/.*decode [0-9]+ tokens in [0-9.]+ s \(([0-9.]+) tokens\/s\).*/\1/')
  python3 - "$type" "$file" "$loss" "$base" "$speed" <<'PY'
import math, os, sys
t, f, loss, base, speed = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
print(f"{t:6} {os.path.getsize(f) / 1e6:10.1f} {loss:12.4f} {math.exp(loss):11.3f} {100 * (math.exp(loss - base) - 1):+8.2f}% {speed:>13}")
PY
done
