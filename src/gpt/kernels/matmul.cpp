#include "gpt/kernels/matmul.h"
#include "gpt/kernels/dispatch.h"

#include <omp.h>

#include <atomic>
#include <cstring>
#include <string>

#include <oneapi/dnnl/dnnl.h>
#if defined(__aarch64__)
#include <arm_neon.h>
#endif
#if defined(GPT_GEMM_OPENBLAS)
#include <cblas.h>

#include <limits>
#endif

#include "gpt/kernels/matmul_bf16.h"
#include "gpt/kernels/thread_share.h"
#include "gpt/util/error.h"

namespace gpt {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (current_compute_context().precision() == MatmulPrecision::kBFloat16) {
    gemm_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    gemm_f32(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  if (M == 0 || N == 0) return;
#if defined(GPT_GEMM_OPENBLAS)  // AArch64 (CMakeLists.txt: GPT_GEMM)
  constexpr int64_t kMax = std::numeric_limits<blasint>::max();
  GPT_CHECK(M <= kMax && N <= kMax && K <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
            "gemm: a dimension exceeds OpenBLAS's integer");
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
  return;
#endif
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K,
                                          alpha, A, lda, B, ldb, beta, C, ldc);
  if (status != dnnl_success) throw Error("oneDNN sgemm failed with status " + std::to_string(status));
}

namespace {
// out = residual + bias (either may be null) before a GEMM adds onto it: the
// residual add and the bias cost no extra pass over the output. Returns beta.
float fill_residual_bias(float* out, const float* bias, const float* residual, int64_t N, int64_t OC) {
  if (bias == nullptr && residual == nullptr) return 0.0f;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    float* o = out + r * OC;
    const float* res = residual ? residual + r * OC : nullptr;
    if (res && bias) {
#pragma omp simd
      for (int64_t j = 0; j < OC; ++j) o[j] = res[j] + bias[j];
    } else if (res) {
      if (o != res) std::memcpy(o, res, sizeof(float) * static_cast<size_t>(OC));
    } else {
      std::memcpy(o, bias, sizeof(float) * static_cast<size_t>(OC));
    }
  }
  return 1.0f;
}
}  // namespace

void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC, const float* residual) {
  const float beta = fill_residual_bias(out, bias, residual, N, OC);
  gemm(false, false, N, OC, C, 1.0f, inp, C, weight, OC, beta, out, OC);
}

void linear_forward_out_in(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                           int64_t C, int64_t OC, const float* residual) {
  const float beta = fill_residual_bias(out, bias, residual, N, OC);
  gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

void linear_backward_out_in(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, int64_t N, int64_t C, int64_t OC, bool accumulate_dinp) {
  // dinp (N,C) = dout (N,OC) @ weight (OC,C)
  if (dinp != nullptr) gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, accumulate_dinp ? 1.0f : 0.0f, dinp, C);
  // dweight (OC,C) += dout^T (OC,N) @ inp (N,C)
  if (dweight != nullptr) gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (dbias != nullptr) add_column_sums(dbias, dout, N, OC);
}

namespace {
GPT_MULTIVERSION void add_rows(float* part, const float* x, int64_t r0, int64_t r1, int64_t OC) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = x + r * OC;
#pragma omp simd
    for (int64_t j = 0; j < OC; ++j) part[j] += row[j];
  }
}
}  // namespace

void add_column_sums(float* sums, const float* x, int64_t N, int64_t OC) {
  // Rows split among threads, sums through per-thread partials: see thread_partials.
  float* partials = thread_partials(OC);
#pragma omp parallel
  {
    float* part = this_thread_partial(partials, OC);
    int64_t r0, r1;
    this_thread_share(N, r0, r1);
    add_rows(part, x, r0, r1, OC);
#pragma omp barrier
    add_partials_in_thread_order(sums, partials, OC, 0, OC);
  }
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC,
                     bool accumulate_dinp) {
  if (dinp != nullptr) {
    // dinp (N,C) = dout (N,OC) @ weight^T, weight is (C,OC)
    gemm(false, true, N, C, OC, 1.0f, dout, OC, weight, OC, accumulate_dinp ? 1.0f : 0.0f, dinp, C);
  }
  // dweight (C,OC) += inp^T (C,N) @ dout (N,OC); skipped for a frozen weight
  if (dweight != nullptr) gemm(true, false, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias != nullptr) add_column_sums(dbias, dout, N, OC);
}

