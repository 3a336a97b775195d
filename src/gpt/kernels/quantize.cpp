#include "gpt/kernels/quantize.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/thread_share.h"
#include "gpt/util/error.h"
#include "gpt/util/half.h"

namespace gpt {

namespace {

// An input row quantized for the integer dot products, like Q8_0 but with float
// scales (the input is not stored, so there is no reason to round them): the int8
// values contiguous (two blocks load as one 512-bit vector), and per block the
// scale d and d * (sum of its values), which undoes the offset the fast kernels
// give the weights to make them unsigned.
struct ActRow {
  const int8_t* qs;
  const float* d;
  const float* dsum;
};

std::atomic<QuantKernels> g_kernel_cap{QuantKernels::kVnniVbmi};

// From this many input rows on, products widen W to float panels for GEMM.
constexpr int64_t kPanelMinRows = 8;
constexpr int64_t kPanelRows = 512;

bool cpu_has_vnni() {
#if defined(__x86_64__)
  // (Every AVX-512 CPU also has F16C and FMA; clang cannot query F16C by name.)
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return has;
#else
  return false;
#endif
}

bool cpu_has_vbmi() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx512vbmi");
  return has;
#else
  return false;
#endif
}

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = float_to_half(d);
    for (int64_t j = 0; j < kQuantBlock; ++j) y[b].qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
  }
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock) {
    float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
    for (int64_t j = 0; j < kQuantBlock; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = float_to_half(d);
    for (int64_t j = 0; j < kQuantBlock / 2; ++j) {
      const auto lo = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j] * id + 8.5f)));
      const auto hi = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j + kQuantBlock / 2] * id + 8.5f)));
      y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void quantize_activations(const float* x, int8_t* qs, float* d_out, float* dsum_out, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, qs += kQuantBlock) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int64_t j = 0; j < kQuantBlock; ++j) {
      qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += qs[j];
    }
    d_out[b] = d;
    dsum_out[b] = d * static_cast<float>(sum);
  }
}

// ---- portable dot products -------------------------------------------------

float dot_q8_0_portable(const uint8_t* row, const ActRow& a, int64_t nb) {
  const auto* w = reinterpret_cast<const BlockQ8_0*>(row);
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int64_t j = 0; j < kQuantBlock; ++j) s += static_cast<int32_t>(w[b].qs[j]) * a.qs[b * kQuantBlock + j];
    sum += half_to_float(w[b].d) * a.d[b] * static_cast<float>(s);
  }
  return sum;
}

float dot_q4_0_portable(const uint8_t* row, const ActRow& a, int64_t nb) {
  const auto* w = reinterpret_cast<const BlockQ4_0*>(row);
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* x = a.qs + b * kQuantBlock;
    int32_t s = 0;
    for (int64_t j = 0; j < kQuantBlock / 2; ++j) {
      s += ((w[b].qs[j] & 0x0F) - 8) * x[j];
      s += ((w[b].qs[j] >> 4) - 8) * x[j + kQuantBlock / 2];
    }
    sum += half_to_float(w[b].d) * a.d[b] * static_cast<float>(s);
  }
  return sum;
}

float dot_f32(const float* w, const float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += w[i] * x[i];
  return s;
}

// ---- row ranges ------------------------------------------------------------
// Every kernel computes a range of rows against one input row: the per-row dot
// products are inlined into the loop, so their constants load once per range and
// nothing is called per row (rows are short: 24 Q4_0 blocks for GPT-2's 768).

// One input row as the kernels read it: quantized blocks (Q8_0, Q4_0) or floats.
struct InputRow {
  ActRow blocks;
  const float* x;
  int64_t cols;
};
// out[r] = (row r of W) . input, for `rows` consecutive rows `row_bytes` apart.
using RowsDot = void (*)(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out);

