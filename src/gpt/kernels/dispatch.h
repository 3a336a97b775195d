// Runtime CPU dispatch for the hand-written loops: each function marked
// GPT_MULTIVERSION is compiled three times (AVX-512, AVX2, baseline x86-64) and
// the dynamic loader picks the best the running CPU supports (function
// multiversioning). Matrix products dispatch inside oneDNN.
//
// GCC clones whole micro-architecture levels, and the bodies it outlines for
// OpenMP regions with them. clang does not yet: it resolves an "arch=" clone by
// the CPU's model, does not clone the bodies of OpenMP regions, and with clones
// by feature batched decoding's rows stopped matching bit for bit between batch
// compositions; so under clang the loops run baseline x86-64 for now
// (docs/platforms.md).
#pragma once
#include <cstdlib>
#include <cstring>

#if !defined(__x86_64__) || !defined(__GNUC__) || defined(__clang__) || defined(GPT_NO_MULTIVERSION)
#define GPT_HAS_MULTIVERSION 0
#define GPT_MULTIVERSION
#else
#define GPT_HAS_MULTIVERSION 1
#define GPT_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

// GCC 12 reports its own AVX-512 headers' deliberately undefined registers
// (_mm512_undefined_*) as uninitialised once inlined into a kernel; they are not.
// Kernels written with AVX-512 intrinsics sit between these two lines.
#if defined(__GNUC__) && !defined(__clang__)
#define GPT_AVX512_WARNINGS_OFF                                   \
  _Pragma("GCC diagnostic push")                                  \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")          \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define GPT_AVX512_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define GPT_AVX512_WARNINGS_OFF
#define GPT_AVX512_WARNINGS_ON
#endif

namespace gpt {

// The level the dynamic loader chose for GPT_MULTIVERSION functions in this
// process: 4 (AVX-512), 3 (AVX2), 0 (baseline, or a build without them).
int multiversion_level();

// GPT_PORTABLE_KERNELS=1 makes the kernels that choose their instructions at run
// time (quantized products, bf16 GEMM) take their portable path, as on a CPU
// without AVX-512 VNNI or bf16 support.
inline bool portable_kernels_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("GPT_PORTABLE_KERNELS");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  return forced;
}

}  // namespace gpt
