// Properties of the kernels that gradient checks do not cover.
#include <optional>
#include <gtest/gtest.h>
#include <tuple>
#include <omp.h>

#include <array>
#include <cmath>
#include <limits>
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

// The fused bias+GELU kernels against the separate steps (bias add, GELU, its
// derivative, column sums) in float64, for odd widths, 1-3 threads and fewer rows
// than threads; the derivative written over the pre-activations as the model
// does, and dpre aliasing dout.
TEST(Gelu, FusedBiasGeluMatchesTheSeparateSteps) {
  const gpt::testing::ThreadCountGuard restore;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (const auto& shape : {std::array<int64_t, 2>{13, 1}, {13, 7}, {13, 64}, {13, 129}, {1, 64}, {2, 129}}) {  // (plain variables: lambdas capture them)
      const auto N = std::get<0>(shape);
      const auto OC = std::get<1>(shape);
      const auto x = random_vector(static_cast<size_t>(N * OC), 1, 2.0f);
      const auto bias = random_vector(static_cast<size_t>(OC), 2);
      const auto dout = random_vector(static_cast<size_t>(N * OC), 3);
      std::vector<float> out(x.size()), derivative(x.size()), dpre(x.size());
      std::vector<float> dbias(static_cast<size_t>(OC), 0.5f);
      bias_gelu_forward(derivative.data(), out.data(), x.data(), bias.data(), N, OC);
      bias_gelu_backward(dpre.data(), dbias.data(), derivative.data(), dout.data(), N, OC);
      for (int64_t j = 0; j < OC; ++j) {
        double sum = 0.5;
        for (int64_t r = 0; r < N; ++r) {
          const size_t i = static_cast<size_t>(r * OC + j);
          const double v = static_cast<double>(x[i]) + bias[static_cast<size_t>(j)];
          const double u = 0.7978845608028654 * (v + 0.044715 * v * v * v), th = std::tanh(u);
          const double g = 0.5 * v * (1 + th);
          const double dg = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * v * v);
          ASSERT_NEAR(out[i], g, 2e-6 * (1 + std::abs(g))) << "OC=" << OC;
          ASSERT_NEAR(derivative[i], dg, 2e-6 * (1 + std::abs(dg))) << "OC=" << OC;
          ASSERT_NEAR(dpre[i], dg * dout[i], 2e-6 * (1 + std::abs(dg * dout[i]))) << "OC=" << OC;
          sum += dg * dout[i];
        }
        ASSERT_NEAR(dbias[static_cast<size_t>(j)], sum, 1e-5 * (1 + std::abs(sum))) << "OC=" << OC;
      }
      std::vector<float> in_place_pre = x, in_place_out(x.size());  // the derivative over pre
      bias_gelu_forward(in_place_pre.data(), in_place_out.data(), in_place_pre.data(), bias.data(), N, OC);
      EXPECT_EQ(in_place_out, out);
      EXPECT_EQ(in_place_pre, derivative);
      std::vector<float> in_place = dout;  // dpre aliasing dout
      std::vector<float> dbias2(static_cast<size_t>(OC), 0.5f);
      bias_gelu_backward(in_place.data(), dbias2.data(), derivative.data(), in_place.data(), N, OC);
      EXPECT_EQ(in_place, dpre);
      EXPECT_EQ(dbias2, dbias);
    }
  }
}

