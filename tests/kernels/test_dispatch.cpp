// Runtime dispatch (kernels/dispatch.h): the dynamic loader chose, for the
// hand-written loops, the best version this CPU runs. A build whose compiler the
// GPT_MULTIVERSION macro does not cover would run baseline loops silently; here
// it fails on any CPU with AVX2 or AVX-512.
#include <gtest/gtest.h>

#include <cstdio>

#include "gpt/kernels/dispatch.h"

namespace gpt {
namespace {

TEST(Dispatch, TheLoaderChoseTheBestLevelThisCpuRuns) {
#if defined(__x86_64__) && defined(__clang__)
  GTEST_SKIP() << "SKIPPED: clang builds run the hand-written loops baseline for now (kernels/dispatch.h, "
                  "docs/platforms.md); level "
               << multiversion_level();
#elif defined(__x86_64__)
  __builtin_cpu_init();
  const int expected = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
  std::printf("[ measured ] hand-written loops dispatched at level %d (this CPU's best: %d)\n", multiversion_level(),
              expected);
  EXPECT_EQ(multiversion_level(), expected) << "the hand-written loops are not dispatched by CPU in this build";
#else
  EXPECT_EQ(multiversion_level(), 0);  // no x86 versions on this architecture
#endif
}

}  // namespace
}  // namespace gpt
