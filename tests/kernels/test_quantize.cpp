// Weight types: float16/bfloat16 conversion, llama.cpp's Q8_0/Q4_0 block formats,
// and the products over them (the VNNI kernels and the portable loop, each against
// the straightforward float computation).
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include <gtest/gtest.h>
#include <omp.h>

#include "gpt/kernels/quantize.h"
#include "gpt/util/error.h"
#include "gpt/util/half.h"
#include "kernels/kernel_levels.h"
#include "test_support.h"

namespace gpt {
namespace {

// The conversions the hardware makes, to compare the portable ones with.
#if defined(__x86_64__)
// CPUID leaf 1, ECX bit 29 (clang cannot ask __builtin_cpu_supports for F16C).
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}

__attribute__((target("f16c"))) uint16_t hardware_half(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hardware_float(uint16_t h) { return _cvtsh_ss(h); }
#elif defined(__aarch64__)
// Every ARMv8 CPU converts between float and IEEE half (FCVT), rounding to nearest even.
bool cpu_has_f16c() { return true; }
uint16_t hardware_half(float f) {
  const __fp16 h = static_cast<__fp16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
float hardware_float(uint16_t bits) {
  __fp16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}
#else
bool cpu_has_f16c() { return false; }
uint16_t hardware_half(float) { return 0; }
float hardware_float(uint16_t) { return 0; }
#endif

TEST(Half, EveryHalfConvertsExactlyAndBack) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), h) << h;
    if (cpu_has_f16c()) {
      const float hw = hardware_float(static_cast<uint16_t>(h));
      ASSERT_EQ(std::memcmp(&f, &hw, 4), 0) << h;
    }
  }
}

TEST(Half, RoundsLikeTheHardware) {
  if (!cpu_has_f16c()) GTEST_SKIP() << "this CPU has no F16C to compare with";
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), hardware_half(f)) << std::hexfloat << f;
  }
  // Ties to even, around the subnormal boundary, and overflow.
  for (float f : {65504.0f, 65519.0f, 65520.0f, 6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f, 1.0009766f, -0.0f}) {
    EXPECT_EQ(float_to_half(f), hardware_half(f)) << f;
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to the even one (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3F82);  // 1 + 3*2^-8: halfway, rounds up to even
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

// llama.cpp's bit layout, worked by hand: x_j = j - 16.
TEST(Quantize, Q4_0MatchesLlamaCppLayout) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ4_0 b;
  quantize_row(GgmlType::kQ4_0, x, &b, 32);
  EXPECT_EQ(b.d, float_to_half(2.0f));  // largest magnitude -16 -> d = -16 / -8
  // q = min(15, int(x / 2 + 8.5)): x0 = -16 -> 0 (low nibble), x16 = 0 -> 8 (high nibble).
  EXPECT_EQ(b.qs[0], 0x80);
  // x15 = -1 -> int(-0.5 + 8.5) = 8 (low); x31 = 15 -> int(16.0) = 16, clamped to 15 (high).
  EXPECT_EQ(b.qs[15], (15 << 4) | 8);
}

TEST(Quantize, Q8_0MatchesLlamaCppLayout) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j) * 0.25f - 2.0f;  // amax = 5.75
  BlockQ8_0 b;
  quantize_row(GgmlType::kQ8_0, x, &b, 32);
  EXPECT_EQ(b.d, float_to_half(5.75f / 127.0f));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], static_cast<int8_t>(std::lround(x[j] * 127.0f / 5.75f))) << j;
  EXPECT_EQ(b.qs[31], 127);
}

// Each weight comes back within the format's rounding: half a step for Q8_0, one
// step for Q4_0 (its range is asymmetric: -8..7 steps), plus the float16 scale's.
TEST(Quantize, RoundTripErrorIsWithinOneStep) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 32 * 64;
  std::vector<float> x(n), back(n);
  for (auto& v : x) v = normal(rng) * (1.0f + 5.0f * static_cast<float>(&v - x.data()) / n);
  x[100] = 0.0f;
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    std::vector<uint8_t> q(ggml_row_bytes(t, n));
    quantize_row(t, x.data(), q.data(), n);
    dequantize_row(t, q.data(), back.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      const float step = t == GgmlType::kQ8_0 ? amax / 127 : amax / 8;
      // Rounding to the grid, plus the float16 scale's own rounding (2^-11 relative)
      // multiplied by the largest integer (127 or 8).
      const float bound = t == GgmlType::kQ8_0 ? step * (0.5f + 127.0f / 2048) : step * (1.0f + 8.0f / 2048);
      for (int j = 0; j < 32; ++j) {
        ASSERT_LE(std::fabs(back[b * 32 + j] - x[b * 32 + j]), bound) << ggml_type_name(t) << " block " << b;
      }
    }
    for (int j = 64; j < 96; ++j) EXPECT_EQ(back[j], 0.0f);
  }
}

