#!/usr/bin/env bash
# Configures and builds gpt.cpp (Release) into build/: build/gpt and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGPT_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
