#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is needed, build, train a
# small GPT on the King James Bible (Debian's bible-kjv, so it works offline) for
# a few minutes, then generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --demo
scripts/build.sh gpt
mkdir -p data
if [[ ! -s data/bible.txt ]]; then
  # One verse per line; drop the "Ge1:1 " references so the model learns the prose.
  bible -f Gen1:1-Rev22:21 | sed -E 's/^[^ ]+ //' > data/bible.txt.tmp
  mv data/bible.txt.tmp data/bible.txt
fi
# About 5 minutes on 2 cores; any `gpt train` flag given to this script overrides these.
build/gpt train --data data/bible.txt --out out/bible --n-layer 4 --n-head 4 --n-embd 192 --block-size 128 \
  --batch-size 16 --max-iters 2000 --lr 1e-3 --min-lr 1e-4 --warmup-iters 100 --eval-interval 250 "$@"
echo
echo "=== Sample (build/gpt generate --model out/bible --prompt 'And God said') ==="
build/gpt generate --model out/bible --prompt "And God said" --max-tokens 400 --temperature 0.8 --top-k 40
