// Only in test_portable: proves that program really runs the fallback path, so the
// kernel and model tests linked with it test what a CPU without AVX2, AVX-512,
// VNNI or bf16 would run.
#include <gtest/gtest.h>

#include <cstdlib>

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
  EXPECT_FALSE(quant_kernels_use_vnni());
  // oneDNN's GEMM and matmul JIT kernels held to SSE4.1 (ONEDNN_MAX_CPU_ISA).
  EXPECT_EQ(dnnl_get_effective_cpu_isa(), dnnl_cpu_isa_sse41);
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