// Inference's GELU against float64, for sizes on both sides of the point where it
// splits among threads (a decoding step's 4C values run on the calling thread),
// odd lengths, 1-3 threads, and in place as decoding calls it.
TEST(Gelu, ForwardMatchesFloat64OnAnyThreadCountAndInPlace) {
  const gpt::testing::ThreadCountGuard restore;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (int64_t n : {1, 17, 3072, 16383, 16384, 40001}) {
      const auto x = random_vector(static_cast<size_t>(n), 7, 3.0f);
      std::vector<float> out(x.size(), std::numeric_limits<float>::quiet_NaN());
      gelu_forward(out.data(), x.data(), n);
      for (size_t i = 0; i < x.size(); ++i) {
        const double v = x[i], g = 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        ASSERT_NEAR(out[i], g, 2e-6 * (1 + std::abs(g))) << "n=" << n << " i=" << i << " threads=" << threads;
      }
      std::vector<float> in_place = x;
      gelu_forward(in_place.data(), in_place.data(), n);
      EXPECT_EQ(in_place, out) << "n=" << n;
    }
  }
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
    std::vector<float> ref_dqkv(B * T * 3 * C), scratch(4 * T);
    testing::reference_attention_backward(ref_dqkv.data(), dout.data(), qkv.data(), ref_att.data(), B, T, C, NH,
                                          scratch.data(), 4);
    // dqkv starts as NaN: every gradient must be written, never accumulated onto
    // what was there (dK and dV build up over query blocks inside the kernel).
    const gpt::testing::ThreadCountGuard restore;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> dqkv(B * T * 3 * C, std::numeric_limits<float>::quiet_NaN());
      attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH);
      EXPECT_LT(testing::relative_max_error(dqkv.data(), ref_dqkv.data(), dqkv.size()), 1e-5)
          << "T " << T << " hs " << s.hs << " threads " << threads;
    }
  }
}

// Packed rows (several examples end to end, attention kept inside each) against
// each example run alone: outputs, log-sum-exps, the drawn weights and every
// gradient, with examples crossing the 64-query blocks, one-token examples, and
// head widths 16 and 64.
TEST(Attention, PackedRowsMatchEachExampleAlone) {
  const std::vector<std::vector<int64_t>> rows = {{70, 1, 40, 39}, {130, 20}, {5, 64, 1, 1, 79}};
  for (const int64_t hs : {16, 64}) {
    const int64_t NH = 2, C = hs * NH, C3 = 3 * C, B = static_cast<int64_t>(rows.size());
    const int64_t T = 150;
    auto qkv = random_vector(static_cast<size_t>(B * T * C3), static_cast<uint64_t>(hs), 1.5f);
    auto dout = random_vector(static_cast<size_t>(B * T * C), static_cast<uint64_t>(hs + 1));
    std::vector<int32_t> positions(static_cast<size_t>(B * T));
    for (int64_t b = 0; b < B; ++b) {
      int64_t t = 0;
      for (int64_t len : rows[static_cast<size_t>(b)])
        for (int64_t p = 0; p < len; ++p) positions[static_cast<size_t>(b * T + t++)] = static_cast<int32_t>(p);
      ASSERT_EQ(t, T);
    }
    std::vector<float> out(static_cast<size_t>(B * T * C)), lse(static_cast<size_t>(B * NH * T)), att(static_cast<size_t>(NH * T * T));
    attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, positions.data());
    const gpt::testing::ThreadCountGuard restore;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> dqkv(static_cast<size_t>(B * T * C3), std::numeric_limits<float>::quiet_NaN());
      attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH, positions.data());
      for (int64_t b = 0; b < B; ++b) {
        if (threads == 1) attention_probabilities(att.data(), qkv.data(), lse.data(), b, T, C, NH, positions.data());
        int64_t start = 0;
        for (int64_t len : rows[static_cast<size_t>(b)]) {
          // The example alone: its own (1, len) batch.
          std::vector<float> q1(qkv.begin() + (b * T + start) * C3, qkv.begin() + (b * T + start + len) * C3);
          std::vector<float> d1(dout.begin() + (b * T + start) * C, dout.begin() + (b * T + start + len) * C);
          std::vector<float> o1(static_cast<size_t>(len * C)), l1(static_cast<size_t>(NH * len)), g1(q1.size()),
              a1(static_cast<size_t>(NH * len * len));
          attention_forward(o1.data(), l1.data(), q1.data(), 1, len, C, NH);
          attention_backward(g1.data(), d1.data(), q1.data(), o1.data(), l1.data(), 1, len, C, NH);
          attention_probabilities(a1.data(), q1.data(), l1.data(), 0, len, C, NH);
          const std::string where = "hs " + std::to_string(hs) + " row " + std::to_string(b) + " example at " +
                                    std::to_string(start) + " threads " + std::to_string(threads);
          EXPECT_LT(testing::relative_max_error(out.data() + (b * T + start) * C, o1.data(), o1.size()), 1e-6) << where;
          EXPECT_LT(testing::relative_max_error(dqkv.data() + (b * T + start) * C3, g1.data(), g1.size()), 1e-5) << where;
          for (int64_t h = 0; h < NH; ++h) {
            EXPECT_LT(testing::relative_max_error(lse.data() + (b * NH + h) * T + start, l1.data() + h * len,
                                                  static_cast<size_t>(len)), 1e-6) << where;
            if (threads != 1) continue;
            // The drawn weights: the example's own block, and nothing outside it.
            for (int64_t i = 0; i < len; ++i) {
              for (int64_t j = 0; j < T; ++j) {
                const float a = att[static_cast<size_t>((h * T + start + i) * T + j)];
                const bool inside = j >= start && j < start + len;
                if (!inside) {
                  ASSERT_EQ(a, 0.0f) << where << " query " << i << " key " << j;
                } else {
                  ASSERT_NEAR(a, a1[static_cast<size_t>((h * len + i) * len + (j - start))], 2e-6) << where;
                }
              }
            }
          }
          start += len;
        }
      }
    }
  }
}

