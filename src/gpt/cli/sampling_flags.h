// Flags shared by `gpt generate` and `gpt chat`.
#pragma once
#include <CLI/CLI.hpp>

#include "gpt/generation/generate.h"
#include "gpt/util/error.h"

namespace gpt::cli {

inline void add_sampling_flags(CLI::App* app, GenerateOptions& g) {
  app->add_option("--max-tokens", g.max_new_tokens, "Tokens to generate")->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_flag("--greedy", g.sampling.greedy, "Always take the most likely token");
  app->add_option("--temperature", g.sampling.temperature, "Softmax temperature")->capture_default_str();
  app->add_option("--top-k", g.sampling.top_k, "Sample among the k most likely tokens (0: all)")->capture_default_str();
  app->add_option("--top-p", g.sampling.top_p, "Nucleus: smallest set of tokens with this much probability")->capture_default_str();
  app->add_option("--min-p", g.sampling.min_p, "Drop tokens below min-p times the top probability")->capture_default_str();
  app->add_option("--repeat-penalty", g.sampling.repeat_penalty, "Divide (multiply if negative) logits of recent tokens")->capture_default_str();
  app->add_option("--repeat-last-n", g.sampling.repeat_last_n, "Tokens the penalties look back (-1: all, 0: off)")->capture_default_str();
  app->add_option("--presence-penalty", g.sampling.presence_penalty, "Subtract from logits of tokens seen")->capture_default_str();
  app->add_option("--frequency-penalty", g.sampling.frequency_penalty, "Subtract per occurrence of a token seen")->capture_default_str();
  app->add_option("--seed", g.seed, "Sampling seed (same seed, same text)")->capture_default_str();
  app->add_option("--stop", g.stop, "Stop when this text appears (repeatable; not printed)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

// Checks the flags above, naming the one at fault.
inline void validate_sampling_flags(const GenerateOptions& g) {
  g.sampling.validate();
  for (const auto& s : g.stop) GPT_CHECK(!s.empty(), "--stop strings must not be empty");
}

}  // namespace gpt::cli
