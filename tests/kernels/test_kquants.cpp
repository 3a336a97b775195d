// llama.cpp's K-quants (Q2_K .. Q6_K) and legacy Q4_1/Q5_0/Q5_1: each format's
// layout against a reference decoder written here from ggml-common.h's
// definitions (float64, another way of walking the bits), the round-trip error of
// the quantizers, the products against the float computation, and the recipes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "gpt/kernels/kquants.h"
#include "gpt/kernels/quantize.h"
#include "gpt/model/quant_recipe.h"
#include "gpt/util/error.h"
#include "gpt/util/half.h"
#include "kernels/kernel_levels.h"

namespace gpt {
namespace {

const GgmlType kExtraTypes[] = {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                GgmlType::kQ6_K, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1};

// Weights as trained matrices have them: mostly normal, a few large.
std::vector<float> weights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  std::uniform_int_distribution<int64_t> at(0, n - 1);
  for (int i = 0; i < n / 200; ++i) x[static_cast<size_t>(at(rng))] *= 8.0f;
  return x;
}

// Random bytes made valid as a file's: each block's float16 scales (and mins)
// finite, |value| < 2, either sign (files hold negative scales).
void finite_scales(GgmlType t, std::vector<uint8_t>& bytes) {
  std::vector<int> at;
  if (t == GgmlType::kQ2_K) at = {80, 82};
  else if (t == GgmlType::kQ3_K) at = {108};
  else if (t == GgmlType::kQ6_K) at = {208};
  else if (t == GgmlType::kQ5_0) at = {0};
  else at = {0, 2};  // Q4_K, Q5_K, Q4_1, Q5_1: d and dmin (or m)
  const auto bb = static_cast<size_t>(ggml_block_bytes(t));
  for (size_t b = 0; b + bb <= bytes.size(); b += bb)
    for (int o : at) bytes[b + static_cast<size_t>(o) + 1] &= 0xBF;
}

// N input rows of order 1 through the quantized products at `level`.
std::vector<float> product_at(QuantKernels level, const QuantizedMatrix& m, int64_t N, uint32_t seed) {
  std::vector<float> in = weights(N * m.cols, seed);
  for (auto& v : in) v *= 50;
  std::vector<float> out(static_cast<size_t>(N * m.rows));
  QuantScratch scratch;
  KernelCapGuard guard;
  cap_quant_kernels(level);
  quantized_linear(out.data(), in.data(), m, nullptr, N, scratch);
  return out;
}

// The kernel levels past portable that this CPU runs (AVX-512 VNNI; NEON, NEON
// with SDOT), each named in the test's output.
std::vector<QuantKernels> fast_levels() {
  std::vector<QuantKernels> levels = available_kernels();
  levels.erase(levels.begin());
  for (QuantKernels k : levels) std::printf("[ info ] K-quant products checked at: %s\n", quant_kernels_name(k));
  return levels;
}

// ---- reference decoders: ggml-common.h's structs read byte by byte ----------------

double h(const uint8_t* p) {  // a little-endian float16
  return half_to_float(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// One 256-weight super-block of each K type; `b` points at its bytes.
void ref_q2_k(const uint8_t* b, double* y) {
  const uint8_t* scales = b;       // 16
  const uint8_t* qs = b + 16;      // 64
  const double d = h(b + 80), dmin = h(b + 82);
  // Two halves of 128 weights; in each, four 2-bit planes of the same 32 bytes.
  for (int half = 0; half < 2; ++half)
    for (int plane = 0; plane < 4; ++plane)
      for (int i = 0; i < 32; ++i) {
        const int e = 128 * half + 32 * plane + i, sub = e / 16;
        const int q = (qs[32 * half + i] >> (2 * plane)) & 3;
        y[e] = d * (scales[sub] & 15) * q - dmin * (scales[sub] >> 4);
      }
}

void ref_q3_k(const uint8_t* b, double* y) {
  const uint8_t* hmask = b;        // 32
  const uint8_t* qs = b + 32;      // 64
  const uint8_t* sc = b + 96;      // 12
  const double d = h(b + 108);
  int scale[16];
  for (int j = 0; j < 16; ++j) {
    // 4 low bits: bytes 0-7, low nibbles for sub-blocks 0-7, high for 8-15;
    // 2 high bits: byte 8 + j % 4, bit pair j / 4.
    const int low = (sc[j % 8] >> (4 * (j / 8))) & 15;
    const int high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    scale[j] = (low | (high << 4)) - 32;
  }
  for (int half = 0; half < 2; ++half)
    for (int plane = 0; plane < 4; ++plane)
      for (int i = 0; i < 32; ++i) {
        const int e = 128 * half + 32 * plane + i;
        const int low = (qs[32 * half + i] >> (2 * plane)) & 3;
        const bool high = (hmask[i] >> (4 * half + plane)) & 1;
        y[e] = d * scale[e / 16] * (low - (high ? 0 : 4));
      }
}

void ref_scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void ref_q45_k(const uint8_t* b, double* y, bool five) {
  const double d = h(b), dmin = h(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;                // Q5_K only
  const uint8_t* qs = b + (five ? 48 : 16);  // 128
  // Four chunks of 64 weights: the low nibbles of 32 bytes, then their high nibbles.
  for (int chunk = 0; chunk < 4; ++chunk)
    for (int nib = 0; nib < 2; ++nib) {
      const int sub = 2 * chunk + nib;
      int s, m;
      ref_scale_min_k4(sc, sub, &s, &m);
      for (int i = 0; i < 32; ++i) {
        int q = (qs[32 * chunk + i] >> (4 * nib)) & 15;
        if (five) q += ((qh[i] >> sub) & 1) << 4;
        y[32 * sub + i] = d * s * q - dmin * m;
      }
    }
}

void ref_q6_k(const uint8_t* b, double* y) {
  const uint8_t* ql = b;          // 128
  const uint8_t* qh = b + 128;    // 64
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const double d = h(b + 208);
  for (int half = 0; half < 2; ++half)
    for (int i = 0; i < 32; ++i) {
      const int l0 = ql[64 * half + i], l1 = ql[64 * half + 32 + i], hh = qh[32 * half + i];
      const int q[4] = {(l0 & 15) | ((hh & 3) << 4), (l1 & 15) | (((hh >> 2) & 3) << 4), (l0 >> 4) | (((hh >> 4) & 3) << 4),
                        (l1 >> 4) | (((hh >> 6) & 3) << 4)};
      for (int k = 0; k < 4; ++k) {
        const int e = 128 * half + 32 * k + i;
        y[e] = d * sc[e / 16] * (q[k] - 32);
      }
    }
}

// One 32-weight block of the legacy types.
void ref_legacy(GgmlType t, const uint8_t* b, double* y) {
  const double d = h(b);
  const double m = t == GgmlType::kQ5_0 ? 0.0 : h(b + 2);
  const uint8_t* qs = b + (t == GgmlType::kQ4_1 ? 4 : t == GgmlType::kQ5_0 ? 6 : 8);
  const uint8_t* qh = b + (t == GgmlType::kQ5_0 ? 2 : 4);
  const uint32_t high = t == GgmlType::kQ4_1 ? 0 : static_cast<uint32_t>(qh[0] | (qh[1] << 8) | (qh[2] << 16)) | (static_cast<uint32_t>(qh[3]) << 24);
  for (int j = 0; j < 32; ++j) {
    int q = (qs[j % 16] >> (4 * (j / 16))) & 15;
    if (t != GgmlType::kQ4_1) q |= static_cast<int>((high >> j) & 1) << 4;
    if (t == GgmlType::kQ5_0) q -= 16;
    y[j] = d * q + m;
  }
}

std::vector<double> reference_decode(GgmlType t, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<double> y(static_cast<size_t>(n));
  const int64_t bs = ggml_block_size(t), bb = ggml_block_bytes(t);
  for (int64_t blk = 0; blk < n / bs; ++blk) {
    const uint8_t* b = bytes.data() + blk * bb;
    double* out = y.data() + blk * bs;
    switch (t) {
      case GgmlType::kQ2_K: ref_q2_k(b, out); break;
      case GgmlType::kQ3_K: ref_q3_k(b, out); break;
      case GgmlType::kQ4_K: ref_q45_k(b, out, false); break;
      case GgmlType::kQ5_K: ref_q45_k(b, out, true); break;
      case GgmlType::kQ6_K: ref_q6_k(b, out); break;
      default: ref_legacy(t, b, out); break;
    }
  }
  return y;
}

TEST(KQuants, BlockSizesAreLlamaCpps) {
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ2_K, 256), 84u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ3_K, 256), 110u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ4_K, 512), 288u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ5_K, 256), 176u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ6_K, 768), 630u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ4_1, 64), 40u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ5_0, 32), 22u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ5_1, 32), 24u);
  EXPECT_THROW(ggml_row_bytes(GgmlType::kQ4_K, 288), Error);
  for (GgmlType t : kExtraTypes) EXPECT_EQ(parse_ggml_type(ggml_type_name(t)), t);
}

