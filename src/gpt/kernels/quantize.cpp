#include "gpt/kernels/quantize.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/neon.h"
#include "gpt/kernels/matmul.h"
#include "gpt/util/error.h"
#include "gpt/util/half.h"
#include "gpt/kernels/kquants.h"

namespace gpt {

namespace {

// An input row quantized for the integer dot products, like Q8_0 but with float
// scales (the input is not stored, so there is no reason to round them): the int8
// values contiguous (a 4-byte word of them is broadcast per VPDPBUSD), and per block the
// scale d and d * (sum of its values), which undoes the offset the fast kernels
// give the weights to make them unsigned.
struct ActRow {
  const int8_t* qs;
  const float* d;
  const float* dsum;
};

std::atomic<QuantKernels> g_kernel_cap{QuantKernels::kVnni};

// From this many input rows on, F16 and BF16 products (and Q8_0 / Q4_0 ones on
// CPUs without AVX-512 VNNI) widen W to float panels for GEMM (quantize.h).
constexpr int64_t kPanelMinRows = kQuantPanelMinRows;
constexpr int64_t kPanelRows = 512;

// The row-interleaved layout of Q8_0 and Q4_0 matrices (quantize.h): groups of
// 16 rows; per block, the 16 float16 scales, then 4-byte words of the 16 rows.
constexpr int64_t kGroupRows = 16;
constexpr int64_t kGroupScaleBytes = kGroupRows * 2;
constexpr int64_t kWordBytes = 4;
static_assert(kPanelRows % kGroupRows == 0, "prompt panels hold whole groups");

// The K types' groups (x86-64) are laid out by kquants.cpp (kquants.h): 16 rows too.
static_assert(kKGroupRows == kGroupRows, "one group size for every row-interleaved type");
bool row_interleaved(GgmlType type) {
  return type == GgmlType::kQ8_0 || type == GgmlType::kQ4_0 || k_row_interleaved(static_cast<uint32_t>(type));
}
int64_t whole_groups(const QuantizedMatrix& m) { return row_interleaved(m.type) ? m.rows / kGroupRows : 0; }
// Bytes of quantized weights in a block, and what is added to each stored byte.
int64_t block_weight_bytes(GgmlType type) { return type == GgmlType::kQ8_0 ? kQuantBlock : kQuantBlock / 2; }
uint8_t stored_offset(GgmlType type) { return type == GgmlType::kQ8_0 ? 0x80 : 0; }

// 16 rows in llama.cpp's layout (`row_bytes` apart) -> one interleaved group.
void interleave_group(GgmlType type, const uint8_t* rows, size_t row_bytes, int64_t nb, uint8_t* group) {
  if (k_row_interleaved(static_cast<uint32_t>(type)))
    return interleave_k_group(static_cast<uint32_t>(type), rows, row_bytes, nb * kQuantBlock / kSuperBlock, group);
  const auto bb = static_cast<size_t>(ggml_block_bytes(type));
  const int64_t words = block_weight_bytes(type) / kWordBytes;
  const uint8_t flip = stored_offset(type);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* g = group + static_cast<size_t>(b) * kGroupRows * bb;
    for (int64_t r = 0; r < kGroupRows; ++r) {
      const uint8_t* block = rows + static_cast<size_t>(r) * row_bytes + static_cast<size_t>(b) * bb;
      std::memcpy(g + 2 * r, block, 2);  // the scale
      for (int64_t j = 0; j < words; ++j) {
        for (int64_t i = 0; i < kWordBytes; ++i) {
          g[kGroupScaleBytes + (j * kGroupRows + r) * kWordBytes + i] = block[2 + j * kWordBytes + i] ^ flip;
        }
      }
    }
  }
}

// Row r (0-15) of an interleaved group, back in llama.cpp's layout.
void deinterleave_row(GgmlType type, const uint8_t* group, int64_t nb, int64_t r, uint8_t* row) {
  if (k_row_interleaved(static_cast<uint32_t>(type)))
    return deinterleave_k_row(static_cast<uint32_t>(type), group, nb * kQuantBlock / kSuperBlock, r, row);
  const auto bb = static_cast<size_t>(ggml_block_bytes(type));
  const int64_t words = block_weight_bytes(type) / kWordBytes;
  const uint32_t flip_word = stored_offset(type) * 0x01010101u;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* g = group + static_cast<size_t>(b) * kGroupRows * bb;
    uint8_t* block = row + static_cast<size_t>(b) * bb;
    std::memcpy(block, g + 2 * r, 2);
    for (int64_t j = 0; j < words; ++j) {  // whole words: this runs for every weight a prompt widens
      uint32_t word;
      std::memcpy(&word, g + kGroupScaleBytes + (j * kGroupRows + r) * kWordBytes, sizeof word);
      word ^= flip_word;
      std::memcpy(block + 2 + j * kWordBytes, &word, sizeof word);
    }
  }
}

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

// ARMv8.2's dot-product instructions (SDOT), optional before ARMv8.4: Cortex-A55,
// -A76 and later, Neoverse, Apple M1 have them; Cortex-A53/A72 (Raspberry Pi 3
// and 4) do not.
#if defined(__aarch64__)
bool cpu_has_neon_dot() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
}
#endif

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

// An interleaved group of 16 rows against one input row (out: 16 sums).
uint16_t group_scale(const uint8_t* g, int64_t r) {
  uint16_t d;
  std::memcpy(&d, g + 2 * r, sizeof d);
  return d;
}

