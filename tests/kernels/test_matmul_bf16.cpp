// bf16 GEMM: oneDNN's bf16 kernels and the portable fallback against float32
// products of the same bf16-rounded inputs, for every transpose and odd sizes.
#include <cmath>
#include <random>

#include <gtest/gtest.h>
#include <tuple>

#include "gpt/kernels/matmul.h"
#include "gpt/kernels/matmul_bf16.h"
#include "gpt/util/error.h"
#include "gpt/util/half.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(RoundToBf16, MatchesTheScalarConversion) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(1001), y(1001);
  for (auto& v : x) v = normal(rng);
  round_to_bf16(x.data(), y.data(), 1001);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], bf16_to_float(float_to_bf16(x[i]))) << i;
}

void check_all_shapes();

TEST(GemmBf16, BothKernelsComputeTheRoundedProducts) { check_all_shapes(); }

// Big products are cut into halves along M, N or K (K halves accumulate): a tiny
// budget makes every shape split several times, down to single rows or columns.
TEST(GemmBf16, SplitProductsComputeTheSame) {
  set_bf16_gemm_split_budget(300);
  check_all_shapes();
  set_bf16_gemm_split_budget(int64_t(1) << 22);
}

// Which kernels auto picks depends on a timing; each mode is checked on its own.
TEST(GemmBf16, ModesChooseTheKernels) {
  EXPECT_EQ(parse_bf16_gemm_mode("auto"), Bf16GemmMode::kAuto);
  EXPECT_EQ(parse_bf16_gemm_mode("native"), Bf16GemmMode::kNative);
  EXPECT_EQ(parse_bf16_gemm_mode("emulated"), Bf16GemmMode::kEmulated);
  try {
    parse_bf16_gemm_mode("amx");
    ADD_FAILURE() << "an unknown mode was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "GPT_BF16_GEMM must be auto, native or emulated, not 'amx'");
  }
  set_bf16_gemm_mode(Bf16GemmMode::kEmulated);
  EXPECT_FALSE(bf16_gemm_native());
  set_bf16_gemm_mode(Bf16GemmMode::kNative);
  EXPECT_EQ(bf16_gemm_native(), bf16_gemm_native_available());
  set_bf16_gemm_mode(Bf16GemmMode::kAuto);
  const bool chosen = bf16_gemm_native();
  EXPECT_EQ(bf16_gemm_native(), chosen);  // measured once, then kept
  EXPECT_TRUE(!chosen || bf16_gemm_native_available());
  force_portable_bf16_gemm(true);
  EXPECT_FALSE(bf16_gemm_native());
  EXPECT_FALSE(bf16_gemm_native_available());
  force_portable_bf16_gemm(false);
  std::printf("[ measured ] auto chose %s bf16 products\n", chosen ? "oneDNN's native" : "the emulated (float32 GEMM)");
}

void check_all_shapes() {
  // oneDNN's kernels wherever they exist, whatever auto would pick.
  const testing::Bf16GemmModeGuard native(Bf16GemmMode::kNative);
  std::printf("[ info ] oneDNN bf16 matmul %s\n", bf16_gemm_native() ? "available" : "NOT available: fallback only");
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& shape : {std::tuple<int64_t, int64_t, int64_t>{7, 13, 37}, {64, 96, 128}, {1, 50, 33}}) {  // (plain variables: lambdas capture them)
    const auto M = std::get<0>(shape);
    const auto N = std::get<1>(shape);
    const auto K = std::get<2>(shape);
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      for (float beta : {0.0f, 1.0f}) {
        const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        std::vector<float> A(static_cast<size_t>((ta ? K : M) * lda)), B(static_cast<size_t>((tb ? N : K) * ldb)),
            C0(static_cast<size_t>(M * ldc));
        for (auto& v : A) v = normal(rng);
        for (auto& v : B) v = normal(rng);
        for (auto& v : C0) v = normal(rng);
        // Reference: float64 products of the rounded inputs.
        std::vector<float> Ar(A.size()), Br(B.size());
        round_to_bf16(A.data(), Ar.data(), static_cast<int64_t>(A.size()));
        round_to_bf16(B.data(), Br.data(), static_cast<int64_t>(B.size()));
        // B already in bf16, in B's layout (gemm_bf16_with_b16): oneDNN only.
        std::vector<uint16_t> B16(B.size());
        to_bf16_matrix(B.data(), (tb ? N : K), ldb, ldb, B16.data());
        for (int variant = 0; variant < 3; ++variant) {
          const bool portable = variant == 1, prepacked = variant == 2;
          if (prepacked && !bf16_gemm_native()) continue;
          force_portable_bf16_gemm(portable);
          std::vector<float> C = C0;
          if (prepacked) {
            gemm_bf16_with_b16(ta, tb, M, N, K, 1.0f, A.data(), lda, B16.data(), ldb, beta, C.data(), ldc);
          } else {
            gemm_bf16(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          }
          force_portable_bf16_gemm(false);
          for (int64_t i = 0; i < M; ++i) {
            for (int64_t j = 0; j < N; ++j) {
              double ref = beta * C0[static_cast<size_t>(i * ldc + j)], mag = 0;
              for (int64_t k = 0; k < K; ++k) {
                const double a = Ar[static_cast<size_t>(ta ? k * lda + i : i * lda + k)];
                const double b = Br[static_cast<size_t>(tb ? j * ldb + k : k * ldb + j)];
                ref += a * b;
                mag += std::fabs(a * b);
              }
              ASSERT_NEAR(C[static_cast<size_t>(i * ldc + j)], ref, 1e-5 * (mag + 1))
                  << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb << " beta " << beta
                  << (portable ? " portable" : prepacked ? " oneDNN, bf16 B" : " oneDNN");
            }
          }
        }
      }
    }
  }
}

TEST(GemmBf16, PrecisionSwitchRoutesGemm) {
  const float a[2] = {1.0f + 1.0f / 512, 1.0f}, b[2] = {1.0f, 1.0f};  // 1 + 2^-9 rounds to 1 in bf16
  float c = 0;
  gemm(false, false, 1, 1, 2, 1.0f, a, 2, b, 1, 0.0f, &c, 1);
  EXPECT_EQ(c, 2.0f + 1.0f / 512);
  {
    ComputeContext bf16({MatmulPrecision::kBFloat16});
    const ComputeScope scope(bf16);
    gemm(false, false, 1, 1, 2, 1.0f, a, 2, b, 1, 0.0f, &c, 1);
  }
  EXPECT_EQ(c, 2.0f);
  gemm(false, false, 1, 1, 2, 1.0f, a, 2, b, 1, 0.0f, &c, 1);  // the scope has ended: float32 again
  EXPECT_EQ(c, 2.0f + 1.0f / 512);
  EXPECT_EQ(parse_matmul_precision("bf16"), MatmulPrecision::kBFloat16);
  EXPECT_THROW(parse_matmul_precision("fp8"), Error);
}

}  // namespace
}  // namespace gpt
