#!/usr/bin/env bash
# `cmake --install` into a fresh prefix, then what a user of the package does:
# build examples/ with find_package(gptcpp), and score.c with pkg-config alone;
# run them on a model trained by the installed gpt and compare with the command.
# Usage: install_and_build_examples.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >/dev/null
fail() { echo "FAILED: $*" >&2; exit 1; }
[[ -x $prefix/bin/gpt ]] || fail "bin/gpt not installed"
lib=$(dirname "$(find "$prefix" -name 'libgptcpp.so' | head -1)")
[[ -n $lib && -e $lib/libgptcpp.so ]] || fail "libgptcpp.so not installed"
[[ -f $prefix/include/gpt.h && -f $prefix/include/gpt/generation/generate.h ]] || fail "headers not installed"
[[ ! -e $prefix/include/gpt/cli && ! -e $prefix/include/gpt/kernels/avx512.h ]] || fail "internal headers installed"
[[ -f $lib/cmake/gptcpp/gptcppConfig.cmake && -f $lib/pkgconfig/gptcpp.pc ]] || fail "package files missing"
# A man page for gpt and for every subcommand its help lists.
commands=$("$prefix/bin/gpt" --help | sed -n '/^Subcommands:/,$p' | sed -n 's/^  \([a-z]\+\) .*/\1/p')
[[ -n $commands ]] || fail "no subcommands in gpt --help"
for page in gpt $(printf 'gpt-%s ' $commands); do
  f=$prefix/share/man/man1/$page.1
  [[ -f $f ]] || fail "man page $page.1 missing"
  grep -q '^\.TH ' "$f" || fail "$page.1 is not a man page"
done
grep -qF -- '\-\-max\-tokens' "$prefix/share/man/man1/gpt-generate.1" || fail "gpt-generate.1 lacks the options"
echo "installed: gpt, libgptcpp, headers, CMake package, pkg-config file, $(wc -w <<<"gpt $commands") man pages"

# gpt.h is strict C99 and C11, and C++.
for std in c99 c11; do
  echo '#include <gpt.h>' | cc -std=$std -pedantic-errors -Wall -Wextra -fsyntax-only -I"$prefix/include" -x c - \
    || fail "gpt.h is not valid $std"
done
echo '#include <gpt.h>' | g++ -std=c++17 -Wall -Wextra -fsyntax-only -I"$prefix/include" -x c++ - || fail "gpt.h in C++"
# The installed headers alone compile (nothing reaches back into the source tree).
for h in $(cd "$prefix/include" && find gpt -name '*.h'); do echo "#include <$h>"; done > "$work/all_headers.cpp"
g++ -std=c++20 -fsyntax-only -I"$prefix/include" "$work/all_headers.cpp" || fail "installed headers do not compile alone"

# examples/ with find_package(gptcpp).
cmake -S "$src/examples" -B "$work/examples" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/examples" -j2 >/dev/null
# score.c with pkg-config only, as a C project without CMake would.
cc -std=c11 -Wall -Wextra -Werror "$src/examples/score.c" -o "$work/score_pc" \
  $(PKG_CONFIG_PATH=$lib/pkgconfig pkg-config --cflags --libs gptcpp) -Wl,-rpath,"$lib"

# A small model, trained by the installed command.
for i in $(seq 60); do
  echo "In the beginning God created the heaven and the earth. And the earth was without form, and void."
done > "$work/text.txt"
"$prefix/bin/gpt" train --data "$work/text.txt" --out "$work/model" --n-layer 1 --n-head 2 --n-embd 32 \
  --block-size 32 --batch-size 8 --max-iters 40 --lr 3e-3 --eval-interval 40 --eval-iters 2 --quiet >/dev/null

# generate (C++) writes what `gpt generate` writes with the same sampling options.
got=$("$work/examples/generate" "$work/model" "And God" 60)
want=$("$prefix/bin/gpt" generate --model "$work/model" --prompt "And God" --max-tokens 60 --temperature 0.8 \
  --top-k 40 --seed 1337)
[[ "$got" == "$want" ]] || fail "examples/generate differs from gpt generate: '$got' vs '$want'"
[[ ${#got} -gt 40 ]] || fail "examples/generate wrote too little: '$got'"
echo "examples/generate (C++, find_package): same text as gpt generate"

# score (C), both builds, against `gpt eval`.
eval_loss=$("$prefix/bin/gpt" eval --model "$work/model" --data "$work/text.txt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])')
for score in "$work/examples/score" "$work/score_pc"; do
  loss=$("$score" "$work/model" "$work/text.txt" | sed -n 's/^loss //p')
  python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-4 * max(1, abs(b)))" \
    "$loss" "$eval_loss" || fail "$score: loss $loss, gpt eval says $eval_loss"
done
echo "examples/score (C, find_package and pkg-config): loss $loss = gpt eval's $eval_loss"
# Errors reach the C caller as a message and a status.
if out=$("$work/examples/score" "$work/nope" "$work/text.txt" 2>&1); then fail "score of a missing model succeeded"; fi
grep -q "GPT_ERR_NOT_FOUND" <<<"$out" || fail "missing model: '$out'"
echo "ok"
