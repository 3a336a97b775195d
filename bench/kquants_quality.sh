#!/usr/bin/env bash
# What each K-quant mix costs in quality, gpt.cpp's quantizer against llama.cpp's:
# a GPT (GPT-2's BPE, 4 layers x 512: rows of 512 and 2048, whole K super-blocks)
# trained on the first 90% of Tiny Shakespeare; for each mix, llama.cpp's
# llama-quantize and `gpt convert --quantize` each write a file from the same F32
# export. Held-out perplexity of every file by `gpt eval` (every token, windows of
# the context) and by llama.cpp's llama-perplexity (second half of each context
# window), each also relative to its own F32 figure, so both tools' views of the
# same files sit side by side.
#   bench/kquants_quality.sh LLAMA_BIN_DIR [THREADS=2] [TYPES="q2_k q3_k_m q4_k_m q5_k_m q6_k q8_0"]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: bench/kquants_quality.sh LLAMA_BIN_DIR [THREADS] [TYPES]}
threads=${2:-2}
types=${3:-"q2_k q3_k_m q4_k_m q5_k_m q6_k q8_0"}
work=${WORK:-out/kquant-quality}
text=../shared/data/tinyshakespeare.txt tokenizer=../shared/data/gpt2
[[ -f $text && -f $tokenizer/encoder.json ]] || { echo "needs $text and $tokenizer (../shared/data/SOURCES.md)" >&2; exit 1; }
mkdir -p "$work"
bytes=$(stat -c %s "$text")
head -c $((bytes * 9 / 10)) "$text" > "$work/train.txt"
tail -c +$((bytes * 9 / 10 + 1)) "$text" > "$work/heldout.txt"
if [[ ! -f $work/model/model.safetensors ]]; then
  build/gpt train --data "$work/train.txt" --tokenizer "$tokenizer" --out "$work/model" --n-layer 4 --n-head 8 \
    --n-embd 512 --block-size 128 --batch-size 8 --max-iters 300 --lr 1e-3 --min-lr 1e-4 --warmup-iters 30 \
    --eval-interval 300 --threads "$threads" --val-fraction 0.05 --quiet >/dev/null
fi
build/gpt convert --model "$work/model" --out "$work/f32.gguf" >/dev/null
ours_ppl() { build/gpt eval --model "$1" --data "$work/heldout.txt" --threads "$threads" | python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])'; }
llama_ppl() { "$bin/llama-perplexity" -m "$1" -f "$work/heldout.txt" -c 128 -b 128 -t "$threads" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
base_ours=$(ours_ppl "$work/f32.gguf") base_llama=$(llama_ppl "$work/f32.gguf")
echo "F32: gpt eval $base_ours, llama-perplexity $base_llama"
echo "| mix | file | MB | gpt eval ppl | vs F32 | llama-perplexity ppl | vs F32 |"
echo "|---|---|---|---|---|---|---|"
for type in $types; do
  "$bin/llama-quantize" "$work/f32.gguf" "$work/llama-$type.gguf" "${type^^}" >/dev/null 2>&1
  build/gpt convert --model "$work/model" --out "$work/ours-$type.gguf" --quantize "$type" --threads "$threads" >/dev/null
  for who in llama ours; do
    f=$work/$who-$type.gguf
    o=$(ours_ppl "$f") l=$(llama_ppl "$f")
    python3 -c "
import os, sys
o, l, bo, bl = map(float, sys.argv[3:7])
print(f'| {sys.argv[1]} | {sys.argv[2]} | {os.path.getsize(sys.argv[7]) / 1e6:.1f} | {o:.3f} | {100 * (o / bo - 1):+.2f}% | {l:.3f} | {100 * (l / bl - 1):+.2f}% |')
" "$type" "$( [[ $who == llama ]] && echo llama-quantize || echo 'gpt convert')" "$o" "$l" "$base_ours" "$base_llama" "$f"
  done
done
