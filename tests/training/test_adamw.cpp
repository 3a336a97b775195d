// Optimizer pieces: the learning-rate schedule, AdamW's decoupled weight decay on
// matrices only, and clipping by global norm.
#include <gtest/gtest.h>
#include <tuple>
#include <omp.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gpt/util/rng.h"

#include "gpt/model/gpt.h"
#include "gpt/training/adamw.h"
#include "gpt/training/lr_schedule.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(LrSchedule, WarmupStableThenStraightCooldown) {
  LrSchedule s{1e-3f, 1e-4f, 10, 110};
  s.wsd = true;
  s.cooldown_start = 90;
  EXPECT_FLOAT_EQ(s.at(0), 1e-3f / 11);     // warmup as the cosine's
  EXPECT_FLOAT_EQ(s.at(10), 1e-3f);         // stable from the end of warmup ...
  EXPECT_FLOAT_EQ(s.at(89), 1e-3f);         // ... to the cooldown
  EXPECT_FLOAT_EQ(s.at(90), 1e-3f);         // the cooldown's first step starts at the top
  EXPECT_NEAR(s.at(100), 0.5 * (1e-3 + 1e-4), 1e-9);  // half way down, a straight line
  EXPECT_NEAR(s.at(109), 1e-4 + (1e-3 - 1e-4) / 20, 1e-9);
  EXPECT_FLOAT_EQ(s.at(110), 1e-4f);
  EXPECT_FLOAT_EQ(s.at(500), 1e-4f);
  for (int64_t it = 90; it < 110; ++it) EXPECT_GT(s.at(it), s.at(it + 1));
  // A cooldown that starts inside the warmup (a short time budget) descends from where the warmup got to.
  LrSchedule early = s;
  early.cooldown_start = 5;
  early.decay_iters = 15;
  EXPECT_FLOAT_EQ(early.at(4), 1e-3f * 5 / 11);
  EXPECT_FLOAT_EQ(early.at(5), 1e-3f * 6 / 11);
  EXPECT_NEAR(early.at(10), 0.5 * (1e-3 * 6 / 11 + 1e-4), 1e-9);
  EXPECT_FLOAT_EQ(early.at(15), 1e-4f);
}

TEST(LrSchedule, WarmupThenCosineToTheMinimum) {
  LrSchedule s{1e-3f, 1e-4f, 100, 2000};
  EXPECT_FLOAT_EQ(s.at(0), 1e-3f * 1 / 101);
  EXPECT_FLOAT_EQ(s.at(99), 1e-3f * 100 / 101);
  EXPECT_FLOAT_EQ(s.at(100), 1e-3f);                   // top of the cosine
  EXPECT_NEAR(s.at(1050), 0.5 * (1e-3 + 1e-4), 1e-9);  // half way down
  EXPECT_FLOAT_EQ(s.at(2000), 1e-4f);
  EXPECT_FLOAT_EQ(s.at(5000), 1e-4f);
  for (int i = 100; i < 2000; ++i) EXPECT_LE(s.at(i + 1), s.at(i));
}

// Zero gradients, so only the decay acts: every element of a matrix shrinks by
// lr * wd, biases and norms keep their values; also for a ZeRO slice whose ends
// fall inside tensors (elements outside it untouched), on 1-3 threads.
TEST(AdamW, DecaysMatricesButNotBiasesOrNorms) {
  const gpt::testing::ThreadCountGuard restore;
  const ParameterLayout layout(testing::model_config(5, 4, 2, 1, 4));
  const size_t total = layout.total();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (const auto& shape : {std::array<size_t, 2>{0, SIZE_MAX}, {7, total - 5}, {total / 3, total / 3 + 1}}) {  // (plain variables: lambdas capture them)
      const auto begin = std::get<0>(shape);
      const auto end = std::get<1>(shape);
      std::vector<float> params(total, 1.0f), zero_grads(total, 0.0f);
      AdamW opt(layout, {0.9f, 0.95f, 1e-8f, 0.5f}, begin, end);
      opt.step(params.data(), zero_grads.data(), 0.1f);
      for (const TensorInfo& t : layout.tensors()) {
        for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
          const bool in_slice = i >= begin && i < end;
          const float expected = in_slice && t.shape.size() >= 2 ? 1.0f - 0.1f * 0.5f : 1.0f;
          ASSERT_FLOAT_EQ(params[i], expected) << t.name << " element " << i - t.offset << " slice " << begin << ".."
                                               << end << " threads " << threads;
        }
      }
    }
  }
}

TEST(AdamW, FirstStepMovesEachParameterByTheLearningRate) {
  // With bias correction, step 1 is p -= lr * g / (|g| + eps): a move of lr.
  const ParameterLayout layout(testing::model_config(3, 2, 1, 1, 2));
  std::vector<float> p(layout.total(), 0.0f), g(layout.total());
  for (size_t i = 0; i < g.size(); ++i) g[i] = (i % 2 ? 1.0f : -1.0f) * static_cast<float>(i + 1);
  AdamW opt(layout, {0.9f, 0.99f, 1e-8f, 0.0f});
  opt.step(p.data(), g.data(), 0.01f);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], g[i] > 0 ? -0.01f : 0.01f, 1e-6);
}

TEST(ClipGradNorm, ScalesOnlyAboveTheThreshold) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_FLOAT_EQ(clip_grad_norm(g.data(), 2, 10.0f), 5.0f);
  EXPECT_FLOAT_EQ(g[0], 3.0f);
  EXPECT_FLOAT_EQ(clip_grad_norm(g.data(), 2, 1.0f), 5.0f);
  EXPECT_NEAR(global_norm(g.data(), 2), 1.0f, 1e-6);
  EXPECT_NEAR(g[0] / g[1], 0.75f, 1e-6);
}

TEST(AdamW, SumOfSquaresIsTheSameOnEveryThreadCount) {
  // One fixed order of summation (blocks, then block sums in order), so training
  // is reproducible on any thread count, and a ZeRO rank's slice sums add up to
  // the whole buffer's within double rounding.
  const testing::ThreadCountGuard guard;
  Rng rng(9);
  std::vector<float> x(1'000'003);
  for (auto& v : x) v = static_cast<float>(rng.normal()) * 1e-2f;
  long double exact = 0;
  for (float v : x) exact += static_cast<long double>(v) * v;
  omp_set_num_threads(1);
  const double one = sum_of_squares(x.data(), x.size());
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(sum_of_squares(x.data(), x.size()), one) << threads << " threads";
  }
  EXPECT_LT(std::abs(static_cast<double>((one - exact) / exact)), 1e-13);
  // Slices (as ZeRO cuts the buffer across ranks), summed in double: the norm
  // they give as a float is the whole buffer's.
  for (size_t cut : {size_t(1), size_t(333'333), size_t(500'001), size_t(8192 * 37)}) {
    const double parts = sum_of_squares(x.data(), cut) + sum_of_squares(x.data() + cut, x.size() - cut);
    EXPECT_EQ(static_cast<float>(std::sqrt(parts)), global_norm(x.data(), x.size())) << "cut at " << cut;
  }
  std::vector<float> bad(100, 1.0f);
  bad[57] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(sum_of_squares(bad.data(), bad.size())));
}

}  // namespace
}  // namespace gpt
