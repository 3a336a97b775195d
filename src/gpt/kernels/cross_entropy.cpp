#include "gpt/kernels/cross_entropy.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/kernels/thread_share.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "gpt/kernels/matmul.h"
#include "gpt/kernels/matmul_bf16.h"
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

namespace {
// The number of rows that count (targets other than kIgnoreTarget).
int64_t check_targets(const int32_t* targets, int64_t N, int64_t V, bool allow_ignored) {
  int64_t counted = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] == kIgnoreTarget && allow_ignored) continue;
    if (targets[r] < 0 || targets[r] >= V) {
      throw Error("target token " + std::to_string(targets[r]) + " outside the vocabulary of " + std::to_string(V));
    }
    ++counted;
  }
  return counted;
}

// losses and lse for rows whose targets are already checked.
void row_losses(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* row = logits + r * V;
    lse[r] = log_sum_exp(row, V);
    losses[r] = lse[r] - row[targets[r]];
  }
}

// Summed in row order: the same mean whatever the chunking and thread count.
float mean_of(const float* losses, int64_t N) {
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) total += losses[r];
  return static_cast<float>(total / static_cast<double>(N));
}

}  // namespace

float cross_entropy_forward(float* losses, float* lse, const float* logits,
                            const int32_t* targets, int64_t N, int64_t V) {
  check_targets(targets, N, V, false);
  row_losses(losses, lse, logits, targets, N, V);
  return mean_of(losses, N);
}

namespace {
GPT_MULTIVERSION void cross_entropy_backward_rows(float* logits, const float* lse, const int32_t* targets, int64_t r0,
                                                  int64_t r1, int64_t V, float dloss_all, const float* row_dloss) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = logits + r * V;
    const float l = lse[r];
    const float dloss = row_dloss != nullptr ? row_dloss[r] : dloss_all;
#pragma omp simd
    for (int64_t i = 0; i < V; ++i) {
      const float z = row[i] - l;  // <= 0 up to rounding, since l >= max
      row[i] = exp_nonpositive(z < 0.0f ? z : 0.0f) * dloss;
    }
    row[targets[r]] -= dloss;
  }
}
}  // namespace

void cross_entropy_backward_inplace(float* logits, const float* lse, const int32_t* targets, int64_t N, int64_t V,
                                    float dloss_all, const float* row_dloss) {
  for_each_thread_share(N, [&](int64_t r0, int64_t r1) {
    cross_entropy_backward_rows(logits, lse, targets, r0, r1, V, dloss_all, row_dloss);
  });
}

int64_t lm_head_chunk_rows(int64_t N, int64_t V) {
  const int64_t budget = int64_t(1) << 24;  // floats of logits per chunk
  const int64_t rows = std::max<int64_t>(256, budget / std::max<int64_t>(V, 1));
  if (rows >= N) return std::max<int64_t>(N, 1);
  const int64_t chunks = (N + rows - 1) / rows;
  return (N + chunks - 1) / chunks;
}

namespace {
// lm_head_cross_entropy for rows whose targets all count.
float lm_head_rows(float* losses, float* lse, const float* x, const float* W, const int32_t* targets, int64_t N,
                   int64_t C, int64_t V, LmHeadScratch& scratch, float* dx, float* dW, float dloss,
                   int64_t chunk_rows, int64_t dW_first_row, const float* row_dloss) {
  const int64_t rows = chunk_rows > 0 ? chunk_rows : lm_head_chunk_rows(N, V);
  if (scratch.logits.size() < static_cast<size_t>(rows * V)) scratch.logits.resize(static_cast<size_t>(rows * V));
  float* logits = scratch.logits.data();
  // bf16 products: the weight is an operand of two products per chunk; convert it once.
  const uint16_t* w16 = nullptr;
  if (current_compute_context().precision() == MatmulPrecision::kBFloat16 && bf16_gemm_native() && N > rows) {
    if (scratch.weight_bf16.size() < static_cast<size_t>(V * C)) scratch.weight_bf16.resize(static_cast<size_t>(V * C));
    to_bf16_matrix(W, V, C, C, scratch.weight_bf16.data());
    w16 = scratch.weight_bf16.data();
  }
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    const float* xr = x + r0 * C;
    if (w16 != nullptr) {
      gemm_bf16_with_b16(false, true, n, V, C, 1.0f, xr, C, w16, C, 0.0f, logits, V);
    } else {
      gemm(false, true, n, V, C, 1.0f, xr, C, W, C, 0.0f, logits, V);
    }
    row_losses(losses + r0, lse + r0, logits, targets + r0, n, V);
    if (dx == nullptr) continue;
    cross_entropy_backward_inplace(logits, lse + r0, targets + r0, n, V, dloss,
                                   row_dloss != nullptr ? row_dloss + r0 : nullptr);
    if (w16 != nullptr) {
      gemm_bf16_with_b16(false, false, n, C, V, 1.0f, logits, V, w16, C, 0.0f, dx + r0 * C, C);
    } else {
      gemm(false, false, n, C, V, 1.0f, logits, V, W, C, 0.0f, dx + r0 * C, C);
    }
    // dW rows [dW_first_row, V) (V - first, C) += dlogits[:, first:]^T @ x
    if (dW != nullptr) {
      gemm(true, false, V - dW_first_row, C, n, 1.0f, logits + dW_first_row, V, xr, C, 1.0f, dW, C);
    }
  }
  return mean_of(losses, N);
}
}  // namespace

