// The gated MLP of the Llama family: h = silu(gate) * up, silu(g) = g sigmoid(g),
// where gate and up are the two halves of one fused product (gate_proj's F
// columns, then up_proj's F) of each row.
#pragma once
#include <cstdint>

namespace gpt {

// out (N,F) from gate_up (N,2F).
void swiglu_forward(float* out, const float* gate_up, int64_t N, int64_t F);
// dgate_up (N,2F) (overwritten) from dout (N,F) and the forward's gate_up.
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int64_t F);

}  // namespace gpt
