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

}  // namespace gpt
