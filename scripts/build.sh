#!/usr/bin/env bash
# Configures and builds gpt.cpp (Release) into build/: build/gpt, the tests and
# the benchmarks, or only the targets named (scripts/build.sh gpt).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGPT_WERROR=ON >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j"$(nproc)" "${targets[@]}"
