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
// dinp, dweight and dbias may be null (dweight: a frozen weight, as under LoRA).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC,
                     bool accumulate_dinp = false);

// The same for weights stored (OC, C), as nn.Linear keeps them (the Llama family):
// out = [residual +] inp @ weight^T [+ bias]; dinp = dout @ weight, dweight (OC, C)
// += dout^T @ inp.
void linear_forward_out_in(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                           int64_t C, int64_t OC, const float* residual = nullptr);
void linear_backward_out_in(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, int64_t N, int64_t C, int64_t OC, bool accumulate_dinp = false);
// sums (OC) += column sums of x (N, OC); deterministic for a given thread count.
void add_column_sums(float* sums, const float* x, int64_t N, int64_t OC);

// Products of ONE input row (decoding), bandwidth-bound: every weight is read
// once, so what matters is streaming it well.
// y (out) = [residual +] x (in) @ W (in, out) [+ bias]; y may alias residual, not x.
void gemv_in_out(float* y, const float* x, const float* W, const float* bias, int64_t in, int64_t out,
                 const float* residual = nullptr);
// y (out) = W (out, in) . x: one dot product per row of W.
void gemv_out_in(float* y, const float* x, const float* W, int64_t in, int64_t out);

// Products of a few input rows (a step of batched decoding: matmul_rows.cpp),
// W read once for all M rows, tiles of up to 8 rows x 48 outputs (AVX-512; 4 x
// 16 with NEON) in registers. Each row's outputs come from the same operations
// in the same order whatever M and the thread count: a row's result does not
// depend on the rows beside it. AVX-512 or NEON: callers check
// few_rows_kernels() and otherwise use gemm.
bool few_rows_kernels();

// fp32 (in, out) weights re-laid as panels of kPanelColumns columns, one after
// another, each (in, width) row-major (the last one narrower when out is not a
// multiple): a panel streams from memory in one run, where the columns of a
// row-major W are `out` floats apart (measured, GPT-2's matrices read from
// memory, 16 rows, 2 threads, AMD EPYC Zen 4: 100 -> 175 GFLOP/s, the same as
// oneDNN's sgemm from 128 rows on). Same size as W.
inline constexpr int64_t kPanelColumns = 48;
void pack_panels(const float* W, int64_t in, int64_t out, float* panels);  // panels must not alias W
// y (M, out) = [residual +] x (M, in) @ W (in, out) [+ bias], W in panels; y may alias residual.
void gemm_rows_panels(float* y, const float* x, int64_t M, const float* panels, const float* bias, int64_t in,
                      int64_t out, const float* residual = nullptr);
// y (M, out) = x (M, in) @ W (out, in)^T, W as it is (the tied LM head).
void gemm_rows_out_in(float* y, const float* x, int64_t M, const float* W, int64_t in, int64_t out);

}  // namespace gpt
