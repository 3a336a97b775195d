// Root-mean-square normalisation over the channel dimension (Llama's RMSNorm):
// y = x / sqrt(mean(x^2) + eps) * w. No mean, no bias.
#pragma once
#include <cstdint>

namespace gpt {

// out (N,C), rstd (N) = rmsnorm(inp (N,C)); rstd is kept for the backward.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C, float eps);
// The residual add and the RMSNorm after it in one pass over the rows:
// residual_out = residual_in + delta, then out, rstd = rmsnorm(residual_out).
void residual_rmsnorm_forward(float* residual_out, float* out, float* rstd, const float* residual_in,
                              const float* delta, const float* weight, int64_t N, int64_t C, float eps);
// out = rmsnorm(inp) from the rstd its forward kept (bit-identical to the forward's).
void rmsnorm_apply(float* out, const float* inp, const float* rstd, const float* weight, int64_t N, int64_t C);
// dinp (N,C) += d/dinp (the residual stream's gradient and the norm's add up in
// one pass); dweight (C) += its gradient (null: a frozen norm).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C);

}  // namespace gpt
