#include "gpt/generation/generate.h"

#include <algorithm>

#include "gpt/util/error.h"
#include "gpt/util/utf8.h"

namespace gpt {

std::vector<int32_t> generate(GPT& model, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options,
                              const std::function<void(const std::string&)>& on_text) {
  check(!prompt.empty(), "generation needs a prompt of at least one token");
  check(options.max_new_tokens >= 0, "--max-tokens must not be negative");
  const int64_t block = model.config().block_size, V = model.config().vocab_size;
  Sampler sampler(options.sampling, options.seed);
  std::vector<int32_t> context = prompt;
  std::vector<int32_t> generated;
  std::string pending;  // bytes of a UTF-8 character not yet complete
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int64_t T = std::min<int64_t>(block, static_cast<int64_t>(context.size()));
    const int32_t* window = context.data() + context.size() - static_cast<size_t>(T);
    model.forward(window, nullptr, 1, T);
    const int32_t next = sampler.sample(model.logits() + (T - 1) * V, V);
    context.push_back(next);
    generated.push_back(next);
    if (on_text) {
      pending += tokenizer.token_bytes(next);
      const size_t whole = complete_utf8_prefix(pending);
      if (whole > 0) {
        on_text(pending.substr(0, whole));
        pending.erase(0, whole);
      }
    }
  }
  if (on_text && !pending.empty()) on_text(pending);
  return generated;
}

}  // namespace gpt
