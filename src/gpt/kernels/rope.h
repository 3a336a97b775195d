// Rotary position embeddings (RoPE), Hugging Face's rotate-half convention:
// within a head of width hs, channel i and channel i + hs/2 (i < hs/2) are one
// pair, rotated by the angle pos * theta^(-2i/hs):
//   y_i = x_i cos - x_{i+hs/2} sin,   y_{i+hs/2} = x_{i+hs/2} cos + x_i sin.
// (llama.cpp's GGUF files pair neighbouring channels instead: their q and k rows
// are permuted on import and export.)
#pragma once
#include <cstdint>
#include <vector>

#include "gpt/model/config.h"

namespace gpt {

// cos and sin of every (position, pair) angle, (positions, hs/2) each: computed
// in double, stored as float. With scaling (config.h's RopeScaling), the
// frequencies Hugging Face's linear or yarn rope gives, and yarn's attention
// factor multiplied into both (so q.k grows by its square, as in Hugging Face).
struct RopeTable {
  int64_t positions = 0, half = 0;
  float mscale = 1.0f;  // yarn's attention factor, in cos and sin
  std::vector<float> cos, sin;
  RopeTable() = default;
  RopeTable(int64_t positions, int64_t hs, float theta, const RopeScaling& scaling = {});
};

// Rotates, in place, `heads` heads of width hs at the start of each of N rows of x
// (row_stride floats apart): the q and k heads of a fused q|k|v row lie side by
// side. Row n is at position positions[n] if given (packed rows), else
// p0 + n % T.
void rope_forward(float* x, int64_t N, int64_t row_stride, int64_t heads, int64_t hs, const RopeTable& table,
                  const int32_t* positions, int64_t T, int64_t p0 = 0);
// The gradient through the rotation (its transpose: the rotation back), in place.
void rope_backward(float* dx, int64_t N, int64_t row_stride, int64_t heads, int64_t hs, const RopeTable& table,
                   const int32_t* positions, int64_t T, int64_t p0 = 0);

}  // namespace gpt