void rows_q8_0_portable(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_q8_0_portable(w + r * row_bytes, in.blocks, in.cols / kQuantBlock);
}
void rows_q4_0_portable(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_q4_0_portable(w + r * row_bytes, in.blocks, in.cols / kQuantBlock);
}
template <GgmlType kType>  // F16, BF16: each row widened to float first
void rows_wide_portable(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  thread_local std::vector<float> row;
  if (row.size() < static_cast<size_t>(in.cols)) row.resize(static_cast<size_t>(in.cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(kType, w + r * row_bytes, row.data(), in.cols);
    out[r] = dot_f32(row.data(), in.x, in.cols);
  }
}

// ---- AVX-512 VNNI dot products ---------------------------------------------
#if defined(__x86_64__)
GPT_AVX512_WARNINGS_OFF
#define GPT_VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

GPT_VNNI_TARGET inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Both kernels make the weights unsigned (Q8_0: w + 128; Q4_0: the stored nibble,
// w + 8) so VPDPBUSD (unsigned x signed bytes) can multiply them -- two Q8_0 or
// four Q4_0 blocks per 512-bit instruction -- and subtract offset * sum(x) per
// block at the end.
GPT_VNNI_TARGET inline __m512 pair_scales(float s0, float s1) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(s0)), _mm256_set1_ps(s1), 1);
}

GPT_VNNI_TARGET inline __attribute__((always_inline)) float dot_q8_0_vnni(const uint8_t* row, const ActRow& a, int64_t nb) {
  const auto* w = reinterpret_cast<const BlockQ8_0*>(row);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();  // two independent FMA chains
  float offset_sum = 0.0f, offset_sum2 = 0.0f;  // sum over blocks of d_w * d_x * sum(x)
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) {
    std::swap(acc, acc2);
    std::swap(offset_sum, offset_sum2);
    const __m512i wq = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b + 1].qs)), 1);
    const __m512i xq = _mm512_loadu_si512(a.qs + b * kQuantBlock);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(wq, flip), xq);
    const float d0 = _cvtsh_ss(w[b].d), d1 = _cvtsh_ss(w[b + 1].d);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), pair_scales(d0 * a.d[b], d1 * a.d[b + 1]), acc);
    offset_sum += d0 * a.dsum[b] + d1 * a.dsum[b + 1];
  }
  acc = _mm512_add_ps(acc, acc2);
  offset_sum += offset_sum2;
  float tail = 0.0f;
  if (b < nb) {  // an odd last block
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs + b * kQuantBlock));
    const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_xor_si256(wq, _mm256_set1_epi8(static_cast<char>(0x80))), xq);
    const float d0 = _cvtsh_ss(w[b].d);
    tail = hsum256(_mm256_cvtepi32_ps(dot)) * d0 * a.d[b];
    offset_sum += d0 * a.dsum[b];
  }
  return _mm512_reduce_add_ps(acc) + tail - 128.0f * offset_sum;
}

GPT_VNNI_TARGET inline __m256i q4_nibbles(const uint8_t* qs) {  // 32 unsigned values, low nibbles first
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// The Q4_0 kernel works on quads of blocks: a quad's 4 x 16 packed bytes fill
// one 512-bit vector, whose low nibbles are the first halves of the 4 blocks and
// whose high nibbles are the second halves. The input is reordered once per row
// to match, [x_b[0:16] .. x_b+3[0:16], x_b[16:32] .. x_b+3[16:32]], so a quad
// costs two VPDPBUSD into one accumulator with 4 lanes per block. Blocks past
// the last whole quad stay in natural order.
GPT_VNNI_TARGET void interleave_quads_for_q4(int8_t* qs, int64_t nb) {
  for (int64_t b = 0; b + 4 <= nb; b += 4) {
    int8_t* p = qs + b * kQuantBlock;
    const __m512i lo = _mm512_loadu_si512(p), hi = _mm512_loadu_si512(p + 64);
    // Halves in memory: b0a b0b b1a b1b | b2a b2b b3a b3b; wanted: all "a", then all "b".
    const __m512i idx_a = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), idx_b = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    _mm512_storeu_si512(p, _mm512_permutex2var_epi64(lo, idx_a, hi));
    _mm512_storeu_si512(p + 64, _mm512_permutex2var_epi64(lo, idx_b, hi));
  }
}

// One quad's share of a row: two VPDPBUSD (low, then high nibbles) into one
// accumulator, scaled per block (4 lanes each) and added to `acc`; `offsets`
// gathers d_w * d_x * sum(x) per block, which undoes the +8 of the nibbles.
struct Q4Quad {
  __m512i qs;  // 64 packed bytes: low nibbles = first halves of the 4 blocks
  __m128 d;    // the 4 blocks' scales
};

