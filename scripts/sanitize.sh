#!/usr/bin/env bash
# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, and the
# libFuzzer targets, from one instrumented build (clang; library built once for
# both, without MPI, which also checks that build): scripts/sanitize.sh [FUZZ_SECONDS=60].
# Left out under the sanitizers: the MPI tests (no MPI in this build) and the
# long learning runs (minutes of training at a fraction of the speed), and the
# Node tests of the server (memory figures mean nothing under ASan), and the
# Python and install tests (an instrumented libgptcpp loads only into instrumented
# programs; the C API's own tests, in C, run here), and the README's tour (a minute
# of training); the Release suite runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake -S . -B build-sanitize -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DGPT_FUZZ=ON -DGPT_WERROR=ON -DGPT_MAN=OFF -DGPT_WITH_MPI=OFF -DGPT_BUILD_TESTS=ON \
  -DGPT_BUILD_PORTABLE_TESTS=OFF -DGPT_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-sanitize -j"$(nproc)" >/dev/null
echo "unit tests under ASan + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure --timeout 900 -E '^(Mpi\.|Learning\.|Js\.|Python\.|Install\.|Docs\.)')

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp fuzz/corpus/* "$corpus"/
echo "fuzz_tokenizer: ${seconds} s (encoder round trip, tokenizer files, decoder, safetensors, GGUF models, config.json, checkpoint directories)"
build-sanitize/fuzz/fuzz_tokenizer -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 "$corpus" \
  >"$corpus/log" 2>&1 || { tail -n 60 "$corpus/log"; echo "fuzz_tokenizer FAILED"; exit 1; }
grep -E "^stat::number_of_executed_units|^Done" "$corpus/log" || true
echo "fuzz_tokenizer: no crash"
