// Branch-free exp and tanh that the compiler can vectorise (libm's are scalar
// calls; in GELU and softmax they dominated a training step).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace gpt {

// exp(x) for x <= 0 (x > 0 is not supported). x = n ln2 + r with |r| <= ln2/2,
// exp(r) by its degree-7 Taylor polynomial (relative error < 3e-9), 2^n built
// from the exponent bits; rounding by the 1.5 * 2^23 trick. Below -87 it returns
// exp(-87) ~ 1.6e-38 rather than a denormal. NaN gives NaN (a diverged model's
// scores must not turn into small probabilities).
inline float exp_nonpositive(float in) {
  const float x = in > -87.0f ? in : -87.0f;  // NaN becomes -87 here, keeping the arithmetic defined
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
  return in == in ? p * scale : in;
}

// tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|); absolute error < 2e-7.
inline float fast_tanh(float u) {
  const float e = exp_nonpositive(-2.0f * std::fabs(u));
  return std::copysign((1.0f - e) / (1.0f + e), u);
}

}  // namespace gpt
