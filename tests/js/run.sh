#!/usr/bin/env bash
# Runs one Node test file (ctest calls it with a path under tests/js). Exits 77
# (ctest: skipped) with the reason when what it needs is missing: node, the npm
# packages (scripts/test.sh installs them with `npm ci`), or chromium for the
# browser tests.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null; then echo "SKIPPED: node is not installed (scripts/install-deps.sh --js)"; exit 77; fi
if [[ ! -d node_modules/openai ]]; then echo "SKIPPED: npm packages missing: run 'npm ci' in tests/js"; exit 77; fi
if [[ $1 == */browser.test.mjs || $1 == */explain_report.test.mjs ]] && ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
  echo "SKIPPED: chromium is not installed (scripts/install-deps.sh --js)"; exit 77
fi
exec node --test --test-reporter=spec "$1"