// (The quad's blocks start at block b of the input row.)
GPT_VNNI_TARGET inline __attribute__((always_inline)) void q4_quad_accumulate(const Q4Quad& quad, const ActRow& a,
                                                                               int64_t b, __m512& acc, __m128& offsets) {
  const int8_t* x = a.qs + b * kQuantBlock;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i block_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(quad.qs, low4), _mm512_loadu_si512(x));
  dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(_mm512_srli_epi16(quad.qs, 4), low4), _mm512_loadu_si512(x + 64));
  const __m512 scales = _mm512_castps128_ps512(_mm_mul_ps(quad.d, _mm_loadu_ps(a.d + b)));
  offsets = _mm_fmadd_ps(quad.d, _mm_loadu_ps(a.dsum + b), offsets);
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(block_of_lane, scales), acc);
}

// The blocks after the last whole quad (natural order), and the row's sum.
GPT_VNNI_TARGET inline __attribute__((always_inline)) float q4_finish(const BlockQ4_0* w, const ActRow& a, int64_t b,
                                                                      int64_t nb, __m512 acc, __m128 offsets) {
  __m256 tail = _mm256_setzero_ps();
  float tail_offsets = 0.0f;
  for (; b < nb; ++b) {
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs + b * kQuantBlock));
    const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q4_nibbles(w[b].qs), xq);
    const float d0 = _cvtsh_ss(w[b].d);
    tail = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d0 * a.d[b]), tail);
    tail_offsets += d0 * a.dsum[b];
  }
  __m128 o = _mm_add_ps(offsets, _mm_movehl_ps(offsets, offsets));
  o = _mm_add_ss(o, _mm_movehdup_ps(o));
  return _mm512_reduce_add_ps(acc) + hsum256(tail) - 8.0f * (_mm_cvtss_f32(o) + tail_offsets);
}

// Two kernels differ only in how a quad's 64 packed bytes (of its 72) and 4
// float16 scales are loaded. Without VBMI: four 16-byte loads inserted lane by
// lane. With AVX512_VBMI: one byte permute picks them out of two loads (the
// second masked to the quad's last 8 bytes, so the last quad of a matrix never
// reads past it). Kernels alone, 24 matrices 768x3072 (32 MB), 1 thread:
// 12.9 GB/s for the per-pair kernel these replaced, 17.1 without VBMI, 19.9
// with; quantized_linear with row ranges and vector input quantization, old and
// new binaries interleaved: 19-25 -> 37-43 GB/s on 2 threads.
GPT_VNNI_TARGET inline __attribute__((always_inline)) Q4Quad q4_quad_by_inserts(const BlockQ4_0* p) {
  const __m128 d = _mm_cvtph_ps(_mm_setr_epi16(static_cast<int16_t>(p[0].d), static_cast<int16_t>(p[1].d),
                                    static_cast<int16_t>(p[2].d), static_cast<int16_t>(p[3].d), 0, 0, 0, 0));
  __m512i q = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0].qs)));
  q = _mm512_inserti32x4(q, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1].qs)), 1);
  q = _mm512_inserti32x4(q, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[2].qs)), 2);
  return {_mm512_inserti32x4(q, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[3].qs)), 3), d};
}

GPT_VNNI_TARGET inline __attribute__((always_inline)) float dot_q4_0_vnni(const uint8_t* row, const ActRow& a, int64_t nb) {
  const auto* w = reinterpret_cast<const BlockQ4_0*>(row);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();  // two chains: a row is few quads
  __m128 offsets = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    q4_quad_accumulate(q4_quad_by_inserts(w + b), a, b, acc0, offsets);
    q4_quad_accumulate(q4_quad_by_inserts(w + b + 4), a, b + 4, acc1, offsets);
  }
  if (b + 4 <= nb) {
    q4_quad_accumulate(q4_quad_by_inserts(w + b), a, b, acc0, offsets);
    b += 4;
  }
  return q4_finish(w, a, b, nb, _mm512_add_ps(acc0, acc1), offsets);
}

// Byte j of a quad's packed bytes is byte 18 * (j / 16) + 2 + j % 16 of its 72;
// its scales are bytes 0-1, 18-19, 36-37, 54-55.
alignas(64) constexpr std::array<uint8_t, 64> kQ4QuadBytes = [] {
  std::array<uint8_t, 64> i{};
  for (int j = 0; j < 64; ++j) i[static_cast<size_t>(j)] = static_cast<uint8_t>(18 * (j / 16) + 2 + j % 16);
  return i;
}();

