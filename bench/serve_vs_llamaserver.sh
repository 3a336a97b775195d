#!/usr/bin/env bash
# gpt serve and llama-server side by side on the same GGUF files, under the same
# streaming load (bench/serve_load.mjs): 2 threads each, --parallel 8, one server
# at a time. Usage:
#   bench/serve_vs_llamaserver.sh LLAMA_SERVER MODEL.gguf [MODEL.gguf ...]
# Env: CLIENTS (1,4,8,16), SECONDS_EACH (20), MAX_TOKENS (64), PROMPT_WORDS (100: ~120
# GPT-2 tokens, every request a different prompt), THREADS (2), PARALLEL (8).
set -euo pipefail
cd "$(dirname "$0")/.."
llama_server=$1
shift
clients=${CLIENTS:-1,4,8,16} seconds=${SECONDS_EACH:-20} max_tokens=${MAX_TOKENS:-64}
threads=${THREADS:-2} parallel=${PARALLEL:-8} words=${PROMPT_WORDS:-100}
port=18080
wait_up() {
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0; sleep 0.2; done
  echo "server did not come up" >&2; return 1
}
for model in "$@"; do
  name=$(basename "$model" .gguf)
  build/gpt serve --model "$model" --port $port --threads "$threads" --parallel "$parallel" --max-n 1 2>/dev/null &
  pid=$!; wait_up
  node bench/serve_load.mjs --url "http://127.0.0.1:$port" --clients "$clients" --seconds "$seconds" \
    --max-tokens "$max_tokens" --prompt-words "$words" --label "gpt.cpp $name"
  kill -TERM $pid; wait $pid || true
  "$llama_server" -m "$model" --port $port -t "$threads" -tb "$threads" --parallel "$parallel" \
    -c $((parallel * 1024)) -ctk f16 -ctv f16 --no-webui >/dev/null 2>&1 &
  pid=$!; wait_up
  node bench/serve_load.mjs --url "http://127.0.0.1:$port" --clients "$clients" --seconds "$seconds" \
    --max-tokens "$max_tokens" --prompt-words "$words" --label "llama.cpp $name"
  kill -TERM $pid; wait $pid || true
done
