// Preference pairs — a prompt, a chosen response and a rejected one — for a
// reward model (gpt reward) and DPO (gpt dpo). JSON lines as TRL writes them:
//   {"prompt": "...", "chosen": "...", "rejected": "..."}                  (standard)
//   {"prompt": [messages], "chosen": [messages], "rejected": [messages]}   (conversational)
//   {"chosen": [messages], "rejected": [messages]}                         (implicit prompt: the
//                                                                           common leading messages)
// With a chat template the conversation is written through it (the response is
// the assistant's turn, its end-of-turn marker included); without one, the
// response text follows the prompt text.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

struct PreferenceText {
  std::vector<ChatMessage> prompt;  // one user message for a plain-string prompt
  std::vector<ChatMessage> chosen, rejected;  // the response turn(s)
  bool plain = false;  // strings: text without a template
};

// gpt::Error naming the line for malformed JSON, missing or mistyped fields,
// and a pair whose two responses are the same.
std::vector<PreferenceText> read_preference_jsonl(const std::filesystem::path& file);
PreferenceText preference_from_json(const nlohmann::json& j);

// One side of a pair, tokenized: ids, and which of them are the response.
struct ScoredSequence {
  std::vector<int32_t> ids;
  std::vector<uint8_t> response;
};

// Tokenizes a pair (through the template when given and the pair is
// conversational or the model is a chat model); cut to max_tokens from the end.
// nullopt when either response is cut away entirely.
struct EncodedPair {
  ScoredSequence chosen, rejected;
};
std::optional<EncodedPair> encode_preference(const PreferenceText& p, const Tokenizer& tokenizer,
                                             const ChatTemplate* chat_template, int64_t max_tokens);

struct PreferenceSplit {
  std::vector<EncodedPair> train, val;
  int64_t dropped = 0;  // a response did not fit the context
};
// Encodes every pair and holds a val_fraction of them out (at least one) by a
// shuffle with `seed`. gpt::Error if fewer than two pairs are usable.
PreferenceSplit split_preferences(const std::vector<PreferenceText>& pairs, const Tokenizer& tokenizer,
                                  const ChatTemplate* chat_template, int64_t max_tokens, double val_fraction,
                                  uint64_t seed);

}  // namespace gpt
