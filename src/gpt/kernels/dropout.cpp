#include "gpt/kernels/dropout.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/thread_share.h"

namespace gpt {

namespace {

// Hashes of consecutive indices, 16 at a time where the CPU multiplies 64-bit lanes (AVX-512).
GPT_MULTIVERSION void dropout_forward_rows(float* x, const float* bias, int64_t n0, int64_t n1, int64_t C, float p,
                                           uint64_t site_seed, const DropoutKey& key) {
  const uint32_t threshold = dropout_threshold(p);
  const float scale = 1.0f / (1.0f - p);
  for (int64_t n = n0; n < n1; ++n) {
    float* row = x + n * C;
    const uint64_t base = dropout_index(key, n, 0, C);
    if (bias != nullptr) {
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) row[k] += bias[k];
    }
#pragma omp simd
    for (int64_t k = 0; k < C; ++k)
      row[k] = dropout_keep(site_seed, base + static_cast<uint64_t>(k), threshold) ? row[k] * scale : 0.0f;
  }
}

GPT_MULTIVERSION void dropout_backward_rows(float* dx, const float* dy, int64_t n0, int64_t n1, int64_t C, float p,
                                            uint64_t site_seed, const DropoutKey& key) {
  const uint32_t threshold = dropout_threshold(p);
  const float scale = 1.0f / (1.0f - p);
  for (int64_t n = n0; n < n1; ++n) {
    const uint64_t base = dropout_index(key, n, 0, C);
    const float* d = dy + n * C;
    float* o = dx + n * C;
#pragma omp simd
    for (int64_t k = 0; k < C; ++k)
      o[k] = dropout_keep(site_seed, base + static_cast<uint64_t>(k), threshold) ? d[k] * scale : 0.0f;
  }
}

}  // namespace

void dropout_forward(float* x, const float* bias, int64_t N, int64_t C, float p, uint64_t site_seed,
                     const DropoutKey& key) {
  for_each_thread_share(N, [&](int64_t n0, int64_t n1) { dropout_forward_rows(x, bias, n0, n1, C, p, site_seed, key); });
}

void dropout_backward(float* dx, const float* dy, int64_t N, int64_t C, float p, uint64_t site_seed,
                      const DropoutKey& key) {
  for_each_thread_share(N, [&](int64_t n0, int64_t n1) { dropout_backward_rows(dx, dy, n0, n1, C, p, site_seed, key); });
}

}  // namespace gpt
