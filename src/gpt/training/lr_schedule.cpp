#include "gpt/training/lr_schedule.h"

#include <cmath>

namespace gpt {

float LrSchedule::at(int64_t it) const {
  const auto warmup = [&](int64_t i) { return max_lr * static_cast<float>(i + 1) / static_cast<float>(warmup_iters + 1); };
  if (wsd && it >= cooldown_start) {
    // A straight line from the rate the cooldown starts at (max_lr, or the warmup's
    // if a time budget cut the run that short) down to min_lr at decay_iters.
    if (it >= decay_iters) return min_lr;
    const double top = cooldown_start < warmup_iters ? warmup(cooldown_start) : max_lr;
    const double down = static_cast<double>(it - cooldown_start) / static_cast<double>(decay_iters - cooldown_start);
    return static_cast<float>(top + down * (min_lr - top));
  }
  if (it < warmup_iters) return warmup(it);
  if (it >= decay_iters) return min_lr;
  if (wsd) return max_lr;
  const double ratio = static_cast<double>(it - warmup_iters) / static_cast<double>(decay_iters - warmup_iters);
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return static_cast<float>(min_lr + coeff * (max_lr - min_lr));
}

}  // namespace gpt
