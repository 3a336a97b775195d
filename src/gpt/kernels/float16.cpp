#include "gpt/kernels/float16.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "gpt/kernels/dispatch.h"
#include "gpt/util/half.h"

namespace gpt {
namespace {

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void halves_to_floats_f16c(const uint16_t* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i]);
}

__attribute__((target("avx2,f16c"))) void floats_to_halves_f16c(const float* in, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT);
}
#endif

}  // namespace

bool float16_uses_f16c() {
#if defined(__x86_64__)
  // F16C read from CPUID leaf 1 (ECX bit 29): clang cannot query it by name.
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  }();
  return has && !portable_kernels_forced();
#else
  return false;
#endif
}

void halves_to_floats(const uint16_t* in, float* out, int64_t n) {
#if defined(__x86_64__)
  if (float16_uses_f16c()) return halves_to_floats_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(in[i]);
}

void floats_to_halves(const float* in, uint16_t* out, int64_t n) {
#if defined(__x86_64__)
  if (float16_uses_f16c()) return floats_to_halves_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_half(in[i]);
}

}  // namespace gpt
