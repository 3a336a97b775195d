#!/usr/bin/env bash
# Cross-builds gpt.cpp for ARM64 (AArch64) Linux with Debian's cross toolchain and
# runs its tests under qemu-user, on an x86-64 Debian machine
# (scripts/install-deps.sh --arm64 installs both). Correctness only: under
# emulation, speed means nothing. Extra arguments go to ctest:
#   scripts/test-arm64.sh             every test that runs on x86 and can run here
#   scripts/test-arm64.sh --fast      what CI runs: only the programs labelled arm64-fast
#                                     in tests/CMakeLists.txt, built and run
#   scripts/test-arm64.sh -R Kernels  (any ctest arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
if [[ ${1:-} == --fast ]]; then
  shift
  # tests/CMakeLists.txt's GPT_ARM64_FAST, and gpt, which they run.
  targets=(--target gpt test_kernels test_model test_tokenizer test_generation)
  set -- -L arm64-fast "$@"
fi
scripts/install-deps.sh --arm64
build=build-arm64
# oneDNN's arm64 -dev package (headers, CMake package) cannot be installed beside
# the amd64 one (their dnnl_config.h differ): unpacked here instead; the library
# itself is libdnnl2:arm64's.
sysroot=$build/sysroot
dnnl_dir=$PWD/$sysroot/usr/lib/aarch64-linux-gnu/cmake/dnnl
if [[ ! -f $dnnl_dir/dnnl-config.cmake ]]; then
  # The package is kept in the user's cache, so a fresh clone needs no download.
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/gpt.cpp
  mkdir -p "$cache"
  deb=$(ls "$cache"/libdnnl-dev_*_arm64.deb 2>/dev/null | tail -n 1 || true)
  if [[ -z $deb ]]; then
    (cd "$cache" && apt-get download libdnnl-dev:arm64 2>/dev/null)
    deb=$(ls "$cache"/libdnnl-dev_*_arm64.deb | tail -n 1)
  fi
  mkdir -p "$sysroot"
  dpkg-deb -x "$deb" "$sysroot"
fi
for lib in /usr/lib/aarch64-linux-gnu/libdnnl.so.*; do
  ln -sfn "$lib" "$sysroot/usr/lib/aarch64-linux-gnu/$(basename "$lib")"
done
cmake -S . -B $build -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake -Ddnnl_DIR="$dnnl_dir" \
  -DCMAKE_BUILD_TYPE=Release -DGPT_WERROR=ON -DGPT_WITH_MPI=OFF -DGPT_MAN=OFF -DGPT_BUILD_BENCH=OFF \
  -DGPT_BUILD_PORTABLE_TESTS=OFF >/dev/null
cmake --build $build -j"$(nproc)" "${targets[@]}"
(cd $build && ctest --output-on-failure --timeout 1800 "$@")
