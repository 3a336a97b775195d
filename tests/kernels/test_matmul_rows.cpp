// The few-rows products (kernels/matmul_rows.cpp): right against a double
// reference for every tile shape and edge (rows not a multiple of 8, columns
// not of 48 or 16, widths not of 16), and each row's result bit for bit the
// same whatever rows run beside it and however many threads run.
#include <gtest/gtest.h>
#include <omp.h>

#include <vector>

#include "gpt/kernels/matmul.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.next_u64() % 2001) / 1000.0f - 1.0f;
  return v;
}

#define SKIP_WITHOUT_FEW_ROWS_KERNELS()                                                             \
  if (!few_rows_kernels()) GTEST_SKIP() << "skipped: this CPU has no AVX-512 or NEON (or GPT_PORTABLE_KERNELS=1), " \
                                           "so the few-rows kernels never run here"

TEST(FewRowsMatmul, PanelsHoldTheMatrixColumnBlocksRowMajor) {
  const int64_t in = 5, out = 100;  // panels of 48, 48 and 4 columns
  const auto W = random_vector(in * out, 1);
  std::vector<float> P(W.size());
  pack_panels(W.data(), in, out, P.data());
  for (int64_t k = 0; k < in; ++k) {
    for (int64_t j = 0; j < out; ++j) {
      const int64_t j0 = j - j % kPanelColumns, width = std::min(kPanelColumns, out - j0);
      ASSERT_EQ(P[static_cast<size_t>(j0 * in + k * width + (j - j0))], W[static_cast<size_t>(k * out + j)])
          << "k " << k << ", j " << j;
    }
  }
}

TEST(FewRowsMatmul, PanelProductsMatchADoubleReference) {
  SKIP_WITHOUT_FEW_ROWS_KERNELS();
  for (int64_t in : {1, 17, 64, 96}) {
    for (int64_t out : {1, 15, 16, 24, 47, 48, 49, 58, 100, 160}) {  // 24, 58: a last tile of 8-11 columns
      for (int64_t M : {1, 3, 8, 9, 17}) {
        const auto W = random_vector(in * out, 10 + in + out), bias = random_vector(out, 3 + out),
                   x = random_vector(M * in, 5 + M), res = random_vector(M * out, 7 + M);
        std::vector<float> P(W.size());
        pack_panels(W.data(), in, out, P.data());
        for (int variant = 0; variant < 3; ++variant) {  // plain; bias; bias + residual in place
          std::vector<float> y = variant == 2 ? res : std::vector<float>(static_cast<size_t>(M * out), 5.0f);
          gemm_rows_panels(y.data(), x.data(), M, P.data(), variant > 0 ? bias.data() : nullptr, in, out,
                           variant == 2 ? y.data() : nullptr);
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t j = 0; j < out; ++j) {
              double want = variant > 0 ? bias[static_cast<size_t>(j)] : 0.0;
              if (variant == 2) want += res[static_cast<size_t>(m * out + j)];
              for (int64_t k = 0; k < in; ++k) {
                want += static_cast<double>(x[static_cast<size_t>(m * in + k)]) * W[static_cast<size_t>(k * out + j)];
              }
              ASSERT_NEAR(y[static_cast<size_t>(m * out + j)], want, 1e-5 * (1.0 + static_cast<double>(in)))
                  << "in " << in << ", out " << out << ", rows " << M << ", variant " << variant;
            }
          }
        }
      }
    }
  }
}

TEST(FewRowsMatmul, OutMajorProductsMatchADoubleReference) {
  SKIP_WITHOUT_FEW_ROWS_KERNELS();
  for (int64_t in : {1, 15, 16, 37, 96}) {
    for (int64_t out : {1, 2, 3, 4, 50}) {
      for (int64_t M : {1, 7, 8, 13}) {
        const auto W = random_vector(in * out, 20 + in + out), x = random_vector(M * in, 9 + M);
        std::vector<float> y(static_cast<size_t>(M * out), 5.0f);
        gemm_rows_out_in(y.data(), x.data(), M, W.data(), in, out);
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t r = 0; r < out; ++r) {
            double want = 0;
            for (int64_t k = 0; k < in; ++k) {
              want += static_cast<double>(x[static_cast<size_t>(m * in + k)]) * W[static_cast<size_t>(r * in + k)];
            }
            ASSERT_NEAR(y[static_cast<size_t>(m * out + r)], want, 1e-5 * (1.0 + static_cast<double>(in)))
                << "in " << in << ", out " << out << ", rows " << M;
          }
        }
      }
    }
  }
}

TEST(FewRowsMatmul, ARowsResultIsTheSameBitForBitWhateverRunsBesideIt) {
  // What batch invariance stands on: row r of a 1..32-row product, on 1..3
  // threads, equals the same row multiplied alone on one thread.
  SKIP_WITHOUT_FEW_ROWS_KERNELS();
  const testing::ThreadCountGuard guard;
  const int64_t in = 200, out = 150;
  const auto W = random_vector(in * out, 31), bias = random_vector(out, 32), x = random_vector(32 * in, 33);
  std::vector<float> P(W.size());
  pack_panels(W.data(), in, out, P.data());
  omp_set_num_threads(1);
  std::vector<float> alone_panels(static_cast<size_t>(32 * out)), head_alone(static_cast<size_t>(32 * out));
  for (int64_t r = 0; r < 32; ++r) {
    gemm_rows_panels(alone_panels.data() + r * out, x.data() + r * in, 1, P.data(), bias.data(), in, out);
  }
  // The same floats read as an (out, in) matrix: 150 rows of 200.
  for (int64_t r = 0; r < 32; ++r) gemm_rows_out_in(head_alone.data() + r * out, x.data() + r * in, 1, W.data(), in, out);
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (int64_t M : {2, 8, 11, 32}) {
      std::vector<float> y(static_cast<size_t>(M * out)), h(static_cast<size_t>(M * out));
      gemm_rows_panels(y.data(), x.data(), M, P.data(), bias.data(), in, out);
      gemm_rows_out_in(h.data(), x.data(), M, W.data(), in, out);
      for (int64_t i = 0; i < M * out; ++i) {
        ASSERT_EQ(y[static_cast<size_t>(i)], alone_panels[static_cast<size_t>(i)]) << M << " rows, " << threads << " threads";
        ASSERT_EQ(h[static_cast<size_t>(i)], head_alone[static_cast<size_t>(i)]) << M << " rows, " << threads << " threads";
      }
    }
  }
}

}  // namespace
}  // namespace gpt
