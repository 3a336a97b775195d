// Layer normalisation over the channel dimension: y = (x - mean) / sqrt(var + eps) * w + b.
#pragma once
#include <cstdint>

namespace gpt {

// out (N,C), mean (N), rstd (N) = layernorm(inp (N,C)); mean/rstd are kept for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int64_t N, int64_t C, float eps);

// dinp (N,C) += d/dinp; dweight, dbias (C) += their gradients.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int64_t N, int64_t C);

}  // namespace gpt
