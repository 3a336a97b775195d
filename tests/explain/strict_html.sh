#!/usr/bin/env bash
# gpt explain's report parses without a single error under html5lib's strict
# parser (Debian's python3-html5lib, offline). Exit 77 (skipped) without it.
# Usage: strict_html.sh GPT_BINARY MODEL
set -euo pipefail
if ! /usr/bin/python3 -c "import html5lib" 2>/dev/null; then
  echo "SKIPPED: python3-html5lib is not installed (scripts/install-deps.sh --js)"; exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for lang in en ko; do
  "$1" explain --model "$2" --prompt "Hello, world! <b>&amp; émigré" --out "$dir/report-$lang.html" --lang "$lang" >/dev/null
  /usr/bin/python3 - "$dir/report-$lang.html" <<'PY'
import sys, html5lib
with open(sys.argv[1], "rb") as f:
    html5lib.HTMLParser(strict=True).parse(f)  # raises on the first parse error
print("strict parse ok:", sys.argv[1])
PY
done
