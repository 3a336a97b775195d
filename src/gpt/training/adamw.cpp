#include "gpt/training/adamw.h"
#include "gpt/kernels/dispatch.h"

#include <algorithm>
#include <cmath>

namespace gpt {

AdamW::AdamW(const ParameterLayout& layout, AdamWConfig config, size_t begin, size_t end) : config_(config) {
  end = std::min(end, layout.total());
  begin_ = std::min(begin, end);
  const size_t n = end - begin_;
  decay_.assign(n, 0.0f);
  m_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
  for (const TensorInfo& t : layout.tensors()) {
    if (!t.weight_decay) continue;
    const size_t lo = std::max(t.offset, begin_), hi = std::min(t.offset + t.numel, end);
    for (size_t i = lo; i < hi; ++i) decay_[i - begin_] = config.weight_decay;
  }
}

void AdamW::load(const float* full_m, const float* full_v, int64_t steps) {
  std::copy(full_m + begin_, full_m + begin_ + m_.size(), m_.begin());
  std::copy(full_v + begin_, full_v + begin_ + v_.size(), v_.begin());
  t_ = steps;
}

GPT_MULTIVERSION void AdamW::step(float* params, const float* grads, float lr) {
  ++t_;
  const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  const float bc1 = 1.0f - std::pow(b1, static_cast<float>(t_));
  const float bc2 = 1.0f - std::pow(b2, static_cast<float>(t_));
  const float step_size = lr / bc1;
  const float bc2_sqrt = std::sqrt(bc2);
  const auto n = static_cast<int64_t>(m_.size());
  float* m = m_.data();
  float* v = v_.data();
  const float* decay = decay_.data();
  params += begin_;
  grads += begin_;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i];
    const float p = params[i] * (1.0f - lr * decay[i]);
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = p - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
  }
}

GPT_MULTIVERSION float global_norm(const float* x, size_t n) {
  double sum = 0.0;
  const auto len = static_cast<int64_t>(n);
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
  for (int64_t i = 0; i < len; ++i) sum += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(std::sqrt(sum));
}

float clip_grad_norm(float* grads, size_t n, float max_norm) {
  const float norm = global_norm(grads, n);
  if (max_norm <= 0.0f) return norm;
  const float coef = max_norm / (norm + 1e-6f);
  if (coef < 1.0f) {
    const auto len = static_cast<int64_t>(n);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < len; ++i) grads[i] *= coef;
  }
  return norm;
}

}  // namespace gpt
