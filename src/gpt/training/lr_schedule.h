// Learning-rate schedule: linear warmup, then cosine decay to min_lr (nanoGPT's).
#pragma once
#include <cstdint>

namespace gpt {

struct LrSchedule {
  float max_lr = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_iters = 100;
  int64_t decay_iters = 2000;  // cosine reaches min_lr here, and stays there

  // Learning rate for iteration `it` (0-based).
  float at(int64_t it) const;
};

}  // namespace gpt
