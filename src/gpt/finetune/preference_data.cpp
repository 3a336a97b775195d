#include "gpt/finetune/preference_data.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gpt/finetune/chat_data.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/rng.h"
#include "gpt/util/utf8.h"

namespace gpt {

namespace {

std::vector<ChatMessage> messages_of(const nlohmann::json& j, const std::string& field) {
  try {
    return conversation_from_json(j);
  } catch (const Error& e) {
    throw Error("\"" + field + "\": " + e.what());
  }
}

std::string text_of(const nlohmann::json& j, const std::string& field) {
  const std::string s = j.get<std::string>();
  if (auto bad = find_invalid_utf8(s)) throw Error("\"" + field + "\" is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  return s;
}

}  // namespace

PreferenceText preference_from_json(const nlohmann::json& j) {
  GPT_CHECK(j.is_object(), "a preference pair must be a JSON object");
  const auto chosen = j.find("chosen"), rejected = j.find("rejected"), prompt = j.find("prompt");
  GPT_CHECK(chosen != j.end() && rejected != j.end(), "a preference pair needs \"chosen\" and \"rejected\"");
  PreferenceText p;
  if (chosen->is_string() && rejected->is_string()) {
    GPT_CHECK(prompt != j.end() && prompt->is_string(), "\"prompt\" must be a string when the responses are");
    p.plain = true;
    p.prompt = {{"user", text_of(*prompt, "prompt")}};
    p.chosen = {{"assistant", text_of(*chosen, "chosen")}};
    p.rejected = {{"assistant", text_of(*rejected, "rejected")}};
  } else {
    GPT_CHECK(chosen->is_array() && rejected->is_array(),
              "\"chosen\" and \"rejected\" must both be strings or both be message lists");
    p.chosen = messages_of(*chosen, "chosen");
    p.rejected = messages_of(*rejected, "rejected");
    if (prompt != j.end()) {
      p.prompt = prompt->is_string() ? std::vector<ChatMessage>{{"user", text_of(*prompt, "prompt")}}
                                     : messages_of(*prompt, "prompt");
    } else {
      // Implicit prompt: the messages both conversations share.
      size_t k = 0;
      while (k < p.chosen.size() && k < p.rejected.size() && p.chosen[k].role == p.rejected[k].role &&
             p.chosen[k].content == p.rejected[k].content)
        ++k;
      p.prompt.assign(p.chosen.begin(), p.chosen.begin() + static_cast<std::ptrdiff_t>(k));
      p.chosen.erase(p.chosen.begin(), p.chosen.begin() + static_cast<std::ptrdiff_t>(k));
      p.rejected.erase(p.rejected.begin(), p.rejected.begin() + static_cast<std::ptrdiff_t>(k));
      GPT_CHECK(!p.prompt.empty(), "the two conversations share no prompt (give \"prompt\")");
    }
    for (const auto* side : {&p.chosen, &p.rejected}) {
      GPT_CHECK(!side->empty() && side->back().role == "assistant",
                "a response must end with an assistant message");
    }
  }
  auto same = [](const std::vector<ChatMessage>& a, const std::vector<ChatMessage>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i].role != b[i].role || a[i].content != b[i].content) return false;
    return true;
  };
  GPT_CHECK(!same(p.chosen, p.rejected), "\"chosen\" and \"rejected\" are the same response: nothing to prefer");
  return p;
}

std::vector<PreferenceText> read_preference_jsonl(const std::filesystem::path& file) {
  std::vector<PreferenceText> out;
  for_each_jsonl(file, [&](const nlohmann::json& j) { out.push_back(preference_from_json(j)); }, "preference pairs");
  return out;
}