// Q8_0 words hold 4 weights (stored +128); Q4_0 words hold weights 4j..4j+3 in
// their low nibbles and 16+4j..16+4j+3 in their high ones (stored +8).
template <GgmlType kType>
void group_portable(const uint8_t* g, int64_t nb, const ActRow& a, float* out) {
  constexpr bool kQ8 = kType == GgmlType::kQ8_0;
  constexpr size_t kGroupBlockBytes = kGroupRows * (kQ8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0));
  constexpr int64_t kWords = (kQ8 ? kQuantBlock : kQuantBlock / 2) / kWordBytes;  // per row and block
  for (int64_t r = 0; r < kGroupRows; ++r) out[r] = 0.0f;
  for (int64_t b = 0; b < nb; ++b, g += kGroupBlockBytes) {
    const int8_t* x = a.qs + b * kQuantBlock;
    for (int64_t r = 0; r < kGroupRows; ++r) {
      int32_t s = 0;
      for (int64_t j = 0; j < kWords; ++j) {
        const uint8_t* word = g + kGroupScaleBytes + (j * kGroupRows + r) * kWordBytes;
        for (int64_t i = 0; i < kWordBytes; ++i) {
          const int64_t k = j * kWordBytes + i;
          if constexpr (kQ8) {
            s += (static_cast<int32_t>(word[i]) - 128) * x[k];
          } else {
            s += ((word[i] & 0x0F) - 8) * x[k] + ((word[i] >> 4) - 8) * x[k + kQuantBlock / 2];
          }
        }
      }
      out[r] += half_to_float(group_scale(g, r)) * a.d[b] * static_cast<float>(s);
    }
  }
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
// out[0..15] = the 16 rows of an interleaved group . input.
using GroupDot = void (*)(const uint8_t* group, int64_t nb, const ActRow& a, float* out);

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

// Decode reads each weight once, in one stream per thread, and the hardware
// prefetchers alone keep too few lines in flight. Measured on GPT-2 124M, 2
// threads, Intel Xeon VM, decode tok/s without -> with, both in one process
// (16-token prompt, best of 4 interleaved rounds): Q8_0 225-247 -> 303-314 and
// Q4_0 466 -> 578 prefetching each block's lines 8 KB ahead (2-24 KB tried); F16
// and BF16 74 -> 106-113, each line 8 KB ahead into L2 (see dot_wide_avx512).
// Prefetches never fault, so reading past a matrix's end is harmless.
constexpr size_t kPrefetchAhead = 8192;
// (Addresses as integers: a pointer past the end of an array would be undefined.)
GPT_VNNI_TARGET inline void prefetch_lines(const uint8_t* base, size_t ahead, size_t bytes) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(base) + ahead;
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

// A group of 16 interleaved rows against one input row (see quantize.h): per
// block, each VPDPBUSD multiplies one 4-byte word of all 16 rows (unsigned: Q8_0
// stored +128, Q4_0 nibbles +8) by the same broadcast word of the input, into 16
// int32 lanes = 16 rows; the block's 16 scales load as one vector. The offset is
// taken off once at the end: sum over blocks of d_w * d_x * sum(x) per row. Two
// dot chains per block, and blocks are independent, so latency stays hidden.
// Against the per-row kernels these replaced (two blocks per instruction, scales
// and offsets per row in scalar registers): hot in L2, one thread, 12-17 -> 40-66
// GB/s for Q8_0.
GPT_VNNI_TARGET inline __m512i broadcast_word(const int8_t* x, int j) {  // input bytes 4j..4j+3
  int32_t v;
  std::memcpy(&v, x + kWordBytes * j, sizeof v);
  return _mm512_set1_epi32(v);
}

// Q4_0: word j of a row holds weights 4j..4j+3 in its low nibbles and
// 16+4j..16+4j+3 in its high nibbles (llama.cpp's byte order, kept).

// The group kernel, for NR input rows at once: each block's 16 scales and 8
// weight vectors are loaded once for all NR rows (one row per call reloaded them
// from L1: the loads, not the VPDPBUSDs, bounded a decoding batch). A row's
// arithmetic does not depend on NR: the same sums, bit for bit, with 1 or 4.
template <GgmlType kType, int NR>
GPT_VNNI_TARGET void group_vnni_rows(const uint8_t* g, int64_t nb, const ActRow* a, float* out) {
  constexpr size_t kGroupBlockBytes = kGroupRows * (kType == GgmlType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0));
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 acc[NR], offsets[NR];
  for (int r = 0; r < NR; ++r) acc[r] = offsets[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, g += kGroupBlockBytes) {
    prefetch_lines(g, kPrefetchAhead, kGroupBlockBytes);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)));
    const uint8_t* q = g + kGroupScaleBytes;
    __m512i w[8];  // w[j] multiplies input word j
    for (int j = 0; j < 4; ++j) {
      if constexpr (kType == GgmlType::kQ8_0) {
        w[j] = _mm512_loadu_si512(q + 64 * j);
        w[j + 4] = _mm512_loadu_si512(q + 64 * (j + 4));
      } else {
        const __m512i v = _mm512_loadu_si512(q + 64 * j);
        w[j] = _mm512_and_si512(v, low4);
        w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      }
    }
    for (int r = 0; r < NR; ++r) {
      const int8_t* x = a[r].qs + b * kQuantBlock;
      __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
      for (int j = 0; j < 4; ++j) {
        d0 = _mm512_dpbusd_epi32(d0, w[j], broadcast_word(x, j));
        d1 = _mm512_dpbusd_epi32(d1, w[j + 4], broadcast_word(x, j + 4));
      }
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1)), _mm512_mul_ps(dw, _mm512_set1_ps(a[r].d[b])), acc[r]);
      offsets[r] = _mm512_fmadd_ps(dw, _mm512_set1_ps(a[r].dsum[b]), offsets[r]);
    }
  }
  const float offset = kType == GgmlType::kQ8_0 ? 128.0f : 8.0f;  // what the stored weights carry
  for (int r = 0; r < NR; ++r) _mm512_storeu_ps(out + 16 * r, _mm512_fnmadd_ps(_mm512_set1_ps(offset), offsets[r], acc[r]));
}

