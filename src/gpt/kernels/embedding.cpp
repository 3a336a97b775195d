#include "gpt/kernels/embedding.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/thread_share.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace gpt {

namespace {

// Rows [r0, r1) of the B x T positions.
GPT_MULTIVERSION void embedding_forward_rows(float* out, const int32_t* tokens, const float* wte, const float* pos,
                                             int64_t r0, int64_t r1, int64_t T, int64_t C, const int32_t* positions) {
  for (int64_t r = r0; r < r1; ++r) {
    float* o = out + r * C;
    const float* tok = wte + static_cast<int64_t>(tokens[r]) * C;
    if (pos == nullptr) {  // rotary positions act inside attention instead
      std::copy(tok, tok + C, o);
      continue;
    }
    const float* p = pos + (positions != nullptr ? positions[r] : r % T) * C;
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) o[i] = tok[i] + p[i];
  }
}

// Channels [i0, i1) of every position's gradient.
GPT_MULTIVERSION void embedding_backward_channels(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                                                  int64_t BT, int64_t T, int64_t C, const int32_t* positions, int64_t i0,
                                                  int64_t i1) {
  for (int64_t r = 0; r < BT; ++r) {
    const float* d = dout + r * C;
    float* tok = dwte + static_cast<int64_t>(tokens[r]) * C;
    for (int64_t i = i0; i < i1; ++i) tok[i] += d[i];
    if (dwpe != nullptr) {
      float* p = dwpe + (positions != nullptr ? positions[r] : r % T) * C;
      for (int64_t i = i0; i < i1; ++i) p[i] += d[i];
    }
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* pos, int64_t B, int64_t T,
                       int64_t C, const int32_t* positions) {
  for_each_thread_share(B * T, [&](int64_t r0, int64_t r1) {
    embedding_forward_rows(out, tokens, wte, pos, r0, r1, T, C, positions);
  });
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B, int64_t T,
                        int64_t C, const int32_t* positions) {
  // Several positions may hold the same token, so threads split the channels (not
  // the positions): no atomics, and a fixed summation order.
  for_each_thread_share(C, [&](int64_t i0, int64_t i1) {
    embedding_backward_channels(dwte, dwpe, dout, tokens, B * T, T, C, positions, i0, i1);
  });
}

void sinusoidal_positions(float* table, int64_t T, int64_t C) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < C / 2; ++i) {
      const double freq = std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(C));
      table[t * C + 2 * i] = static_cast<float>(std::sin(static_cast<double>(t) * freq));
      table[t * C + 2 * i + 1] = static_cast<float>(std::cos(static_cast<double>(t) * freq));
    }
  }
}

}  // namespace gpt
