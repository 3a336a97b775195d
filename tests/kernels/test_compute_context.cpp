// ComputeContext: precision, threads and bf16 primitives belong to whoever runs a
// model, not to the process.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gpt/kernels/bf16_primitives.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/kernels/matmul.h"
#include "gpt/util/error.h"
#include "test_support.h"

namespace gpt {
namespace {

// 1 + 2^-9 rounds to 1 in bf16: a product tells which precision ran it.
float probe_product() {
  const float a[2] = {1.0f + 1.0f / 512, 1.0f}, b[2] = {1.0f, 1.0f};
  float c = 0;
  gemm(false, false, 1, 1, 2, 1.0f, a, 2, b, 1, 0.0f, &c, 1);
  return c;
}
constexpr float kExact = 2.0f + 1.0f / 512, kRounded = 2.0f;

TEST(ComputeContext, AScopeSetsThreadsAndPrecisionAndRestoresThem) {
  const testing::ThreadCountGuard guard;
  omp_set_num_threads(3);
  {
    ComputeContext bf16({MatmulPrecision::kBFloat16, 1});
    const ComputeScope scope(bf16);
    EXPECT_EQ(omp_get_max_threads(), 1);
    EXPECT_EQ(&current_compute_context(), &bf16);
    EXPECT_EQ(probe_product(), kRounded);
    {
      ComputeContext fp32;  // nested: the caller's threads, float32
      const ComputeScope inner(fp32);
      EXPECT_EQ(omp_get_max_threads(), 1);
      EXPECT_EQ(probe_product(), kExact);
    }
    EXPECT_EQ(probe_product(), kRounded);
  }
  EXPECT_EQ(omp_get_max_threads(), 3);
  EXPECT_EQ(probe_product(), kExact);
  EXPECT_THROW(ComputeContext({MatmulPrecision::kFloat32, -1}), Error);
}

TEST(ComputeContext, TwoThreadsWithTheirOwnContextsDoNotInterfere) {
  // A server's sessions: one thread in bf16, one in float32, products of many
  // shapes at once. Each sees only its own precision; with a process-wide
  // switch one would run the other's.
  std::atomic<int> wrong{0};
  auto worker = [&](MatmulPrecision precision, float expected, int seed) {
    ComputeContext context({precision, 1});
    const ComputeScope scope(context);
    for (int i = 0; i < 200; ++i) {
      const int64_t M = 1 + (i * 7 + seed) % 40, K = 32;
      std::vector<float> a(static_cast<size_t>(M * K), 0.0f), b(static_cast<size_t>(K), 0.0f),
          c(static_cast<size_t>(M), -1.0f);
      for (int64_t r = 0; r < M; ++r) a[static_cast<size_t>(r * K)] = 1.0f + 1.0f / 512, a[static_cast<size_t>(r * K + 1)] = 1.0f;
      b[0] = b[1] = 1.0f;
      gemm(false, false, M, 1, K, 1.0f, a.data(), K, b.data(), 1, 0.0f, c.data(), 1);
      for (float v : c) wrong += v != expected;
    }
  };
  std::thread t1(worker, MatmulPrecision::kBFloat16, kRounded, 0), t2(worker, MatmulPrecision::kFloat32, kExact, 3);
  t1.join();
  t2.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(ComputeContext, ASharedContextIsSafeFromTwoThreads) {
  ComputeContext shared({MatmulPrecision::kBFloat16, 1});
  std::atomic<int> wrong{0};
  auto worker = [&](int seed) {
    const ComputeScope scope(shared);
    for (int i = 0; i < 100; ++i) {
      const int64_t M = 8 + (i + seed) % 24, N = 16, K = 48;
      std::vector<float> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(K * N)), c(static_cast<size_t>(M * N));
      for (size_t j = 0; j < a.size(); ++j) a[j] = static_cast<float>((j * 7 + static_cast<size_t>(seed)) % 5) - 2.0f;
      for (size_t j = 0; j < b.size(); ++j) b[j] = static_cast<float>(j % 3) - 1.0f;
      gemm(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t n = 0; n < N; ++n) {  // small integers: exact in bf16 and float32
          float ref = 0;
          for (int64_t k = 0; k < K; ++k) ref += a[static_cast<size_t>(r * K + k)] * b[static_cast<size_t>(k * N + n)];
          wrong += c[static_cast<size_t>(r * N + n)] != ref;
        }
    }
  };
  std::thread t1(worker, 0), t2(worker, 5);
  t1.join();
  t2.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(ComputeContext, Bf16PrimitiveCacheIsBounded) {
  // Every prompt length is a new shape; the cache keeps the most recent ones only.
  ComputeContext context({MatmulPrecision::kBFloat16});
  const ComputeScope scope(context);
  std::vector<float> a(200 * 16, 0.5f), b(16 * 8, 0.25f), c(200 * 8);
  for (int64_t M = 1; M <= 100; ++M) gemm(false, false, M, 8, 16, 1.0f, a.data(), 16, b.data(), 8, 0.0f, c.data(), 8);
  EXPECT_EQ(c[0], 16 * 0.5f * 0.25f);
  EXPECT_LE(context.bf16_cached_primitives(), Bf16Primitives::kMaxCached);
  if (bf16_gemm_native()) {
    EXPECT_GT(context.bf16_cached_primitives(), 0u);
  }
}

}  // namespace
}  // namespace gpt
