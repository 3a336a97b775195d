// Only in test_portable: proves that program really runs the fallback path, so the
// kernel and model tests linked with it test what a CPU without AVX2, AVX-512,
// VNNI or bf16 would run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include <oneapi/dnnl/dnnl.h>

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/matmul_bf16.h"
#include "gpt/kernels/quantize.h"

namespace gpt {
namespace {

TEST(PortableBuild, RunsTheFallbackPaths) {
#ifndef GPT_NO_MULTIVERSION
  FAIL() << "test_portable must be built with GPT_NO_MULTIVERSION (baseline x86-64 loops only)";
#endif
  EXPECT_TRUE(portable_kernels_forced());
  EXPECT_FALSE(bf16_gemm_native());
  EXPECT_EQ(quant_kernels(), QuantKernels::kPortable);
  // oneDNN's GEMM and matmul JIT kernels held to SSE4.1 (ONEDNN_MAX_CPU_ISA).
  EXPECT_EQ(dnnl_get_effective_cpu_isa(), dnnl_cpu_isa_sse41);
}

// Without oneDNN's bf16 kernels a pre-converted bf16 operand has no use: callers
// check bf16_gemm_native() first, and a caller that doesn't gets a clear error.
TEST(PortableBuild, PreconvertedBf16ProductNeedsNativeKernels) {
  std::vector<float> A(4, 1.0f), C(4);
  std::vector<uint16_t> B16(4, 0x3F80);  // 1.0 in bf16
  try {
    gemm_bf16_with_b16(false, false, 2, 2, 2, 1.0f, A.data(), 2, B16.data(), 2, 0.0f, C.data(), 2);
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_STREQ(e.what(), "gemm_bf16_with_b16 needs oneDNN's bf16 kernels");
  }
}

}  // namespace
}  // namespace gpt

// Before any test: oneDNN and the kernels read these once, on first use.
int main(int argc, char** argv) {
  setenv("GPT_PORTABLE_KERNELS", "1", 1);
  setenv("ONEDNN_MAX_CPU_ISA", "SSE41", 1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
