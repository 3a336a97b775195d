#include "gpt/generation/sampler.h"

#include <algorithm>
#include <cmath>

#include "gpt/util/error.h"

namespace gpt {

void SamplingOptions::validate() const {
  check(greedy || (temperature > 0.0f && std::isfinite(temperature)),
        "--temperature must be positive (use --greedy for arg-max decoding)");
  check(top_k >= 0, "--top-k must not be negative");
  check(top_p > 0.0f && top_p <= 1.0f, "--top-p must be in (0, 1]");
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (options_.greedy) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  candidates_.resize(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) candidates_[static_cast<size_t>(i)] = {logits[i] / options_.temperature, static_cast<int32_t>(i)};
  auto by_score = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t n = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    n = static_cast<size_t>(options_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(n), candidates_.end(), by_score);
  } else if (options_.top_p < 1.0f) {
    std::sort(candidates_.begin(), candidates_.end(), by_score);
  }
  // Softmax over the kept candidates (max-subtracted for stability).
  float maxval = candidates_[0].first;
  for (size_t i = 1; i < n; ++i) maxval = std::max(maxval, candidates_[i].first);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    candidates_[i].first = std::exp(candidates_[i].first - maxval);
    sum += candidates_[i].first;
  }
  if (options_.top_p < 1.0f) {  // candidates are sorted here: keep the nucleus
    double cum = 0;
    size_t keep = 0;
    while (keep < n) {
      cum += candidates_[keep].first / sum;
      ++keep;
      if (cum >= options_.top_p) break;
    }
    n = keep;
    sum = 0;
    for (size_t i = 0; i < n; ++i) sum += candidates_[i].first;
  }
  const double r = rng_.uniform() * sum;
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += candidates_[i].first;
    if (r < acc) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

}  // namespace gpt