#define GPT_VBMI_TARGET \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")))

GPT_VBMI_TARGET inline __attribute__((always_inline)) Q4Quad q4_quad_by_permute(const BlockQ4_0* w, __m512i qs_index) {
  const __m512i d_index = _mm512_setr_epi64(0x3736'2524'1312'0100LL, 0, 0, 0, 0, 0, 0, 0);
  const auto* p = reinterpret_cast<const uint8_t*>(w);
  const __m512i lo = _mm512_loadu_si512(p), hi = _mm512_maskz_loadu_epi8(0xFF, p + 64);
  return {_mm512_permutex2var_epi8(lo, qs_index, hi),
          _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi8(lo, d_index, hi)))};
}

GPT_VBMI_TARGET inline __attribute__((always_inline)) float dot_q4_0_vbmi(const uint8_t* row, const ActRow& a, int64_t nb) {
  const __m512i qs_index = _mm512_load_si512(kQ4QuadBytes.data());
  const auto* w = reinterpret_cast<const BlockQ4_0*>(row);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m128 offsets = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    q4_quad_accumulate(q4_quad_by_permute(w + b, qs_index), a, b, acc0, offsets);
    q4_quad_accumulate(q4_quad_by_permute(w + b + 4, qs_index), a, b + 4, acc1, offsets);
  }
  if (b + 4 <= nb) {
    q4_quad_accumulate(q4_quad_by_permute(w + b, qs_index), a, b, acc0, offsets);
    b += 4;
  }
  return q4_finish(w, a, b, nb, _mm512_add_ps(acc0, acc1), offsets);
}

// The Q4_0 weights as signed values (nibble - 8), for dequantizing.
GPT_VNNI_TARGET inline __m256i unpack_q4(const uint8_t* qs) {
  return _mm256_sub_epi8(q4_nibbles(qs), _mm256_set1_epi8(8));
}

// 16-bit weights: widened to float 16 at a time and multiplied in float.
GPT_VNNI_TARGET inline __attribute__((always_inline)) float dot_f16_avx512(const uint8_t* row, const float* x, int64_t n) {
  const auto* w = reinterpret_cast<const uint16_t*>(row);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i))),
                           _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 16))),
                           _mm512_loadu_ps(x + i + 16), acc1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) s += _cvtsh_ss(w[i]) * x[i];
  return s;
}

GPT_VNNI_TARGET inline __m512 load_bf16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

GPT_VNNI_TARGET inline __attribute__((always_inline)) float dot_bf16_avx512(const uint8_t* row, const float* x, int64_t n) {
  const auto* w = reinterpret_cast<const uint16_t*>(row);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(load_bf16(w + i), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(load_bf16(w + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) s += bf16_to_float(w[i]) * x[i];
  return s;
}
GPT_VNNI_TARGET void rows_q8_0_vnni(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_q8_0_vnni(w + r * row_bytes, in.blocks, in.cols / kQuantBlock);
}
GPT_VNNI_TARGET void rows_q4_0_vnni(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_q4_0_vnni(w + r * row_bytes, in.blocks, in.cols / kQuantBlock);
}
GPT_VBMI_TARGET void rows_q4_0_vbmi(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_q4_0_vbmi(w + r * row_bytes, in.blocks, in.cols / kQuantBlock);
}
GPT_VNNI_TARGET void rows_f16_avx512(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_f16_avx512(w + r * row_bytes, in.x, in.cols);
}
GPT_VNNI_TARGET void rows_bf16_avx512(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = dot_bf16_avx512(w + r * row_bytes, in.x, in.cols);
}

// quantize_activations with vectors, bit for bit: the same amax, scale and
// round-to-nearest-even (VCVTPS2DQ under the default rounding mode, as
// nearbyint). Decode quantizes every product's input on one thread while the
// other waits, so the scalar loop's ~5 ns per value showed in the profile.
GPT_VNNI_TARGET void quantize_activations_avx512(const float* x, int8_t* qs, float* d_out, float* dsum_out, int64_t n) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, qs += kQuantBlock) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
    const float d = amax / 127.0f;
    const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16), _mm512_cvtepi32_epi8(q1));
    d_out[b] = d;
    dsum_out[b] = d * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
  }
}

