#!/usr/bin/env bash
# Installs the Debian packages gpt.cpp needs to build and test. Skips apt-get
# when everything is already there.
set -euo pipefail
#   --demo  also the default corpus (bible-kjv)
#   --fuzz  also clang and libFuzzer (scripts/sanitize.sh: sanitized tests and fuzzing)
#   --js    also Node.js, chromium and python3-html5lib (the server's tests with the openai client, a
#           browser and autocannon; the strict parse of gpt explain's report)
#   --arm64 also the ARM64 cross toolchain, qemu-user and the arm64 libraries beside
#           the amd64 ones (multiarch; scripts/test-arm64.sh). oneDNN's arm64 -dev
#           package cannot sit beside the amd64 one: test-arm64.sh unpacks it.
arm64=0
packages=(cmake g++ make libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev libcli11-dev libutf8proc-dev libpcre2-dev libgtest-dev libbenchmark-dev libpugixml-dev
  libopenmpi-dev openmpi-bin libcpp-httplib-dev pkg-config help2man python3)
for arg in "$@"; do
  case "$arg" in
    --demo) packages+=(bible-kjv) ;;
    --fuzz) packages+=(clang libclang-rt-14-dev libomp-dev) ;;
    --js)
      packages+=(chromium python3-html5lib)
      command -v npm >/dev/null || packages+=(nodejs npm) ;;
    --arm64)
      arm64=1
      packages+=(g++-aarch64-linux-gnu qemu-user libdnnl2:arm64 libgomp1:arm64 libgtest-dev:arm64
        libutf8proc-dev:arm64 libpcre2-dev:arm64 libpugixml-dev:arm64 libcpp-httplib-dev:arm64
        libopenblas-openmp-dev:arm64) ;;
    *) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

# On ARM64 itself OpenBLAS multiplies fp32 matrices (CMakeLists.txt: GPT_GEMM).
if [[ $(uname -m) == aarch64 ]]; then packages+=(libopenblas-openmp-dev); fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
if ((arm64)) && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then exit 0; fi

echo "Installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
