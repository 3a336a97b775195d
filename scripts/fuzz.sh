#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UBSan, library
# instrumented; built without MPI, which also checks that build) and runs each
# for a bounded time: scripts/fuzz.sh [SECONDS=60].
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DGPT_FUZZ=ON -DGPT_WITH_MPI=OFF -DGPT_BUILD_TESTS=OFF -DGPT_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_tokenizer >/dev/null
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp fuzz/corpus/* "$corpus"/
echo "fuzz_tokenizer: ${seconds} s (encoder round trip, tokenizer files, decoder, safetensors, GGUF models)"
build-fuzz/fuzz/fuzz_tokenizer -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 "$corpus" \
  >"$corpus/log" 2>&1 || { tail -n 60 "$corpus/log"; echo "fuzz_tokenizer FAILED"; exit 1; }
grep -E "^stat::number_of_executed_units|^Done" "$corpus/log" || true
echo "fuzz_tokenizer: no crash"
