#include "gpt/generation/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/util/error.h"

namespace gpt {

void SamplingOptions::validate() const {
  GPT_CHECK(greedy || (temperature > 0.0f && std::isfinite(temperature)),
        "--temperature must be positive (use --greedy for arg-max decoding)");
  GPT_CHECK(top_k >= 0, "--top-k must not be negative");
  GPT_CHECK(top_p > 0.0f && top_p <= 1.0f, "--top-p must be in (0, 1]");
  GPT_CHECK(min_p >= 0.0f && min_p < 1.0f, "--min-p must be in [0, 1)");
  GPT_CHECK(repeat_penalty > 0.0f && std::isfinite(repeat_penalty), "--repeat-penalty must be positive");
  GPT_CHECK(repeat_last_n >= -1, "--repeat-last-n must be -1 (whole context), 0 (off) or positive");
  GPT_CHECK(std::isfinite(presence_penalty), "--presence-penalty must be a number");
  GPT_CHECK(std::isfinite(frequency_penalty), "--frequency-penalty must be a number");
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

namespace {

struct Peak {
  float logit, prob;  // the largest logit and the largest probability
};

// probs = softmax(logits / temperature) over the vocabulary. Vectorised, with the
// exp training's kernels use: a decoding step of a compact GPT-2 takes ~1.6 ms,
// and libm's scalar exp over 50,257 logits took a fifth of that.
GPT_MULTIVERSION Peak softmax_with_temperature(float* probs, const float* logits, int64_t V, float temperature) {
  float maxval = -std::numeric_limits<float>::infinity();
#if defined(__clang__)
  // clang does not reorder a max reduction without fast-math (and warns that the
  // pragma below went unheeded): sixteen running maxima, one per lane, instead.
  constexpr int kLanes = 16;
  float lane[kLanes];
  for (float& m : lane) m = -std::numeric_limits<float>::infinity();
  int64_t i0 = 0;
  for (; i0 + kLanes <= V; i0 += kLanes) {
    for (int j = 0; j < kLanes; ++j) lane[j] = logits[i0 + j] > lane[j] ? logits[i0 + j] : lane[j];
  }
  for (; i0 < V; ++i0) maxval = logits[i0] > maxval ? logits[i0] : maxval;
  for (float m : lane) maxval = m > maxval ? m : maxval;
#else
#pragma omp simd reduction(max : maxval)
  for (int64_t i = 0; i < V; ++i) maxval = logits[i] > maxval ? logits[i] : maxval;  // (std::max: not vectorised)
#endif
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < V; ++i) {
    probs[i] = exp_nonpositive((logits[i] - maxval) / temperature);
    sum += probs[i];
  }
  const auto inv = static_cast<float>(1.0 / sum);
#pragma omp simd
  for (int64_t i = 0; i < V; ++i) probs[i] *= inv;
  return {maxval, inv};  // the arg-max's exp is exactly 1
}

// The probability mass of the tokens at or above `tau`.
GPT_MULTIVERSION double mass_at_or_above(const float* probs, int64_t V, float tau) {
  double mass = 0;
#pragma omp simd reduction(+ : mass)
  for (int64_t i = 0; i < V; ++i) mass += probs[i] >= tau ? probs[i] : 0.0f;
  return mass;
}

// How many tokens are at or above `tau`.
GPT_MULTIVERSION int64_t count_at_or_above(const float* probs, int64_t V, float tau) {
  int32_t count = 0;  // 32-bit lanes: twice as many per vector (a vocabulary is < 2^31)
#pragma omp simd reduction(+ : count)
  for (int64_t i = 0; i < V; ++i) count += probs[i] >= tau ? 1 : 0;
  return count;
}

// Truncation keeps a most-likely prefix of the vocabulary; rather than sort all
// 50,257 tokens (6 ms a token, where a decoding step of a compact GPT-2 takes
// ~1.6), find a probability threshold whose tokens at or above it still contain
// that prefix (`enough(tau)`: enough of them, or of their mass), and sort only
// those. As high as 14 passes over the vocabulary find: bisection between
// top_prob * 2^-40 and top_prob on a log scale, to within 1%; 0 (every token)
// when even the bottom is not enough.
template <typename Enough>
float highest_threshold(float top_prob, Enough enough) {
  if (enough(top_prob)) return top_prob;
  float lo = top_prob * 0x1p-40f, hi = top_prob;
  if (!enough(lo)) return 0.0f;
  for (int i = 0; i < 12; ++i) {
    const float mid = std::sqrt(lo * hi);
    (enough(mid) ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace

int32_t Sampler::sample(const float* logits, int64_t V, std::span<const int32_t> history) {
  work_.assign(logits, logits + V);
  apply_penalties(work_.data(), V, history);
  const float temperature = options_.greedy ? 1.0f : options_.temperature;
  // The full distribution (kept for top()).
  probs_.resize(static_cast<size_t>(V));
  const Peak peak = softmax_with_temperature(probs_.data(), work_.data(), V, temperature);
  // NaN anywhere makes the sum NaN, and so the normaliser: a diverged model (or
  // corrupt weights) is refused, never sampled as if its scores were small.
  if (!(peak.prob > 0.0f && std::isfinite(peak.prob) && std::isfinite(peak.logit))) [[unlikely]] {
    throw Error("the model's next-token scores are not finite (NaN or infinity): refusing to sample "
                "(diverged training or corrupt weights?)");
  }
  // The first arg-max (a search for the known maximum: max_element's chain of
  // compares took most of a greedy step's time).
  if (options_.greedy) return static_cast<int32_t>(std::find(work_.begin(), work_.end(), peak.logit) - work_.begin());

  const float* p = probs_.data();
  const bool truncate = options_.top_k > 0 || options_.top_p < 1.0f || options_.min_p > 0.0f;
  if (!truncate) {  // draw from the whole distribution, in token order
    const double r = rng_.uniform() * mass_at_or_above(p, V, 0.0f);
    double acc = 0;
    for (int64_t i = 0; i < V; ++i) {
      acc += p[i];
      if (r < acc) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(V - 1);
  }
  // Candidates most likely first, ties by token id: one total order, so sorting
  // only the tokens at or above a threshold gives the same prefix as sorting all.
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  auto gather_and_sort = [&](float threshold, size_t first) {
    candidates_.clear();
    for (int64_t i = 0; i < V; ++i) {
      if (p[i] >= threshold) candidates_.push_back({p[i], static_cast<int32_t>(i)});
    }
    const size_t m = std::min(first, candidates_.size());
    const auto mid = candidates_.begin() + static_cast<ptrdiff_t>(m);
    if (m < candidates_.size()) std::nth_element(candidates_.begin(), mid, candidates_.end(), by_prob);
    std::sort(candidates_.begin(), mid, by_prob);
    return m;
  };
  size_t n = 0;
  double target = 0;  // top-p's mass
  if (options_.top_k > 0 && options_.top_k < V) {
    const auto k = static_cast<int64_t>(options_.top_k);
    n = gather_and_sort(highest_threshold(peak.prob, [&](float t) { return count_at_or_above(p, V, t) >= k; }),
                        static_cast<size_t>(k));
    for (size_t i = 0; i < n; ++i) target += candidates_[i].first;  // the nucleus of the top k
    target *= options_.top_p;
  } else {
    // min-p's floor is a threshold already; top-p's is found on the mass.
    float threshold = options_.min_p > 0.0f ? options_.min_p * peak.prob : 0.0f;
    if (options_.top_p < 1.0f) {
      target = options_.top_p * mass_at_or_above(p, V, 0.0f);
      threshold = std::max(threshold,
                           highest_threshold(peak.prob, [&](float t) { return mass_at_or_above(p, V, t) >= target; }));
    }
    n = gather_and_sort(threshold, static_cast<size_t>(V));
  }
  if (options_.top_p < 1.0f) {
    double mass = 0;
    size_t keep = 0;
    while (keep < n) {
      mass += candidates_[keep++].first;
      if (mass >= target) break;
    }
    n = keep;  // all gathered when min-p's floor cut first (or by rounding)
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
