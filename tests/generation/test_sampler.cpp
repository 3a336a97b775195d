// Choosing tokens: greedy takes the arg-max, top-k/top-p never pick an excluded
// token, and sampled frequencies follow softmax(logits / temperature).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gpt/generation/sampler.h"
#include "gpt/kernels/fast_math.h"
#include "gpt/util/error.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"

namespace gpt {
namespace {

TEST(Sampler, GreedyPicksTheArgMax) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  SamplingOptions o;
  o.greedy = true;
  Sampler s(o, 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(logits.data(), 4), 1);
}

TEST(Sampler, TopKAndTopPNeverReturnExcludedTokens) {
  const std::vector<float> logits = {3.0f, 2.9f, 0.0f, -1.0f, 2.8f};
  SamplingOptions ko;
  ko.top_k = 2;
  Sampler k(ko, 2);
  for (int i = 0; i < 2000; ++i) {
    const int t = k.sample(logits.data(), 5);
    EXPECT_TRUE(t == 0 || t == 1) << t;
  }
  // p(0)+p(1) of the full softmax is about 0.68 < 0.7, so the nucleus is {0, 1, 4}.
  SamplingOptions po;
  po.top_p = 0.7f;
  Sampler p(po, 3);
  for (int i = 0; i < 2000; ++i) {
    const int t = p.sample(logits.data(), 5);
    EXPECT_TRUE(t == 0 || t == 1 || t == 4) << t;
  }
}

TEST(Sampler, FrequenciesMatchTheSoftmax) {
  // Chi-square goodness of fit, 4 degrees of freedom: 18.47 is the 0.999 quantile.
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
  const float temperature = 0.8f;
  SamplingOptions o;
  o.temperature = temperature;
  Sampler s(o, 12345);
  const int n = 50000;
  std::vector<int> counts(5, 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(s.sample(logits.data(), 5))];
  double z = 0;
  for (float l : logits) z += std::exp(l / temperature);
  double chi2 = 0;
  for (size_t i = 0; i < 5; ++i) {
    const double expected = n * std::exp(logits[i] / temperature) / z;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 18.47);
}

TEST(Sampler, SameSeedSameChoices) {
  const std::vector<float> logits = {0.0f, 0.1f, 0.2f, 0.3f};
  Sampler a(SamplingOptions{}, 9), b(SamplingOptions{}, 9);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(logits.data(), 4), b.sample(logits.data(), 4));
}

TEST(Sampler, MinPKeepsOnlyTokensNearTheTop) {
  // probabilities ~ {0.46, 0.46, 0.06, 0.02}: min-p 0.2 keeps tokens >= 0.09, i.e. 0 and 1.
  const std::vector<float> logits = {2.0f, 2.0f, 0.0f, -1.0f};
  SamplingOptions o;
  o.min_p = 0.2f;
  Sampler s(o, 4);
  for (int i = 0; i < 2000; ++i) {
    const int t = s.sample(logits.data(), 4);
    EXPECT_TRUE(t == 0 || t == 1) << t;
  }
}

TEST(Sampler, LowTemperatureApproachesGreedy) {
  const std::vector<float> logits = {1.0f, 1.3f, 0.7f, 1.25f};
  SamplingOptions o;
  o.temperature = 0.01f;
  Sampler s(o, 5);
  int argmax = 0;
  for (int i = 0; i < 1000; ++i) argmax += s.sample(logits.data(), 4) == 1;
  EXPECT_GE(argmax, 990);  // p(second best) = exp(-5) / (1 + ...) < 0.7%
}

TEST(Sampler, PenaltiesChangeLogitsExactlyAsDocumented) {
  SamplingOptions o;
  o.repeat_penalty = 2.0f;
  o.frequency_penalty = 0.5f;
  o.presence_penalty = 0.25f;
  o.repeat_last_n = 4;
  Sampler s(o, 1);
  std::vector<float> logits = {3.0f, -1.0f, 2.0f, 1.0f, 0.5f};
  // The window is the last 4 tokens: {1, 2, 1, 3}; token 0 is outside it.
  const std::vector<int32_t> history = {0, 0, 1, 2, 1, 3};
  s.apply_penalties(logits.data(), 5, history);
  EXPECT_FLOAT_EQ(logits[0], 3.0f);                        // not in the window
  EXPECT_FLOAT_EQ(logits[1], -1.0f * 2.0f - 0.5f * 2 - 0.25f);  // negative: multiplied; seen twice
  EXPECT_FLOAT_EQ(logits[2], 2.0f / 2.0f - 0.5f - 0.25f);      // positive: divided; seen once
  EXPECT_FLOAT_EQ(logits[3], 1.0f / 2.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(logits[4], 0.5f);
  // Applying again to fresh logits gives the same (no state leaks between calls).
  std::vector<float> again = {3.0f, -1.0f, 2.0f, 1.0f, 0.5f};
  s.apply_penalties(again.data(), 5, history);
  EXPECT_FLOAT_EQ(again[1], logits[1]);
}

TEST(Sampler, ReportsTheDistributionItDrewFrom) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};
  Sampler s(SamplingOptions{}, 1);
  s.sample(logits.data(), 2);
  const auto top = s.top(2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].token, 1);
  EXPECT_NEAR(top[0].prob, 0.75f, 1e-6);
  EXPECT_NEAR(top[1].prob, 0.25f, 1e-6);
}

