#!/usr/bin/env bash
# Our Llama GGUF files in llama.cpp: greedy continuations of several prompts,
# and the top next-token probabilities, from `gpt generate` and llama.cpp's
# llama-server on the same file (f32 and q8_0 by default). A model trained
# here with grouped-query attention and an untied head, unless MODEL is given.
# llama.cpp is not part of gpt.cpp: build its llama-server yourself
# (docs/benchmarks.md says how).
# QKV_BIAS=1 trains it with Qwen2's q/k/v biases (llama.cpp's qwen2 architecture).
# ROPE="yarn 4" (or "linear 2") exports the model RoPE-scaled to run at that many
# times its 256-token context (llama.cpp's rope.scaling.* keys) and continues
# each prompt for 400 tokens instead of 80, past the trained context.
#   bench/llama_gguf_vs_llamacpp.sh PATH/TO/llama-server [THREADS=2] [TYPES="f32 q8_0"]
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:?usage: bench/llama_gguf_vs_llamacpp.sh PATH/TO/llama-server [THREADS] [TYPES]}
threads=${2:-2}
types=${3:-"f32 q8_0"}
work=${WORK:-out/llama-gguf-vs-llamacpp}
model=${MODEL:-$work/model}
port=${PORT:-18181}
mkdir -p "$work"
if [[ ! -f $model/model.safetensors ]]; then
  text=../shared/data/tinyshakespeare.txt
  [[ -f $text ]] || { bible -f Gen1:1-Gen50:26 > "$work/text.txt"; text=$work/text.txt; }
  build/gpt train --data "$text" --out "$model" --arch llama --n-layer 4 --n-head 8 --n-kv-head 2 --n-embd 128 \
    --block-size 256 --tie-weights false --max-iters 1500 --eval-interval 500 --quiet --threads "$threads" \
    ${QKV_BIAS:+--qkv-bias} >/dev/null
fi
rope_flags=() ctx=256 new=80
if [[ -n ${ROPE:-} ]]; then
  read -r rope_type rope_factor <<<"$ROPE"
  rope_flags=(--rope-scaling "$rope_type" --rope-factor "$rope_factor")
  ctx=$(python3 -c "print(round(256 * $rope_factor))") new=400
fi
new=${NEW:-$new}
prompts=("ROMEO:" "First Citizen:" "What is the" "KING RICHARD III:
" "O, ")
status=0
for type in $types; do
  file=$work/model-$type${ROPE:+-${ROPE// /}}.gguf
  build/gpt convert --model "$model" --out "$file" --quantize "$type" "${rope_flags[@]}" >/dev/null
  LD_LIBRARY_PATH=$(dirname "$server") "$server" -m "$file" --port "$port" -t "$threads" -c "$ctx" -np 1 \
    > "$work/server-$type.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.2; done
  same=0
  for p in "${prompts[@]}"; do
    ours=$(build/gpt generate --model "$file" --prompt "$p" --max-tokens "$new" --greedy --threads "$threads")
    theirs=$(python3 -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "n_predict": int(sys.argv[2]),
"temperature": 0, "top_k": 1, "cache_prompt": False}))' "$p" "$new" | curl -s "localhost:$port/completion" -d @- |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["content"])')
    if [[ "$ours" == "$p$theirs" ]]; then same=$((same + 1)); else
      status=1; printf '%s: differs for %q\n  gpt.cpp:   %q\n  llama.cpp: %q\n' "$type" "$p" "$ours" "$p$theirs"; fi
  done
  echo "$type${ROPE:+ (rope $ROPE)}: greedy continuations ($new tokens) identical for $same of ${#prompts[@]} prompts"
  # The first step's top-5 probabilities, side by side.
  python3 - "$port" "$file" "$threads" <<'PY'
import json, subprocess, sys, urllib.request
port, file, threads = sys.argv[1:]
import math
req = json.dumps({"prompt": "ROMEO:", "n_predict": 1, "n_probs": 5, "temperature": 0, "cache_prompt": False}).encode()
j = json.load(urllib.request.urlopen(f"http://localhost:{port}/completion", req))
theirs = {p["token"]: math.exp(p["logprob"]) for p in j["completion_probabilities"][0]["top_logprobs"]}
out = subprocess.run(["build/gpt", "generate", "--model", file, "--prompt", "ROMEO:", "--max-tokens", "1", "--greedy",
                      "--show-probs", "5", "--json", "--threads", threads], capture_output=True, text=True, check=True)
ours = {t["text"]: t["prob"] for t in json.loads(out.stdout.splitlines()[0])["top"]}
worst = max(abs(ours.get(k, 0.0) - v) for k, v in theirs.items())
print("  top-5 after 'ROMEO:':", ", ".join(f"{k!r} {v:.5f}/{ours.get(k, 0.0):.5f}" for k, v in theirs.items()),
      f"(llama.cpp/gpt.cpp; largest difference {worst:.1e})")
PY
  kill $pid; wait $pid 2>/dev/null || true
done
exit $status
