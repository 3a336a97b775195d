#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test: installs packages (and the
# server tests' npm packages), builds (warnings are errors), runs CTest, then builds again with ASan + UBSan (clang)
# and runs the unit tests under them and fuzzes the file loaders for 60 s
# (scripts/sanitize.sh), then cross-builds for ARM64 and runs the kernel, model,
# tokenizer and generation tests under qemu-user (scripts/test-arm64.sh --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --fuzz --js --demo
# The Node packages of the tests with real counterparts (tests/js), at the versions package-lock.json pins.
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
scripts/build.sh
(cd build && ctest --output-on-failure --timeout 900 "$@")
scripts/sanitize.sh 60
scripts/test-arm64.sh --fast
