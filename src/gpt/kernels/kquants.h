// llama.cpp's K-quants and its other legacy block types, bit for bit as
// ggml-common.h lays them out (so GGUF files interoperate):
//
//   super-blocks of 256 weights, cut into sub-blocks with small integer scales
//   that a float16 super-block scale multiplies:
//   Q2_K  16 x 16, 2-bit q, 4-bit scale and min: w = d*sc*q - dmin*m         ( 84 B, 2.625 bits)
//   Q3_K  16 x 16, 3-bit q in [-4, 3], 6-bit signed scale: w = d*sc*q        (110 B, 3.4375 bits)
//   Q4_K   8 x 32, 4-bit q, 6-bit scale and min: w = d*sc*q - dmin*m         (144 B, 4.5 bits)
//   Q5_K   8 x 32, 5-bit q, 6-bit scale and min                              (176 B, 5.5 bits)
//   Q6_K  16 x 16, 6-bit q in [-32, 31], 8-bit signed scale: w = d*sc*q      (210 B, 6.5625 bits)
//   blocks of 32 weights, one float16 scale (and min):
//   Q4_1  w = d*q + m, q in [0, 15]                                          (20 B)
//   Q5_0  w = d*q, q in [-16, 15]                                            (22 B)
//   Q5_1  w = d*q + m, q in [0, 31]                                          (24 B)
//
// Products read the weights as they are stored: each input row is quantized
// once to int8 (Q8_K: 256 values, one float scale and the sums of each 16, for
// the K types; 32-value blocks for the others) and every output is a sum of
// integer dot products scaled by the blocks' scales — no weight is widened to
// float. AVX-512 VNNI or NEON kernels where the CPU has them (chosen at run
// time), a portable loop otherwise.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gpt {

enum class QuantKernels;  // quantize.h: the kernel level the CPU runs (portable, NEON, VNNI)

inline constexpr int64_t kSuperBlock = 256;  // QK_K

struct BlockQ2_K {
  uint8_t scales[16];  // sub-block j: scale in the low nibble, min in the high
  uint8_t qs[64];      // weight e: bits 2*((e%128)/32) of qs[32*(e/128) + e%32]
  uint16_t d, dmin;    // float16
};
struct BlockQ3_K {
  uint8_t hmask[32];   // weight e: bit e/32 of hmask[e%32] set means q >= 0 (else 4 is subtracted)
  uint8_t qs[64];      // low 2 bits, placed as Q2_K's
  uint8_t scales[12];  // 16 6-bit scales (+32): low 4 bits in bytes 0-7, high 2 bits in bytes 8-11
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];  // 8 6-bit scales and 8 6-bit mins (get_scale_min below)
  uint8_t qs[128];     // weight e: nibble (e%64)/32 of qs[32*(e/64) + e%32]
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];      // weight e: bit e/32 of qh[e%32] is q's fifth bit
  uint8_t qs[128];     // low 4 bits, placed as Q4_K's
};
struct BlockQ6_K {
  uint8_t ql[128];     // low 4 bits
  uint8_t qh[64];      // high 2 bits
  int8_t scales[16];
  uint16_t d;
};
struct BlockQ8_K {     // input rows (never stored in files)
  float d;
  int8_t qs[kSuperBlock];
  int16_t bsums[kSuperBlock / 16];  // sums of each 16 qs
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];  // weight j in the low nibble of qs[j], j + 16 in the high
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];   // weight j's fifth bit: bit j of qh (little-endian u32)
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
                  sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292,
              "llama.cpp's K-quant layouts");
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24,
              "llama.cpp's legacy block layouts");

