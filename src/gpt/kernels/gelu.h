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

// The MLP's bias and GELU in one pass over its hidden layer (N rows of OC):
// pre (N,OC) += bias, out = gelu(pre). `pre` is what the backward needs; `out`
// only feeds the next matrix product, so the model keeps it in a scratch buffer
// shared by all layers and remakes it in the backward pass.
void bias_gelu_forward(float* pre, float* out, const float* bias, int64_t N, int64_t OC);
// The backward's remake: out = gelu(pre) and derivative = gelu'(pre) from one tanh
// (derivative may alias pre: the model overwrites its pre-activations, which
// nothing needs after this).
void gelu_forward_with_derivative(float* out, float* derivative, const float* pre, int64_t n);
// Then dpre = derivative * dout (dpre may alias dout) and dbias (OC) += column
// sums of dpre; deterministic for a given thread count.
void bias_gelu_backward(float* dpre, float* dbias, const float* derivative, const float* dout, int64_t N,
                        int64_t OC);

}  // namespace gpt