// Grouped-query attention is multi-head attention over key/value heads repeated
// for their query heads (Hugging Face's repeat_kv): the same outputs, the same
// query gradients, and each shared head's key/value gradient the sum of its
// copies'. Plain and packed rows, 1 and 3 threads, T past one 64-query block.
TEST(Attention, GroupedQueryMatchesRepeatedKeyValueHeads) {
  const int64_t B = 2, T = 80, hs = 16, NH = 6, NKV = 2, G = NH / NKV, C = NH * hs, KV = NKV * hs, QKV = C + 2 * KV;
  Rng rng(77);
  std::vector<float> gqa(static_cast<size_t>(B * T * QKV)), dout(static_cast<size_t>(B * T * C));
  for (auto& v : gqa) v = static_cast<float>(rng.normal());
  for (auto& v : dout) v = static_cast<float>(rng.normal());
  std::vector<float> mha(static_cast<size_t>(B * T * 3 * C));
  for (int64_t r = 0; r < B * T; ++r) {
    const float* g = gqa.data() + r * QKV;
    float* m = mha.data() + r * 3 * C;
    std::copy(g, g + C, m);
    for (int64_t h = 0; h < NH; ++h) {
      std::copy(g + C + h / G * hs, g + C + (h / G + 1) * hs, m + C + h * hs);
      std::copy(g + C + KV + h / G * hs, g + C + KV + (h / G + 1) * hs, m + 2 * C + h * hs);
    }
  }
  std::vector<int32_t> packed(static_cast<size_t>(B * T));
  for (int64_t i = 0; i < B * T; ++i) packed[static_cast<size_t>(i)] = static_cast<int32_t>(i % T < 50 ? i % T : i % T - 50);
  for (const int32_t* positions : {static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(packed.data())}) {
    for (int threads : {1, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> out_g(static_cast<size_t>(B * T * C)), out_m(out_g.size()), lse_g(static_cast<size_t>(B * NH * T)),
          lse_m(lse_g.size()), d_g(gqa.size()), d_m(mha.size());
      attention_forward(out_g.data(), lse_g.data(), gqa.data(), B, T, C, NH, positions, nullptr, NKV);
      attention_forward(out_m.data(), lse_m.data(), mha.data(), B, T, C, NH, positions);
      EXPECT_EQ(out_g, out_m);
      EXPECT_EQ(lse_g, lse_m);
      attention_backward(d_g.data(), dout.data(), gqa.data(), out_g.data(), lse_g.data(), B, T, C, NH, positions,
                         nullptr, NKV);
      attention_backward(d_m.data(), dout.data(), mha.data(), out_m.data(), lse_m.data(), B, T, C, NH, positions);
      double worst = 0;
      for (int64_t r = 0; r < B * T; ++r) {
        const float* g = d_g.data() + r * QKV;
        const float* m = d_m.data() + r * 3 * C;
        for (int64_t i = 0; i < C; ++i) EXPECT_EQ(g[i], m[i]) << "dq row " << r;
        for (int64_t kvh = 0; kvh < NKV; ++kvh) {
          for (int64_t j = 0; j < hs; ++j) {
            double dk = 0, dv = 0;
            for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h) dk += m[C + h * hs + j], dv += m[2 * C + h * hs + j];
            worst = std::max({worst, std::abs(dk - g[C + kvh * hs + j]), std::abs(dv - g[C + KV + kvh * hs + j])});
          }
        }
      }
      EXPECT_LT(worst, 1e-5) << "dk/dv, " << threads << " threads";
    }
  }
  omp_set_num_threads(omp_get_num_procs());
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

// The fused residual + LayerNorm equals the add followed by layernorm_forward, and
// layernorm_apply (the backward's remade output) equals the forward's bit for bit.
TEST(LayerNorm, FusedResidualAddAndRemadeOutputMatchTheSeparateSteps) {
  for (int64_t C : {1, 17, 64, 768}) {
    const int64_t N = 9;
    const auto res = random_vector(static_cast<size_t>(N * C), 4, 3.0f), delta = random_vector(static_cast<size_t>(N * C), 5);
    const auto db = random_vector(static_cast<size_t>(C), 6), w = random_vector(static_cast<size_t>(C), 7),
               b = random_vector(static_cast<size_t>(C), 8);
    for (bool with_bias : {true, false}) {
      std::vector<float> sum(static_cast<size_t>(N * C)), y(sum.size()), mean(static_cast<size_t>(N)), rstd(mean.size());
      residual_layernorm_forward(sum.data(), y.data(), mean.data(), rstd.data(), res.data(), delta.data(),
                                 with_bias ? db.data() : nullptr, w.data(), b.data(), N, C, 1e-5f);
      std::vector<float> sum_ref(sum.size()), y_ref(sum.size()), mean_ref(mean.size()), rstd_ref(mean.size());
      for (int64_t i = 0; i < N * C; ++i)
        sum_ref[static_cast<size_t>(i)] = res[static_cast<size_t>(i)] + delta[static_cast<size_t>(i)] + (with_bias ? db[static_cast<size_t>(i % C)] : 0.0f);
      layernorm_forward(y_ref.data(), mean_ref.data(), rstd_ref.data(), sum_ref.data(), w.data(), b.data(), N, C, 1e-5f);
      for (size_t i = 0; i < sum.size(); ++i) {
        ASSERT_NEAR(sum[i], sum_ref[i], 1e-6f * (1 + std::abs(sum_ref[i]))) << "C=" << C;
        ASSERT_NEAR(y[i], y_ref[i], 1e-5f * (1 + std::abs(y_ref[i]))) << "C=" << C;
      }
      std::vector<float> remade(sum.size());
      layernorm_apply(remade.data(), sum.data(), mean.data(), rstd.data(), w.data(), b.data(), N, C);
      EXPECT_EQ(remade, y) << "C=" << C;
    }
  }
}

// The backward against float64 sums, accumulating onto what dinp, dweight and dbias
// hold (as the model's residual stream does): rows split among 1-3 threads,
// including fewer rows than threads, and odd widths.
TEST(LayerNorm, BackwardMatchesFloat64OnAnyThreadCount) {
  const gpt::testing::ThreadCountGuard restore;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (const auto& shape : {std::array<int64_t, 2>{1, 17}, {2, 64}, {37, 129}}) {  // (plain variables: lambdas capture them)
      const auto N = std::get<0>(shape);
      const auto C = std::get<1>(shape);
      const auto x = random_vector(static_cast<size_t>(N * C), 21, 3.0f), dy = random_vector(static_cast<size_t>(N * C), 22);
      const auto w = random_vector(static_cast<size_t>(C), 23), b = random_vector(static_cast<size_t>(C), 24);
      std::vector<float> y(x.size()), mean(static_cast<size_t>(N)), rstd(mean.size());
      layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
      std::vector<float> dx(x.size(), 0.25f), dw(static_cast<size_t>(C), 0.5f), db(static_cast<size_t>(C), -0.5f);
      layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
      std::vector<double> dw_ref(static_cast<size_t>(C), 0.5), db_ref(static_cast<size_t>(C), -0.5);
      for (int64_t r = 0; r < N; ++r) {
        const auto at = [&](int64_t i) { return static_cast<size_t>(r * C + i); };
        double m = 0, v = 0;
        for (int64_t i = 0; i < C; ++i) m += x[at(i)];
        m /= static_cast<double>(C);
        for (int64_t i = 0; i < C; ++i) v += (x[at(i)] - m) * (x[at(i)] - m);
        const double s = 1.0 / std::sqrt(v / static_cast<double>(C) + 1e-5);
        double g_mean = 0, gn_mean = 0;
        for (int64_t i = 0; i < C; ++i) {
          const double n = (x[at(i)] - m) * s, g = static_cast<double>(w[static_cast<size_t>(i)]) * dy[at(i)];
          g_mean += g / static_cast<double>(C);
          gn_mean += g * n / static_cast<double>(C);
          dw_ref[static_cast<size_t>(i)] += n * dy[at(i)];
          db_ref[static_cast<size_t>(i)] += dy[at(i)];
        }
        for (int64_t i = 0; i < C; ++i) {
          const double n = (x[at(i)] - m) * s;
          const double want = 0.25 + (static_cast<double>(w[static_cast<size_t>(i)]) * dy[at(i)] - g_mean - n * gn_mean) * s;
          ASSERT_NEAR(dx[at(i)], want, 1e-4 * (1 + std::abs(want))) << "threads " << threads << " N " << N << " C " << C;
        }
      }
      for (int64_t i = 0; i < C; ++i) {
        ASSERT_NEAR(dw[static_cast<size_t>(i)], dw_ref[static_cast<size_t>(i)], 1e-4 * (1 + std::abs(dw_ref[static_cast<size_t>(i)])));
        ASSERT_NEAR(db[static_cast<size_t>(i)], db_ref[static_cast<size_t>(i)], 1e-4 * (1 + std::abs(db_ref[static_cast<size_t>(i)])));
      }
    }
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

// The chunked LM head + loss against logits computed whole, in float64: the loss,
// each row's log-sum-exp, dx and dW, for chunkings that do and don't divide N.
TEST(CrossEntropy, ChunkedLmHeadMatchesTheWholeLogits) {
  const int64_t N = 37, C = 24, V = 50;
  const auto x = random_vector(static_cast<size_t>(N * C), 4);
  const auto W = random_vector(static_cast<size_t>(V * C), 5, 0.3f);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) targets[static_cast<size_t>(r)] = static_cast<int32_t>((r * 7) % V);
  const float dloss = 0.25f;
  // Reference: logits, softmax, gradients.
  std::vector<double> ref_dx(static_cast<size_t>(N * C), 0), ref_dW(static_cast<size_t>(V * C), 0.1), lse(static_cast<size_t>(N));
  double ref_loss = 0;
  for (int64_t r = 0; r < N; ++r) {
    std::vector<double> z(static_cast<size_t>(V));
    double m = -1e300;
    for (int64_t v = 0; v < V; ++v) {
      double d = 0;
      for (int64_t c = 0; c < C; ++c) d += static_cast<double>(x[static_cast<size_t>(r * C + c)]) * W[static_cast<size_t>(v * C + c)];
      z[static_cast<size_t>(v)] = d;
      m = std::max(m, d);
    }
    double s = 0;
    for (double d : z) s += std::exp(d - m);
    lse[static_cast<size_t>(r)] = m + std::log(s);
    ref_loss += lse[static_cast<size_t>(r)] - z[static_cast<size_t>(targets[static_cast<size_t>(r)])];
    for (int64_t v = 0; v < V; ++v) {
      const double g = (std::exp(z[static_cast<size_t>(v)] - lse[static_cast<size_t>(r)]) - (v == targets[static_cast<size_t>(r)])) * dloss;
      for (int64_t c = 0; c < C; ++c) {
        ref_dx[static_cast<size_t>(r * C + c)] += g * W[static_cast<size_t>(v * C + c)];
        ref_dW[static_cast<size_t>(v * C + c)] += g * x[static_cast<size_t>(r * C + c)];
      }
    }
  }
  ref_loss /= N;
  for (int64_t rows : {int64_t(0), int64_t(1), int64_t(8), int64_t(37), int64_t(64)}) {
    std::vector<float> losses(static_cast<size_t>(N)), lse32(static_cast<size_t>(N));
    LmHeadScratch chunk;
    std::vector<float> dx(static_cast<size_t>(N * C), 99.0f), dW(static_cast<size_t>(V * C), 0.1f);
    const float loss = lm_head_cross_entropy(losses.data(), lse32.data(), x.data(), W.data(), targets.data(), N, C, V,
                                             chunk, dx.data(), dW.data(), dloss, rows);
    EXPECT_NEAR(loss, ref_loss, 1e-5 * ref_loss) << "rows " << rows;
    for (int64_t r = 0; r < N; ++r) EXPECT_NEAR(lse32[static_cast<size_t>(r)], lse[static_cast<size_t>(r)], 1e-5) << "rows " << rows;
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], ref_dx[i], 1e-5) << "rows " << rows;
    for (size_t i = 0; i < dW.size(); ++i) ASSERT_NEAR(dW[i], ref_dW[i], 1e-5) << "rows " << rows;
    // Loss only: the same loss, nothing else written.
    std::vector<float> losses2(static_cast<size_t>(N));
    EXPECT_EQ(lm_head_cross_entropy(losses2.data(), lse32.data(), x.data(), W.data(), targets.data(), N, C, V, chunk,
                                    nullptr, nullptr, 0.0f, rows),
              loss);
  }
  // bf16 products: several chunks convert the weight once (gemm_bf16_with_b16), one
  // chunk goes through gemm_bf16; both round the same inputs to bf16.
  ComputeContext bf16({MatmulPrecision::kBFloat16});
  std::optional<ComputeScope> scope(std::in_place, bf16);
  std::vector<float> dx_whole, dW_whole;
  float loss_whole = 0;
  for (int64_t rows : {N, int64_t(8)}) {
    std::vector<float> losses(static_cast<size_t>(N)), lse32(static_cast<size_t>(N));
    std::vector<float> dx(static_cast<size_t>(N * C)), dW(static_cast<size_t>(V * C), 0.1f);
    LmHeadScratch scratch;
    const float loss = lm_head_cross_entropy(losses.data(), lse32.data(), x.data(), W.data(), targets.data(), N, C, V,
                                             scratch, dx.data(), dW.data(), dloss, rows);
    EXPECT_NEAR(loss, ref_loss, 5e-3 * ref_loss);  // bf16 inputs: 2^-9 relative each
    if (rows == N) {
      dx_whole = dx, dW_whole = dW, loss_whole = loss;
      continue;
    }
    EXPECT_NEAR(loss, loss_whole, 1e-5 * loss_whole);
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], dx_whole[i], 1e-4);
    for (size_t i = 0; i < dW.size(); ++i) ASSERT_NEAR(dW[i], dW_whole[i], 1e-4);
  }
  scope.reset();
  EXPECT_EQ(lm_head_chunk_rows(1024, 50257), 256);  // GPT-2, 4x256 tokens: 4 chunks of ~51 MB
  EXPECT_EQ(lm_head_chunk_rows(1024, 65), 1024);    // a small vocabulary: one chunk
  EXPECT_EQ(lm_head_chunk_rows(1000, 50257), 250);  // spread evenly
}