// In memory, Q8_0/Q4_0 matrices are interleaved in groups of 16 rows (quantize.h);
// every row must come back exactly as llama.cpp's layout has it, whether the
// matrix was quantized here (row-major or transposed input) or wrapped from GGUF
// bytes, for sizes with and without rows after the last whole group.
TEST(QuantizedStorage, InterleavedRowsComeBackInLlamaCppLayout) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kF16, GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K,
                     GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    for (int64_t rows : {1, 15, 16, 17, 40, 48}) {
      const int64_t cols = ggml_block_size(t) == 256 ? 512 : 96;  // K types (grouped on x86-64) by super-blocks
      const size_t rb = ggml_row_bytes(t, cols);
      std::vector<float> w(static_cast<size_t>(rows * cols)), wt(w.size());
      for (auto& v : w) v = normal(rng);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) wt[static_cast<size_t>(c * rows + r)] = w[static_cast<size_t>(r * cols + c)];
      }
      std::vector<uint8_t> canonical(rb * static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) quantize_row(t, w.data() + r * cols, canonical.data() + rb * r, cols);
      const QuantizedStorage q = QuantizedStorage::quantize(t, w.data(), rows, cols);
      const QuantizedStorage qt = QuantizedStorage::quantize(t, wt.data(), rows, cols, true);
      const QuantizedStorage wrapped = QuantizedStorage::wrap(t, canonical, rows, cols);
      EXPECT_EQ(q.bytes, qt.bytes) << ggml_type_name(t) << " rows " << rows;
      EXPECT_EQ(q.bytes, wrapped.bytes) << ggml_type_name(t) << " rows " << rows;
      std::vector<uint8_t> row(rb);
      std::vector<float> floats(static_cast<size_t>(cols)), expected(floats.size());
      for (int64_t r = 0; r < rows; ++r) {
        q.matrix.block_row(r, row.data());
        ASSERT_TRUE(std::equal(row.begin(), row.end(), canonical.begin() + static_cast<std::ptrdiff_t>(rb * r)))
            << ggml_type_name(t) << " rows " << rows << " row " << r;
        dequantize_row(t, canonical.data() + rb * r, expected.data(), cols);
        q.matrix.float_row(r, floats.data());
        ASSERT_EQ(floats, expected) << ggml_type_name(t) << " row " << r;
      }
      if ((t == GgmlType::kQ8_0 || t == GgmlType::kQ4_0) && rows >= 16) {  // the documented layout, block 0 of group 0
        const int64_t words = t == GgmlType::kQ8_0 ? 8 : 4;
        const uint8_t offset = t == GgmlType::kQ8_0 ? 0x80 : 0;  // Q8_0 stored + 128
        for (int64_t r = 0; r < 16; ++r) {
          EXPECT_EQ(std::memcmp(q.bytes.data() + 2 * r, canonical.data() + rb * r, 2), 0);  // scales first
          for (int64_t j = 0; j < words; ++j) {
            for (int64_t i = 0; i < 4; ++i) {
              EXPECT_EQ(q.bytes[static_cast<size_t>(32 + (j * 16 + r) * 4 + i)],
                        static_cast<uint8_t>(canonical[rb * r + 2 + j * 4 + i] ^ offset));
            }
          }
        }
      } else if (t == GgmlType::kF16) {
        EXPECT_EQ(q.bytes, canonical);  // 16-bit types stay row-major
      }
    }
  }
  EXPECT_THROW(QuantizedStorage::wrap(GgmlType::kQ8_0, std::vector<uint8_t>(67), 1, 64), Error);
}

// quantized_linear against float arithmetic on the dequantized weights. For block
// types the input is quantized too (per 32 values, to amax / 127 steps), so the
// bound is sum_i |w_i| * (half a step of x's block).
const char* kernels_name(QuantKernels k) { return quant_kernels_name(k); }