// Whole rows to float, 16 at a time (the prefill path multiplies panels of them).
GPT_VNNI_TARGET void dequantize_row_avx512(GgmlType type, const uint8_t* in, float* x, int64_t n) {
  switch (type) {
    case GgmlType::kF16: {
      const auto* w = reinterpret_cast<const uint16_t*>(in);
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i))));
      }
      for (; i < n; ++i) x[i] = _cvtsh_ss(w[i]);
      return;
    }
    case GgmlType::kBF16: {
      const auto* w = reinterpret_cast<const uint16_t*>(in);
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, load_bf16(w + i));
      for (; i < n; ++i) x[i] = bf16_to_float(w[i]);
      return;
    }
    case GgmlType::kQ8_0: {
      const auto* w = reinterpret_cast<const BlockQ8_0*>(in);
      for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(w[b].d));
        const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
        const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs + 16));
        _mm512_storeu_ps(x, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0))));
        _mm512_storeu_ps(x + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1))));
      }
      return;
    }
    case GgmlType::kQ4_0: {
      const auto* w = reinterpret_cast<const BlockQ4_0*>(in);
      for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(w[b].d));
        const __m256i q = unpack_q4(w[b].qs);  // 32 signed values, low nibbles first
        _mm512_storeu_ps(x, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)))));
        _mm512_storeu_ps(x + 16,
                         _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)))));
      }
      return;
    }
    case GgmlType::kF32:
      std::memcpy(x, in, sizeof(float) * static_cast<size_t>(n));
      return;
  }
}
GPT_AVX512_WARNINGS_ON
#endif

}  // namespace

const char* ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kBF16: return "BF16";
  }
  return "?";
}

GgmlType parse_ggml_type(const std::string& name) {
  std::string s = name;
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "f32") return GgmlType::kF32;
  if (s == "f16") return GgmlType::kF16;
  if (s == "bf16") return GgmlType::kBF16;
  if (s == "q8_0") return GgmlType::kQ8_0;
  if (s == "q4_0") return GgmlType::kQ4_0;
  throw Error("unknown weight type '" + name + "' (expected f32, f16, bf16, q8_0 or q4_0)");
}

int64_t ggml_block_size(GgmlType type) {
  return (type == GgmlType::kQ4_0 || type == GgmlType::kQ8_0) ? kQuantBlock : 1;
}

int64_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return sizeof(BlockQ4_0);
    case GgmlType::kQ8_0: return sizeof(BlockQ8_0);
  }
  return 0;
}

size_t ggml_row_bytes(GgmlType type, int64_t n) {
  check(n % ggml_block_size(type) == 0, std::string("a row of ") + ggml_type_name(type) + " must be a multiple of " +
                                            std::to_string(ggml_block_size(type)) + " weights, got " +
                                            std::to_string(n));
  return static_cast<size_t>(n / ggml_block_size(type) * ggml_block_bytes(type));
}

void quantize_row(GgmlType type, const float* x, void* out, int64_t n) {
  check(n % ggml_block_size(type) == 0, "quantize_row: length is not a whole number of blocks");
  switch (type) {
    case GgmlType::kF32: std::memcpy(out, x, sizeof(float) * static_cast<size_t>(n)); return;
    case GgmlType::kF16: {
      auto* y = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) y[i] = float_to_half(x[i]);
      return;
    }
    case GgmlType::kBF16: {
      auto* y = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
      return;
    }
    case GgmlType::kQ8_0: quantize_q8_0(x, static_cast<BlockQ8_0*>(out), n); return;
    case GgmlType::kQ4_0: quantize_q4_0(x, static_cast<BlockQ4_0*>(out), n); return;
  }
}