float lm_head_cross_entropy(float* losses, float* lse, const float* x, const float* W, const int32_t* targets,
                            int64_t N, int64_t C, int64_t V, LmHeadScratch& scratch, float* dx, float* dW,
                            float dloss, int64_t chunk_rows, int64_t dW_first_row, const float* row_dloss) {
  GPT_CHECK(dW_first_row >= 0 && dW_first_row < V, "lm_head_cross_entropy: dW_first_row out of range");
  const int64_t counted = check_targets(targets, N, V, true);
  if (counted < N) {
    // Only the rows that count go through the head (fine-tuning ignores prompt
    // tokens, often most of a row): gathered, run, and their dx scattered back.
    GPT_CHECK(counted > 0, "every target of the batch is ignored: nothing to learn from");
    std::vector<int64_t>& rows_kept = scratch.kept_rows;
    rows_kept.clear();
    for (int64_t r = 0; r < N; ++r)
      if (targets[r] != kIgnoreTarget) rows_kept.push_back(r);
    scratch.x_kept.resize(static_cast<size_t>(counted * C));
    scratch.targets_kept.resize(static_cast<size_t>(counted));
    scratch.losses_kept.resize(static_cast<size_t>(counted * (row_dloss != nullptr ? 3 : 2)));
    for (int64_t i = 0; i < counted; ++i) {
      std::copy_n(x + rows_kept[static_cast<size_t>(i)] * C, C, scratch.x_kept.data() + i * C);
      scratch.targets_kept[static_cast<size_t>(i)] = targets[rows_kept[static_cast<size_t>(i)]];
    }
    float* kept_dloss = nullptr;
    if (row_dloss != nullptr) {
      kept_dloss = scratch.losses_kept.data() + 2 * counted;
      for (int64_t i = 0; i < counted; ++i) kept_dloss[i] = row_dloss[rows_kept[static_cast<size_t>(i)]];
    }
    std::vector<float>& dx_kept = scratch.dx_kept;
    if (dx != nullptr) dx_kept.resize(static_cast<size_t>(counted * C));
    float* kept_losses = scratch.losses_kept.data();
    float* kept_lse = kept_losses + counted;
    const float mean = lm_head_rows(kept_losses, kept_lse, scratch.x_kept.data(), W, scratch.targets_kept.data(),
                                    counted, C, V, scratch, dx != nullptr ? dx_kept.data() : nullptr, dW, dloss,
                                    chunk_rows, dW_first_row, kept_dloss);
    std::fill(losses, losses + N, 0.0f);
    std::fill(lse, lse + N, 0.0f);
    if (dx != nullptr) std::fill(dx, dx + N * C, 0.0f);
    for (int64_t i = 0; i < counted; ++i) {
      const int64_t r = rows_kept[static_cast<size_t>(i)];
      losses[r] = kept_losses[i];
      lse[r] = kept_lse[i];
      if (dx != nullptr) std::copy_n(dx_kept.data() + i * C, C, dx + r * C);
    }
    return mean;
  }
  return lm_head_rows(losses, lse, x, W, targets, N, C, V, scratch, dx, dW, dloss, chunk_rows, dW_first_row,
                      row_dloss);
}

}  // namespace gpt