// Our decoder agrees with the definition on arbitrary bytes (every bit pattern a
// file may hold), and on what our quantizer writes.
TEST(KQuants, DecodingMatchesTheFormatDefinition) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255);
  for (GgmlType t : kExtraTypes) {
    const int64_t n = 1024;
    std::vector<uint8_t> bytes(ggml_row_bytes(t, n));
    for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
    finite_scales(t, bytes);
    std::vector<float> ours(static_cast<size_t>(n));
    dequantize_row(t, bytes.data(), ours.data(), n);
    const std::vector<double> ref = reference_decode(t, bytes, n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(ours[static_cast<size_t>(i)], ref[static_cast<size_t>(i)], 1e-6 * (1 + std::fabs(ref[static_cast<size_t>(i)])))
          << ggml_type_name(t) << " weight " << i;
  }
}

// Quantize -> decode: relative RMS error within what each format's bits allow
// (measured here: the bound is ~1.3x the measured error), and every row's
// decode by the definition equals ours.
TEST(KQuants, RoundTripErrorFitsEachFormat) {
  struct Bound {
    GgmlType type;
    double max_rel_rms;
  };
  // Measured: Q2_K 0.301, Q3_K 0.170, Q4_K 0.081, Q5_K 0.041, Q6_K 0.021, Q4_1 0.079, Q5_0 0.054, Q5_1 0.038.
  const Bound bounds[] = {{GgmlType::kQ2_K, 0.40}, {GgmlType::kQ3_K, 0.22}, {GgmlType::kQ4_K, 0.105},
                          {GgmlType::kQ5_K, 0.053}, {GgmlType::kQ6_K, 0.0275}, {GgmlType::kQ4_1, 0.10},
                          {GgmlType::kQ5_0, 0.07}, {GgmlType::kQ5_1, 0.05}};
  const int64_t n = 4096;
  const std::vector<float> x = weights(n, 3);
  double prev = 1e9;
  for (const Bound& b : bounds) {
    std::vector<uint8_t> bytes(ggml_row_bytes(b.type, n));
    quantize_row(b.type, x.data(), bytes.data(), n);
    std::vector<float> y(static_cast<size_t>(n));
    dequantize_row(b.type, bytes.data(), y.data(), n);
    const std::vector<double> ref = reference_decode(b.type, bytes, n);
    double err = 0, norm = 0;
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<size_t>(i);
      ASSERT_NEAR(y[k], ref[k], 1e-6 * (1 + std::fabs(ref[k])));
      err += (y[k] - x[k]) * (y[k] - x[k]);
      norm += static_cast<double>(x[k]) * x[k];
    }
    const double rel = std::sqrt(err / norm);
    EXPECT_LT(rel, b.max_rel_rms) << ggml_type_name(b.type);
    if (is_k_type(static_cast<uint32_t>(b.type))) {
      EXPECT_LT(rel, prev) << ggml_type_name(b.type) << ": more bits, less error";
      prev = rel;
    }
    std::printf("%s: relative RMS error %.4f\n", ggml_type_name(b.type), rel);
  }
}

