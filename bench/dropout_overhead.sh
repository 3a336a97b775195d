#!/usr/bin/env bash
# What dropout costs a training step: `gpt train` with --dropout 0 and P side by
# side (interleaved rounds), nanoGPT's Shakespeare shape by default (6 x 384,
# context 256), median tokens/s over steps 2..STEPS.
#   bench/dropout_overhead.sh [THREADS=2] [ROUNDS=2] [STEPS=6] [BATCH=32] [P=0.2]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2} rounds=${2:-2} steps=${3:-6} batch=${4:-32} p=${5:-0.2}
text=../shared/data/tinyshakespeare.txt
[[ -f $text ]] || { echo "needs $text (../shared/data/SOURCES.md)" >&2; exit 1; }
work=${WORK:-out/dropout-overhead}
mkdir -p "$work"
rate() {  # $1 = dropout; prints the median tokens/s
  rm -rf "$work/run"
  build/gpt train --data "$text" --out "$work/run" --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 \
    --batch-size "$batch" --max-iters "$steps" --eval-interval 100000 --dropout "$1" --threads "$threads" --quiet >/dev/null
  /usr/bin/python3 -c "import json, statistics, sys; r = [json.loads(l) for l in open(sys.argv[1])][1:]; print(round(statistics.median(x['tokens_per_sec'] for x in r)))" "$work/run/train_log.jsonl"
}
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $threads threads; 6 x 384, context 256, batch $batch"
echo "| round | no dropout tokens/s | dropout $p tokens/s | cost |"
echo "|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  a=$(rate 0) b=$(rate "$p")
  echo "| $r | $a | $b | $(python3 -c "print(f'{1 - $b / $a:.1%}')") |"
done