namespace {

// acc += x[i0, i1) @ W's rows [i0, i1).
GPT_MULTIVERSION void gemv_in_out_share(float* acc, const float* x, const float* W, int64_t i0, int64_t i1,
                                        int64_t out) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const float* w = W + i * out;
    const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3], x4 = x[i + 4], x5 = x[i + 5], x6 = x[i + 6],
                x7 = x[i + 7];
#pragma omp simd
    for (int64_t j = 0; j < out; ++j) {
      acc[j] += (x0 * w[j] + x1 * w[out + j] + x2 * w[2 * out + j] + x3 * w[3 * out + j]) +
                (x4 * w[4 * out + j] + x5 * w[5 * out + j] + x6 * w[6 * out + j] + x7 * w[7 * out + j]);
    }
  }
  for (; i < i1; ++i) {
    const float xi = x[i];
    const float* w = W + i * out;
#pragma omp simd
    for (int64_t j = 0; j < out; ++j) acc[j] += xi * w[j];
  }
}

// y[r0, r1) = W's rows [r0, r1) . x, one dot product each.
GPT_MULTIVERSION void gemv_out_in_share(float* y, const float* x, const float* W, int64_t in, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* w = W + r * in;
    // The whole row two rows ahead into L1 (per line into L2, as the F16/BF16 decode
    // kernels do, measured 8% slower here: fp32 lines are consumed twice as fast);
    // the LM head alone, 50257 x 768, 2 threads, best of 30: 30 -> 38-40 GB/s.
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(w) + 2 * sizeof(float) * static_cast<uintptr_t>(in);
    for (int64_t o = 0; o < in * static_cast<int64_t>(sizeof(float)); o += 64) {
      __builtin_prefetch(reinterpret_cast<const void*>(ahead + static_cast<uintptr_t>(o)));
    }
#if defined(__aarch64__)
    // Four chains of FMAs: the compiler's vectorised reduction keeps one, which
    // waits on its own latency (4 cycles on Neoverse) for every 4 weights.
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= in; i += 16) {
      a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
      a1 = vfmaq_f32(a1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
      a2 = vfmaq_f32(a2, vld1q_f32(w + i + 8), vld1q_f32(x + i + 8));
      a3 = vfmaq_f32(a3, vld1q_f32(w + i + 12), vld1q_f32(x + i + 12));
    }
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < in; ++i) s += w[i] * x[i];
#else
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < in; ++i) s += w[i] * x[i];
#endif
    y[r] = s;
  }
}

}  // namespace

// Each thread reads a contiguous share of W's rows (one stream through memory),
// eight rows per pass over its partial sums, then the partials are added up by
// columns. oneDNN's GEMM with M = 1 splits by columns instead; on GPT-2's layer
// matrices, 2 threads, this reads 45-48 GB/s where oneDNN reads 34-38.
void gemv_in_out(float* y, const float* x, const float* W, const float* bias, int64_t in, int64_t out,
                 const float* residual) {
  float* all = thread_partials(out);
  const int64_t stride = partials_stride(out);
#pragma omp parallel
  {
    const int nt = omp_get_num_threads();
    float* acc = this_thread_partial(all, out);
    int64_t i0 = 0, i1 = 0;
    this_thread_share(in, i0, i1);
    gemv_in_out_share(acc, x, W, i0, i1, out);
#pragma omp barrier
    int64_t j0 = 0, j1 = 0;
    this_thread_share(out, j0, j1);
    for (int64_t j = j0; j < j1; ++j) {
      float s = bias != nullptr ? bias[j] : 0.0f;
      for (int t = 0; t < nt; ++t) s += all[t * stride + j];
      y[j] = residual != nullptr ? residual[j] + s : s;
    }
  }
}

// Rows split across threads, one dot product each (the LM head: 48-52 GB/s where
// oneDNN reads 40-41, on a machine whose L3 held it).
void gemv_out_in(float* y, const float* x, const float* W, int64_t in, int64_t out) {
  for_each_thread_share(out, [&](int64_t r0, int64_t r1) { gemv_out_in_share(y, x, W, in, r0, r1); });
}

}  // namespace gpt
