#include "gpt/kernels/layernorm.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/thread_share.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace gpt {

namespace {

constexpr int64_t kParallelMinElements = 16384;

// y = (x - m) * s * weight + bias: one function, never inlined (a cloned one is
// called through its resolver), shared by the forward and by layernorm_apply
// (which remakes the forward's output for the backward, bit for bit). Written
// out twice, the same line was compiled two ways by clang 14 at -O2 in the
// AVX-512 clone (fused multiply-add in one, not the other: 1 ulp apart).
#if GPT_HAS_MULTIVERSION
#define GPT_ONE_COPY GPT_MULTIVERSION
#else
#define GPT_ONE_COPY [[gnu::noinline]]
#endif
GPT_ONE_COPY void apply_row(float* y, const float* x, float m, float s, const float* weight,
                                                  const float* bias, int64_t C) {
#pragma omp simd
  for (int64_t i = 0; i < C; ++i) y[i] = (x[i] - m) * s * weight[i] + bias[i];
}

// One row: mean and rstd of x, y = normalised x * weight + bias.
inline void normalise_row(float* y, float* mean, float* rstd, const float* x, const float* weight,
                          const float* bias, int64_t C, float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < C; ++i) sum += x[i];
  const float m = sum / static_cast<float>(C);
  float var = 0.0f;  // two-pass variance: no cancellation for large means
#pragma omp simd reduction(+ : var)
  for (int64_t i = 0; i < C; ++i) var += (x[i] - m) * (x[i] - m);
  const float s = 1.0f / std::sqrt(var / static_cast<float>(C) + eps);
  apply_row(y, x, m, s, weight, bias, C);
  *mean = m;
  *rstd = s;
}

// The loops over rows [r0, r1) of each pass; the passes below split rows among threads.
GPT_MULTIVERSION void layernorm_forward_rows(float* out, float* mean, float* rstd, const float* inp,
                                             const float* weight, const float* bias, int64_t r0, int64_t r1, int64_t C,
                                             float eps) {
  for (int64_t r = r0; r < r1; ++r) normalise_row(out + r * C, mean + r, rstd + r, inp + r * C, weight, bias, C, eps);
}

GPT_MULTIVERSION void residual_layernorm_forward_rows(float* residual_out, float* out, float* mean, float* rstd,
                                                      const float* residual_in, const float* delta,
                                                      const float* delta_bias, const float* weight, const float* bias,
                                                      int64_t r0, int64_t r1, int64_t C, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* a = residual_in + r * C;
    const float* d = delta + r * C;
    float* x = residual_out + r * C;
    if (delta_bias != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) x[i] = a[i] + d[i] + delta_bias[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) x[i] = a[i] + d[i];
    }
    normalise_row(out + r * C, mean + r, rstd + r, x, weight, bias, C, eps);  // x is still in L1
  }
}

GPT_MULTIVERSION void layernorm_apply_rows(float* out, const float* inp, const float* mean, const float* rstd,
                                           const float* weight, const float* bias, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) apply_row(out + r * C, inp + r * C, mean[r], rstd[r], weight, bias, C);
}

GPT_MULTIVERSION void layernorm_backward_rows(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                              const float* weight, const float* mean, const float* rstd, int64_t r0,
                                              int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = inp + r * C;
    const float* dy = dout + r * C;
    const float m = mean[r], s = rstd[r];
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
    for (int64_t i = 0; i < C; ++i) {
      const float norm = (x[i] - m) * s;
      const float dnorm = weight[i] * dy[i];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * norm;
      dw[i] += norm * dy[i];
      db[i] += dy[i];
    }
    dnorm_mean /= static_cast<float>(C);
    dnorm_norm_mean /= static_cast<float>(C);
    float* dx = dinp + r * C;
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) {
      const float norm = (x[i] - m) * s;
      dx[i] += (weight[i] * dy[i] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int64_t N, int64_t C, float eps) {
  // A decoding step normalises one row: starting a thread team would cost more.
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) {
    layernorm_forward_rows(out, mean, rstd, inp, weight, bias, r0, r1, C, eps);
  }, N * C >= kParallelMinElements);
}

void residual_layernorm_forward(float* residual_out, float* out, float* mean, float* rstd, const float* residual_in,
                                const float* delta, const float* delta_bias, const float* weight, const float* bias,
                                int64_t N, int64_t C, float eps) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) {
    residual_layernorm_forward_rows(residual_out, out, mean, rstd, residual_in, delta, delta_bias, weight, bias, r0, r1,
                                    C, eps);
  });
}

void layernorm_apply(float* out, const float* inp, const float* mean, const float* rstd, const float* weight,
                     const float* bias, int64_t N, int64_t C) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) {
    layernorm_apply_rows(out, inp, mean, rstd, weight, bias, r0, r1, C);
  });
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
  // One pass over rows split among threads: the input gradient, and the weight and
  // bias gradients as per-thread partial sums added up at the end. (Splitting the
  // channels instead needed a second pass over x and dy, each thread reading parts
  // of rows the other had just written: 4% of a baby step, now about 1%.)
  float* partials = thread_partials(2 * C);
#pragma omp parallel
  {
    float* dw = this_thread_partial(partials, 2 * C);
    int64_t r0, r1;
    this_thread_share(N, r0, r1);
    layernorm_backward_rows(dinp, dw, dw + C, dout, inp, weight, mean, rstd, r0, r1, C);
#pragma omp barrier
    if (dweight != nullptr) add_partials_in_thread_order(dweight, partials, 2 * C, 0, C);
    if (dbias != nullptr) add_partials_in_thread_order(dbias, partials, 2 * C, C, C);
  }
}

}  // namespace gpt
