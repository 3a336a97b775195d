#include "gpt/kernels/cross_entropy.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "gpt/util/error.h"

namespace gpt {

GPT_MULTIVERSION float log_sum_exp(const float* row, int64_t V) {
  float maxval = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < V; ++i) maxval = std::max(maxval, row[i]);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < V; ++i) sum += exp_nonpositive(row[i] - maxval);
  return maxval + std::log(sum);
}

float cross_entropy_forward(float* losses, float* lse, const float* logits,
                            const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] < 0 || targets[r] >= V) {
      throw Error("target token " + std::to_string(targets[r]) + " outside the vocabulary of " + std::to_string(V));
    }
  }
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t r = 0; r < N; ++r) {
    const float* row = logits + r * V;
    lse[r] = log_sum_exp(row, V);
    losses[r] = lse[r] - row[targets[r]];
    total += losses[r];
  }
  return static_cast<float>(total / static_cast<double>(N));
}

GPT_MULTIVERSION void cross_entropy_backward_inplace(float* logits, const float* lse, const int32_t* targets,
                                    int64_t N, int64_t V, float dloss) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    float* row = logits + r * V;
    const float l = lse[r];
#pragma omp simd
    for (int64_t i = 0; i < V; ++i) {
      const float z = row[i] - l;  // <= 0 up to rounding, since l >= max
      row[i] = exp_nonpositive(z < 0.0f ? z : 0.0f) * dloss;
    }
    row[targets[r]] -= dloss;
  }
}

}  // namespace gpt
