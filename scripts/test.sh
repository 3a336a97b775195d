#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test: installs packages, builds
# (warnings are errors), runs CTest. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
