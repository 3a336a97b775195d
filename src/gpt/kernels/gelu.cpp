#include "gpt/kernels/gelu.h"
#include "gpt/kernels/dispatch.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace gpt {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// libm's tanhf is a scalar call and took a third of a training step; this one is
// branch-free, so the loops below vectorise. exp(x) for x <= 0: x = n ln2 + r with
// |r| <= ln2/2, exp(r) by its degree-7 Taylor polynomial (relative error < 3e-9),
// 2^n built from the exponent bits. Round-to-nearest by the 1.5 * 2^23 trick, so
// no libm call is left.
inline float exp_nonpositive(float x) {
  x = x > -87.0f ? x : -87.0f;
  const float n = (x * 1.4426950408889634f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.4286067653302226e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|); absolute error < 1e-7.
inline float fast_tanh(float u) {
  const float e = exp_nonpositive(-2.0f * std::fabs(u));
  return std::copysign((1.0f - e) / (1.0f + e), u);
}

}  // namespace

float gelu_tanh_approx_for_test(float u) { return fast_tanh(u); }

GPT_MULTIVERSION void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + fast_tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
}

GPT_MULTIVERSION void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float th = fast_tanh(kSqrt2OverPi * (x + kCubic * x * x * x));
    const float sech2 = 1.0f - th * th;
    const float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    dinp[i] = grad * dout[i];
  }
}

}  // namespace gpt
