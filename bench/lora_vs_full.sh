#!/usr/bin/env bash
# A LoRA fine-tuning step against a full one on GPT-2 124M: time per optimizer
# step and peak memory of `gpt sft`, the same chats, batch and context, side by
# side (interleaved rounds, so machine noise hits both alike). LoRA skips the
# frozen weights' gradient products and keeps no gradient or AdamW state for
# them. Chats: user questions with replies cut from Tiny Shakespeare, long enough
# to fill the context. Prints a table and the ratios.
#   bench/lora_vs_full.sh MODEL [THREADS=2] [ROUNDS=2] [STEPS=6] [BLOCK=256] [BATCH=4] [RANK=8]
# MODEL: a GPT-2 124M checkpoint, Hugging Face directory or GGUF file.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/lora_vs_full.sh MODEL [THREADS] [ROUNDS] [STEPS] [BLOCK] [BATCH] [RANK]}
threads=${2:-2} rounds=${3:-2} steps=${4:-6} block=${5:-256} batch=${6:-4} rank=${7:-8}
work=${WORK:-out/lora-vs-full}
text=../shared/data/tinyshakespeare.txt
[[ -f $text ]] || { echo "needs $text (../shared/data/SOURCES.md)" >&2; exit 1; }
mkdir -p "$work"
/usr/bin/python3 - "$text" "$work/chats.jsonl" <<'PY'
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
with open(sys.argv[2], "w") as f:
    for i in range(64):
        reply = text[i * 2000:(i * 2000) + 1800]
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Recite passage {i}."},
                                         {"role": "assistant", "content": reply}]}) + "\n")
PY
run() {  # $1 = label, rest = extra flags; prints "median_seconds_per_step peak_MB"
  local label=$1; shift
  rm -rf "$work/$label"
  /usr/bin/time -f "%M" -o "$work/$label.rss" build/gpt sft --init-from "$model" --data "$work/chats.jsonl" \
    --out "$work/$label" --block-size "$block" --batch-size "$batch" --max-iters "$steps" --eval-interval 100000 \
    --threads "$threads" --quiet "$@" >/dev/null
  /usr/bin/python3 - "$work/$label/train_log.jsonl" "$work/$label.rss" "$batch" "$block" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # the first step warms up
tok = statistics.median(r["tokens_per_sec"] for r in rows)
print(f"{int(sys.argv[3]) * int(sys.argv[4]) / tok:.3f} {int(open(sys.argv[2]).read().split()[-1]) / 1024:.0f}")
PY
}
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $threads threads; model $model; batch $batch x $block tokens; LoRA rank $rank"
echo "| round | full s/step | full peak MB | LoRA s/step | LoRA peak MB | speed-up | memory |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  read -r fs fm < <(run full)
  read -r ls lm < <(run lora --lora-rank "$rank")
  echo "| $r | $fs | $fm | $ls | $lm | $(python3 -c "print(f'{$fs/$ls:.2f}x')") | $(python3 -c "print(f'{$lm/$fm:.0%}')") |"
done
