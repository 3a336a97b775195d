// Autoregressive generation: read the context, compute the next-token
// distribution, choose a token, feed it back, repeat — on a KV-cache session.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gpt/generation/batch_engine.h"
#include "gpt/generation/kv_cache.h"
#include "gpt/generation/sampler.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

struct GenerateOptions {
  int64_t max_new_tokens = 200;
  SamplingOptions sampling;
  uint64_t seed = 1337;
  std::vector<std::string> stop;  // generation ends where one of these appears (not printed)
  int top_probs = 0;              // > 0: report the k most likely tokens at every step
};

// One generated token, for watching the model choose.
struct TokenEvent {
  int64_t step = 0;
  int32_t token = 0;
  float prob = 0;                      // probability of the chosen token
  std::vector<TokenProbability> top;   // GenerateOptions::top_probs most likely
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (up to the stop string's token)
  std::string text;             // generated text, without a stop string
  bool stopped = false;         // ended by a stop string
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prefill_tokens = 0;
};

// Appends `prompt` to the session and generates. `on_text` receives the text as it
// is produced: whole UTF-8 characters only, never part of a stop string.
GenerateResult generate(InferenceSession& session, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text = {},
                        const std::function<void(const TokenEvent&)>& on_token = {});

// Several independent samples of one prompt (seeds options.seed, seed + 1, ...)
// decoded together on the batched engine, at most `parallel` at a time; the
// prompt's full pages are read once and shared (batch_engine.h). Samples end at
// max_new_tokens, a stop string or the context's end (no sliding). `on_sample`
// receives each sample in order, as soon as it and every one before it are done.
struct SamplesReport {
  std::vector<GenerateResult> samples;
  int64_t generated_tokens = 0;
  int64_t reused_positions = 0;  // prompt positions taken from shared pages, not computed
  double seconds = 0;
};
SamplesReport generate_samples(const InferenceWeights& weights, const Tokenizer& tokenizer,
                               const std::vector<int32_t>& prompt, const GenerateOptions& options, int num_samples,
                               int parallel, const EngineOptions& engine_options,
                               const std::function<void(int, const GenerateResult&)>& on_sample = {});

}  // namespace gpt