TEST(KQuants, ZerosAndConstantsStayExact) {
  for (GgmlType t : kExtraTypes) {
    const int64_t n = 512;
    for (float value : {0.0f, 0.5f, -0.25f}) {
      // A constant row: asymmetric types reproduce it through the min; symmetric ones through the scale.
      const std::vector<float> x(static_cast<size_t>(n), value);
      std::vector<uint8_t> bytes(ggml_row_bytes(t, n));
      quantize_row(t, x.data(), bytes.data(), n);
      std::vector<float> y(static_cast<size_t>(n));
      dequantize_row(t, bytes.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[static_cast<size_t>(i)], value, 2e-3 * (1 + std::fabs(value))) << ggml_type_name(t);
    }
  }
}

// The products: every type, odd shapes, 1-3 threads, against the float product of
// the decoded weights with the input (the only other error is the input's int8
// rounding).
TEST(KQuants, ProductsMatchTheDecodedWeights) {
  for (GgmlType t : kExtraTypes) {
    for (int64_t rows : {1, 7, 33}) {
      const int64_t cols = ggml_block_size(t) == 256 ? 768 : 96;
      const std::vector<float> w = weights(rows * cols, 7);
      QuantizedStorage q = QuantizedStorage::quantize(t, w.data(), rows, cols);
      std::vector<float> decoded(static_cast<size_t>(rows * cols));
      for (int64_t r = 0; r < rows; ++r) q.matrix.float_row(r, decoded.data() + r * cols);
      for (int64_t N : {1, 3, 9}) {
        std::vector<float> in = weights(N * cols, 9);
        for (auto& v : in) v *= 50;  // activations of order 1
        std::vector<float> bias(static_cast<size_t>(rows), 0.25f);
        for (int threads : {1, 2, 3}) {
          omp_set_num_threads(threads);
          std::vector<float> out(static_cast<size_t>(N * rows));
          QuantScratch scratch;
          quantized_linear(out.data(), in.data(), q.matrix, bias.data(), N, scratch);
          for (int64_t n = 0; n < N; ++n)
            for (int64_t r = 0; r < rows; ++r) {
              double ref = 0.25, mag = 0;
              for (int64_t c = 0; c < cols; ++c) {
                ref += static_cast<double>(in[static_cast<size_t>(n * cols + c)]) * decoded[static_cast<size_t>(r * cols + c)];
                mag += std::fabs(in[static_cast<size_t>(n * cols + c)] * decoded[static_cast<size_t>(r * cols + c)]);
              }
              // int8 inputs: each product off by at most half a step of 1/127 of the block's largest input.
              ASSERT_NEAR(out[static_cast<size_t>(n * rows + r)], ref, 1e-2 * mag + 1e-5)
                  << ggml_type_name(t) << " rows " << rows << " N " << N << " threads " << threads;
            }
        }
      }
    }
  }
  omp_set_num_threads(omp_get_num_procs());
}

