// Inference with a KV cache. The prompt goes through the model in one batched
// pass (prefill); after that each new token costs one pass over a single
// position, reusing the keys and values cached for all earlier positions.
// Memory is allocated once, for the model's whole context: nothing per token.
//
// When the context is full the session slides: it keeps the most recent half of
// the tokens and processes them again in one batched pass (learned positions are
// absolute, so cached keys cannot simply be shifted).
#pragma once
#include <cstdint>
#include <vector>

#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"

namespace gpt {

class InferenceSession {
 public:
  // fp32, reading the model's parameters in place (they may change between calls).
  explicit InferenceSession(GPT& model);
  // Any weight types (a QuantizedModel's weights); they must outlive the session.
  explicit InferenceSession(const InferenceWeights& weights);

  void reset();
  int64_t position() const { return pos_; }        // tokens in the cache
  int64_t capacity() const { return capacity_; }   // the model's block size
  int64_t vocab_size() const { return w_.config.vocab_size; }
  const InferenceWeights& weights() const { return w_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }  // tokens in the cache, in order

  // Runs `n` tokens; returns the logits (V) after the last one. If they do not fit
  // in the free context, the session slides first (see above). With
  // `all_logits`, logits() afterwards holds (n, V) for every new token.
  const float* append(const int32_t* tokens, int64_t n, bool all_logits = false);
  const float* logits() const { return logits_.data(); }
  int64_t slides() const { return slides_; }

 private:
  void run(const int32_t* tokens, int64_t n, bool all_logits);

  InferenceWeights w_;
  int64_t capacity_, pos_ = 0, slides_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<int32_t> replay_;  // tokens kept when sliding
  std::vector<float> k_cache_, v_cache_;  // (L, NH, capacity, hs)
  std::vector<float> x_, ln_, qkv_, atty_, fch_;  // (capacity, C | 3C | 4C) scratch
  std::vector<float> stats_;                      // LayerNorm mean and rstd (2, capacity)
  std::vector<float> logits_;                     // (V) or (n, V)
  std::vector<float> positions_;                  // sinusoid table when used
  std::vector<float> attn_scratch_;
  int scratch_threads_;
  QuantScratch quant_scratch_;
};

}  // namespace gpt
