#!/usr/bin/env bash
# K-quants side by side with llama.cpp, on the same GPT-2 124M-shaped model
# (bench/batch_vs_llamacpp.sh makes it: out/batch-vs-llamacpp/model):
#   - llama.cpp's llama-quantize writes each mix from our F32 export, and gpt.cpp
#     writes the same mix (`gpt convert --quantize`); both files are listed with
#     their size and the type of every matrix that differs;
#   - speed on llama.cpp's own file, best of 3 each: llama-bench (prompt 128, 64 generated) against
#     bench_generate_speed --models (the same prompt and generated counts), same threads.
# llama.cpp is not part of gpt.cpp: build llama-quantize and llama-bench yourself
# (docs/benchmarks.md says how).
#   bench/kquants_vs_llamacpp.sh LLAMA_BIN_DIR [THREADS=2] [TYPES="q2_k q3_k_m q4_k_m q5_k_m q6_k"]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: bench/kquants_vs_llamacpp.sh LLAMA_BIN_DIR [THREADS] [TYPES]}
threads=${2:-2}
types=${3:-"q2_k q3_k_m q4_k_m q5_k_m q6_k"}
work=${WORK:-out/batch-vs-llamacpp}
[[ -f $work/model/model.safetensors ]] || { echo "run bench/batch_vs_llamacpp.sh first (it makes $work/model)" >&2; exit 1; }
f32=$work/model-f32.gguf
[[ -f $f32 ]] || build/gpt convert --model "$work/model" --out "$f32" >/dev/null
echo "| type | llama.cpp file MB | gpt.cpp file MB | matrices typed differently | prompt 128 tok/s llama.cpp / gpt.cpp | decode tok/s llama.cpp / gpt.cpp | decode ratio |"
echo "|---|---|---|---|---|---|---|"
for type in $types; do
  theirs=$work/llama-$type.gguf ours=$work/ours-$type.gguf
  [[ -f $theirs ]] || "$bin/llama-quantize" "$f32" "$theirs" "${type^^}" >/dev/null 2>&1
  build/gpt convert --model "$work/model" --out "$ours" --quantize "$type" --threads "$threads" >/dev/null
  "$bin/llama-bench" -m "$theirs" -p 128 -n 64 -t "$threads" -r 3 -o jsonl 2>/dev/null > "$work/llama-bench-$type.jsonl"
  build/bench/bench_generate_speed --models "$theirs" --prompt-tokens 128 --decode-tokens 64 --threads "$threads" \
    > "$work/ours-speed-$type.jsonl"
  python3 - "$type" "$theirs" "$ours" "$work/llama-bench-$type.jsonl" "$work/ours-speed-$type.jsonl" <<'PY'
import json, os, sys
sys.path.insert(0, "bench")
kind, theirs, ours, lb, og = sys.argv[1:]
pp = tg = float("nan")
for line in open(lb):
    j = json.loads(line)
    if j.get("n_prompt", 0) > 0 and j.get("n_gen", 0) == 0: pp = max(j["samples_ts"])  # best of -r 3, as bench_generate_speed reports its best of --repeats 3
    if j.get("n_gen", 0) > 0 and j.get("n_prompt", 0) == 0: tg = max(j["samples_ts"])
o = json.loads(open(og).read().splitlines()[-1])

def tensor_types(path):  # name -> ggml type number, from the GGUF header
    import struct
    f = open(path, "rb")
    magic, version, n_tensors, n_kv = struct.unpack("<IIqq", f.read(24))
    def string():
        (n,) = struct.unpack("<q", f.read(8)); return f.read(n).decode()
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def value(t):
        if t == 8: string()
        elif t == 9:
            (et, n) = struct.unpack("<Iq", f.read(12))
            for _ in range(n): value(et)
        else: f.read(sizes[t])
    for _ in range(n_kv):
        string(); (t,) = struct.unpack("<I", f.read(4)); value(t)
    out = {}
    for _ in range(n_tensors):
        name = string(); (nd,) = struct.unpack("<I", f.read(4)); f.read(8 * nd)
        (t,) = struct.unpack("<I", f.read(4)); f.read(8); out[name] = t
    return out
a, b = tensor_types(theirs), tensor_types(ours)
diff = [n for n in a if a[n] != b.get(n)]
print(f"| {kind} | {os.path.getsize(theirs) / 1e6:.1f} | {os.path.getsize(ours) / 1e6:.1f} | {', '.join(diff) or 'none'} | "
      f"{pp:.0f} / {o['prefill_tokens_per_sec']:.0f} | {tg:.1f} / {o['decode_tokens_per_sec']:.1f} | {o['decode_tokens_per_sec'] / tg:.2f}x |")
PY
done
