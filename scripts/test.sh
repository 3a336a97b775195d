#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test: installs packages (and the
# server tests' npm packages), builds (warnings are errors), runs CTest, then builds again with ASan + UBSan (clang)
# and runs the unit tests under them and fuzzes the file loaders for 60 s
# (scripts/sanitize.sh), then cross-builds for ARM64 and runs the kernel, model,
# tokenizer and generation tests under qemu-user (scripts/test-arm64.sh --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each leg's wall-clock time, printed as it ends and summed up at the end.
legs=()
leg() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  legs+=("$(printf '%-34s %4d s' "$name" $((SECONDS - start)))")
  echo "== $name: $((SECONDS - start)) s"
}
leg "packages" scripts/install-deps.sh --fuzz --js --demo
# The Node packages of the tests with real counterparts (tests/js), at the versions package-lock.json pins.
leg "npm packages (tests/js)" bash -c 'cd tests/js && npm ci --no-audit --no-fund --loglevel=error'
leg "build (GCC, Release)" scripts/build.sh
leg "tests (GCC, Release)" bash -c 'cd build && ctest --output-on-failure --timeout 900 "$@"' ctest "$@"
leg "ASan/UBSan build, tests, fuzzing" scripts/sanitize.sh 60
leg "ARM64 cross-build, tests (qemu)" scripts/test-arm64.sh --fast
printf '%s\n' "== all tests passed; time per leg:" "${legs[@]}" "$(printf '%-34s %4d s' total $SECONDS)"