template <GgmlType kType>
GPT_VNNI_TARGET void group_vnni_one(const uint8_t* g, int64_t nb, const ActRow& a, float* out) {
  group_vnni_rows<kType, 1>(g, nb, &a, out);
}

GPT_VNNI_TARGET inline __m256i q4_nibbles(const uint8_t* qs) {  // 32 unsigned values, low nibbles first
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// The Q4_0 weights as signed values (nibble - 8), for dequantizing.
GPT_VNNI_TARGET inline __m256i unpack_q4(const uint8_t* qs) {
  return _mm256_sub_epi8(q4_nibbles(qs), _mm256_set1_epi8(8));
}

// 16-bit weights: widened to float 16 at a time and multiplied in float. Each
// 64-byte line is prefetched kWidePrefetchAhead ahead into L2 (T2 hint) as it
// is read. Against prefetching the whole row two rows ahead into L1 (T0), which
// the profile showed stalling on the prefetches themselves (L1 fill buffers
// full), on GPT-2 124M, 2 threads, best of 4 interleaved rounds: F16 and BF16
// 94-95 -> 110 tok/s (4-32 KB ahead all within noise of each other; T0 and T1
// hints in the same loop 102-107). The quantized group kernels above stay with
// T0: T2 there lost 5-9%.
constexpr size_t kWidePrefetchAhead = 8192;

template <GgmlType kType>
GPT_VNNI_TARGET inline __m512 load_wide(const uint16_t* p) {  // 16 weights as floats
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (kType == GgmlType::kF16) return _mm512_cvtph_ps(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

template <GgmlType kType>
GPT_VNNI_TARGET inline float dot_wide_avx512(const uint8_t* row, const float* x, int64_t n) {
  const auto* w = reinterpret_cast<const uint16_t*>(row);
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(row) + kWidePrefetchAhead;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {  // one line per iteration
    _mm_prefetch(reinterpret_cast<const char*>(ahead + sizeof(uint16_t) * static_cast<uintptr_t>(i)), _MM_HINT_T2);
    acc0 = _mm512_fmadd_ps(load_wide<kType>(w + i), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(load_wide<kType>(w + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) s += (kType == GgmlType::kF16 ? _cvtsh_ss(w[i]) : bf16_to_float(w[i])) * x[i];
  return s;
}

template <GgmlType kType>
GPT_VNNI_TARGET void rows_wide_avx512(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = dot_wide_avx512<kType>(w + r * row_bytes, in.x, in.cols);
  }
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

// The 16 rows of an interleaved group widened to floats (`ld` floats apart), for
// the prefill panels: each row's words of a block are gathered back into natural
// order (8 for Q8_0, 4 for Q4_0, 64 bytes apart).
GPT_VNNI_TARGET void widen_group_avx512(GgmlType type, const uint8_t* g, int64_t nb, float* out, int64_t ld) {
  const bool q8 = type == GgmlType::kQ8_0;
  const size_t group_block = kGroupRows * static_cast<size_t>(ggml_block_bytes(type));
  const __m256i words8 = _mm256_setr_epi32(0, 64, 128, 192, 256, 320, 384, 448);
  const __m128i words4 = _mm_setr_epi32(0, 64, 128, 192);
  for (int64_t b = 0; b < nb; ++b, g += group_block) {
    for (int64_t r = 0; r < kGroupRows; ++r) {
      const auto* first = reinterpret_cast<const int*>(g + kGroupScaleBytes + kWordBytes * r);
      __m256i v;  // the block's 32 weights, signed, in order
      if (q8) {
        v = _mm256_xor_si256(_mm256_i32gather_epi32(first, words8, 1), _mm256_set1_epi8(static_cast<char>(0x80)));
      } else {
        const __m128i packed = _mm_i32gather_epi32(first, words4, 1);
        const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
        v = _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
      }
      const __m512 d = _mm512_set1_ps(_cvtsh_ss(group_scale(g, r)));
      float* o = out + r * ld + b * kQuantBlock;
      _mm512_storeu_ps(o, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(v)))));
      _mm512_storeu_ps(o + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(v, 1)))));
    }
  }
}

// Whole rows to float, 16 at a time (the prefill path multiplies panels of them).
GPT_VNNI_TARGET void dequantize_row_avx512(GgmlType type, const uint8_t* in, float* x, int64_t n) {
  switch (type) {
    case GgmlType::kF16: {
      const auto* w = reinterpret_cast<const uint16_t*>(in);
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, load_wide<GgmlType::kF16>(w + i));
      for (; i < n; ++i) x[i] = _cvtsh_ss(w[i]);
      return;
    }
    case GgmlType::kBF16: {
      const auto* w = reinterpret_cast<const uint16_t*>(in);
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, load_wide<GgmlType::kBF16>(w + i));
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
    default:  // the K and legacy types
      dequantize_row_extra(static_cast<uint32_t>(type), in, x, n);
      return;
  }
}
GPT_AVX512_WARNINGS_ON
#endif