// Q4_K/Q5_K scales: sub-block j's 6-bit scale and min from the 12 packed bytes.
inline void get_scale_min(int j, const uint8_t* q, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}
// Q3_K: sub-block j's signed scale (-32 .. 31).
inline int q3k_scale(const uint8_t* s, int j) {
  const int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Rows of n weights (a multiple of 256 for the K types, 32 for the others).
// `type` is a GgmlType value; these are called through quantize_row /
// dequantize_row (quantize.h) for the types this file holds.
void quantize_row_extra(uint32_t type, const float* x, void* out, int64_t n);
void dequantize_row_extra(uint32_t type, const void* in, float* x, int64_t n);
bool is_extra_type(uint32_t type);   // a type this file holds
bool is_k_type(uint32_t type);       // Q2_K .. Q6_K (inputs as Q8_K)

// Input rows for the products.
void quantize_row_q8_k(const float* x, BlockQ8_K* y, int64_t n);
// Whether the kernel for `type` wants its Q8_K input with the middle two quarters of
// every 128 values swapped (Q4_K/Q5_K's AVX-512 kernels: one load then feeds the
// weights' low nibbles, the next their high nibbles; bsums stay in order).
bool k_input_swapped(uint32_t type, QuantKernels level);
void swap_middle_quarters(BlockQ8_K* y, int64_t nb);

// Products of `rows` weight rows (row_bytes apart) with one quantized input row:
// out[r] = sum of the row's weights times the input. K types take Q8_K input
// blocks; Q4_1/Q5_0/Q5_1 take 32-value int8 blocks `qs` with scales `d` and
// scaled sums `dsum` (d * sum of the block's qs), as Q8_0/Q4_0 do.
struct ExtraInput {
  const BlockQ8_K* k = nullptr;
  const int8_t* qs = nullptr;
  const float* d = nullptr;
  const float* dsum = nullptr;
};
using ExtraRowsDot = void (*)(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput& in,
                              float* out);
// The kernel for `type` at `level` (quant_kernels(): the caller has checked the
// CPU): AVX-512 VNNI or NEON (with or without SDOT) where one exists for the
// type, else portable.
ExtraRowsDot extra_rows_dot(uint32_t type, QuantKernels level);
bool extra_has_fast_kernel(uint32_t type, QuantKernels level);
// Four input rows per pass over the weights (prompts): out[i * rows + r] for
// input i; the same sums as four calls of the one-row kernel. Null where none.
using ExtraRowsDot4 = void (*)(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t n, const ExtraInput* in,
                               float* out);
ExtraRowsDot4 extra_rows_dot4(uint32_t type, QuantKernels level);

// The K types' matrices on x86-64 are kept in groups of 16 rows (quantize.h's
// QuantizedMatrix; the rows after the last whole group stay as stored), laid out
// for one VPMADDUBSW to multiply 8 weights of 8 rows by one broadcast 8-byte word
// of the input: a group is two halves of 8 rows, each half its super-blocks one
// after another, each super-block the 8 rows' blocks cut into pieces, each
// piece's 8 copies side by side, in the order the kernel reads them:
//   Q4_K (8 x 144 B): 8 float16 d, 8 dmin, the rows' scale bytes 0-3, 4-7, 8-11
//     (three arrays of 8 words), then for each pair of sub-blocks p and quarter c
//     of its 32 bytes, the rows' 8 bytes qs[32p + 8c ..];
//   Q5_K (8 x 176 B): as Q4_K, with qh's four quarters (8 bytes a row each)
//     before the qs;
//   Q6_K (8 x 210 B): the 16 scales by fours, d, then for each half n and quarter
//     c of its 32 qh bytes: qh[32n + 8c ..], ql[64n + 8c ..], ql[64n + 32 + 8c ..];
//   Q2_K (8 x 84 B): the 16 scale bytes by fours, d, dmin, then for each half n
//     and quarter c: qs[32n + 8c ..];
//   Q3_K (8 x 110 B): scale bytes 0-3, 4-7, 8-11, d, then per quarter c of
//     hmask: hmask[8c ..] and qs[8c ..]; then the second half's qs[32 + 8c ..].
// The same bytes, reordered (block_row gives a row back as stored). llama.cpp
// repacks Q4_K alike for its CPU kernels (block_q4_Kx8); the order here is ours.
bool k_row_interleaved(uint32_t type);
inline constexpr int64_t kKGroupRows = 16;
void interleave_k_group(uint32_t type, const uint8_t* rows, size_t row_bytes, int64_t nb, uint8_t* group);
void deinterleave_k_row(uint32_t type, const uint8_t* group, int64_t nb, int64_t r, uint8_t* row);
// The 16 rows of a group against `count` (1-4) Q8_K input rows (as k_input_swapped
// says): out[i * 16 + r]. Null where `level` has no group kernel for the type:
// the caller then unpacks the group's rows for extra_rows_dot.
using KGroupDot = void (*)(const uint8_t* group, int64_t nb, const BlockQ8_K* const* in, int count, float* out);
KGroupDot k_group_dot(uint32_t type, QuantKernels level);
// quantize_row_q8_k, and swap_middle_quarters when `swapped`, with AVX-512 where the
// level is VNNI: the same bytes.
void quantize_row_q8_k_at(QuantKernels level, const float* x, BlockQ8_K* y, int64_t n, bool swapped);

}  // namespace gpt
