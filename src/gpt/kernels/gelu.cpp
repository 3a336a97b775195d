#include "gpt/kernels/gelu.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/kernels/thread_share.h"

namespace gpt {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

inline float gelu(float x) { return 0.5f * x * (1.0f + fast_tanh(kSqrt2OverPi * (x + kCubic * x * x * x))); }

inline float gelu_derivative(float x) {
  const float th = fast_tanh(kSqrt2OverPi * (x + kCubic * x * x * x));
  const float sech2 = 1.0f - th * th;
  return 0.5f * (1.0f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
}

}  // namespace

float gelu_tanh_approx_for_test(float u) { return fast_tanh(u); }

GPT_MULTIVERSION void gelu_forward(float* out, const float* inp, int64_t n) {
  // A decoding step's 4C values: starting a thread team would cost more.
#pragma omp parallel for simd schedule(static) if (n >= 16384)
  for (int64_t i = 0; i < n; ++i) out[i] = gelu(inp[i]);
}

GPT_MULTIVERSION void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dinp[i] = gelu_derivative(inp[i]) * dout[i];
}

GPT_MULTIVERSION void bias_gelu_forward(float* pre, float* out, const float* bias, int64_t N, int64_t OC) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    float* p = pre + r * OC;
    float* o = out + r * OC;
#pragma omp simd
    for (int64_t j = 0; j < OC; ++j) {
      const float x = p[j] + bias[j];
      p[j] = x;
      o[j] = gelu(x);
    }
  }
}

GPT_MULTIVERSION void bias_gelu_backward(float* dpre, float* dbias, const float* pre, const float* dout, int64_t N,
                                         int64_t OC) {
  // Each thread owns a contiguous range of columns for all rows: its bias sums need
  // no reduction across threads, and their order does not depend on scheduling.
#pragma omp parallel
  {
    int64_t j0, j1;
    this_thread_share(OC, j0, j1);
    for (int64_t r = 0; r < N; ++r) {
      const float* x = pre + r * OC;
      const float* d = dout + r * OC;
      float* g = dpre + r * OC;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) {
        const float v = gelu_derivative(x[j]) * d[j];
        g[j] = v;
        dbias[j] += v;
      }
    }
  }
}

}  // namespace gpt
