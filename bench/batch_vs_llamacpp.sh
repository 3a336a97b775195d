#!/usr/bin/env bash
# Batched decoding side by side with llama.cpp: its llama-batched-bench and our
# bench_batch_decode on the same GGUF files (a GPT-2 124M-shaped model trained
# one step, exported in f32 and q8_0), prompt 128, 64 new tokens per sequence,
# 1-32 sequences, f16 KV cache in both, same threads; alternating per type.
# Prints aggregate decode tokens/s of each and the ratio. llama.cpp is not part
# of gpt.cpp: build its llama-batched-bench yourself (docs/benchmarks.md says how).
#   bench/batch_vs_llamacpp.sh PATH/TO/llama-batched-bench [THREADS=2] [TYPES="q8_0 f32"]
set -euo pipefail
cd "$(dirname "$0")/.."
llama=${1:?usage: bench/batch_vs_llamacpp.sh PATH/TO/llama-batched-bench [THREADS] [TYPES]}
threads=${2:-2}
types=${3:-"q8_0 f32"}
work=${WORK:-out/batch-vs-llamacpp}
tokenizer=../shared/data/gpt2
[[ -f $tokenizer/encoder.json ]] || { echo "needs GPT-2's vocabulary in $tokenizer (see ../shared/data/SOURCES.md)" >&2; exit 1; }
mkdir -p "$work"
if [[ ! -f $work/model/model.safetensors ]]; then
  text=../shared/data/tinyshakespeare.txt
  [[ -f $text ]] || { bible -f Gen1:1-Gen50:26 > "$work/text.txt"; text=$work/text.txt; }
  build/gpt train --data "$text" --tokenizer "$tokenizer" --out "$work/model" --n-layer 12 --n-head 12 --n-embd 768 \
    --block-size 1024 --batch-size 1 --max-iters 1 --eval-iters 1 --quiet --threads "$threads" >/dev/null
fi
sequences=1,2,4,8,16,32
for type in $types; do
  file=$work/model-$type.gguf
  [[ -f $file ]] || build/gpt convert --model "$work/model" --out "$file" --quantize "$type" >/dev/null
  "$llama" -m "$file" -c 12288 -b 2048 -ub 512 -npp 128 -ntg 64 -npl $sequences -t "$threads" -tb "$threads" \
    -ctk f16 -ctv f16 2>/dev/null | awk -F'|' '/^\|/ && $4+0 > 0 {print $4+0, $9+0}' > "$work/llama-$type.txt"
  build/bench/bench_batch_decode --models "$file" --sequences $sequences --threads "$threads" --kv-cache f16 \
    > "$work/ours-$type.jsonl"
  python3 - "$type" "$work/llama-$type.txt" "$work/ours-$type.jsonl" <<'PY'
import json, sys
kind, llama_path, ours_path = sys.argv[1:]
llama = {int(n): float(t) for n, t in (line.split() for line in open(llama_path))}
print(f"{kind}: sequences | llama.cpp tok/s | gpt.cpp tok/s | ratio | gpt.cpp step p50/p99 ms | join first token / prompt alone ms")
for line in open(ours_path):
    j = json.loads(line)
    n = j["sequences"]
    l = llama.get(n, float("nan"))
    print(f"  {n:3d} | {l:8.1f} | {j['aggregate_tokens_per_sec']:8.1f} | {j['aggregate_tokens_per_sec'] / l:5.2f}x | "
          f"{j['step_ms_p50']:.1f} / {j['step_ms_p99']:.1f} | {j['join_first_token_ms']:.0f} / {j['prompt_alone_ms']:.0f}")
PY
done