void dequantize_row(GgmlType type, const void* in, float* x, int64_t n) {
  check(n % ggml_block_size(type) == 0, "dequantize_row: length is not a whole number of blocks");
  switch (type) {
    case GgmlType::kF32: std::memcpy(x, in, sizeof(float) * static_cast<size_t>(n)); return;
    case GgmlType::kF16: {
      const auto* w = static_cast<const uint16_t*>(in);
      for (int64_t i = 0; i < n; ++i) x[i] = half_to_float(w[i]);
      return;
    }
    case GgmlType::kBF16: {
      const auto* w = static_cast<const uint16_t*>(in);
      for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_float(w[i]);
      return;
    }
    case GgmlType::kQ8_0: {
      const auto* w = static_cast<const BlockQ8_0*>(in);
      for (int64_t b = 0; b < n / kQuantBlock; ++b) {
        const float d = half_to_float(w[b].d);
        for (int64_t j = 0; j < kQuantBlock; ++j) x[b * kQuantBlock + j] = d * w[b].qs[j];
      }
      return;
    }
    case GgmlType::kQ4_0: {
      const auto* w = static_cast<const BlockQ4_0*>(in);
      for (int64_t b = 0; b < n / kQuantBlock; ++b) {
        const float d = half_to_float(w[b].d);
        for (int64_t j = 0; j < kQuantBlock / 2; ++j) {
          x[b * kQuantBlock + j] = d * static_cast<float>((w[b].qs[j] & 0x0F) - 8);
          x[b * kQuantBlock + j + kQuantBlock / 2] = d * static_cast<float>((w[b].qs[j] >> 4) - 8);
        }
      }
      return;
    }
  }
}

const uint8_t* QuantizedMatrix::row(int64_t r) const { return data + static_cast<size_t>(r) * ggml_row_bytes(type, cols); }

QuantizedStorage QuantizedStorage::quantize(GgmlType type, const float* x, int64_t rows, int64_t cols,
                                            bool transposed) {
  QuantizedStorage s;
  const size_t rb = ggml_row_bytes(type, cols);
  s.bytes.resize(rb * static_cast<size_t>(rows));
#pragma omp parallel
  {
    std::vector<float> tmp(transposed ? static_cast<size_t>(cols) : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = x + r * cols;
      if (transposed) {
        for (int64_t c = 0; c < cols; ++c) tmp[static_cast<size_t>(c)] = x[c * rows + r];
        src = tmp.data();
      }
      quantize_row(type, src, s.bytes.data() + rb * static_cast<size_t>(r), cols);
    }
  }
  s.matrix = {type, rows, cols, s.bytes.data()};
  return s;
}

QuantizedStorage QuantizedStorage::wrap(GgmlType type, std::vector<uint8_t> bytes, int64_t rows, int64_t cols) {
  check(bytes.size() == ggml_row_bytes(type, cols) * static_cast<size_t>(rows), "quantized matrix has the wrong size");
  QuantizedStorage s;
  s.bytes = std::move(bytes);
  s.matrix = {type, rows, cols, s.bytes.data()};
  return s;
}

QuantKernels quant_kernels() {
  QuantKernels best = QuantKernels::kPortable;
  if (cpu_has_vnni() && !portable_kernels_forced()) best = cpu_has_vbmi() ? QuantKernels::kVnniVbmi : QuantKernels::kVnni;
  return std::min(best, g_kernel_cap.load());
}
void cap_quant_kernels(QuantKernels max) { g_kernel_cap.store(max); }

