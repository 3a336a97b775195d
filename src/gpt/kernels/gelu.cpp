#include "gpt/kernels/gelu.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/kernels/thread_share.h"

namespace gpt {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

inline float gelu_tanh(float x) { return fast_tanh(kSqrt2OverPi * (x + kCubic * x * x * x)); }
inline float gelu_from_tanh(float x, float th) { return 0.5f * x * (1.0f + th); }
inline float gelu_derivative_from_tanh(float x, float th) {
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
}
inline float gelu(float x) { return gelu_from_tanh(x, gelu_tanh(x)); }
inline float gelu_derivative(float x) { return gelu_derivative_from_tanh(x, gelu_tanh(x)); }

}  // namespace

float gelu_tanh_approx_for_test(float u) { return fast_tanh(u); }

GPT_MULTIVERSION void gelu_forward(float* out, const float* inp, int64_t n) {
  // A decoding step's 4C values run on the calling thread: starting a thread team
  // would cost more. (Not `parallel for simd if (...)`: GCC 12 runs that loop's
  // team of one through its scalar remainder, 16 us for GPT-2's 3072 values.)
  if (n < 16384) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = gelu(inp[i]);
    return;
  }
#pragma omp parallel
  {
    int64_t i0, i1;
    this_thread_share(n, i0, i1);
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) out[i] = gelu(inp[i]);
  }
}

GPT_MULTIVERSION void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dinp[i] = gelu_derivative(inp[i]) * dout[i];
}

GPT_MULTIVERSION void bias_gelu_forward(float* derivative, float* out, const float* pre, const float* bias, int64_t N,
                                        int64_t OC) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* p = pre + r * OC;
    float* d = derivative + r * OC;
    float* o = out + r * OC;
#pragma omp simd
    for (int64_t j = 0; j < OC; ++j) {
      const float x = p[j] + bias[j];
      const float th = gelu_tanh(x);
      o[j] = gelu_from_tanh(x, th);
      d[j] = gelu_derivative_from_tanh(x, th);
    }
  }
}

GPT_MULTIVERSION void bias_gelu_backward(float* dpre, float* dbias, const float* derivative, const float* dout,
                                         int64_t N, int64_t OC) {
  // Rows split among threads (as the product before wrote them), bias sums through
  // per-thread partials: see thread_partials.
  float* partials = thread_partials(OC);
#pragma omp parallel
  {
    float* db = this_thread_partial(partials, OC);
    int64_t r0, r1;
    this_thread_share(N, r0, r1);
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = derivative + r * OC;
      const float* d = dout + r * OC;
      float* dp = dpre + r * OC;
#pragma omp simd
      for (int64_t j = 0; j < OC; ++j) {
        const float v = g[j] * d[j];
        dp[j] = v;
        db[j] += v;
      }
    }
#pragma omp barrier
    if (dbias != nullptr) add_partials_in_thread_order(dbias, partials, OC, 0, OC);
  }
}

}  // namespace gpt
