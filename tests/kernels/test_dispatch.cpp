// Runtime dispatch (kernels/dispatch.h): the dynamic loader chose, for the
// hand-written loops, the best version this CPU runs. A build whose compiler the
// GPT_MULTIVERSION macro does not cover would run baseline loops silently; here
// it fails on any CPU with AVX2 or AVX-512.
#include <gtest/gtest.h>

#include <cstdio>

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/quantize.h"

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace gpt {
namespace {

TEST(Dispatch, TheLoaderChoseTheBestLevelThisCpuRuns) {
#if defined(__x86_64__)
  __builtin_cpu_init();
#if defined(__clang__)
  // clang's clones name features (kernels/dispatch.h)
  const int expected = __builtin_cpu_supports("avx512f") ? 4 : __builtin_cpu_supports("avx2") ? 3 : 0;
#else
  const int expected = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
#endif
  std::printf("[ measured ] hand-written loops dispatched at level %d (this CPU's best: %d)\n", multiversion_level(),
              expected);
  EXPECT_EQ(multiversion_level(), expected) << "the hand-written loops are not dispatched by CPU in this build";
#else
  EXPECT_EQ(multiversion_level(), 0);  // no x86 versions on this architecture
#endif
}

// The same for the quantized products' kernels, which check the CPU themselves.
TEST(Dispatch, QuantizedProductsUseTheBestKernelsThisCpuRuns) {
  if (portable_kernels_forced()) GTEST_SKIP() << "GPT_PORTABLE_KERNELS is set";
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512vnni");
  const QuantKernels expected = vnni ? QuantKernels::kVnni : QuantKernels::kPortable;
#elif defined(__aarch64__)
  const QuantKernels expected =
      (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0 ? QuantKernels::kNeonDot : QuantKernels::kNeon;
#else
  const QuantKernels expected = QuantKernels::kPortable;
#endif
  std::printf("[ measured ] quantized products: %s (this CPU's best: %s)\n", quant_kernels_name(quant_kernels()),
              quant_kernels_name(expected));
  EXPECT_EQ(quant_kernels(), expected);
}

}  // namespace
}  // namespace gpt