void check_linear(GgmlType type, int64_t rows, int64_t cols, int64_t N, QuantKernels kernels) {
  std::mt19937 rng(static_cast<unsigned>(rows * 131 + cols * 7 + N));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols)), in(static_cast<size_t>(N * cols)), bias(static_cast<size_t>(rows)),
      residual(static_cast<size_t>(N * rows));
  for (auto& v : w) v = normal(rng) * 0.1f;
  for (auto& v : in) v = normal(rng);
  for (auto& v : bias) v = normal(rng);
  for (auto& v : residual) v = normal(rng);
  const QuantizedStorage q = QuantizedStorage::quantize(type, w.data(), rows, cols);
  std::vector<float> wd(w.size());
  for (int64_t r = 0; r < rows; ++r) q.matrix.float_row(r, wd.data() + r * cols);

  std::vector<float> out(residual);  // out aliases residual, as in the model
  {
    const KernelCapGuard restore;
    cap_quant_kernels(kernels);
    ASSERT_EQ(quant_kernels(), kernels);
    QuantScratch scratch;
    quantized_linear(out.data(), in.data(), q.matrix, bias.data(), N, scratch, out.data());
  }

  // From kQuantPanelMinRows rows on, W is widened to float and the input is used as
  // it is, except Q8_0 / Q4_0 with VNNI or NEON: int8 blocks for any number of rows.
  const bool int8_prompts = kernels != QuantKernels::kPortable &&
                            (kernels == QuantKernels::kVnni || type == GgmlType::kQ8_0 || type == GgmlType::kQ4_0);
  const bool blocks = ggml_block_size(type) > 1 && (N < kQuantPanelMinRows || int8_prompts);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t r = 0; r < rows; ++r) {
      double ref = residual[static_cast<size_t>(n * rows + r)] + bias[static_cast<size_t>(r)], bound = 1e-5;
      for (int64_t c = 0; c < cols; ++c) {
        ref += static_cast<double>(wd[static_cast<size_t>(r * cols + c)]) * in[static_cast<size_t>(n * cols + c)];
        bound += 1e-6 * std::fabs(wd[static_cast<size_t>(r * cols + c)] * in[static_cast<size_t>(n * cols + c)]);
      }
      if (blocks) {
        for (int64_t b = 0; b < cols / 32; ++b) {
          float amax = 0, wsum = 0;
          for (int j = 0; j < 32; ++j) {
            amax = std::max(amax, std::fabs(in[static_cast<size_t>(n * cols + b * 32 + j)]));
            wsum += std::fabs(wd[static_cast<size_t>(r * cols + b * 32 + j)]);
          }
          bound += wsum * amax / 127 * 0.5 * 1.01;
        }
      }
      ASSERT_NEAR(out[static_cast<size_t>(n * rows + r)], ref, bound)
          << ggml_type_name(type) << " rows " << rows << " cols " << cols << " N " << N << " at (" << n << "," << r
          << ") " << kernels_name(kernels);
    }
  }
}

TEST(QuantizedLinear, AllTypesOddSizesEveryKernel) {
  const std::vector<QuantKernels> levels = available_kernels();
  std::printf("[ info ] best quantized kernels on this CPU: %s\n", kernels_name(levels.back()));
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kF16, GgmlType::kBF16}) {
    for (const auto& shape : {std::pair<int64_t, int64_t>{1, 32}, {7, 96}, {50, 800}, {33, 64}, {600, 64}, {530, 288}, {5, 352}, {3, 512}}) {  // (plain variables: lambdas capture them)
      const auto rows = std::get<0>(shape);
      const auto cols = std::get<1>(shape);
      for (int64_t N : {1, 3, 8, 21}) {
        for (QuantKernels k : levels) check_linear(t, rows, cols, N, k);
      }
    }
  }
}

