// The quantized-product kernel levels a test can run on this CPU (quantize.h's
// cap_quant_kernels), shared by the kernel tests that compare every level with
// the portable loops.
#pragma once
#include <vector>

#include "gpt/kernels/quantize.h"

namespace gpt {

// Restores the best kernels on scope exit, so a failed ASSERT (which returns
// early) does not leave later tests on a capped level.
struct KernelCapGuard {
  KernelCapGuard() = default;
  KernelCapGuard(const KernelCapGuard&) = delete;
  KernelCapGuard& operator=(const KernelCapGuard&) = delete;
  ~KernelCapGuard() { cap_quant_kernels(QuantKernels::kVnni); }
};

// Every kernel level this CPU can run, portable first.
inline std::vector<QuantKernels> available_kernels() {
  std::vector<QuantKernels> levels;
  for (QuantKernels k : {QuantKernels::kPortable, QuantKernels::kNeon, QuantKernels::kNeonDot, QuantKernels::kVnni}) {
    cap_quant_kernels(k);
    if (quant_kernels() == k) levels.push_back(k);
  }
  cap_quant_kernels(QuantKernels::kVnni);
  return levels;
}

}  // namespace gpt
