#include "gpt/kernels/rope.h"
#include "gpt/kernels/dispatch.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "gpt/util/error.h"

namespace gpt {

namespace {
double mscale_of(const RopeScaling& s) {
  if (s.type != RopeScaling::Type::kYarn) return 1.0;
  return s.attention_factor > 0 ? s.attention_factor : 0.1 * std::log(static_cast<double>(s.factor)) + 1.0;
}
}  // namespace

RopeTable::RopeTable(int64_t n_positions, int64_t hs, float theta, const RopeScaling& scaling)
    : positions(n_positions), half(hs / 2) {
  cos.resize(static_cast<size_t>(positions * half));
  sin.resize(cos.size());
  const double base = theta, dim = static_cast<double>(hs), factor = scaling.factor;
  // yarn's ramp: pairs that turn more than beta_fast times over the original
  // context keep their frequency, fewer than beta_slow times are interpolated
  // (Hugging Face's _compute_yarn_parameters).
  double low = 0, high = 0;
  if (scaling.type == RopeScaling::Type::kYarn) {
    const auto correction_dim = [&](double rotations) {
      return dim * std::log(scaling.original_context / (rotations * 2 * M_PI)) / (2 * std::log(base));
    };
    low = std::max(0.0, std::floor(correction_dim(scaling.beta_fast)));
    high = std::min(dim - 1, std::ceil(correction_dim(scaling.beta_slow)));
    if (low == high) high += 0.001;
  }
  const double m = mscale_of(scaling);
  mscale = static_cast<float>(m);
  for (int64_t i = 0; i < half; ++i) {
    const double extrapolation = std::pow(base, -2.0 * static_cast<double>(i) / dim);
    double inv_freq = extrapolation;
    if (scaling.type == RopeScaling::Type::kLinear) inv_freq = extrapolation / factor;
    if (scaling.type == RopeScaling::Type::kYarn) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      const double keep = 1.0 - ramp;  // the share of the original frequency
      inv_freq = extrapolation / factor * (1.0 - keep) + extrapolation * keep;
    }
    for (int64_t p = 0; p < positions; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      cos[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle) * m);
      sin[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle) * m);
    }
  }
}

namespace {

constexpr int64_t kParallelMinElements = 16384;

// sign +1 rotates by the angle, -1 back.
template <int kSign>
inline void rotate_rows(float* x, int64_t N, int64_t row_stride, int64_t heads, int64_t hs, const RopeTable& table,
                        const int32_t* positions, int64_t T, int64_t p0) {
  const int64_t half = hs / 2;
#pragma omp parallel for schedule(static) if (N * heads * hs >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t pos = positions != nullptr ? positions[n] : p0 + n % T;
    const float* c = table.cos.data() + pos * half;
    const float* s = table.sin.data() + pos * half;
    float* row = x + n * row_stride;
    for (int64_t h = 0; h < heads; ++h) {
      float* a = row + h * hs;
      float* b = a + half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = a[i], x2 = b[i], sn = kSign * s[i];
        a[i] = x1 * c[i] - x2 * sn;
        b[i] = x2 * c[i] + x1 * sn;
      }
    }
  }
}

void check_table(const RopeTable& table, int64_t hs, int64_t N, const int32_t* positions, int64_t T, int64_t p0) {
  GPT_CHECK(table.half * 2 == hs, "RoPE table made for another head width");
  const int64_t last = positions != nullptr ? -1 : p0 + std::min(N, T) - 1;
  GPT_CHECK(last < table.positions, "position " + std::to_string(last) + " past the RoPE table");
}

}  // namespace

GPT_MULTIVERSION void rope_forward(float* x, int64_t N, int64_t row_stride, int64_t heads, int64_t hs,
                                   const RopeTable& table, const int32_t* positions, int64_t T, int64_t p0) {
  check_table(table, hs, N, positions, T, p0);
  rotate_rows<1>(x, N, row_stride, heads, hs, table, positions, T, p0);
}

GPT_MULTIVERSION void rope_backward(float* dx, int64_t N, int64_t row_stride, int64_t heads, int64_t hs,
                                    const RopeTable& table, const int32_t* positions, int64_t T, int64_t p0) {
  check_table(table, hs, N, positions, T, p0);
  rotate_rows<-1>(dx, N, row_stride, heads, hs, table, positions, T, p0);
}

}  // namespace gpt