// Over a GPT-2-sized vocabulary the sampler sorts only as much as its cut needs;
// it must choose exactly what sorting the whole softmax would: a reference that
// sorts everything, fed the same random numbers, for peaked and flat
// distributions (nuclei of a few to thousands of tokens) and each truncation.
using Candidates = std::vector<std::pair<double, int32_t>>;

// softmax(logits / temperature) in float64, most likely first, ties by token id.
Candidates sorted_softmax(const std::vector<float>& logits, float temperature) {
  const float maxval = *std::max_element(logits.begin(), logits.end());
  Candidates c(logits.size());
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    c[i] = {std::exp((logits[i] - maxval) / static_cast<double>(temperature)), static_cast<int32_t>(i)};
    z += c[i].first;
  }
  for (auto& x : c) x.first /= z;
  std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  return c;
}

int32_t reference_draw(const Candidates& c, const SamplingOptions& o, Rng& rng) {
  size_t n = o.top_k > 0 ? std::min(c.size(), static_cast<size_t>(o.top_k)) : c.size();
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += c[i].first;
  if (o.top_p < 1.0f) {
    double mass = 0;
    size_t keep = 0;
    while (keep < n) {
      mass += c[keep++].first;
      if (mass >= o.top_p * total) break;
    }
    n = keep;
  }
  if (o.min_p > 0.0f) {
    size_t keep = 1;
    while (keep < n && c[keep].first >= o.min_p * c[0].first) ++keep;
    n = keep;
  }
  double mass = 0;
  for (size_t i = 0; i < n; ++i) mass += c[i].first;
  const double r = rng.uniform() * mass;
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += c[i].first;
    if (r < acc) return c[i].second;
  }
  return c[n - 1].second;
}

// Over a GPT-2-sized vocabulary the sampler sorts only as much as its cut needs;
// it must choose what sorting the whole softmax would: a float64 reference that
// sorts everything, fed the same random numbers, for flat and peaked
// distributions (nuclei of thousands of tokens down to a few) and each truncation.
TEST(Sampler, TruncationOverALargeVocabularyMatchesSortingEverything) {
  const size_t V = 50257;
  const float temperature = 0.9f;
  Rng data(7);
  for (const double spread : {0.3, 1.0, 4.0}) {  // flat .. peaked
    std::vector<float> logits(V);
    for (auto& l : logits) l = static_cast<float>(spread * data.normal());
    const Candidates sorted = sorted_softmax(logits, temperature);
    for (const auto& [top_k, top_p, min_p] : {std::tuple{0, 0.9f, 0.0f}, {0, 0.5f, 0.0f}, {0, 0.99f, 0.0f},
                                              {0, 1.0f, 0.05f}, {0, 1.0f, 0.001f}, {0, 0.95f, 0.01f},
                                              {40, 0.9f, 0.0f}, {300, 1.0f, 0.1f}, {40, 1.0f, 0.0f},
                                              {1000, 1.0f, 0.0f}, {50000, 0.99f, 0.0f}}) {
      SamplingOptions o;
      o.temperature = temperature;
      o.top_k = top_k;
      o.top_p = top_p;
      o.min_p = min_p;
      Sampler s(o, 99);
      Rng ref(99);
      int differ = 0;
      for (int draw = 0; draw < 25; ++draw) differ += s.sample(logits.data(), static_cast<int64_t>(V)) != reference_draw(sorted, o, ref);
      // A draw within float rounding of the edge between two tokens may go either
      // way (the sampler works in float32); a different cut changes many draws.
      EXPECT_LE(differ, 1) << "spread " << spread << " top-k " << top_k << " top-p " << top_p << " min-p " << min_p;
    }
  }
}

TEST(Sampler, RejectsBadOptions) {
  auto with = [](auto change) {
    SamplingOptions o;
    change(o);
    return o;
  };
  EXPECT_THROW(Sampler(with([](auto& o) { o.temperature = -1; }), 1), Error);
  EXPECT_THROW(Sampler(with([](auto& o) { o.temperature = 0; }), 1), Error);
  EXPECT_THROW(Sampler(with([](auto& o) { o.top_p = 2; }), 1), Error);
  EXPECT_THROW(Sampler(with([](auto& o) { o.top_k = -3; }), 1), Error);
  EXPECT_THROW(Sampler(with([](auto& o) { o.min_p = 1; }), 1), Error);
  EXPECT_THROW(Sampler(with([](auto& o) { o.repeat_penalty = 0; }), 1), Error);
  EXPECT_THROW(Sampler(with([](auto& o) { o.repeat_last_n = -2; }), 1), Error);
  EXPECT_NO_THROW(Sampler(with([](auto& o) { o.greedy = true; o.temperature = 0; }), 1));
}

TEST(Sampler, RefusesScoresThatAreNotFinite) {
  // A diverged model's NaN must not become a small probability and be sampled quietly.
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    for (bool greedy : {true, false}) {
      SamplingOptions o;
      o.greedy = greedy;
      Sampler s(o, 1);
      std::vector<float> logits(1000, 0.5f);
      logits[417] = bad;
      EXPECT_THROW(s.sample(logits.data(), 1000, {}), Error) << bad << (greedy ? " greedy" : " sampled");
    }
  }
  EXPECT_TRUE(std::isnan(exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(exp_nonpositive(-1000.0f), exp_nonpositive(-87.0f));
  EXPECT_FLOAT_EQ(exp_nonpositive(-1.0f), std::exp(-1.0f));
}

}  // namespace
}  // namespace gpt
