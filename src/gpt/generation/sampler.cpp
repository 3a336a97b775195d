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
  check(min_p >= 0.0f && min_p < 1.0f, "--min-p must be in [0, 1)");
  check(repeat_penalty > 0.0f && std::isfinite(repeat_penalty), "--repeat-penalty must be positive");
  check(repeat_last_n >= -1, "--repeat-last-n must be -1 (whole context), 0 (off) or positive");
  check(std::isfinite(presence_penalty), "--presence-penalty must be a number");
  check(std::isfinite(frequency_penalty), "--frequency-penalty must be a number");
}

Sampler::Sampler(SamplingOptions options, uint64_t seed) : options_(options), rng_(seed) { options_.validate(); }

void Sampler::apply_penalties(float* logits, int64_t V, std::span<const int32_t> history) {
  const bool any = options_.repeat_penalty != 1.0f || options_.presence_penalty != 0.0f ||
                   options_.frequency_penalty != 0.0f;
  if (!any || options_.repeat_last_n == 0 || history.empty()) return;
  if (counts_.size() != static_cast<size_t>(V)) counts_.assign(static_cast<size_t>(V), 0);
  const size_t n = options_.repeat_last_n < 0 ? history.size()
                                              : std::min(history.size(), static_cast<size_t>(options_.repeat_last_n));
  const auto window = history.subspan(history.size() - n);
  for (int32_t t : window)
    if (t >= 0 && t < V) ++counts_[static_cast<size_t>(t)];
  for (int32_t t : window) {
    if (t < 0 || t >= V) continue;
    int32_t& c = counts_[static_cast<size_t>(t)];
    if (c == 0) continue;  // already penalised (repeated token)
    float& l = logits[t];
    if (options_.repeat_penalty != 1.0f) l = l > 0 ? l / options_.repeat_penalty : l * options_.repeat_penalty;
    l -= options_.frequency_penalty * static_cast<float>(c) + options_.presence_penalty;
    c = 0;  // counts go back to zero as they are used: O(window), not O(V)
  }
}

int32_t Sampler::sample(const float* logits, int64_t V, std::span<const int32_t> history) {
  work_.assign(logits, logits + V);
  apply_penalties(work_.data(), V, history);
  const float temperature = options_.greedy ? 1.0f : options_.temperature;
  // The full distribution (kept for top()).
  probs_.resize(static_cast<size_t>(V));
  const float maxval = *std::max_element(work_.begin(), work_.end());
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) {
    probs_[static_cast<size_t>(i)] = std::exp((work_[static_cast<size_t>(i)] - maxval) / temperature);
    sum += probs_[static_cast<size_t>(i)];
  }
  for (auto& p : probs_) p = static_cast<float>(p / sum);
  if (options_.greedy) return static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());

  candidates_.resize(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) candidates_[static_cast<size_t>(i)] = {probs_[static_cast<size_t>(i)], static_cast<int32_t>(i)};
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t n = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) n = static_cast<size_t>(options_.top_k);
  const bool need_sorted = n < candidates_.size() || options_.top_p < 1.0f || options_.min_p > 0.0f;
  if (need_sorted) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(n), candidates_.end(), by_prob);
  }
  if (options_.top_p < 1.0f) {
    double mass = 0, total = 0;
    for (size_t i = 0; i < n; ++i) total += candidates_[i].first;
    size_t keep = 0;
    while (keep < n) {
      mass += candidates_[keep++].first;
      if (mass >= options_.top_p * total) break;
    }
    n = keep;
  }
  if (options_.min_p > 0.0f) {
    const float floor = options_.min_p * candidates_[0].first;
    size_t keep = 1;
    while (keep < n && candidates_[keep].first >= floor) ++keep;
    n = keep;
  }
  double mass = 0;
  for (size_t i = 0; i < n; ++i) mass += candidates_[i].first;
  const double r = rng_.uniform() * mass;
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += candidates_[i].first;
    if (r < acc) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

std::vector<TokenProbability> Sampler::top(int k) const {
  std::vector<TokenProbability> out;
  for (size_t i = 0; i < probs_.size(); ++i) out.push_back({static_cast<int32_t>(i), probs_[i]});
  const size_t m = std::min(out.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(out.begin(), out.begin() + static_cast<ptrdiff_t>(m), out.end(),
                    [](const auto& a, const auto& b) { return a.prob > b.prob || (a.prob == b.prob && a.token < b.token); });
  out.resize(m);
  return out;
}

}  // namespace gpt
