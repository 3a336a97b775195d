#include "gpt/kernels/matmul.h"
#include "gpt/kernels/dispatch.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include <oneapi/dnnl/dnnl.h>

#include "gpt/kernels/matmul_bf16.h"
#include "gpt/kernels/thread_share.h"
#include "gpt/util/error.h"

namespace gpt {

namespace {
std::atomic<MatmulPrecision> g_precision{MatmulPrecision::kFloat32};
}  // namespace

void set_matmul_precision(MatmulPrecision precision) { g_precision.store(precision); }
MatmulPrecision matmul_precision() { return g_precision.load(); }
MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "fp32" || name == "f32") return MatmulPrecision::kFloat32;
  if (name == "bf16") return MatmulPrecision::kBFloat16;
  throw Error("unknown --dtype '" + name + "' (expected fp32 or bf16)");
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (matmul_precision() == MatmulPrecision::kBFloat16) {
    gemm_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    gemm_f32(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  if (M == 0 || N == 0) return;
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K,
                                          alpha, A, lda, B, ldb, beta, C, ldc);
  if (status != dnnl_success) throw Error("oneDNN sgemm failed with status " + std::to_string(status));
}

void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC, const float* residual) {
  float beta = 0.0f;
  if (bias != nullptr || residual != nullptr) {
    // Fill out with residual + bias, then let GEMM accumulate onto it (beta = 1):
    // the residual add and the bias cost no extra pass over the output.
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
    beta = 1.0f;
  }
  gemm(false, false, N, OC, C, 1.0f, inp, C, weight, OC, beta, out, OC);
}

GPT_MULTIVERSION void add_column_sums(float* sums, const float* x, int64_t N, int64_t OC) {
  // Each thread owns a contiguous range of columns, so there are no races and the
  // summation order does not depend on scheduling.
#pragma omp parallel
  {
    int64_t j0, j1;
    this_thread_share(OC, j0, j1);
    for (int64_t r = 0; r < N; ++r) {
      const float* row = x + r * OC;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) sums[j] += row[j];
    }
  }
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC,
                     bool accumulate_dinp) {
  if (dinp != nullptr) {
    // dinp (N,C) = dout (N,OC) @ weight^T, weight is (C,OC)
    gemm(false, true, N, C, OC, 1.0f, dout, OC, weight, OC, accumulate_dinp ? 1.0f : 0.0f, dinp, C);
  }
  // dweight (C,OC) += inp^T (C,N) @ dout (N,OC)
  gemm(true, false, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias != nullptr) add_column_sums(dbias, dout, N, OC);
}

}  // namespace gpt
