#!/usr/bin/env bash
# Packed against padded fine-tuning rows: `gpt sft --packing on|off` on the same
# chats, the same examples per step, side by side (interleaved rounds, so machine
# noise hits both alike). Padded: one chat per row, the batch as long as its
# longest chat. Packed: the chats end to end, attention kept inside each, rows
# shaped for the fewest positions. The losses agree (the same examples, the same
# arithmetic up to summation order); what differs is the time per step.
# Chats: "continue the passage" questions on the King James Bible (Debian's
# bible-kjv) with replies of 1 to 8 verses, so lengths vary as real chats do.
# Prints per-step time, positions computed per step, the first/last losses and the ratio.
#   bench/sft_packing.sh MODEL [THREADS=2] [ROUNDS=2] [STEPS=6] [BATCH=8] [BLOCK=1024]
# MODEL: a checkpoint, Hugging Face directory or GGUF file (GPT-2 124M in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/sft_packing.sh MODEL [THREADS] [ROUNDS] [STEPS] [BATCH] [BLOCK]}
threads=${2:-2} rounds=${3:-2} steps=${4:-6} batch=${5:-8} block=${6:-1024}
work=${WORK:-out/sft-packing}
command -v bible >/dev/null || { echo "needs bible-kjv (apt-get install bible-kjv)" >&2; exit 1; }
mkdir -p "$work"
bible -f Gen1:1-Rev22:21 | sed -E 's/^[^ ]+ //' > "$work/bible.txt"
/usr/bin/python3 - "$work/bible.txt" "$work/chats.jsonl" <<'PY'
import json, random, sys
verses = [v.strip() for v in open(sys.argv[1], encoding="utf-8") if v.strip()]
rng = random.Random(1)
with open(sys.argv[2], "w") as f:
    for _ in range(400):
        i, k = rng.randrange(len(verses) - 10), rng.randint(1, 8)
        f.write(json.dumps({"messages": [{"role": "user", "content": "Continue: " + verses[i]},
                                         {"role": "assistant", "content": " ".join(verses[i + 1:i + 1 + k])}]}) + "\n")
PY
run() {  # $1 = packing on|off; prints "median_seconds_per_step median_positions_per_step first_loss last_loss"
  local label=$1
  rm -rf "$work/$label"
  build/gpt sft --init-from "$model" --data "$work/chats.jsonl" --out "$work/$label" --packing "$label" \
    --block-size "$block" --batch-size "$batch" --max-iters "$steps" --eval-interval 100000 --threads "$threads" \
    --quiet >/dev/null
  /usr/bin/python3 - "$work/$label/train_log.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
timed = rows[1:]  # the first step warms up
sec = statistics.median(r["step_seconds"] for r in timed)
pos = statistics.median(r["tokens_per_sec"] * r["step_seconds"] for r in timed)
print(f"{sec:.3f} {pos:.0f} {rows[0]['loss']:.5f} {rows[-1]['loss']:.5f}")
PY
}
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $threads threads; model $model; batch $batch chats, context $block"
echo "| round | padded s/step | padded positions | packed s/step | packed positions | losses padded (first, last) | losses packed | speed-up |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  read -r ps pp pf pl < <(run off)
  read -r ks kp kf kl < <(run on)
  echo "| $r | $ps | $pp | $ks | $kp | $pf, $pl | $kf, $kl | $(python3 -c "print(f'{$ps/$ks:.2f}x')") |"
done
