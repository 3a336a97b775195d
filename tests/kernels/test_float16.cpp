// Float16 rows (F16C or portable, whichever this build runs: test_portable runs
// the portable loops) against the bit-exact scalar conversions; the KV-cache
// attention (AVX-512 kernels for head widths that are multiples of 16, portable
// loops otherwise and in test_portable) against the straightforward reference,
// with an fp32 cache and a float16 one holding the same values.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/float16.h"
#include "gpt/util/half.h"
#include "kernels/attention_reference.h"
#include "test_support.h"

namespace gpt {
namespace {

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

TEST(Float16, EveryHalfWidensExactly) {
  std::printf("[ info ] float16 rows via %s\n", float16_uses_f16c() ? "F16C" : "portable loops");
  std::vector<uint16_t> all(65536 + 5);  // a length with a tail after the 8-wide loop
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> out(all.size());
  halves_to_floats(all.data(), out.data(), static_cast<int64_t>(all.size()));
  for (size_t i = 0; i < all.size(); ++i) {
    const float want = half_to_float(all[i]);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(out[i])) << "half 0x" << std::hex << all[i];
    } else {
      ASSERT_EQ(bits_of(out[i]), bits_of(want)) << "half 0x" << std::hex << all[i];
    }
  }
}

TEST(Float16, NarrowingRoundsToNearestEven) {
  std::vector<float> x;
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 100000; ++i) {  // random bit patterns: every exponent, subnormals, overflow, NaN
    const uint32_t b = any(rng);
    float f;
    std::memcpy(&f, &b, 4);
    x.push_back(f);
  }
  for (uint32_t h = 0; h < 0x7C00; h += 7) {  // exact ties between neighbouring halves, and the halves themselves
    const float lo = half_to_float(static_cast<uint16_t>(h)), hi = half_to_float(static_cast<uint16_t>(h + 1));
    x.push_back(lo);
    x.push_back(-(lo + (hi - lo) / 2));
  }
  x.push_back(65520.0f);  // the first value that rounds to infinity
  x.push_back(65519.0f);
  x.push_back(std::numeric_limits<float>::infinity());
  x.push_back(std::numeric_limits<float>::denorm_min());
  std::vector<uint16_t> out(x.size());
  floats_to_halves(x.data(), out.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      ASSERT_TRUE(std::isnan(half_to_float(out[i])));
    } else {
      ASSERT_EQ(out[i], float_to_half(x[i])) << "float " << x[i] << " (0x" << std::hex << bits_of(x[i]) << ")";
    }
  }
}

// Cached attention against the reference, one query at a time; the float16 cache
// holds exactly the fp32 cache's values, so both kernels must agree with it.
void check_cached_attention(int64_t NH, int64_t hs, int64_t p0, int64_t n, int64_t capacity = 128,
                            int scratch_threads = 3) {
  const int64_t C = NH * hs;
  ASSERT_LE(p0 + n, capacity);
  std::mt19937 rng(static_cast<unsigned>(hs * 31 + n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(n * 3 * C)), k(static_cast<size_t>(NH * capacity * hs)), v(k.size());
  for (auto& x : q) x = normal(rng);
  for (auto& x : k) x = half_to_float(float_to_half(normal(rng) * 2.0f));
  for (auto& x : v) x = half_to_float(float_to_half(normal(rng)));
  std::vector<uint16_t> k16(k.size()), v16(v.size());
  floats_to_halves(k.data(), k16.data(), static_cast<int64_t>(k.size()));
  floats_to_halves(v.data(), v16.data(), static_cast<int64_t>(v.size()));
  const int threads = scratch_threads;  // scratch for more threads than run is fine; fewer caps the team
  std::vector<float> scratch32(static_cast<size_t>(threads * attention_cached_scratch_floats(capacity, hs, false)));
  std::vector<float> scratch16(static_cast<size_t>(threads * attention_cached_scratch_floats(capacity, hs, true)));
  std::vector<float> want(static_cast<size_t>(n * C)), got(want.size());
  attention_forward_cached(want.data(), q.data(), 3 * C, k.data(), v.data(), capacity, p0, n, C, NH, scratch32.data(),
                           threads);
  attention_forward_cached_f16(got.data(), q.data(), 3 * C, k16.data(), v16.data(), capacity, p0, n, C, NH,
                               scratch16.data(), threads);
  std::vector<float> ref(want.size()), row(static_cast<size_t>(capacity));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int64_t h = 0; h < NH; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      testing::reference_attend_one_query(ref.data() + i * C + h * hs, row.data(), q.data() + i * 3 * C + h * hs,
                                          k.data() + h * capacity * hs, v.data() + h * capacity * hs, hs, p0 + i + 1,
                                          hs, scale);
    }
  }
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(want[i], ref[i], 2e-5f * (1 + std::fabs(ref[i]))) << "fp32 cache, hs " << hs << " p0 " << p0 << " n " << n << " at " << i;
    ASSERT_NEAR(got[i], ref[i], 2e-5f * (1 + std::fabs(ref[i]))) << "f16 cache, hs " << hs << " p0 " << p0 << " n " << n << " at " << i;
  }
}

// Decoding's per-query kernels and a prompt's blocked GEMMs (sizes on both sides
// of where one takes over from the other), on 1-3 threads.
TEST(CachedAttention, Fp32AndFloat16CachesMatchTheReference) {
  const testing::ThreadCountGuard restore;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (const int64_t hs : {16, 20, 32, 48, 64, 96, 128, 144}) {
      check_cached_attention(3, hs, 37, 1);    // decode: one query after 37 cached positions
      check_cached_attention(3, hs, 0, 1);     // the very first token
      check_cached_attention(2, hs, 40, 15);   // a few tokens on top of a cache
      check_cached_attention(2, hs, 3, 16);
      check_cached_attention(2, hs, 5, 70);    // a prompt: two blocks of queries, the second partial
      check_cached_attention(1, hs, 0, 128);   // the whole context at once: two full blocks
      check_cached_attention(2, hs, 63, 65);   // a second chunk ending at the last position
      check_cached_attention(1, hs, 900, 2, 1024);  // two tokens over a long cache: blocked too
      check_cached_attention(1, hs, 900, 1, 1024);  // decoding over 57 blocks of 16 keys
      check_cached_attention(3, hs, 37, 1, 128, 1);   // scratch for one thread: the team shrinks to it
      check_cached_attention(2, hs, 5, 70, 128, 1);
    }
  }
}

}  // namespace
}  // namespace gpt
