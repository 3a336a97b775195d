// Choosing the next token from the model's scores: greedy (arg-max) or sampling
// from softmax(logits / temperature), optionally restricted to the top-k tokens or
// to the smallest set whose probability reaches top-p.
#pragma once
#include <cstdint>
#include <vector>

#include "gpt/util/rng.h"

namespace gpt {

struct SamplingOptions {
  bool greedy = false;
  float temperature = 1.0f;
  int top_k = 0;       // 0: no limit
  float top_p = 1.0f;  // 1: no limit
  void validate() const;
};

class Sampler {
 public:
  Sampler(SamplingOptions options, uint64_t seed) : options_(options), rng_(seed) { options_.validate(); }
  // logits (V) -> chosen token id.
  int32_t sample(const float* logits, int64_t V);

 private:
  SamplingOptions options_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // reused: no allocation per token
};

}  // namespace gpt
