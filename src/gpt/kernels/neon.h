// What the fp32 NEON kernels share (attention, paged attention, the few-rows
// products), as avx512.h for x86: 4-float loads from float or IEEE half storage
// (FCVTL widens halves; every AArch64 CPU has it).
#pragma once
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstdint>
#include <type_traits>

// The target of the kernels compiled a second time for CPUs with the
// dot-product extension (SDOT; quantize.cpp, kquants.cpp): an attribute on each
// function, not a pragma, because GCC instantiates templates outside a pragma's
// region; GCC spells it as arm_neon.h declares SDOT.
#if defined(__clang__)
#define GPT_NEON_DOT_TARGET __attribute__((target("dotprod")))
#else
#define GPT_NEON_DOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

namespace gpt {

template <typename T>
inline float32x4_t load4(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return vld1q_f32(p);
  } else {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
  }
}

}  // namespace gpt
#endif
