// Runtime CPU dispatch for the hand-written loops: each function marked
// GPT_MULTIVERSION is compiled three times (AVX-512, AVX2, baseline x86-64) and
// the dynamic loader picks the best the running CPU supports (function
// multiversioning). Matrix products dispatch inside oneDNN.
//
// GCC clones whole micro-architecture levels (x86-64-v4, -v3). clang resolves
// an "arch=" clone by the CPU's model rather than its features, so its clones
// name features: avx512f (which brings AVX2, FMA and F16C with it), avx2.
// clang does not clone the bodies it outlines for OpenMP regions, so a parallel
// loop is a region calling a GPT_MULTIVERSION function once per thread's share
// (for_each_thread_share, kernels/thread_share.h), never a loop written inside
// the region; and a cloned function is a free function (clang 14 does not
// export a cloned member function to other translation units).
#pragma once
#include <cstdlib>
#include <cstring>

#if !defined(__x86_64__) || !defined(__GNUC__) || defined(GPT_NO_MULTIVERSION)
#define GPT_HAS_MULTIVERSION 0
#define GPT_MULTIVERSION
#elif defined(__clang__)
#define GPT_HAS_MULTIVERSION 1
#define GPT_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
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