TEST(QuantizedLinear, FastKernelsAgreeWithPortable) {
  const std::vector<QuantKernels> levels = available_kernels();
  if (levels.size() == 1) GTEST_SKIP() << "no AVX-512 VNNI or NEON here: only the portable kernel runs";
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kF16, GgmlType::kBF16}) {
    // 37 rows: two interleaved groups, then 5 rows in llama.cpp's layout; 9, 11,
    // 12, 15 and 24 blocks per row.
    for (const int64_t cols : {288, 352, 384, 480, 768}) {
      const int64_t rows = 37;
      // Q8_0 / Q4_0: int8 rows on both paths below kQuantPanelMinRows (from there
      // the portable path widens panels, the VNNI one stays int8: not comparable);
      // F16 / BF16: decode kernels, then widened panels.
      const bool blocks = t == GgmlType::kQ8_0 || t == GgmlType::kQ4_0;
      for (const int64_t N : blocks ? std::vector<int64_t>{2, kQuantPanelMinRows - 1} : std::vector<int64_t>{2, 8}) {
        std::mt19937 rng(3);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> w(static_cast<size_t>(rows * cols)), in(static_cast<size_t>(N * cols));
        for (auto& v : w) v = normal(rng);
        for (auto& v : in) v = normal(rng);
        const QuantizedStorage q = QuantizedStorage::quantize(t, w.data(), rows, cols);
        QuantScratch scratch;
        std::vector<float> slow(static_cast<size_t>(N * rows));
        const KernelCapGuard restore;
        cap_quant_kernels(QuantKernels::kPortable);
        quantized_linear(slow.data(), in.data(), q.matrix, nullptr, N, scratch);
        for (size_t k = 1; k < levels.size(); ++k) {
          std::vector<float> fast(slow.size());
          cap_quant_kernels(levels[k]);
          quantized_linear(fast.data(), in.data(), q.matrix, nullptr, N, scratch);
          // Same integer block sums; only the float accumulation order differs.
          for (size_t i = 0; i < fast.size(); ++i) {
            ASSERT_NEAR(fast[i], slow[i], 1e-4f * (1 + std::fabs(slow[i])))
                << ggml_type_name(t) << " cols " << cols << " N " << N << " " << kernels_name(levels[k]);
          }
        }
      }
    }
  }
}

TEST(QuantizedLinear, EachRowIsItsSumAloneBitForBit) {
  // What batch invariance stands on: with AVX-512 VNNI, a Q8_0 or Q4_0 product
  // over N rows gives each row exactly the sums of that row alone, whether the
  // group kernels take it with three others (group_vnni_rows) or by itself, on
  // any thread count.
  const std::vector<QuantKernels> levels = available_kernels();
  if (levels.back() == QuantKernels::kPortable) GTEST_SKIP() << "portable kernels only here: many rows widen panels";
  const testing::ThreadCountGuard guard;
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    const int64_t rows = 53, cols = 384;  // three interleaved groups and 5 rows in llama.cpp's layout
    std::mt19937 rng(9);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> w(static_cast<size_t>(rows * cols)), in(static_cast<size_t>(40 * cols)), bias(static_cast<size_t>(rows));
    for (auto& v : w) v = normal(rng);
    for (auto& v : in) v = normal(rng);
    for (auto& v : bias) v = normal(rng);
    const QuantizedStorage q = QuantizedStorage::quantize(t, w.data(), rows, cols);
    QuantScratch scratch;
    std::vector<float> alone(static_cast<size_t>(40 * rows));
    for (int64_t n = 0; n < 40; ++n) {
      quantized_linear(alone.data() + n * rows, in.data() + n * cols, q.matrix, bias.data(), 1, scratch);
    }
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (int64_t N : {2, 4, 5, 9, 21, 40}) {
        std::vector<float> out(static_cast<size_t>(N * rows));
        quantized_linear(out.data(), in.data(), q.matrix, bias.data(), N, scratch);
        for (int64_t i = 0; i < N * rows; ++i) {
          ASSERT_EQ(out[static_cast<size_t>(i)], alone[static_cast<size_t>(i)])
              << ggml_type_name(t) << ", " << N << " rows, " << threads << " threads, at " << i;
        }
      }
    }
  }
}

TEST(Quantize, TypeNames) {
  EXPECT_EQ(parse_ggml_type("Q8_0"), GgmlType::kQ8_0);
  EXPECT_EQ(parse_ggml_type("q4_0"), GgmlType::kQ4_0);
  EXPECT_EQ(parse_ggml_type("bf16"), GgmlType::kBF16);
  EXPECT_EQ(parse_ggml_type("q5_k"), GgmlType::kQ5_K);
  EXPECT_THROW(parse_ggml_type("q7_0"), Error);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ8_0, 64), 68u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ4_0, 64), 36u);
  EXPECT_THROW(ggml_row_bytes(GgmlType::kQ4_0, 48), Error);
}

}  // namespace
}  // namespace gpt
