// Learning-rate schedule: linear warmup, then cosine decay to min_lr (nanoGPT's),
// or warmup-stable-decay (WSD, trapezoidal): max_lr until cooldown_start, then a
// straight line down to min_lr at decay_iters. A stable phase can end whenever
// the run decides (a time budget), which a cosine cannot.
#pragma once
#include <cstdint>

namespace gpt {

struct LrSchedule {
  float max_lr = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_iters = 100;
  int64_t decay_iters = 2000;  // cosine reaches min_lr here, and stays there
  bool wsd = false;
  int64_t cooldown_start = 0;  // wsd: the last step at max_lr + 1

  // Learning rate for iteration `it` (0-based).
  float at(int64_t it) const;
};

}  // namespace gpt
