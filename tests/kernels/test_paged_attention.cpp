// Attention over a paged KV cache (kernels/paged_attention.h) against a float64
// reference: pages out of order in a shared pool, head widths the vector kernels
// take (multiples of 16 up to 128) and ones they leave to the portable loop,
// float and float16 caches, grouped-query heads, 1-3 threads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "gpt/kernels/paged_attention.h"
#include "gpt/util/half.h"
#include "test_support.h"

namespace gpt {
namespace {

struct Pool {
  std::vector<float> k, v;          // what the reference reads (float16 values already rounded)
  std::vector<uint16_t> k16, v16;   // the float16 cache
  int64_t page_stride;
};

TEST(PagedAttention, EveryHeadWidthAndCacheTypeMatchesTheReference) {
  const testing::ThreadCountGuard restore;  // also when an ASSERT returns early
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n_pages = 12;
  for (int64_t hs : {16, 24, 48, 64, 80, 128, 144}) {
    for (int64_t page_size : {16, 7}) {
      for (int64_t group : {1, 2}) {
        const int64_t NH = 4, NKV = NH / group, C = NH * hs;
        Pool pool;
        pool.page_stride = NKV * page_size * hs;
        const size_t elements = static_cast<size_t>(n_pages * pool.page_stride);
        pool.k.resize(elements);
        pool.v.resize(elements);
        pool.k16.resize(elements);
        pool.v16.resize(elements);
        for (size_t i = 0; i < elements; ++i) {
          pool.k16[i] = float_to_half(normal(rng));
          pool.v16[i] = float_to_half(normal(rng));
          pool.k[i] = half_to_float(pool.k16[i]);  // both caches hold the same values
          pool.v[i] = half_to_float(pool.v16[i]);
        }
        // Three sequences, their pages scattered through the pool.
        std::vector<int32_t> order(static_cast<size_t>(n_pages));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        const int64_t positions[] = {0, page_size - 1, 2 * page_size + page_size / 2};
        const int32_t* pages[] = {order.data(), order.data() + 1, order.data() + 2};
        std::vector<float> q(static_cast<size_t>(3 * C));
        for (auto& x : q) x = normal(rng);

        // float64 reference: query head h reads cached head h / group.
        std::vector<double> ref(static_cast<size_t>(3 * C));
        for (int s = 0; s < 3; ++s)
          for (int64_t h = 0; h < NH; ++h) {
            const int64_t n = positions[s] + 1;
            std::vector<double> score(static_cast<size_t>(n));
            double mx = -1e300;
            auto at = [&](int64_t t) {
              return pages[s][t / page_size] * pool.page_stride + h / group * page_size * hs + t % page_size * hs;
            };
            for (int64_t t = 0; t < n; ++t) {
              double d = 0;
              for (int64_t i = 0; i < hs; ++i) d += static_cast<double>(q[static_cast<size_t>(s * C + h * hs + i)]) * pool.k[static_cast<size_t>(at(t) + i)];
              score[static_cast<size_t>(t)] = d / std::sqrt(static_cast<double>(hs));
              mx = std::max(mx, score[static_cast<size_t>(t)]);
            }
            double sum = 0;
            for (auto& x : score) sum += (x = std::exp(x - mx));
            for (int64_t i = 0; i < hs; ++i) {
              double o = 0;
              for (int64_t t = 0; t < n; ++t) o += score[static_cast<size_t>(t)] * pool.v[static_cast<size_t>(at(t) + i)];
              ref[static_cast<size_t>(s * C + h * hs + i)] = o / sum;
            }
          }

        for (bool float16 : {false, true}) {
          for (int threads : {1, 2, 3}) {
            omp_set_num_threads(threads);
            std::vector<float> out(static_cast<size_t>(3 * C), -7.0f);
            PagedQuery queries[3];
            for (int s = 0; s < 3; ++s) queries[s] = PagedQuery{q.data() + s * C, out.data() + s * C, positions[s], pages[s]};
            const PagedKv kv{float16 ? static_cast<const void*>(pool.k16.data()) : pool.k.data(),
                             float16 ? static_cast<const void*>(pool.v16.data()) : pool.v.data(),
                             pool.page_stride, page_size, float16, group};
            paged_attention(queries, 3, kv, C, NH);
            for (size_t i = 0; i < out.size(); ++i)
              ASSERT_NEAR(out[i], ref[i], 2e-6 * (1 + std::fabs(ref[i])))
                  << "hs " << hs << " page " << page_size << " group " << group << " float16 " << float16
                  << " threads " << threads << " at " << i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace gpt
