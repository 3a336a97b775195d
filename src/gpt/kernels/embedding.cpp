#include "gpt/kernels/embedding.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/thread_share.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace gpt {

GPT_MULTIVERSION void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* pos,
                       int64_t B, int64_t T, int64_t C, const int32_t* positions) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      float* o = out + (b * T + t) * C;
      const float* tok = wte + static_cast<int64_t>(tokens[b * T + t]) * C;
      if (pos == nullptr) {  // rotary positions act inside attention instead
        std::copy(tok, tok + C, o);
        continue;
      }
      const float* p = pos + (positions != nullptr ? positions[b * T + t] : t) * C;
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) o[i] = tok[i] + p[i];
    }
  }
}

GPT_MULTIVERSION void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int64_t B, int64_t T, int64_t C, const int32_t* positions) {
  // Several positions may hold the same token, so threads split the channels (not
  // the positions): no atomics, and a fixed summation order.
#pragma omp parallel
  {
    int64_t i0, i1;
    this_thread_share(C, i0, i1);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        const float* d = dout + (b * T + t) * C;
        float* tok = dwte + static_cast<int64_t>(tokens[b * T + t]) * C;
        for (int64_t i = i0; i < i1; ++i) tok[i] += d[i];
        if (dwpe != nullptr) {
          float* p = dwpe + (positions != nullptr ? positions[b * T + t] : t) * C;
          for (int64_t i = i0; i < i1; ++i) p[i] += d[i];
        }
      }
    }
  }
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
