// Properties of the kernels that gradient checks do not cover.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/kernels/embedding.h"
#include "gpt/kernels/gelu.h"
#include "gpt/kernels/layernorm.h"
#include "gpt/kernels/matmul.h"
#include "gpt/util/rng.h"
#include "kernels/attention_reference.h"
#include "test_support.h"

namespace gpt {
namespace {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * static_cast<float>(rng.normal());
  return v;
}

TEST(Sinusoidal, MatchesTheFormula) {
  const int64_t T = 50, C = 16;
  std::vector<float> table(T * C);
  sinusoidal_positions(table.data(), T, C);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < C / 2; ++i) {
      const double angle = t / std::pow(10000.0, 2.0 * i / C);
      EXPECT_NEAR(table[t * C + 2 * i], std::sin(angle), 1e-6) << "t=" << t << " i=" << i;
      EXPECT_NEAR(table[t * C + 2 * i + 1], std::cos(angle), 1e-6) << "t=" << t << " i=" << i;
    }
  }
  EXPECT_FLOAT_EQ(table[0], 0.0f);  // sin(0)
  EXPECT_FLOAT_EQ(table[1], 1.0f);  // cos(0)
}

TEST(Gelu, FastTanhIsAccurate) {
  double worst = 0;
  for (int i = -200000; i <= 200000; ++i) {
    const float u = static_cast<float>(i) * 1e-4f;  // [-20, 20]
    worst = std::max(worst, std::abs(static_cast<double>(gelu_tanh_approx_for_test(u)) - std::tanh(static_cast<double>(u))));
  }
  EXPECT_LT(worst, 2e-7);
  EXPECT_EQ(gelu_tanh_approx_for_test(1000.0f), 1.0f);
  EXPECT_EQ(gelu_tanh_approx_for_test(-1000.0f), -1.0f);
}

TEST(Attention, RowsAreCausalDistributions) {
  const int64_t B = 2, T = 9, C = 12, NH = 3;
  auto qkv = random_vector(B * T * 3 * C, 1);
  std::vector<float> out(B * T * C), lse(B * NH * T), att(B * NH * T * T, -1.0f);
  attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
  for (int64_t b = 0; b < B; ++b) attention_probabilities(att.data() + b * NH * T * T, qkv.data(), lse.data(), b, T, C, NH);
  for (int64_t r = 0; r < B * NH * T; ++r) {
    const int64_t t = r % T;
    double sum = 0;
    for (int64_t t2 = 0; t2 < T; ++t2) {
      const float a = att[r * T + t2];
      if (t2 > t) {
        EXPECT_EQ(a, 0.0f) << "future position " << t2 << " seen from " << t;
      } else {
        EXPECT_GE(a, 0.0f);
      }
      sum += a;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  // The first position can only attend to itself: its output is its own value vector.
  for (int64_t h = 0; h < NH; ++h)
    for (int64_t i = 0; i < C / NH; ++i)
      EXPECT_FLOAT_EQ(out[h * (C / NH) + i], qkv[2 * C + h * (C / NH) + i]);
}

TEST(Attention, FutureTokensDoNotChangeThePast) {
  const int64_t T = 8, C = 8, NH = 2;
  auto qkv = random_vector(T * 3 * C, 2);
  std::vector<float> out1(T * C), out2(T * C), lse(NH * T);
  attention_forward(out1.data(), lse.data(), qkv.data(), 1, T, C, NH);
  for (int64_t i = 0; i < 3 * C; ++i) qkv[(T - 1) * 3 * C + i] += 5.0f;  // change the last token only
  attention_forward(out2.data(), lse.data(), qkv.data(), 1, T, C, NH);
  for (int64_t i = 0; i < (T - 1) * C; ++i) EXPECT_EQ(out1[i], out2[i]);
}

// The blocked (flash-style) kernels against the straightforward one that stores
// every T x T weight: sequence lengths around the 64-query block, head widths 16
// to 128, forward outputs, the weights recomputed for drawing, and all gradients.
TEST(Attention, BlockedKernelsMatchTheStraightforwardOne) {
  struct Shape {
    int64_t B, T, hs, NH;
  };
  for (const Shape s : {Shape{2, 1, 16, 2}, {1, 63, 32, 2}, {2, 64, 64, 1}, {1, 65, 96, 2}, {1, 130, 128, 1},
                        {3, 17, 16, 4}}) {
    const int64_t C = s.hs * s.NH, B = s.B, T = s.T, NH = s.NH;
    auto qkv = random_vector(B * T * 3 * C, static_cast<uint64_t>(T * 7 + s.hs), 1.5f);
    auto dout = random_vector(B * T * C, static_cast<uint64_t>(T * 11 + s.hs));
    std::vector<float> out(B * T * C), lse(B * NH * T), ref_out(B * T * C), ref_att(B * NH * T * T);
    attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
    testing::reference_attention_forward(ref_out.data(), ref_att.data(), qkv.data(), B, T, C, NH);
    EXPECT_LT(testing::relative_max_error(out.data(), ref_out.data(), out.size()), 2e-6) << "T " << T << " hs " << s.hs;
    std::vector<float> att(NH * T * T);
    for (int64_t b = 0; b < B; ++b) {
      attention_probabilities(att.data(), qkv.data(), lse.data(), b, T, C, NH);
      EXPECT_LT(testing::relative_max_error(att.data(), ref_att.data() + b * NH * T * T, att.size()), 2e-6);
    }
    std::vector<float> dqkv(B * T * 3 * C, 7.0f), ref_dqkv(B * T * 3 * C), scratch(4 * T);
    attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH);
    testing::reference_attention_backward(ref_dqkv.data(), dout.data(), qkv.data(), ref_att.data(), B, T, C, NH,
                                          scratch.data(), 4);
    EXPECT_LT(testing::relative_max_error(dqkv.data(), ref_dqkv.data(), dqkv.size()), 1e-5) << "T " << T << " hs " << s.hs;
  }
}

TEST(LayerNorm, NormalisesEachRow) {
  const int64_t N = 3, C = 64;
  auto x = random_vector(N * C, 3);
  for (auto& v : x) v = v * 10.0f + 100.0f;
  std::vector<float> w(C, 1.0f), b(C, 0.0f), y(N * C), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  for (int64_t r = 0; r < N; ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < C; ++i) m += y[r * C + i];
    m /= C;
    for (int64_t i = 0; i < C; ++i) v += (y[r * C + i] - m) * (y[r * C + i] - m);
    EXPECT_NEAR(m, 0.0, 1e-5);
    EXPECT_NEAR(v / C, 1.0, 1e-3);
  }
}