void quantized_linear(float* out, const float* in, const QuantizedMatrix& w, const float* bias, int64_t N,
                      QuantScratch& scratch, const float* residual) {
  const int64_t C = w.cols, OC = w.rows;
  check(w.type != GgmlType::kF32, "quantized_linear: F32 weights go through gemm");
  const bool blocks = w.type == GgmlType::kQ8_0 || w.type == GgmlType::kQ4_0;
  const QuantKernels kernels = quant_kernels();
  const bool vnni = kernels != QuantKernels::kPortable;
  const int64_t nb = C / kQuantBlock;
  int8_t* act_qs = nullptr;
  float *act_d = nullptr, *act_dsum = nullptr;
  if (blocks && N < kPanelMinRows) {
    check(C % kQuantBlock == 0, "quantized_linear: input width is not a whole number of blocks");
    // Layout: N*C int8 values, then N*nb scales and N*nb scaled sums (floats).
    const size_t values = static_cast<size_t>(N * C), need = values + 2 * sizeof(float) * static_cast<size_t>(N * nb);
    if (scratch.blocks.size() < need) scratch.blocks.resize(need);
    act_qs = reinterpret_cast<int8_t*>(scratch.blocks.data());
    act_d = reinterpret_cast<float*>(scratch.blocks.data() + values);  // values is a multiple of 32
    act_dsum = act_d + N * nb;
#pragma omp parallel for schedule(static) if (N > 1)
    for (int64_t n = 0; n < N; ++n) {
#if defined(__x86_64__)
      if (vnni) {
        quantize_activations_avx512(in + n * C, act_qs + n * C, act_d + n * nb, act_dsum + n * nb, C);
        if (w.type == GgmlType::kQ4_0) interleave_quads_for_q4(act_qs + n * C, nb);
        continue;
      }
#endif
      quantize_activations(in + n * C, act_qs + n * C, act_d + n * nb, act_dsum + n * nb, C);
    }
  }
  RowsDot rows_dot = w.type == GgmlType::kQ8_0   ? rows_q8_0_portable
                     : w.type == GgmlType::kQ4_0 ? rows_q4_0_portable
                     : w.type == GgmlType::kF16  ? rows_wide_portable<GgmlType::kF16>
                                                 : rows_wide_portable<GgmlType::kBF16>;
#if defined(__x86_64__)
  if (vnni) {
    if (w.type == GgmlType::kQ8_0) rows_dot = rows_q8_0_vnni;
    if (w.type == GgmlType::kQ4_0) rows_dot = kernels == QuantKernels::kVnniVbmi ? rows_q4_0_vbmi : rows_q4_0_vnni;
    if (w.type == GgmlType::kF16) rows_dot = rows_f16_avx512;
    if (w.type == GgmlType::kBF16) rows_dot = rows_bf16_avx512;
  }
#endif
  const size_t rb = ggml_row_bytes(w.type, C);
  if (N >= kPanelMinRows) {
    // Many inputs (a prompt): widen panels of W to float and let oneDNN's GEMM
    // multiply them; the widening is paid once per weight for all N inputs.
    if (residual != nullptr && residual != out) std::memcpy(out, residual, sizeof(float) * static_cast<size_t>(N * OC));
    const int64_t P = std::min<int64_t>(OC, kPanelRows);
    if (scratch.panel.size() < static_cast<size_t>(P * C)) scratch.panel.resize(static_cast<size_t>(P * C));
    for (int64_t r0 = 0; r0 < OC; r0 += P) {
      const int64_t rows = std::min(P, OC - r0);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* src = w.data + rb * static_cast<size_t>(r0 + r);
        float* dst = scratch.panel.data() + r * C;
#if defined(__x86_64__)
        if (vnni) {
          dequantize_row_avx512(w.type, src, dst, C);
          continue;
        }
#endif
        dequantize_row(w.type, src, dst, C);
      }
      gemm(false, true, N, rows, C, 1.0f, in, C, scratch.panel.data(), C, residual != nullptr ? 1.0f : 0.0f, out + r0, OC);
    }
    if (bias != nullptr) {
#pragma omp parallel for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t r = 0; r < OC; ++r) out[n * OC + r] += bias[r];
      }
    }
    return;
  }
  // Each thread takes a contiguous share of W's rows, in chunks small enough to
  // stay in L1 while all N inputs use them: W is read from memory once.
  constexpr int64_t kChunkRows = 16;
#pragma omp parallel
  {
    int64_t begin = 0, end = 0;
    this_thread_share(OC, begin, end);
    for (int64_t r0 = begin; r0 < end; r0 += kChunkRows) {
      const int64_t rows = std::min(kChunkRows, end - r0);
      for (int64_t n = 0; n < N; ++n) {
        // Float weights (F16/BF16) read only x: no quantized input exists to offset into.
        const ActRow act = act_qs != nullptr ? ActRow{act_qs + n * C, act_d + n * nb, act_dsum + n * nb} : ActRow{};
        const InputRow row{act, in + n * C, C};
        float* o = out + n * OC + r0;
        const float* res = residual != nullptr ? residual + n * OC + r0 : nullptr;
        float sums[kChunkRows];
        rows_dot(w.data + rb * static_cast<size_t>(r0), rb, rows, row, sums);
        for (int64_t r = 0; r < rows; ++r) {
          o[r] = sums[r] + (bias != nullptr ? bias[r0 + r] : 0.0f) + (res != nullptr ? res[r] : 0.0f);
        }
      }
    }
  }
}

}  // namespace gpt
