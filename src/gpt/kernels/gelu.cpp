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

namespace {

// The loops over elements or rows [lo, hi) of each pass; the passes below split them among threads.
GPT_MULTIVERSION void gelu_forward_range(float* out, const float* inp, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) out[i] = gelu(inp[i]);
}

GPT_MULTIVERSION void gelu_backward_range(float* dinp, const float* inp, const float* dout, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) dinp[i] = gelu_derivative(inp[i]) * dout[i];
}

GPT_MULTIVERSION void bias_gelu_forward_rows(float* derivative, float* out, const float* pre, const float* bias,
                                             int64_t r0, int64_t r1, int64_t OC) {
  for (int64_t r = r0; r < r1; ++r) {
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

GPT_MULTIVERSION void bias_gelu_backward_rows(float* dpre, float* db, const float* derivative, const float* dout,
                                              int64_t r0, int64_t r1, int64_t OC) {
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
}

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) {
  // A decoding step's 4C values run on the calling thread: starting a thread team
  // would cost more.
  for_each_thread_share(n, [&](int64_t lo, int64_t hi) { gelu_forward_range(out, inp, lo, hi); }, n >= 16384);
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  for_each_thread_share(n, [&](int64_t lo, int64_t hi) { gelu_backward_range(dinp, inp, dout, lo, hi); });
}

void bias_gelu_forward(float* derivative, float* out, const float* pre, const float* bias, int64_t N, int64_t OC) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) { bias_gelu_forward_rows(derivative, out, pre, bias, r0, r1, OC); });
}

void bias_gelu_backward(float* dpre, float* dbias, const float* derivative, const float* dout, int64_t N, int64_t OC) {
  // Rows split among threads (as the product before wrote them), bias sums through
  // per-thread partials: see thread_partials.
  float* partials = thread_partials(OC);
#pragma omp parallel
  {
    float* db = this_thread_partial(partials, OC);
    int64_t r0, r1;
    this_thread_share(N, r0, r1);
    bias_gelu_backward_rows(dpre, db, derivative, dout, r0, r1, OC);
#pragma omp barrier
    if (dbias != nullptr) add_partials_in_thread_order(dbias, partials, OC, 0, OC);
  }
}

}  // namespace gpt
