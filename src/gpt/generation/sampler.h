// Choosing the next token from the model's scores, as a chain:
//   penalties  repeat (CTRL-style: divide positive / multiply negative logits of
//              tokens seen in the last repeat_last_n), frequency and presence
//              (OpenAI-style: logit -= frequency * count + presence * [count > 0])
//   greedy     arg-max of the penalised logits, or:
//   temperature  softmax(logits / temperature)
//   top-k      keep the k most likely tokens
//   top-p      keep the smallest set of most likely tokens whose mass reaches p
//   min-p      keep tokens with probability >= min_p * the top probability
//   draw       from what is left, renormalised
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "gpt/util/rng.h"

namespace gpt {

struct SamplingOptions {
  bool greedy = false;
  float temperature = 1.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  float min_p = 0.0f;  // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;       // window of the penalties; -1: whole context, 0: off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  void validate() const;  // throws gpt::Error naming the bad flag
};

struct TokenProbability {
  int32_t token;
  float prob;
};

class Sampler {
 public:
  Sampler(SamplingOptions options, uint64_t seed);

  // logits (V) -> chosen token. `history` holds the tokens so far (for penalties).
  int32_t sample(const float* logits, int64_t V, std::span<const int32_t> history = {});

  // Applies the penalties to logits in place (exposed for tests and inspection).
  void apply_penalties(float* logits, int64_t V, std::span<const int32_t> history);

  // After sample(): the distribution it drew from before truncation
  // (softmax of the penalised logits / temperature), its k most likely tokens.
  std::vector<TokenProbability> top(int k) const;
  float probability(int32_t token) const { return probs_[static_cast<size_t>(token)]; }

 private:
  SamplingOptions options_;
  Rng rng_;
  std::vector<float> work_;   // penalised logits
  std::vector<float> probs_;  // full softmax
  std::vector<int32_t> counts_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace gpt