TEST(CrossEntropy, StableForHugeLogits) {
  std::vector<float> logits = {1e4f, -1e4f, 0.0f, 1e4f - 1.0f};
  std::vector<int32_t> target = {3};
  float loss, lse;
  const float mean = cross_entropy_forward(&loss, &lse, logits.data(), target.data(), 1, 4);
  EXPECT_TRUE(std::isfinite(mean));
  EXPECT_NEAR(mean, 1.0 + std::log1p(std::exp(-1.0)), 1e-3);
}

TEST(CrossEntropy, RejectsTargetsOutsideTheVocabulary) {
  std::vector<float> logits(4, 0.0f), losses(1), lse(1);
  std::vector<int32_t> target = {4};
  EXPECT_THROW(cross_entropy_forward(losses.data(), lse.data(), logits.data(), target.data(), 1, 4), std::exception);
}

TEST(Matmul, MatchesNaiveProductForOddShapes) {
  for (auto [N, C, OC] : {std::array<int64_t, 3>{1, 1, 1}, {3, 17, 5}, {33, 65, 129}}) {
    auto a = random_vector(N * C, 5), w = random_vector(C * OC, 6), b = random_vector(OC, 7);
    std::vector<float> out(N * OC);
    linear_forward(out.data(), a.data(), w.data(), b.data(), N, C, OC);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t j = 0; j < OC; ++j) {
        double s = b[j];
        for (int64_t k = 0; k < C; ++k) s += static_cast<double>(a[r * C + k]) * w[k * OC + j];
        EXPECT_NEAR(out[r * OC + j], s, 1e-4 * (1 + std::abs(s)));
      }
  }
}

TEST(Matmul, ColumnSumsAreIdenticalAcrossRuns) {
  const int64_t N = 257, OC = 131;
  auto x = random_vector(N * OC, 8);
  std::vector<float> s1(OC, 0.0f), s2(OC, 0.0f);
  add_column_sums(s1.data(), x.data(), N, OC);
  add_column_sums(s2.data(), x.data(), N, OC);
  EXPECT_EQ(s1, s2);
  for (int64_t j = 0; j < OC; ++j) {
    double s = 0;
    for (int64_t r = 0; r < N; ++r) s += x[r * OC + j];
    EXPECT_NEAR(s1[j], s, 1e-3);
  }
}

}  // namespace
}  // namespace gpt
