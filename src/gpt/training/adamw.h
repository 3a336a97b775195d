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

// sqrt(sum of squares) of n values, accumulated in double.
float global_norm(const float* x, size_t n);
// Scales grads so their global norm is at most max_norm (PyTorch's clip_grad_norm_:
// factor max_norm / (norm + 1e-6), only when below 1). Returns the norm before clipping.
float clip_grad_norm(float* grads, size_t n, float max_norm);

}  // namespace gpt