TEST(Matmul, MatchesNaiveProductForOddShapes) {
  for (const auto& shape : {std::array<int64_t, 3>{1, 1, 1}, {3, 17, 5}, {33, 65, 129}}) {  // (plain variables: lambdas capture them)
    const auto N = std::get<0>(shape);
    const auto C = std::get<1>(shape);
    const auto OC = std::get<2>(shape);
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

// Bias gradients: identical from run to run, right on 1-3 threads, including
// fewer rows than threads (a thread with no rows still adds its zero partials).
TEST(Matmul, ColumnSumsAreIdenticalAcrossRuns) {
  const gpt::testing::ThreadCountGuard restore;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (int64_t N : {1, 2, 257}) {
      const int64_t OC = 131;
      auto x = random_vector(N * OC, 8);
      std::vector<float> s1(OC, 1.0f), s2(OC, 1.0f);
      add_column_sums(s1.data(), x.data(), N, OC);
      add_column_sums(s2.data(), x.data(), N, OC);
      EXPECT_EQ(s1, s2);
      for (int64_t j = 0; j < OC; ++j) {
        double s = 1.0;
        for (int64_t r = 0; r < N; ++r) s += x[r * OC + j];
        ASSERT_NEAR(s1[j], s, 1e-3) << "threads " << threads << " N " << N;
      }
    }
  }
}

// The one-row products of decoding against float64 sums: odd widths (a tail after
// the 8-row passes, fewer rows than threads), with and without bias, the output
// aliasing the residual as in the model, on 1, 2 and 3 threads.
TEST(Matmul, SingleRowProductsMatchNaiveSums) {
  const gpt::testing::ThreadCountGuard restore;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (const auto& shape : {std::array<int64_t, 2>{1, 1}, {2, 7}, {17, 5}, {65, 129}, {768, 300}}) {  // (plain variables: lambdas capture them)
      const auto C = std::get<0>(shape);
      const auto OC = std::get<1>(shape);
      auto x = random_vector(C, 11), w = random_vector(C * OC, 12), b = random_vector(OC, 13);
      const auto residual = random_vector(OC, 14);
      for (const bool with_bias : {false, true}) {
        std::vector<float> y(residual);  // y aliases the residual
        gemv_in_out(y.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, C, OC, y.data());
        std::vector<float> plain(OC);
        gemv_in_out(plain.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, C, OC);
        for (int64_t j = 0; j < OC; ++j) {
          double s = with_bias ? b[j] : 0.0, bound = 1e-5;
          for (int64_t k = 0; k < C; ++k) {
            s += static_cast<double>(x[k]) * w[k * OC + j];
            bound += 1e-6 * std::abs(x[k] * w[k * OC + j]);
          }
          ASSERT_NEAR(plain[j], s, bound) << C << "x" << OC << " threads " << threads;
          ASSERT_NEAR(y[j], s + residual[j], bound + 1e-6 * std::abs(residual[j])) << C << "x" << OC;
        }
      }
      // W as (OC, C) rows: one dot product each.
      std::vector<float> dots(OC);
      gemv_out_in(dots.data(), x.data(), w.data(), C, OC);
      for (int64_t r = 0; r < OC; ++r) {
        double s = 0, bound = 1e-5;
        for (int64_t k = 0; k < C; ++k) {
          s += static_cast<double>(w[r * C + k]) * x[k];
          bound += 1e-6 * std::abs(w[r * C + k] * x[k]);
        }
        ASSERT_NEAR(dots[r], s, bound) << C << "x" << OC << " rows, threads " << threads;
      }
    }
  }
}

}  // namespace
}  // namespace gpt