// ---- NEON dot products (AArch64) -------------------------------------------
#if defined(__aarch64__)
// The group kernel for Q8_0 / Q4_0 (quantize_neon_group.inc), compiled twice:
// for plain ARMv8 NEON, and for CPUs with the dot-product extension (SDOT),
// whose every function carries the extension as its target (an attribute, not
// a pragma: GCC instantiates templates outside a pragma's region), so neither
// copy's code can leak into the other.
#define GPT_NEON_TARGET
namespace neon_plain {
constexpr bool kDot = false;
#include "gpt/kernels/quantize_neon_group.inc"
}  // namespace neon_plain
#undef GPT_NEON_TARGET
#define GPT_NEON_TARGET GPT_NEON_DOT_TARGET
namespace neon_dot {
constexpr bool kDot = true;
#include "gpt/kernels/quantize_neon_group.inc"
}  // namespace neon_dot
#undef GPT_NEON_TARGET

// 16-bit weights, widened 8 at a time (FCVTL for F16, a shift for BF16: both
// plain ARMv8) and multiplied in float with four accumulators.
template <GgmlType kType>
inline float32x4_t neon_low(uint16x8_t v) {
  if constexpr (kType == GgmlType::kF16) return vcvt_f32_f16(vget_low_f16(vreinterpretq_f16_u16(v)));
  return vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
}
template <GgmlType kType>
inline float32x4_t neon_high(uint16x8_t v) {
  if constexpr (kType == GgmlType::kF16) return vcvt_high_f32_f16(vreinterpretq_f16_u16(v));
  return vreinterpretq_f32_u32(vshll_high_n_u16(v, 16));
}

template <GgmlType kType>
void rows_wide_neon(const uint8_t* w, size_t row_bytes, int64_t rows, const InputRow& in, float* out) {
  const float* x = in.x;
  const int64_t n = in.cols;
  for (int64_t r = 0; r < rows; ++r) {
    const auto* p = reinterpret_cast<const uint16_t*>(w + r * row_bytes);
    __builtin_prefetch(w + (r + 2) * row_bytes);
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const uint16x8_t v0 = vld1q_u16(p + i), v1 = vld1q_u16(p + i + 8);
      a0 = vfmaq_f32(a0, neon_low<kType>(v0), vld1q_f32(x + i));
      a1 = vfmaq_f32(a1, neon_high<kType>(v0), vld1q_f32(x + i + 4));
      a2 = vfmaq_f32(a2, neon_low<kType>(v1), vld1q_f32(x + i + 8));
      a3 = vfmaq_f32(a3, neon_high<kType>(v1), vld1q_f32(x + i + 12));
    }
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; ++i) s += (kType == GgmlType::kF16 ? half_to_float(p[i]) : bf16_to_float(p[i])) * x[i];
    out[r] = s;
  }
}
#endif  // __aarch64__

}  // namespace

const char* ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ2_K: return "Q2_K";
    case GgmlType::kQ3_K: return "Q3_K";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kBF16: return "BF16";
  }
  return "?";
}

bool is_known_ggml_type(uint32_t type) {
  const char* name = ggml_type_name(static_cast<GgmlType>(type));
  return name[0] != '?';
}

GgmlType parse_ggml_type(const std::string& name) {
  std::string s = name;
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (uint32_t t = 0; t <= static_cast<uint32_t>(GgmlType::kBF16); ++t) {
    if (!is_known_ggml_type(t)) continue;
    std::string known = ggml_type_name(static_cast<GgmlType>(t));
    for (char& c : known) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == known) return static_cast<GgmlType>(t);
  }
  throw Error("unknown weight type '" + name + "' (expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, "
              "q4_k, q5_k or q6_k)");
}

int64_t ggml_block_size(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16: return 1;
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: return kSuperBlock;
    default: return kQuantBlock;
  }
}

int64_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return sizeof(BlockQ4_0);
    case GgmlType::kQ4_1: return sizeof(BlockQ4_1);
    case GgmlType::kQ5_0: return sizeof(BlockQ5_0);
    case GgmlType::kQ5_1: return sizeof(BlockQ5_1);
    case GgmlType::kQ8_0: return sizeof(BlockQ8_0);
    case GgmlType::kQ2_K: return sizeof(BlockQ2_K);
    case GgmlType::kQ3_K: return sizeof(BlockQ3_K);
    case GgmlType::kQ4_K: return sizeof(BlockQ4_K);
    case GgmlType::kQ5_K: return sizeof(BlockQ5_K);
    case GgmlType::kQ6_K: return sizeof(BlockQ6_K);
  }
  return 0;
}

size_t ggml_row_bytes(GgmlType type, int64_t n) {
  GPT_CHECK(n % ggml_block_size(type) == 0, std::string("a row of ") + ggml_type_name(type) + " must be a multiple of " +
                                            std::to_string(ggml_block_size(type)) + " weights, got " +
                                            std::to_string(n));
  return static_cast<size_t>(n / ggml_block_size(type) * ggml_block_bytes(type));
}

