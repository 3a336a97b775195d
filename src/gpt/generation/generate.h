// Autoregressive generation: read the context, compute the next-token
// distribution, choose a token, append it, repeat. The context slides: when it
// exceeds the model's block size, the oldest tokens are dropped.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gpt/generation/sampler.h"
#include "gpt/model/gpt.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

struct GenerateOptions {
  int64_t max_new_tokens = 200;
  SamplingOptions sampling;
  uint64_t seed = 1337;
};

// Returns the generated ids; `on_text` receives the new text as whole UTF-8
// characters as soon as they are complete (bytes of invalid UTF-8 are passed on).
std::vector<int32_t> generate(GPT& model, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options,
                              const std::function<void(const std::string&)>& on_text = {});

}  // namespace gpt