TEST(KQuants, KernelsAgreeWithThePortableLoops) {
  const std::vector<QuantKernels> levels = fast_levels();
  if (levels.empty()) GTEST_SKIP() << "no AVX-512 VNNI or NEON kernels on this CPU: only the portable loops run";
  for (GgmlType t : kExtraTypes) {
    const int64_t rows = 37, cols = ggml_block_size(t) == 256 ? 1024 : 160;
    const std::vector<float> w = weights(rows * cols, 21);
    QuantizedStorage q = QuantizedStorage::quantize(t, w.data(), rows, cols);
    // Fewer rows than kQuantPanelMinRows: both go through int8 inputs (from there
    // on the portable path widens the weights instead: ProductsMatchTheDecodedWeights).
    for (int64_t N : {1, 2, 5, 6, 7}) {  // Q4_K-Q6_K groups: 1-4 inputs per pass, then the rest
      const std::vector<float> portable = product_at(QuantKernels::kPortable, q.matrix, N, 23);
      for (QuantKernels level : levels) {
        // A level without its own kernel for the type would compare the portable loop with itself.
        ASSERT_TRUE(extra_has_fast_kernel(static_cast<uint32_t>(t), level)) << ggml_type_name(t) << " " << quant_kernels_name(level);
        const std::vector<float> fast = product_at(level, q.matrix, N, 23);
        for (size_t i = 0; i < fast.size(); ++i)
          ASSERT_NEAR(fast[i], portable[i], 1e-4f * (1 + std::fabs(portable[i])))
              << ggml_type_name(t) << " N " << N << " " << quant_kernels_name(level);
      }
    }
  }
}