int64_t first_invalid_block(GgmlType type, const uint8_t* data, size_t bytes) {
  // Offsets of each block's float16 fields, from the layouts.
  int at[2] = {-1, -1};
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ8_0:
    case GgmlType::kQ5_0: at[0] = 0; break;
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: at[0] = 0; at[1] = 2; break;
    case GgmlType::kQ2_K: at[0] = 80; at[1] = 82; break;
    case GgmlType::kQ3_K: at[0] = 108; break;
    case GgmlType::kQ6_K: at[0] = 208; break;
    default: return -1;
  }
  const auto bb = static_cast<size_t>(ggml_block_bytes(type));
  for (size_t b = 0; b + bb <= bytes; b += bb) {
    for (int o : at) {
      if (o < 0) continue;
      const auto h = static_cast<uint16_t>(data[b + static_cast<size_t>(o)] | (data[b + static_cast<size_t>(o) + 1] << 8));
      if ((h & 0x7C00) == 0x7C00) return static_cast<int64_t>(b / bb);  // infinity or NaN
    }
  }
  return -1;
}

void quantize_row(GgmlType type, const float* x, void* out, int64_t n) {
  GPT_CHECK(n % ggml_block_size(type) == 0, "quantize_row: length is not a whole number of blocks");
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
    default: quantize_row_extra(static_cast<uint32_t>(type), x, out, n); return;
  }
}

void dequantize_row(GgmlType type, const void* in, float* x, int64_t n) {
  GPT_CHECK(n % ggml_block_size(type) == 0, "dequantize_row: length is not a whole number of blocks");
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
    default: dequantize_row_extra(static_cast<uint32_t>(type), in, x, n); return;
  }
}

namespace {

// Row r in llama.cpp's layout: where it lies, or copied out of its group into `buffer`.
const uint8_t* block_row_at(const QuantizedMatrix& m, int64_t r, std::vector<uint8_t>& buffer) {
  const size_t rb = ggml_row_bytes(m.type, m.cols);
  if (r >= whole_groups(m) * kGroupRows) return m.data + rb * static_cast<size_t>(r);
  buffer.resize(rb);
  deinterleave_row(m.type, m.data + rb * static_cast<size_t>(r / kGroupRows * kGroupRows), m.cols / kQuantBlock,
                   r % kGroupRows, buffer.data());
  return buffer.data();
}

void widen_row(const QuantizedMatrix& m, int64_t r, float* out, bool vnni) {
  thread_local std::vector<uint8_t> buffer;
  const uint8_t* row = block_row_at(m, r, buffer);
#if defined(__x86_64__)
  if (vnni) return dequantize_row_avx512(m.type, row, out, m.cols);
#else
  (void)vnni;
#endif
  dequantize_row(m.type, row, out, m.cols);
}

}  // namespace

void QuantizedMatrix::block_row(int64_t r, uint8_t* out) const {
  std::vector<uint8_t> buffer;
  std::memcpy(out, block_row_at(*this, r, buffer), ggml_row_bytes(type, cols));
}

void QuantizedMatrix::float_row(int64_t r, float* out) const {
  widen_row(*this, r, out, quant_kernels() == QuantKernels::kVnni);
}

QuantizedStorage QuantizedStorage::quantize(GgmlType type, const float* x, int64_t rows, int64_t cols,
                                            bool transposed) {
  QuantizedStorage s;
  const size_t rb = ggml_row_bytes(type, cols);
  s.bytes.resize(rb * static_cast<size_t>(rows));
  s.matrix = {type, rows, cols, s.bytes.data()};
  const int64_t groups = whole_groups(s.matrix);
  // Units of work: the whole groups (quantized into a buffer, then interleaved),
  // then the rows after them one by one.
  const int64_t units = groups + (rows - groups * kGroupRows);
#pragma omp parallel
  {
    std::vector<float> tmp(transposed ? static_cast<size_t>(cols) : 0);
    std::vector<uint8_t> group(groups > 0 ? rb * kGroupRows : 0);
    auto quantize_into = [&](int64_t r, uint8_t* out) {
      const float* src = x + r * cols;
      if (transposed) {
        for (int64_t c = 0; c < cols; ++c) tmp[static_cast<size_t>(c)] = x[c * rows + r];
        src = tmp.data();
      }
      quantize_row(type, src, out, cols);
    };
#pragma omp for schedule(static)
    for (int64_t u = 0; u < units; ++u) {
      if (u < groups) {
        for (int64_t i = 0; i < kGroupRows; ++i) quantize_into(u * kGroupRows + i, group.data() + rb * static_cast<size_t>(i));
        interleave_group(type, group.data(), rb, cols / kQuantBlock, s.bytes.data() + rb * static_cast<size_t>(u * kGroupRows));
      } else {
        const int64_t r = u - groups + groups * kGroupRows;
        quantize_into(r, s.bytes.data() + rb * static_cast<size_t>(r));
      }
    }
  }
  return s;
}

QuantizedStorage QuantizedStorage::wrap(GgmlType type, std::vector<uint8_t> bytes, int64_t rows, int64_t cols) {
  const size_t rb = ggml_row_bytes(type, cols);
  GPT_CHECK(bytes.size() == rb * static_cast<size_t>(rows), "quantized matrix has the wrong size");
  QuantizedStorage s;
  s.bytes = std::move(bytes);
  s.matrix = {type, rows, cols, s.bytes.data()};
  const int64_t groups = whole_groups(s.matrix);
#pragma omp parallel
  {
    std::vector<uint8_t> group(groups > 0 ? rb * kGroupRows : 0);
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {  // in place, through a copy of the group's rows
      uint8_t* at = s.bytes.data() + rb * static_cast<size_t>(g * kGroupRows);
      std::memcpy(group.data(), at, group.size());
      interleave_group(type, group.data(), rb, cols / kQuantBlock, at);
    }
  }
  return s;
}

