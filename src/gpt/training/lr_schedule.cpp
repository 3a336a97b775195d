#include "gpt/training/lr_schedule.h"

#include <cmath>

namespace gpt {

float LrSchedule::at(int64_t it) const {
  if (it < warmup_iters) {
    return max_lr * static_cast<float>(it + 1) / static_cast<float>(warmup_iters + 1);
  }
  if (it >= decay_iters) return min_lr;
  if (wsd) {
    if (it < cooldown_start) return max_lr;
    const double down = static_cast<double>(it - cooldown_start) / static_cast<double>(decay_iters - cooldown_start);
    return static_cast<float>(max_lr + down * (min_lr - max_lr));
  }
  const double ratio = static_cast<double>(it - warmup_iters) / static_cast<double>(decay_iters - warmup_iters);
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return static_cast<float>(min_lr + coeff * (max_lr - min_lr));
}

}  // namespace gpt