// Blocks of random bytes (every bit pattern a file may hold, scales of either sign),
// not only what our quantizer writes: the AVX-512 or NEON kernels against the
// portable loops.
TEST(KQuants, KernelsAgreeOnArbitraryBlocks) {
  const std::vector<QuantKernels> levels = fast_levels();
  if (levels.empty()) GTEST_SKIP() << "no AVX-512 VNNI or NEON kernels on this CPU: only the portable loops run";
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> byte(0, 255);
  for (GgmlType t : kExtraTypes) {
    const int64_t rows = 21, cols = ggml_block_size(t) == 256 ? 768 : 96;
    std::vector<uint8_t> bytes(ggml_row_bytes(t, cols) * rows);
    for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
    finite_scales(t, bytes);
    const QuantizedStorage q = QuantizedStorage::wrap(t, bytes, rows, cols);
    for (int64_t N : {1, 2, 4, 7}) {
      const std::vector<float> portable = product_at(QuantKernels::kPortable, q.matrix, N, 33);
      float scale = 0;
      for (float v : portable) scale = std::max(scale, std::fabs(v));
      for (QuantKernels level : levels) {
        ASSERT_TRUE(extra_has_fast_kernel(static_cast<uint32_t>(t), level)) << ggml_type_name(t) << " " << quant_kernels_name(level);
        const std::vector<float> fast = product_at(level, q.matrix, N, 33);
        for (size_t i = 0; i < fast.size(); ++i)
          ASSERT_NEAR(fast[i], portable[i], 1e-5f * (1 + scale))
              << ggml_type_name(t) << " N " << N << " i " << i << " " << quant_kernels_name(level);
      }
    }
  }
}

