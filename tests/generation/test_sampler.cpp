// Choosing tokens: greedy takes the arg-max, top-k/top-p never pick an excluded
// token, and sampled frequencies follow softmax(logits / temperature).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gpt/generation/sampler.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

TEST(Sampler, GreedyPicksTheArgMax) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  Sampler s({true, 1.0f, 0, 1.0f}, 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(logits.data(), 4), 1);
}

TEST(Sampler, TopKAndTopPNeverReturnExcludedTokens) {
  const std::vector<float> logits = {3.0f, 2.9f, 0.0f, -1.0f, 2.8f};
  Sampler k({false, 1.0f, 2, 1.0f}, 2);
  for (int i = 0; i < 2000; ++i) {
    const int t = k.sample(logits.data(), 5);
    EXPECT_TRUE(t == 0 || t == 1) << t;
  }
  // p(0)+p(1) of the full softmax is about 0.68 < 0.7, so the nucleus is {0, 1, 4}.
  Sampler p({false, 1.0f, 0, 0.7f}, 3);
  for (int i = 0; i < 2000; ++i) {
    const int t = p.sample(logits.data(), 5);
    EXPECT_TRUE(t == 0 || t == 1 || t == 4) << t;
  }
}

TEST(Sampler, FrequenciesMatchTheSoftmax) {
  // Chi-square goodness of fit, 4 degrees of freedom: 18.47 is the 0.999 quantile.
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
  const float temperature = 0.8f;
  Sampler s({false, temperature, 0, 1.0f}, 12345);
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
  Sampler a({false, 1.0f, 0, 1.0f}, 9), b({false, 1.0f, 0, 1.0f}, 9);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(logits.data(), 4), b.sample(logits.data(), 4));
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({false, -1.0f, 0, 1.0f}, 1), Error);
  EXPECT_THROW(Sampler({false, 0.0f, 0, 1.0f}, 1), Error);
  EXPECT_THROW(Sampler({false, 1.0f, 0, 2.0f}, 1), Error);
  EXPECT_THROW(Sampler({false, 1.0f, -3, 1.0f}, 1), Error);
}

}  // namespace
}  // namespace gpt
