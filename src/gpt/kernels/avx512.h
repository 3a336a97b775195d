// What the fp32 AVX-512 kernels share (attention, paged attention, the
// few-rows products): the target they compile for, the run-time check that the
// CPU has it, and 16-float loads from float or IEEE half storage.
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#include "gpt/kernels/dispatch.h"

#define GPT_AVX512_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512dq")))

namespace gpt {

inline bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return has;
}

GPT_AVX512_WARNINGS_OFF
GPT_AVX512_TARGET inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
GPT_AVX512_TARGET inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
GPT_AVX512_WARNINGS_ON

}  // namespace gpt
#endif
