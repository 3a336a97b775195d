// Matrix products: the fully connected layers and the LM head. All row-major.
// GEMM goes to oneDNN (runtime CPU dispatch: AVX2, AVX-512, AMX); the bias, the
// residual add and the bias gradient are fused around it here.
#pragma once
#include <cstdint>
#include <string>

#include "gpt/kernels/compute_context.h"

namespace gpt {

// C (M,N) = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T. Row-major. In
// the precision of the calling thread's ComputeContext (compute_context.h).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);

// Always float32 (oneDNN's sgemm), whatever the precision setting.
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc);

// out (N, OC) = [residual (N, OC) +] inp (N, C) @ weight (C, OC) [+ bias (OC)].
// `bias` and `residual` may be null; out may alias residual.
void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC, const float* residual = nullptr);

// Given dout (N, OC): dinp (N, C) = dout @ weight^T (overwritten, or added when
// accumulate_dinp), dweight (C, OC) += inp^T @ dout, dbias (OC) += column sums of dout.
// dinp and dbias may be null.
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC,
                     bool accumulate_dinp = false);

// sums (OC) += column sums of x (N, OC); deterministic for a given thread count.
void add_column_sums(float* sums, const float* x, int64_t N, int64_t OC);

// Products of ONE input row (decoding), bandwidth-bound: every weight is read
// once, so what matters is streaming it well.
// y (out) = [residual +] x (in) @ W (in, out) [+ bias]; y may alias residual, not x.
void gemv_in_out(float* y, const float* x, const float* W, const float* bias, int64_t in, int64_t out,
                 const float* residual = nullptr);
// y (out) = W (out, in) . x: one dot product per row of W.
void gemv_out_in(float* y, const float* x, const float* W, int64_t in, int64_t out);

}  // namespace gpt
