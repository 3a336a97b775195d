#include "gpt/kernels/rmsnorm.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/thread_share.h"

#include <omp.h>

#include <cmath>

namespace gpt {
namespace {

constexpr int64_t kParallelMinElements = 16384;

inline void normalise_row(float* y, float* rstd, const float* x, const float* weight, int64_t C, float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < C; ++i) sum += x[i] * x[i];
  const float s = 1.0f / std::sqrt(sum / static_cast<float>(C) + eps);
#pragma omp simd
  for (int64_t i = 0; i < C; ++i) y[i] = x[i] * s * weight[i];
  *rstd = s;
}

// The loops over rows [r0, r1) of each pass; the passes below split rows among threads.
GPT_MULTIVERSION void rmsnorm_forward_rows(float* out, float* rstd, const float* inp, const float* weight, int64_t r0,
                                           int64_t r1, int64_t C, float eps) {
  for (int64_t r = r0; r < r1; ++r) normalise_row(out + r * C, rstd + r, inp + r * C, weight, C, eps);
}

GPT_MULTIVERSION void residual_rmsnorm_forward_rows(float* residual_out, float* out, float* rstd,
                                                    const float* residual_in, const float* delta, const float* weight,
                                                    int64_t r0, int64_t r1, int64_t C, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* a = residual_in + r * C;
    const float* d = delta + r * C;
    float* x = residual_out + r * C;
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) x[i] = a[i] + d[i];
    normalise_row(out + r * C, rstd + r, x, weight, C, eps);  // x is still in L1
  }
}

GPT_MULTIVERSION void rmsnorm_apply_rows(float* out, const float* inp, const float* rstd, const float* weight,
                                         int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = inp + r * C;
    float* y = out + r * C;
    const float s = rstd[r];
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) y[i] = x[i] * s * weight[i];
  }
}

// y_i = x_i s w_i, s = (mean(x^2) + eps)^(-1/2):
// dx_i = s (w_i dy_i - x_i s^2 mean_j(w_j dy_j x_j)),  dw_i += x_i s dy_i.
GPT_MULTIVERSION void rmsnorm_backward_rows(float* dinp, float* dw, const float* dout, const float* inp,
                                            const float* weight, const float* rstd, int64_t r0, int64_t r1,
                                            int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = inp + r * C;
    const float* dy = dout + r * C;
    const float s = rstd[r];
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < C; ++i) {
      dot += weight[i] * dy[i] * x[i];
      dw[i] += x[i] * s * dy[i];
    }
    const float k = dot / static_cast<float>(C) * s * s;
    float* dx = dinp + r * C;
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) dx[i] += s * (weight[i] * dy[i] - x[i] * k);
  }
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C, float eps) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) { rmsnorm_forward_rows(out, rstd, inp, weight, r0, r1, C, eps); },
                        N * C >= kParallelMinElements);
}

void residual_rmsnorm_forward(float* residual_out, float* out, float* rstd, const float* residual_in,
                              const float* delta, const float* weight, int64_t N, int64_t C, float eps) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) {
    residual_rmsnorm_forward_rows(residual_out, out, rstd, residual_in, delta, weight, r0, r1, C, eps);
  }, N * C >= kParallelMinElements);
}

void rmsnorm_apply(float* out, const float* inp, const float* rstd, const float* weight, int64_t N, int64_t C) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) { rmsnorm_apply_rows(out, inp, rstd, weight, r0, r1, C); });
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C) {
  // Rows split among threads, dw through per-thread partials (as layernorm_backward).
  float* partials = thread_partials(C);
#pragma omp parallel
  {
    float* dw = this_thread_partial(partials, C);
    int64_t r0, r1;
    this_thread_share(N, r0, r1);
    rmsnorm_backward_rows(dinp, dw, dout, inp, weight, rstd, r0, r1, C);
#pragma omp barrier
    if (dweight != nullptr) add_partials_in_thread_order(dweight, partials, C, 0, C);
  }
}

}  // namespace gpt