namespace {

ScoredSequence encode_side(const PreferenceText& p, const std::vector<ChatMessage>& response, const Tokenizer& tokenizer,
                           const ChatTemplate* chat_template) {
  ScoredSequence s;
  if (chat_template != nullptr) {
    std::vector<ChatMessage> conversation = p.prompt;
    conversation.insert(conversation.end(), response.begin(), response.end());
    // The prompt's own assistant turns (multi-turn prompts) are context, not the response.
    const EncodedChat whole = chat_template->encode_for_training(conversation, tokenizer);
    std::vector<ChatMessage> prompt_only = p.prompt;
    size_t prompt_tokens = 0;
    if (std::any_of(prompt_only.begin(), prompt_only.end(), [](const ChatMessage& m) { return m.role == "assistant"; })) {
      prompt_tokens = chat_template->encode_for_training(prompt_only, tokenizer).ids.size();
    }
    s.ids = whole.ids;
    s.response.assign(whole.is_reply.begin(), whole.is_reply.end());
    for (size_t i = 0; i < prompt_tokens && i < s.response.size(); ++i) s.response[i] = 0;
    // End at the response's end-of-turn marker (the trailing newline after it is the template's, not the answer's).
    while (!s.ids.empty() && !s.response.back()) {
      s.ids.pop_back();
      s.response.pop_back();
    }
    return s;
  }
  std::string prompt_text;
  for (const ChatMessage& m : p.prompt) prompt_text += m.content;
  std::string response_text;
  for (const ChatMessage& m : response) response_text += m.content;
  s.ids = tokenizer.encode_prompt(prompt_text);
  s.response.assign(s.ids.size(), 0);
  std::vector<int32_t> r = tokenizer.encode(response_text);
  // The response ends as generation ends it: with the end-of-text token, where the vocabulary has one.
  if (auto eos = tokenizer.special_token_id("<|endoftext|>")) r.push_back(*eos);
  s.ids.insert(s.ids.end(), r.begin(), r.end());
  s.response.insert(s.response.end(), r.size(), 1);
  return s;
}

bool cut(ScoredSequence& s, int64_t max_tokens) {
  if (static_cast<int64_t>(s.ids.size()) > max_tokens) {
    s.ids.resize(static_cast<size_t>(max_tokens));
    s.response.resize(s.ids.size());
  }
  // A response token must be predicted from something: not the very first token.
  if (s.response.size() < 2) return false;
  return std::any_of(s.response.begin() + 1, s.response.end(), [](uint8_t r) { return r != 0; });
}

}  // namespace

std::optional<EncodedPair> encode_preference(const PreferenceText& p, const Tokenizer& tokenizer,
                                             const ChatTemplate* chat_template, int64_t max_tokens) {
  EncodedPair e{encode_side(p, p.chosen, tokenizer, chat_template), encode_side(p, p.rejected, tokenizer, chat_template)};
  if (!cut(e.chosen, max_tokens) || !cut(e.rejected, max_tokens)) return std::nullopt;
  return e;
}

PreferenceSplit split_preferences(const std::vector<PreferenceText>& pairs, const Tokenizer& tokenizer,
                                  const ChatTemplate* chat_template, int64_t max_tokens, double val_fraction,
                                  uint64_t seed) {
  GPT_CHECK(val_fraction > 0 && val_fraction < 1, "the held-out fraction must be in (0, 1)");
  std::vector<EncodedPair> all;
  PreferenceSplit split;
  for (size_t i = 0; i < pairs.size(); ++i) {
    std::optional<EncodedPair> e;
    try {
      e = encode_preference(pairs[i], tokenizer, chat_template, max_tokens);
    } catch (const Error& err) {
      throw Error("pair " + std::to_string(i + 1) + ": " + err.what());
    }
    if (e) all.push_back(std::move(*e));
    else ++split.dropped;
  }
  const auto n = static_cast<int64_t>(all.size());
  GPT_CHECK(n >= 2, "preference tuning needs at least 2 usable pairs (one is held out), found " + std::to_string(n));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  Rng rng(mix64(seed ^ 0x70a1f5d3ull));
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.next_u64() % static_cast<uint64_t>(i + 1))]);
  const int64_t n_val = std::clamp<int64_t>(std::llround(static_cast<double>(n) * val_fraction), 1, n - 1);
  std::sort(order.begin(), order.begin() + n_val);
  std::sort(order.begin() + n_val, order.end());
  for (int64_t i = 0; i < n; ++i) {
    auto& dst = i < n_val ? split.val : split.train;
    dst.push_back(std::move(all[static_cast<size_t>(order[static_cast<size_t>(i)])]));
  }
  return split;
}

}  // namespace gpt
