#!/usr/bin/env bash
# Data-parallel scaling on the gpt2-124M config (12/12/768, GPT-2 vocabulary,
# block 256, global batch 4): 1 rank vs 2 ranks, 1 thread each, a few steps.
# Prints tokens/s, peak RSS per rank, scaling efficiency and the share of a step
# spent after backward (collectives + optimizer): one ring all-reduce after backward
# (the default), MPI_Iallreduce per block overlapping backward, and ZeRO-1.
#   bench/mpi_scaling.sh [STEPS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(train --data ../shared/data/tinyshakespeare.txt --tokenizer ../shared/data/gpt2 --n-layer 12 --n-head 12
      --n-embd 768 --block-size 256 --batch-size 4 --max-iters "$steps" --eval-interval 100000 --eval-iters 1
      --threads 1 --quiet)
run() {  # label, command...
  local label=$1; shift
  local log; log=$(mktemp)
  /usr/bin/time -v "$@" >"$log.out" 2>"$log.err" || { cat "$log.err"; exit 1; }
  local rss; rss=$(grep "Maximum resident" "$log.err" | awk '{print $NF}')
  echo "$label $(tail -n1 "$log.out") max_rss_kb_of_launcher_or_rank=$rss"
}
run "1 rank :" build/gpt "${args[@]}" --out out/mpi-1
# Under mpirun, each rank's peak RSS is measured by wrapping the rank itself.
mpirun --oversubscribe -np 2 /usr/bin/time -f "rank peak RSS %M kB" build/gpt "${args[@]}" --out out/mpi-2 2>&1 | grep -v "^$"
mpirun --oversubscribe -np 2 /usr/bin/time -f "rank peak RSS %M kB (MPI_Iallreduce per block during backward)" \
  build/gpt "${args[@]}" --overlap-comm true --out out/mpi-2s 2>&1 | grep -v "^$"
mpirun --oversubscribe -np 2 /usr/bin/time -f "rank peak RSS %M kB (ZeRO-1)" build/gpt "${args[@]}" --zero 1 --out out/mpi-2z 2>&1 | grep -v "^$"