QuantKernels quant_kernels() {
  if (portable_kernels_forced()) return QuantKernels::kPortable;
  const QuantKernels cap = g_kernel_cap.load();
  if (cpu_has_vnni() && cap >= QuantKernels::kVnni) return QuantKernels::kVnni;
#if defined(__aarch64__)
  if (cpu_has_neon_dot() && cap >= QuantKernels::kNeonDot) return QuantKernels::kNeonDot;
  if (cap >= QuantKernels::kNeon) return QuantKernels::kNeon;  // every AArch64 CPU has NEON
#endif
  return QuantKernels::kPortable;
}
void cap_quant_kernels(QuantKernels max) { g_kernel_cap.store(max); }

const char* quant_kernels_name(QuantKernels k) {
  switch (k) {
    case QuantKernels::kPortable: return "portable";
    case QuantKernels::kNeon: return "NEON";
    case QuantKernels::kNeonDot: return "NEON dot product (SDOT)";
    case QuantKernels::kVnni: return "AVX-512 VNNI";
  }
  return "?";
}

namespace {

// out[n, r] (+ bias, + residual) for the row-major types, every row through `dot`:
// each thread takes chunks of rows small enough to stay in L1 while all N inputs
// use them, so W is read from memory once.
// out and residual are `stride` floats per input row (w.rows unless w is the last
// rows of a larger matrix).
template <class Input>
void extra_rows(float* out, const QuantizedMatrix& w, const float* bias, int64_t N, const float* residual,
                ExtraRowsDot dot, const Input& input, ExtraRowsDot4 dot4 = nullptr, int64_t stride = 0) {
  const int64_t C = w.cols, OC = w.rows, S = stride > 0 ? stride : OC;
  const size_t rb = ggml_row_bytes(w.type, C);
  constexpr int64_t kChunkRows = 16;
  const int64_t chunks = (OC + kChunkRows - 1) / kChunkRows;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    float sums[4 * kChunkRows];
    const int64_t r0 = c * kChunkRows, rows = std::min(kChunkRows, OC - r0);
    auto finish = [&](int64_t n, const float* s) {
      float* o = out + n * S + r0;
      const float* res = residual != nullptr ? residual + n * S + r0 : nullptr;
      for (int64_t r = 0; r < rows; ++r) o[r] = s[r] + (bias != nullptr ? bias[r0 + r] : 0.0f) + (res != nullptr ? res[r] : 0.0f);
    };
    int64_t n = 0;
    if (dot4 != nullptr) {
      for (; n + 4 <= N; n += 4) {
        const ExtraInput in4[4] = {input(n), input(n + 1), input(n + 2), input(n + 3)};
        dot4(w.data + rb * static_cast<size_t>(r0), rb, rows, C, in4, sums);
        for (int i = 0; i < 4; ++i) finish(n + i, sums + i * rows);
      }
    }
    for (; n < N; ++n) {
      dot(w.data + rb * static_cast<size_t>(r0), rb, rows, C, input(n), sums);
      finish(n, sums);
    }
  }
}

