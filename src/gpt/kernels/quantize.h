// Weight storage types for inference and the matrix products that read them.
//
// Q8_0 and Q4_0 are llama.cpp's block formats, bit for bit (so GGUF files
// interoperate): each row is cut into blocks of 32 weights, each block stores one
// float16 scale d and 32 small integers q, and weight = d * q.
//   Q8_0: q in [-127, 127], d = max|w| / 127                      (34 bytes / 32 weights)
//   Q4_0: q in [0, 15] stored as nibbles, weight = d * (q - 8),
//         d = (the weight of largest magnitude) / -8               (18 bytes / 32 weights)
// F16 and BF16 store each weight in 16 bits.
//
// The products never expand a whole matrix to float. For a few input rows
// (decoding) each input row is quantized once to int8 blocks (scale per block) and
// every output is a sum over blocks of d_w * d_x * (integer dot product of 32
// pairs), computed with AVX-512 VNNI where the CPU has it (chosen at run time) and
// a portable loop otherwise (and for the at most 15 rows after a matrix's last
// group of 16); 16-bit weights are widened and multiplied in float.
// For many input rows (a prompt) panels of W are widened to float and multiplied
// by oneDNN's GEMM, so the weights' rounding is the only difference from fp32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gpt {

// ggml's numbering of the types (also GGUF's tensor type field).
// Q4_1 .. Q6_K: kernels/kquants.h.
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30
};
const char* ggml_type_name(GgmlType type);
GgmlType parse_ggml_type(const std::string& name);  // "f32", "q8_0", "q4_k", ... (any case); gpt::Error otherwise
bool is_known_ggml_type(uint32_t type);  // a type gpt.cpp reads
int64_t ggml_block_size(GgmlType type);   // weights per block (1 for plain types)
int64_t ggml_block_bytes(GgmlType type);  // bytes per block
size_t ggml_row_bytes(GgmlType type, int64_t n);  // n must be a multiple of the block size

inline constexpr int64_t kQuantBlock = 32;
struct BlockQ8_0 {
  uint16_t d;  // float16 scale
  int8_t qs[kQuantBlock];
};
struct BlockQ4_0 {
  uint16_t d;                   // float16 scale
  uint8_t qs[kQuantBlock / 2];  // weight j in the low nibble of qs[j], weight j + 16 in the high nibble
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "llama.cpp's block layouts");

// The first block of `bytes` bytes of `type` whose float16 scale (or min) is not a
// finite number — a damaged file — or -1. (Any other bits decode to some weight.)
int64_t first_invalid_block(GgmlType type, const uint8_t* data, size_t bytes);

// Converts n floats (a multiple of the block size for Q types) to `type`.
void quantize_row(GgmlType type, const float* x, void* out, int64_t n);
// And back.
void dequantize_row(GgmlType type, const void* in, float* x, int64_t n);

// A matrix of `rows` rows of `cols` weights in one of the types above (row r =
// output r of a layer, as in PyTorch's Linear and in GGUF), in memory as follows.
// F16, BF16, Q4_1, Q5_0, Q5_1 (and the K types off x86-64): row-major, as
// llama.cpp stores them; the K types on x86-64: groups of 16 rows (kernels/kquants.h). Q8_0, Q4_0: row-interleaved for the decode kernels, so one
// VPDPBUSD multiplies 4 weights of 16 rows by one broadcast word of the input:
// each group of 16 rows holds, per block column, the 16 rows' float16 scales (32
// bytes), then the 16 rows' 4-byte words of weights, word 0 of every row first
// (Q8_0: each byte + 128, i.e. unsigned; Q4_0: the packed nibble bytes as
// llama.cpp stores them). A group takes the bytes of its 16 rows in llama.cpp's
// layout; the rows after the last whole group are stored as in llama.cpp.
struct QuantizedMatrix {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;  // rows * ggml_row_bytes(type, cols) bytes
  // Row r in llama.cpp's block layout (ggml_row_bytes(type, cols) bytes).
  void block_row(int64_t r, uint8_t* out) const;
  // Row r widened to cols floats.
  void float_row(int64_t r, float* out) const;
};

// Owns the bytes of a QuantizedMatrix (`matrix.data` points into `bytes`): it can
// be moved (the bytes stay where they are) but not copied.
struct QuantizedStorage {
  QuantizedStorage() = default;
  QuantizedStorage(const QuantizedStorage&) = delete;
  QuantizedStorage& operator=(const QuantizedStorage&) = delete;
  QuantizedStorage(QuantizedStorage&&) noexcept = default;
  QuantizedStorage& operator=(QuantizedStorage&&) noexcept = default;

  std::vector<uint8_t> bytes;
  QuantizedMatrix matrix;
  // Quantizes `rows` x `cols` floats given row-major (or column-major when
  // `transposed`, i.e. x[c * rows + r] is row r, column c: a Conv1D weight).
  static QuantizedStorage quantize(GgmlType type, const float* x, int64_t rows, int64_t cols, bool transposed = false);
  // Takes rows in llama.cpp's layout (as GGUF stores them) and interleaves them.
  static QuantizedStorage wrap(GgmlType type, std::vector<uint8_t> bytes, int64_t rows, int64_t cols);
};

// From this many input rows on, quantized_linear widens panels of F16 / BF16
// weights to float for oneDNN's GEMM (the input used as it is). Q8_0 and Q4_0
// rows are quantized to int8 blocks and go through the group kernels whatever
// their number where the CPU has AVX-512 VNNI, each row exactly as alone (as
// llama.cpp multiplies them); only the portable path widens them from here on.
// Measured (AMD EPYC Zen 4, 2 threads, GPT-2 124M shape): Q8_0 prompts of 32 /
// 128 / 512 tokens 323 / 709 / 897 -> 2,348 / 2,732 / 2,224 tok/s, a 16-sequence
// decoding batch 110 -> 810-926 tok/s; held-out perplexity of a trained model
// (bench/quantized_quality.sh) 235.620 -> 235.625 (Q8_0), 236.090 -> 236.102 (Q4_0).
inline constexpr int64_t kQuantPanelMinRows = 8;

// Scratch for the products: input rows quantized to int8 blocks (few rows), or a
// panel of weights widened to float (many rows).
struct QuantScratch {
  std::vector<uint8_t> blocks;
  std::vector<float> panel;
  std::vector<float> parts;  // a product kept in two types: each part's rows (linear_apply)
};

// out (N, rows) = [residual +] in (N, cols) @ W^T [+ bias]. out may alias residual.
// W's type may be any but F32 (F32 weights go through gemm instead).
void quantized_linear(float* out, const float* in, const QuantizedMatrix& w, const float* bias, int64_t N,
                      QuantScratch& scratch, const float* residual = nullptr);

// Which kernels run: the best the CPU offers (AVX-512 VNNI on x86-64; on
// AArch64 NEON with the dot-product extension, else plain NEON; portable loops
// otherwise), under a cap tests set to run each level (GPT_PORTABLE_KERNELS=1 in
// the environment caps it too). A cap picks the best level at or below it that
// this CPU runs.
enum class QuantKernels { kPortable, kNeon, kNeonDot, kVnni };
QuantKernels quant_kernels();
void cap_quant_kernels(QuantKernels max);  // kVnni: no cap
const char* quant_kernels_name(QuantKernels k);  // "portable", "NEON", "NEON dot product", "AVX-512 VNNI"

}  // namespace gpt
