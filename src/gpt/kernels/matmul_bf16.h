// Mixed-precision GEMM: inputs rounded to bfloat16, products accumulated and
// written in float32 (what PyTorch's bf16 autocast does for matrix products).
// Runs as a oneDNN matmul primitive on bf16 memory, which oneDNN executes with
// AMX or AVX512_BF16 instructions where the CPU has them; where oneDNN has no
// bf16 kernel (or GPT_PORTABLE_KERNELS=1) the inputs are rounded to bf16 values
// and multiplied by the float32 GEMM, which computes the same products.
#pragma once
#include <cstdint>
#include <string>

namespace gpt {

// Same contract as gemm() in matmul.h. Called from one thread at a time.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same with B already in bf16 (leading dimension ldb), for an operand used by
// several products in a row (the LM head's weight, once per chunk): converted once
// by to_bf16_matrix instead of by every call. Only when bf16_gemm_native().
void gemm_bf16_with_b16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// x (rows, cols; leading dimension ld) rounded to bf16 bits, contiguous.
void to_bf16_matrix(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* out);

// True when oneDNN has bf16 kernels for this CPU (and the portable path is not forced).
bool bf16_gemm_native_available();
// True when gemm_bf16 runs them (false: the portable path, which rounds the inputs
// for the float32 GEMM and computes the same products).
bool bf16_gemm_native();

// Which of the two runs where both can. Auto measures both once and keeps the
// native kernels unless they are clearly slower (they are on Intel CPUs without
// AMX, where they run at half the float32 rate). The default is read from
// GPT_BF16_GEMM (auto, native or emulated).
enum class Bf16GemmMode { kAuto, kNative, kEmulated };
Bf16GemmMode parse_bf16_gemm_mode(const std::string& name);  // throws gpt::Error on anything else
void set_bf16_gemm_mode(Bf16GemmMode mode);
// Tests force the fallback to compare the two.
void force_portable_bf16_gemm(bool force);
// Products whose operands exceed this many elements are split (default 4M); tests
// set it small to exercise the splitting.
void set_bf16_gemm_split_budget(int64_t elements);

// x rounded to bfloat16 (nearest, ties to even) and widened back, n values.
void round_to_bf16(const float* x, float* out, int64_t n);

}  // namespace gpt