// The K types: each input row quantized once to Q8_K blocks. Groups of 16 rows
// (x86-64) go through the group kernel, four input rows per pass, or are unpacked
// once per call for the per-row kernels where the level has none; the rows after
// the last group through the per-row kernels.
void k_linear(float* out, const float* in, const QuantizedMatrix& w, const float* bias, int64_t N,
              QuantScratch& scratch, const float* residual, QuantKernels level) {
  const int64_t C = w.cols, OC = w.rows, nbk = C / kSuperBlock;
  const auto type = static_cast<uint32_t>(w.type);
  const size_t need = sizeof(BlockQ8_K) * static_cast<size_t>(N * nbk);
  if (scratch.blocks.size() < need) scratch.blocks.resize(need);
  auto* act = reinterpret_cast<BlockQ8_K*>(scratch.blocks.data());
  const bool swapped = k_input_swapped(type, level);
#pragma omp parallel for schedule(static) if (N > 1)
  for (int64_t n = 0; n < N; ++n) quantize_row_q8_k_at(level, in + n * C, act + n * nbk, C, swapped);
  auto input = [&](int64_t n) { return ExtraInput{act + n * nbk, nullptr, nullptr, nullptr}; };
  const ExtraRowsDot dot = extra_rows_dot(type, level);
  const ExtraRowsDot4 dot4 = extra_rows_dot4(type, level);
  const int64_t groups = whole_groups(w), first_row = groups * kGroupRows;
  if (groups > 0) {
    const size_t rb = ggml_row_bytes(w.type, C);
    const KGroupDot group_dot = k_group_dot(type, level);
#pragma omp parallel
    {
      float sums[4 * kGroupRows];
      std::vector<uint8_t> rows(group_dot == nullptr ? rb * kGroupRows : 0);
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g) {
        const uint8_t* group = w.data + rb * static_cast<size_t>(g * kGroupRows);
        auto finish = [&](int64_t n, const float* s) {
          const int64_t r0 = g * kGroupRows;
          float* o = out + n * OC + r0;
          const float* res = residual != nullptr ? residual + n * OC + r0 : nullptr;
          for (int64_t r = 0; r < kGroupRows; ++r)
            o[r] = s[r] + (bias != nullptr ? bias[r0 + r] : 0.0f) + (res != nullptr ? res[r] : 0.0f);
        };
        if (group_dot != nullptr) {
          for (int64_t n = 0; n < N; n += 4) {
            const int count = static_cast<int>(std::min<int64_t>(4, N - n));
            const BlockQ8_K* a[4] = {};
            for (int i = 0; i < count; ++i) a[i] = act + (n + i) * nbk;
            group_dot(group, nbk, a, count, sums);
            for (int i = 0; i < count; ++i) finish(n + i, sums + kGroupRows * i);
          }
          continue;
        }
        for (int64_t r = 0; r < kGroupRows; ++r) deinterleave_row(w.type, group, C / kQuantBlock, r, rows.data() + rb * static_cast<size_t>(r));
        int64_t n = 0;
        if (dot4 != nullptr) {
          for (; n + 4 <= N; n += 4) {
            const ExtraInput in4[4] = {input(n), input(n + 1), input(n + 2), input(n + 3)};
            dot4(rows.data(), rb, kGroupRows, C, in4, sums);
            for (int i = 0; i < 4; ++i) finish(n + i, sums + kGroupRows * i);
          }
        }
        for (; n < N; ++n) {
          dot(rows.data(), rb, kGroupRows, C, input(n), sums);
          finish(n, sums);
        }
      }
    }
  }
  if (first_row == OC) return;
  // The rows after the groups, as a matrix of their own.
  const QuantizedMatrix rest{w.type, OC - first_row, C, w.data + ggml_row_bytes(w.type, C) * static_cast<size_t>(first_row)};
  extra_rows(out + first_row, rest, bias != nullptr ? bias + first_row : nullptr, N,
             residual != nullptr ? residual + first_row : nullptr, dot, input, dot4, OC);
}

}  // namespace

