#include "gpt/kernels/swiglu.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/thread_share.h"
#include "gpt/kernels/fast_math.h"

#include <omp.h>

#include <cmath>

namespace gpt {
namespace {

constexpr int64_t kParallelMinElements = 16384;

// sigmoid(g) from exp(-|g|) (never overflows): 1 / (1 + e) for g >= 0, e / (1 + e) below.
inline float sigmoid(float g) {
  const float e = exp_nonpositive(-std::fabs(g));
  const float r = 1.0f / (1.0f + e);
  return g >= 0.0f ? r : e * r;
}

GPT_MULTIVERSION void swiglu_forward_rows(float* out, const float* gate_up, int64_t r0, int64_t r1, int64_t F) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* g = gate_up + r * 2 * F;
    const float* u = g + F;
    float* y = out + r * F;
#pragma omp simd
    for (int64_t i = 0; i < F; ++i) y[i] = g[i] * sigmoid(g[i]) * u[i];
  }
}

GPT_MULTIVERSION void swiglu_backward_rows(float* dgate_up, const float* dout, const float* gate_up, int64_t r0,
                                           int64_t r1, int64_t F) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* g = gate_up + r * 2 * F;
    const float* u = g + F;
    const float* dy = dout + r * F;
    float* dg = dgate_up + r * 2 * F;
    float* du = dg + F;
#pragma omp simd
    for (int64_t i = 0; i < F; ++i) {
      // d silu(g) / dg = s (1 + g (1 - s)), s = sigmoid(g)
      const float s = sigmoid(g[i]);
      const float silu = g[i] * s;
      dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
      du[i] = dy[i] * silu;
    }
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gate_up, int64_t N, int64_t F) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) { swiglu_forward_rows(out, gate_up, r0, r1, F); },
                        N * F >= kParallelMinElements);
}

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int64_t F) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) { swiglu_backward_rows(dgate_up, dout, gate_up, r0, r1, F); },
                        N * F >= kParallelMinElements);
}

}  // namespace gpt
