#!/usr/bin/env bash
# Decoding a Llama-family model, gpt.cpp against llama.cpp on the same GGUF
# files: a model of GPT-2 124M's size in the Llama architecture (12 layers of
# 768, 12 heads with 4 key/value heads, SwiGLU 2048, untied head, GPT-2's
# 50,257-token vocabulary) is exported at each weight type; llama-bench
# (prompt 128, 64 generated) and bench_generate_speed --models (the same counts)
# run each file on the same threads, and bench_generate_speed reports the
# fraction of the bandwidth bound (bandwidth measured beside each decode /
# weight bytes read per token). The weights are one training step from random:
# speed does not depend on them.
# llama.cpp is not part of gpt.cpp: build llama-bench yourself (docs/benchmarks.md).
#   bench/llama_decode_vs_llamacpp.sh LLAMA_BIN_DIR [THREADS=2] [TYPES="f32 f16 bf16 q8_0 q4_0"]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: bench/llama_decode_vs_llamacpp.sh LLAMA_BIN_DIR [THREADS] [TYPES]}
threads=${2:-2}
types=${3:-"f32 f16 bf16 q8_0 q4_0"}
work=${WORK:-out/llama-decode-vs-llamacpp}
mkdir -p "$work"
model=$work/model
if [[ ! -f $model/model.safetensors ]]; then
  text=../shared/data/tinyshakespeare.txt
  [[ -f $text ]] || { bible -f Gen1:1-Gen3:24 > "$work/text.txt"; text=$work/text.txt; }
  head -c 100000 "$text" > "$work/train.txt"
  build/gpt train --data "$work/train.txt" --tokenizer ../shared/data/gpt2 --out "$model" --arch llama --n-layer 12 \
    --n-head 12 --n-kv-head 4 --n-embd 768 --ffn-hidden 2048 --tie-weights false --block-size 1024 --batch-size 1 \
    --max-iters 1 --quiet --threads "$threads" >/dev/null
fi
echo "| type | MB | prompt 128 tok/s llama.cpp / gpt.cpp | decode tok/s llama.cpp / gpt.cpp | decode ratio | gpt.cpp's fraction of the bandwidth bound |"
echo "|---|---|---|---|---|---|"
for type in $types; do
  file=$work/model-$type.gguf
  [[ -f $file ]] || build/gpt convert --model "$model" --out "$file" --quantize "$type" --threads "$threads" >/dev/null
  "$bin/llama-bench" -m "$file" -p 128 -n 64 -t "$threads" -r 3 -o jsonl 2>/dev/null > "$work/llama-bench-$type.jsonl"
  build/bench/bench_generate_speed --models "$file" --prompt-tokens 128 --decode-tokens 64 --threads "$threads" \
    > "$work/ours-$type.jsonl"
  python3 - "$type" "$file" "$work/llama-bench-$type.jsonl" "$work/ours-$type.jsonl" <<'PY'
import json, os, sys
kind, file, lb, og = sys.argv[1:]
pp = tg = float("nan")
for line in open(lb):
    j = json.loads(line)
    if j.get("n_prompt", 0) > 0 and j.get("n_gen", 0) == 0: pp = max(j["samples_ts"])  # best of -r 3, as bench_generate_speed reports its best of --repeats 3
    if j.get("n_gen", 0) > 0 and j.get("n_prompt", 0) == 0: tg = max(j["samples_ts"])
o = json.loads(open(og).read().splitlines()[-1])
print(f"| {kind} | {os.path.getsize(file) / 1e6:.1f} | {pp:.0f} / {o['prefill_tokens_per_sec']:.0f} | "
      f"{tg:.1f} / {o['decode_tokens_per_sec']:.1f} | {o['decode_tokens_per_sec'] / tg:.2f}x | {o['fraction_of_bound']:.2f} |")
PY
done
