// AdamW (Loshchilov & Hutter) with decoupled weight decay on matrices only, and
// gradient clipping by global norm. One loop over the whole parameter buffer.
#pragma once
#include <cstdint>
#include <cstddef>
#include <vector>

#include "gpt/model/parameters.h"

namespace gpt {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  // Optimizes elements [begin, end) of the parameter buffer (default: all of it).
  // ZeRO-1 gives each rank one slice, so the moments take 1/N of the memory.
  AdamW(const ParameterLayout& layout, AdamWConfig config, size_t begin = 0, size_t end = SIZE_MAX);
  // Over any buffer of `total` floats cut into `tensors` (LoRA's adapters).
  AdamW(const std::vector<TensorInfo>& tensors, size_t total, AdamWConfig config, size_t begin = 0,
        size_t end = SIZE_MAX);

  // One update of the slice with learning rate lr, PyTorch's update:
  // p *= 1 - lr*wd (decayed tensors only); m, v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps),
  // the division by sqrt(bc2) taken as a product. params and grads are full-size buffers.
  void step(float* params, const float* grads, float lr);

  size_t begin() const { return begin_; }
  size_t end() const { return begin_ + m_.size(); }
  // Takes this slice's moments from full-size buffers.
  void load(const float* full_m, const float* full_v, int64_t steps);

  const AdamWConfig& config() const { return config_; }
  int64_t steps_taken() const { return t_; }
  std::vector<float>& m() { return m_; }  // the slice's moments
  std::vector<float>& v() { return v_; }

 private:
  AdamWConfig config_;
  size_t begin_ = 0;
  struct DecayRun {
    size_t begin, end;  // within the slice
    float decay;        // wd or 0
  };
  std::vector<DecayRun> runs_;  // the slice in runs of equal weight decay (no per-element array:
                                // 0.5 GB for GPT-2 124M)
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

// The sum of x[i]^2 in double, in a fixed order whatever the thread count: blocks
// of kSumBlock values, each summed on its own, the block sums added in order.
// NaN or infinity in x gives a result that is not finite.
inline constexpr size_t kSumBlock = 8192;
double sum_of_squares(const float* x, size_t n);
// sqrt(sum_of_squares(x, n)).
float global_norm(const float* x, size_t n);
// Scales x so that vectors of global norm `norm` end at most max_norm (PyTorch's
// clip_grad_norm_: factor max_norm / (norm + 1e-6), applied only when below 1;
// max_norm 0: no clipping). For a slice of a larger vector, pass the whole one's norm.
void scale_to_norm(float* x, size_t n, float norm, float max_norm);
// Both at once for a whole vector: returns the norm before clipping.
float clip_grad_norm(float* grads, size_t n, float max_norm);

}  // namespace gpt
