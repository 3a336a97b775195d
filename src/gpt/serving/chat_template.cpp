#include "gpt/serving/chat_template.h"

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/bpe.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {

ChatTemplate ChatTemplate::named(const std::string& name) {
  ChatTemplate t;
  t.name_ = name;
  if (name == "chatml") {
    t.end_of_turn_ = "<|im_end|>";
  } else if (name == "llama3") {
    t.end_of_turn_ = "<|eot_id|>";
  } else {
    std::string known;
    for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown chat template '" + name + "' (known: " + known + ")");
  }
  return t;
}

std::vector<std::string> ChatTemplate::names() { return {"chatml", "llama3"}; }

std::optional<ChatTemplate> ChatTemplate::recognise(const std::string& jinja) {
  if (jinja.find("<|im_start|>") != std::string::npos) return named("chatml");
  if (jinja.find("<|start_header_id|>") != std::string::npos) return named("llama3");
  return std::nullopt;
}

std::optional<ChatTemplate> ChatTemplate::of_model(const std::filesystem::path& model) {
  std::error_code ec;
  const std::filesystem::path file = model / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(file, ec)) return std::nullopt;
  const nlohmann::json j = nlohmann::json::parse(read_text_file(file), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw Error(file.string() + ": not a JSON object");
  const auto it = j.find("chat_template");
  if (it == j.end()) return std::nullopt;
  if (it->is_string()) {
    if (auto t = recognise(it->get<std::string>())) return t;
    throw Error(file.string() + ": its chat_template is none gpt.cpp knows; pass --chat-template NAME");
  }
  throw Error(file.string() + ": chat_template is not a string");
}

std::vector<ChatTemplate::Piece> ChatTemplate::pieces(const std::vector<ChatMessage>& messages) const {
  GPT_CHECK(!messages.empty(), "a chat needs at least one message");
  std::vector<Piece> out;
  if (name_ == "llama3") out.push_back({"<|begin_of_text|>", true});
  for (const ChatMessage& m : messages) {
    GPT_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant",
              "unknown message role '" + m.role + "' (expected system, user or assistant)");
    if (name_ == "chatml") {
      out.push_back({"<|im_start|>", true});
      out.push_back({m.role + "\n", false});
      out.push_back({m.content, false});
      out.push_back({"<|im_end|>", true});
      out.push_back({"\n", false});
    } else {  // llama3
      out.push_back({"<|start_header_id|>", true});
      out.push_back({m.role, false});
      out.push_back({"<|end_header_id|>", true});
      out.push_back({"\n\n" + m.content, false});
      out.push_back({"<|eot_id|>", true});
    }
  }
  if (name_ == "chatml") {
    out.push_back({"<|im_start|>", true});
    out.push_back({"assistant\n", false});
  } else {
    out.push_back({"<|start_header_id|>", true});
    out.push_back({"assistant", false});
    out.push_back({"<|end_header_id|>", true});
    out.push_back({"\n\n", false});
  }
  return out;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages) const {
  std::string text;
  for (const Piece& p : pieces(messages)) text += p.text;
  return text;
}

std::vector<int32_t> ChatTemplate::encode(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) const {
  const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tokenizer);
  std::vector<int32_t> ids;
  for (const Piece& p : pieces(messages)) {
    if (p.text.empty()) continue;
    if (p.marker && bpe != nullptr) {
      bool special = false;
      for (const SpecialToken& s : bpe->special_tokens()) {
        if (s.text == p.text) {
          ids.push_back(s.id);
          special = true;
          break;
        }
      }
      if (special) continue;
    }
    const std::vector<int32_t> piece = tokenizer.encode(p.text);  // plain text: markers in it stay text
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  return ids;
}

}  // namespace gpt
