#include "gpt/training/muon.h"

#include <algorithm>
#include <cmath>

#include "gpt/kernels/matmul.h"
#include "gpt/util/error.h"

namespace gpt {

bool is_muon_tensor(const TensorInfo& t) {
  // The blocks' matrices: every 2-D tensor of a block (the embeddings and the head are not in one).
  return t.layer >= 0 && t.shape.size() == 2;
}

void newton_schulz(float* X, int64_t rows, int64_t cols, int steps, std::vector<float>& scratch) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  const int64_t n = rows * cols;
  // Work on the wide orientation (r <= k): A = X X^T is then the smaller square.
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows, k = tall ? rows : cols;
  scratch.resize(static_cast<size_t>(2 * n + 2 * r * r));
  float* W = scratch.data();  // X, wide (r, k)
  float* Y = W + n;          // (b A + c A^2) X
  float* A = Y + n;          // (r, r)
  float* B = A + r * r;      // (r, r)
  if (tall) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) W[j * rows + i] = X[i * cols + j];
  } else {
    std::copy(X, X + n, W);
  }
  double norm2 = 0;
  for (int64_t i = 0; i < n; ++i) norm2 += static_cast<double>(W[i]) * W[i];
  const auto inv = static_cast<float>(1.0 / (std::sqrt(norm2) + 1e-7));
  for (int64_t i = 0; i < n; ++i) W[i] *= inv;
  for (int s = 0; s < steps; ++s) {
    gemm_f32(false, true, r, r, k, 1.0f, W, k, W, k, 0.0f, A, r);  // A = X X^T
    std::copy(A, A + r * r, B);
    gemm_f32(false, false, r, r, r, c, A, r, A, r, b, B, r);  // B = b A + c A A
    gemm_f32(false, false, r, k, r, 1.0f, B, r, W, k, 0.0f, Y, k);  // Y = B X
    for (int64_t i = 0; i < n; ++i) W[i] = a * W[i] + Y[i];
  }
  if (tall) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) X[i * cols + j] = W[j * rows + i];
  } else {
    std::copy(W, W + n, X);
  }
}

Muon::Muon(std::vector<TensorInfo> matrices, MuonConfig config) : matrices_(std::move(matrices)), config_(config) {
  GPT_CHECK(config_.momentum >= 0 && config_.momentum < 1, "--muon-momentum must be in [0, 1)");
  GPT_CHECK(config_.ns_steps > 0, "Muon needs at least one Newton-Schulz step");
  for (const TensorInfo& t : matrices_) GPT_CHECK(t.shape.size() == 2, "Muon trains matrices only, not " + t.name);
}

void Muon::step(float* params, const float* grads, float* momentum, float lr) {
  const float mu = config_.momentum;
  for (const TensorInfo& t : matrices_) {
    const int64_t in = t.in_features(), out = t.out_features(), n = in * out;
    float* w = params + t.offset;
    const float* g = grads + t.offset;
    float* buf = momentum + t.offset;
    update_.resize(static_cast<size_t>(n));
    float* u = update_.data();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      buf[i] = mu * buf[i] + (1.0f - mu) * g[i];
      u[i] = config_.nesterov ? (1.0f - mu) * g[i] + mu * buf[i] : buf[i];
    }
    newton_schulz(u, t.shape[0], t.shape[1], config_.ns_steps, scratch_);
    // As PyTorch's Linear weight (out, in): scaled by max(1, rows / cols)^0.5.
    const float step = lr * std::sqrt(std::max(1.0f, static_cast<float>(out) / static_cast<float>(in)));
    const float keep = 1.0f - lr * config_.weight_decay;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) w[i] = w[i] * keep - step * u[i];
  }
}

}  // namespace gpt