// The K types' matrices on x86-64 are kept in groups of 16 rows (kquants.h) with
// a group kernel for VNNI; a group's outputs, the rows after the last group, the
// bias and a residual the output aliases all land where they belong.
TEST(KQuants, GroupedRowsBiasAndResidualLandInPlace) {
  for (GgmlType t : {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
#if defined(__x86_64__)
    EXPECT_TRUE(k_row_interleaved(static_cast<uint32_t>(t))) << ggml_type_name(t);
    const std::vector<QuantKernels> levels = available_kernels();
    if (std::find(levels.begin(), levels.end(), QuantKernels::kVnni) != levels.end()) {
      EXPECT_NE(k_group_dot(static_cast<uint32_t>(t), QuantKernels::kVnni), nullptr) << ggml_type_name(t);
    }
#endif
    const int64_t rows = 37, cols = 512;  // two groups and 5 rows
    const std::vector<float> w = weights(rows * cols, 51);
    QuantizedStorage q = QuantizedStorage::quantize(t, w.data(), rows, cols);
    for (QuantKernels level : available_kernels()) {
      KernelCapGuard guard;
      cap_quant_kernels(level);
      for (int64_t N : {1, 6}) {
        std::vector<float> in = weights(N * cols, 53);
        for (auto& v : in) v *= 50;
        std::vector<float> bias(static_cast<size_t>(rows)), residual(static_cast<size_t>(N * rows));
        for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.01f * static_cast<float>(i);
        for (size_t i = 0; i < residual.size(); ++i) residual[i] = 1.0f + 0.1f * static_cast<float>(i);
        std::vector<float> plain(residual.size()), onto = residual;
        QuantScratch scratch;
        quantized_linear(plain.data(), in.data(), q.matrix, nullptr, N, scratch);
        quantized_linear(onto.data(), in.data(), q.matrix, bias.data(), N, scratch, onto.data());
        for (int64_t n = 0; n < N; ++n)
          for (int64_t r = 0; r < rows; ++r) {
            const size_t i = static_cast<size_t>(n * rows + r);
            ASSERT_NEAR(onto[i], plain[i] + bias[static_cast<size_t>(r)] + residual[i], 1e-5f * (1 + std::fabs(onto[i])))
                << ggml_type_name(t) << " " << quant_kernels_name(level) << " N " << N << " row " << r;
          }
      }
    }
  }
}

// The input rows' int8 blocks: the AVX-512 quantizer writes the portable one's
// bytes (values, scale, sums of 16), in order or with the middle quarters swapped,
// on ordinary rows and on rows with zeros, huge values, infinities and NaN.
TEST(KQuants, InputBlocksAreTheSameAtEveryLevel) {
  const int64_t n = 1024;
  std::vector<std::vector<float>> rows = {weights(n, 61), std::vector<float>(n, 0.0f), weights(n, 62)};
  rows[2][5] = std::numeric_limits<float>::quiet_NaN();
  rows[2][300] = std::numeric_limits<float>::infinity();
  rows[2][301] = -3e38f;
  rows[2][700] = 1e-30f;
  std::vector<float> odd(n, 1e-39f);  // a block of denormals only (1 / d overflows), one of huge finite values, -0
  for (int64_t i = 256; i < 512; ++i) odd[static_cast<size_t>(i)] = (i % 3 == 0 ? -3e38f : 1e38f) / static_cast<float>(1 + i % 7);
  for (int64_t i = 512; i < 768; ++i) odd[static_cast<size_t>(i)] = i % 2 == 0 ? -0.0f : 0.25f * static_cast<float>(i % 5);
  rows.push_back(odd);
  std::vector<float> ties(n);  // values that land halfway between integers
  for (int64_t i = 0; i < n; ++i) ties[static_cast<size_t>(i)] = static_cast<float>((i % 255) - 127) + (i % 2 == 0 ? 0.5f : 0.0f);
  rows.push_back(ties);
  for (const std::vector<float>& x : rows)
    for (bool swapped : {false, true}) {
      std::vector<BlockQ8_K> portable(n / kSuperBlock), fast(n / kSuperBlock);
      quantize_row_q8_k_at(QuantKernels::kPortable, x.data(), portable.data(), n, swapped);
      for (QuantKernels level : available_kernels()) {
        quantize_row_q8_k_at(level, x.data(), fast.data(), n, swapped);
        for (size_t b = 0; b < fast.size(); ++b) {
          ASSERT_EQ(std::memcmp(fast[b].qs, portable[b].qs, sizeof fast[b].qs), 0) << quant_kernels_name(level) << " block " << b;
          ASSERT_EQ(std::memcmp(fast[b].bsums, portable[b].bsums, sizeof fast[b].bsums), 0) << quant_kernels_name(level);
          ASSERT_EQ(fast[b].d, portable[b].d) << quant_kernels_name(level);
        }
      }
    }
  // Swapping moves values 32-63 and 64-95 of each 128; the sums of 16 stay in order.
  std::vector<BlockQ8_K> plain(n / kSuperBlock), swapped(n / kSuperBlock);
  quantize_row_q8_k_at(QuantKernels::kPortable, rows[0].data(), plain.data(), n, false);
  quantize_row_q8_k_at(QuantKernels::kPortable, rows[0].data(), swapped.data(), n, true);
  EXPECT_EQ(std::memcmp(plain[0].qs + 32, swapped[0].qs + 64, 32), 0);
  EXPECT_EQ(std::memcmp(plain[0].qs + 160, swapped[0].qs + 192, 32), 0);
  EXPECT_EQ(std::memcmp(plain[0].bsums, swapped[0].bsums, sizeof plain[0].bsums), 0);
}

// Weights no format can hold stay defined: NaN and infinities quantize to finite
// scales (a file we write is one we read), tiny ranges to exact zeros.
TEST(KQuants, NonFiniteAndTinyWeightsGiveFiniteScales) {
  for (GgmlType t : kExtraTypes) {
    const int64_t n = 512;
    std::vector<float> x = weights(n, 41);
    x[3] = std::numeric_limits<float>::quiet_NaN();
    x[70] = std::numeric_limits<float>::infinity();
    x[300] = -1e30f;
    for (int i = 384; i < 448; ++i) x[static_cast<size_t>(i)] = (i == 385) ? 1e-40f : 0.0f;  // a denormal in zero blocks
    std::vector<uint8_t> bytes(ggml_row_bytes(t, n));
    quantize_row(t, x.data(), bytes.data(), n);
    EXPECT_EQ(first_invalid_block(t, bytes.data(), bytes.size()), -1) << ggml_type_name(t);
    std::vector<float> y(static_cast<size_t>(n));
    dequantize_row(t, bytes.data(), y.data(), n);
    for (int i = 384; i < 448; ++i) EXPECT_LT(std::fabs(y[static_cast<size_t>(i)]), 1e-3f) << ggml_type_name(t);
  }
}

TEST(KQuants, DamagedSizesAreErrors) {
  std::vector<uint8_t> bytes(ggml_row_bytes(GgmlType::kQ4_K, 512) * 3 - 1);
  EXPECT_THROW(QuantizedStorage::wrap(GgmlType::kQ4_K, bytes, 3, 512), Error);
  EXPECT_THROW(parse_ggml_type("q7_k"), Error);
}

// ---- recipes --------------------------------------------------------------------

TEST(QuantRecipe, MixesFollowLlamaCpp) {
  const QuantRecipe m = QuantRecipe::parse("Q4_K_M");
  EXPECT_EQ(m.name(), "q4_k_m");
  EXPECT_EQ(m.file_type(), 15u);
  EXPECT_EQ(m.base(), GgmlType::kQ4_K);
  // GPT-2 124M: 12 layers, rows of 768 (and 3072 into ffn_down).
  EXPECT_EQ(m.type_for(TensorRole::kOutput, 0, 12, 768), GgmlType::kQ6_K);
  EXPECT_EQ(m.type_for(TensorRole::kTokenEmbedding, 0, 12, 768), GgmlType::kQ4_K);
  // qkv takes llama.cpp's attn_v rule: Q6_K in the layers with more bits, else Q4_K.
  EXPECT_EQ(m.type_for(TensorRole::kAttentionQkv, 0, 12, 768), GgmlType::kQ6_K);
  EXPECT_EQ(m.type_for(TensorRole::kAttentionQkv, 4, 12, 768), GgmlType::kQ4_K);
  EXPECT_EQ(m.type_for(TensorRole::kAttentionOutput, 5, 12, 768), GgmlType::kQ4_K);
  EXPECT_EQ(m.type_for(TensorRole::kFfnUp, 5, 12, 768), GgmlType::kQ4_K);
  // ffn_down gets Q6_K in layers 0, 3, 6, 9, 10 and 11 of 12 (the first and last eighth, every third between).
  std::vector<int> six;
  for (int l = 0; l < 12; ++l)
    if (m.type_for(TensorRole::kFfnDown, l, 12, 3072) == GgmlType::kQ6_K) six.push_back(l);
  EXPECT_EQ(six, (std::vector<int>{0, 3, 6, 9, 10, 11}));
  // Rows that are not whole super-blocks fall back as llama.cpp does.
  EXPECT_EQ(m.type_for(TensorRole::kFfnUp, 0, 12, 96), GgmlType::kQ5_0);
  EXPECT_EQ(m.type_for(TensorRole::kOutput, 0, 12, 96), GgmlType::kQ8_0);
  EXPECT_EQ(m.type_for(TensorRole::kFfnUp, 0, 12, 40), GgmlType::kF16);
  EXPECT_EQ(QuantRecipe::parse("q2_k").type_for(TensorRole::kFfnUp, 0, 4, 64), GgmlType::kQ4_0);
  EXPECT_EQ(QuantRecipe::parse("q6_k").type_for(TensorRole::kFfnUp, 0, 4, 64), GgmlType::kQ8_0);
  EXPECT_EQ(QuantRecipe::parse("q5_k_s").type_for(TensorRole::kFfnUp, 0, 4, 64), GgmlType::kQ5_1);
  // Other mixes.
  EXPECT_EQ(QuantRecipe::parse("q3_k_m").type_for(TensorRole::kAttentionOutput, 0, 12, 768), GgmlType::kQ4_K);
  EXPECT_EQ(QuantRecipe::parse("q3_k_l").type_for(TensorRole::kFfnDown, 3, 12, 3072), GgmlType::kQ5_K);
  EXPECT_EQ(QuantRecipe::parse("q2_k").type_for(TensorRole::kFfnDown, 3, 12, 3072), GgmlType::kQ3_K);
  EXPECT_EQ(QuantRecipe::parse("q4_k_s").type_for(TensorRole::kFfnDown, 0, 12, 3072), GgmlType::kQ5_K);
  EXPECT_EQ(QuantRecipe::parse("q4_k_s").type_for(TensorRole::kFfnDown, 2, 12, 3072), GgmlType::kQ4_K);
  EXPECT_EQ(QuantRecipe::parse("q5_k_m").type_for(TensorRole::kAttentionQkv, 0, 12, 768), GgmlType::kQ6_K);
  EXPECT_EQ(QuantRecipe::parse("q5_k_m").type_for(TensorRole::kAttentionQkv, 4, 12, 768), GgmlType::kQ5_K);
  EXPECT_EQ(QuantRecipe::parse("q3_k_m").type_for(TensorRole::kAttentionQkv, 1, 12, 768), GgmlType::kQ5_K);
  EXPECT_EQ(QuantRecipe::parse("q3_k_m").type_for(TensorRole::kAttentionQkv, 2, 12, 768), GgmlType::kQ4_K);
  EXPECT_EQ(QuantRecipe::parse("q2_k").type_for(TensorRole::kAttentionQkv, 2, 12, 768), GgmlType::kQ3_K);
  EXPECT_EQ(QuantRecipe::parse("q4_k_s").type_for(TensorRole::kAttentionQkv, 3, 12, 768), GgmlType::kQ5_K);
  EXPECT_EQ(QuantRecipe::parse("q4_k_s").type_for(TensorRole::kAttentionQkv, 4, 12, 768), GgmlType::kQ4_K);
  EXPECT_EQ(QuantRecipe::parse("q4_k").name(), "q4_k_m");
  // Plain types: every matrix.
  const QuantRecipe q8 = QuantRecipe::parse("q8_0");
  EXPECT_EQ(q8.type_for(TensorRole::kOutput, 0, 12, 768), GgmlType::kQ8_0);
  EXPECT_EQ(q8.file_type(), 7u);
  EXPECT_EQ(QuantRecipe(GgmlType::kQ4_0).type_for(TensorRole::kOutput, 0, 12, 768), GgmlType::kQ4_0);
  EXPECT_THROW(QuantRecipe::parse("q4_k_xl"), Error);
}

}  // namespace
}  // namespace gpt
