// Token + position embedding: the first layer. Positions are learned (GPT-2) or
// the fixed sinusoids of "Attention is all you need".
#pragma once
#include <cstdint>

namespace gpt {

// out (B,T,C) = wte[tokens[b,t]] + pos[p], pos is wpe (learned) or the sinusoid
// table (null: none, rotary positions); p = t, or positions[b,t] when given
// (packed rows: a token's place in its example).
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* pos,
                       int64_t B, int64_t T, int64_t C, const int32_t* positions = nullptr);

// dwte[tokens[b,t]] += dout[b,t]; dwpe[p] += dout[b,t] (dwpe may be null).
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int64_t B, int64_t T, int64_t C, const int32_t* positions = nullptr);

// table (T,C): PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C)).
void sinusoidal_positions(float* table, int64_t T, int64_t C);

}  // namespace gpt