void quantized_linear(float* out, const float* in, const QuantizedMatrix& w, const float* bias, int64_t N,
                      QuantScratch& scratch, const float* residual) {
  const int64_t C = w.cols, OC = w.rows;
  GPT_CHECK(w.type != GgmlType::kF32, "quantized_linear: F32 weights go through gemm");
  const bool blocks = w.type == GgmlType::kQ8_0 || w.type == GgmlType::kQ4_0;
  const QuantKernels level = quant_kernels();
  const bool vnni = level == QuantKernels::kVnni;
  const bool neon = level == QuantKernels::kNeon || level == QuantKernels::kNeonDot;
  const auto type_id = static_cast<uint32_t>(w.type);
  const bool extra = is_extra_type(type_id), k_type = is_k_type(type_id);
  const int64_t nb = C / kQuantBlock;
  const size_t rb = ggml_row_bytes(w.type, C);
  // With VNNI, Q8_0 and Q4_0 never widen: every row is quantized to int8 and
  // goes through the group kernels, as llama.cpp does (see kQuantPanelMinRows);
  // so do the K and legacy types that have AVX-512 kernels. On ARM every
  // quantized type's prompts stay int8 too, as llama.cpp's: one SDOT does 16
  // multiply-adds where a float FMA does 4, and nothing is widened.
  const bool int8_prompts =
      (vnni || neon) && (blocks || (extra && extra_has_fast_kernel(type_id, level)));
  if (N >= kPanelMinRows && !int8_prompts) {
    // Many inputs (a prompt): widen panels of W to float and let oneDNN's GEMM
    // multiply them; the widening is paid once per weight for all N inputs.
    if (residual != nullptr && residual != out) std::memcpy(out, residual, sizeof(float) * static_cast<size_t>(N * OC));
    const int64_t P = std::min<int64_t>(OC, kPanelRows);
    if (scratch.panel.size() < static_cast<size_t>(P * C)) scratch.panel.resize(static_cast<size_t>(P * C));
    for (int64_t r0 = 0; r0 < OC; r0 += P) {
      const int64_t rows = std::min(P, OC - r0);
      // Whole interleaved groups at once where the vector widening runs, else row by row.
      const int64_t groups_here = vnni && blocks ? std::max<int64_t>(0, std::min(rows, whole_groups(w) * kGroupRows - r0)) / kGroupRows : 0;
      const int64_t units = groups_here + rows - groups_here * kGroupRows;
#pragma omp parallel for schedule(static)
      for (int64_t u = 0; u < units; ++u) {
#if defined(__x86_64__)
        if (u < groups_here) {
          widen_group_avx512(w.type, w.data + rb * static_cast<size_t>(r0 + u * kGroupRows), nb,
                             scratch.panel.data() + u * kGroupRows * C, C);
          continue;
        }
#endif
        const int64_t r = u - groups_here + groups_here * kGroupRows;
        widen_row(w, r0 + r, scratch.panel.data() + r * C, vnni);
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

  int8_t* act_qs = nullptr;
  float *act_d = nullptr, *act_dsum = nullptr;
  if (k_type) return k_linear(out, in, w, bias, N, scratch, residual, level);
  if (blocks || extra) {
    GPT_CHECK(C % kQuantBlock == 0, "quantized_linear: input width is not a whole number of blocks");
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
        continue;
      }
#endif
      quantize_activations(in + n * C, act_qs + n * C, act_d + n * nb, act_dsum + n * nb, C);
    }
  }
  if (extra) {  // Q4_1, Q5_0, Q5_1: row-major, every row through the per-row kernel
    const ExtraRowsDot dot = extra_rows_dot(type_id, level);
    extra_rows(out, w, bias, N, residual, dot, [&](int64_t n) {
      return ExtraInput{nullptr, act_qs + n * C, act_d + n * nb, act_dsum + n * nb};
    });
    return;
  }
  // Row-interleaved groups (Q8_0, Q4_0) take group kernels; the rows after the
  // last whole group, and F16/BF16 matrices, take per-row kernels.
  GroupDot group_dot = w.type == GgmlType::kQ8_0 ? group_portable<GgmlType::kQ8_0> : group_portable<GgmlType::kQ4_0>;
  RowsDot rows_dot = w.type == GgmlType::kQ8_0   ? rows_q8_0_portable
                     : w.type == GgmlType::kQ4_0 ? rows_q4_0_portable
                     : w.type == GgmlType::kF16  ? rows_wide_portable<GgmlType::kF16>
                                                 : rows_wide_portable<GgmlType::kBF16>;
#if defined(__x86_64__)
  if (vnni) {
    if (w.type == GgmlType::kQ8_0) group_dot = group_vnni_one<GgmlType::kQ8_0>;
    if (w.type == GgmlType::kQ4_0) group_dot = group_vnni_one<GgmlType::kQ4_0>;
    if (w.type == GgmlType::kF16) rows_dot = rows_wide_avx512<GgmlType::kF16>;
    if (w.type == GgmlType::kBF16) rows_dot = rows_wide_avx512<GgmlType::kBF16>;
  }
#endif
#if defined(__aarch64__)
  if (neon) {
    const bool dot = level == QuantKernels::kNeonDot;
    if (w.type == GgmlType::kQ8_0) group_dot = dot ? neon_dot::group_neon<GgmlType::kQ8_0> : neon_plain::group_neon<GgmlType::kQ8_0>;
    if (w.type == GgmlType::kQ4_0) group_dot = dot ? neon_dot::group_neon<GgmlType::kQ4_0> : neon_plain::group_neon<GgmlType::kQ4_0>;
    if (w.type == GgmlType::kF16) rows_dot = rows_wide_neon<GgmlType::kF16>;
    if (w.type == GgmlType::kBF16) rows_dot = rows_wide_neon<GgmlType::kBF16>;
  }
#endif
  const int64_t groups = whole_groups(w), first_row = groups * kGroupRows;
  auto input = [&](int64_t n) {  // F16/BF16 read only x: no quantized input exists to offset into
    const ActRow act = act_qs != nullptr ? ActRow{act_qs + n * C, act_d + n * nb, act_dsum + n * nb} : ActRow{};
    return InputRow{act, in + n * C, C};
  };
  // Writes out[n, r0 .. r0+rows) from the raw sums.
  auto finish = [&](int64_t n, int64_t r0, int64_t rows, const float* sums) {
    float* o = out + n * OC + r0;
    const float* res = residual != nullptr ? residual + n * OC + r0 : nullptr;
    for (int64_t r = 0; r < rows; ++r) o[r] = sums[r] + (bias != nullptr ? bias[r0 + r] : 0.0f) + (res != nullptr ? res[r] : 0.0f);
  };
  // Each thread takes a contiguous share of W's groups, then of the remaining
  // rows in chunks small enough to stay in L1 while all N inputs use them: W is
  // read from memory once.
  constexpr int64_t kChunkRows = 16;
  static_assert(kChunkRows >= kGroupRows, "sums[] takes a whole group");
  const int64_t chunks = (OC - first_row + kChunkRows - 1) / kChunkRows;
  using GroupDotRows = void (*)(const uint8_t*, int64_t, const ActRow*, float*);
  GroupDotRows group_dot4 = nullptr;  // four input rows per pass over a group (the same sums as one by one)
#if defined(__x86_64__)
  if (vnni && w.type == GgmlType::kQ8_0) group_dot4 = group_vnni_rows<GgmlType::kQ8_0, 4>;
  if (vnni && w.type == GgmlType::kQ4_0) group_dot4 = group_vnni_rows<GgmlType::kQ4_0, 4>;
#endif
#pragma omp parallel
  {
    float sums[4 * kChunkRows];
#pragma omp for schedule(static) nowait
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* group = w.data + rb * static_cast<size_t>(g * kGroupRows);
      int64_t n = 0;
      if (group_dot4 != nullptr) {
        for (; n + 4 <= N; n += 4) {
          const ActRow rows[4] = {input(n).blocks, input(n + 1).blocks, input(n + 2).blocks, input(n + 3).blocks};
          group_dot4(group, nb, rows, sums);
          for (int r = 0; r < 4; ++r) finish(n + r, g * kGroupRows, kGroupRows, sums + 16 * r);
        }
      }
      for (; n < N; ++n) {
        group_dot(group, nb, input(n).blocks, sums);
        finish(n, g * kGroupRows, kGroupRows, sums);
      }
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r0 = first_row + c * kChunkRows, rows = std::min(kChunkRows, OC - r0);
      for (int64_t n = 0; n < N; ++n) {
        rows_dot(w.data + rb * static_cast<size_t>(r0), rb, rows, input(n), sums);
        finish(n, r0, rows, sums);
      }
    }
  }
}

}  // namespace gpt
