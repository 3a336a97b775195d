// GELU, tanh approximation (GPT-2's "gelu_new"):
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#pragma once
#include <cstdint>

namespace gpt {

void gelu_forward(float* out, const float* inp, int64_t n);
// The vectorisable tanh the kernels use (exposed so a test can measure its error).
float gelu_tanh_approx_for_test(float u);
// dinp = gelu'(inp) * dout (overwrites dinp; dinp may alias dout).
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// The MLP's bias and GELU in one pass over its hidden layer (N rows of OC), one
// tanh per value for both what the forward needs and what the backward will:
// x = pre + bias, out = gelu(x), derivative = gelu'(x). derivative may alias pre
// (the model keeps GELU's derivative, not its input).
void bias_gelu_forward(float* derivative, float* out, const float* pre, const float* bias, int64_t N, int64_t OC);
// Its backward: dpre = derivative * dout (dpre may alias dout) and dbias (OC) +=
// column sums of dpre (dbias may be null); deterministic for a given thread count.
void bias_gelu_backward(float* dpre, float* dbias, const float* derivative, const float* dout, int64_t N,
                        int64_t OC);

}  // namespace gpt
