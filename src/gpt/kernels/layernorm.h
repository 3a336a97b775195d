// Layer normalisation over the channel dimension: y = (x - mean) / sqrt(var + eps) * w + b.
#pragma once
#include <cstdint>

namespace gpt {

// out (N,C), mean (N), rstd (N) = layernorm(inp (N,C)); mean/rstd are kept for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int64_t N, int64_t C, float eps);

// The residual add and the LayerNorm after it, in one pass over the rows:
// residual_out = residual_in + delta [+ delta_bias (C)], then out, mean, rstd =
// layernorm(residual_out). `delta` is a sublayer's matrix product without its bias
// (the bias is added here). Each block's two residual adds end this way.
void residual_layernorm_forward(float* residual_out, float* out, float* mean, float* rstd,
                                const float* residual_in, const float* delta, const float* delta_bias,
                                const float* weight, const float* bias, int64_t N, int64_t C, float eps);

// out = layernorm(inp) from the mean and rstd its forward pass kept: the backward
// pass remakes a normalised input this way instead of keeping one per layer.
// Bit-identical to the forward's output.
void layernorm_apply(float* out, const float* inp, const float* mean, const float* rstd,
                     const float* weight, const float* bias, int64_t N, int64_t C);

// dinp (N,C) += d/dinp (so the gradient arriving down the residual stream and the
// LayerNorm's add up in one pass); dweight, dbias (C) += their gradients (either
// may be null: a frozen LayerNorm).
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int64_t N, int64_t C);

}  // namespace gpt
