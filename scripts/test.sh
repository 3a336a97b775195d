#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test: installs packages, builds
# (warnings are errors), runs CTest, then fuzzes the tokenizer and file loaders
# for 60 s. About 8 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --fuzz
scripts/build.sh
(cd build && ctest --output-on-failure --timeout 900 "$@")
scripts/fuzz.sh 60
