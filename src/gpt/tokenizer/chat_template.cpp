#include "gpt/tokenizer/chat_template.h"

#include <algorithm>

#include <nlohmann/json.hpp>

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
  if (const auto named_it = j.find("gpt_chat_template"); named_it != j.end()) {
    if (!named_it->is_string()) throw Error(file.string() + ": gpt_chat_template is not a string");
    return named(named_it->get<std::string>());
  }
  const auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    if (auto t = recognise(it->get<std::string>())) return t;
    throw Error(file.string() + ": its chat_template is none gpt.cpp knows; pass --chat-template NAME");
  }
  throw Error(file.string() + ": chat_template is not a string");
}

std::vector<std::string> ChatTemplate::markers() const {
  if (name_ == "chatml") return {"<|im_start|>", "<|im_end|>"};
  return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
}

std::vector<ChatTemplate::Piece> ChatTemplate::pieces(const std::vector<ChatMessage>& messages,
                                                      bool generation_prompt) const {
  GPT_CHECK(!messages.empty(), "a chat needs at least one message");
  std::vector<Piece> out;
  if (name_ == "llama3") out.push_back({"<|begin_of_text|>", true, false});
  for (const ChatMessage& m : messages) {
    GPT_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant",
              "unknown message role '" + m.role + "' (expected system, user or assistant)");
    const bool reply = m.role == "assistant";
    if (name_ == "chatml") {
      out.push_back({"<|im_start|>", true, false});
      out.push_back({m.role + "\n", false, false});
      out.push_back({m.content, false, reply});
      out.push_back({"<|im_end|>", true, reply});
      out.push_back({"\n", false, false});
    } else {  // llama3
      out.push_back({"<|start_header_id|>", true, false});
      out.push_back({m.role, false, false});
      out.push_back({"<|end_header_id|>", true, false});
      // The header's blank line is its own piece, as in the generation prompt below, so
      // training and chat see the same tokens after <|end_header_id|>.
      out.push_back({"\n\n", false, false});
      out.push_back({m.content, false, reply});
      out.push_back({"<|eot_id|>", true, reply});
    }
  }
  if (!generation_prompt) return out;
  if (name_ == "chatml") {
    out.push_back({"<|im_start|>", true, false});
    out.push_back({"assistant\n", false, false});
  } else {
    out.push_back({"<|start_header_id|>", true, false});
    out.push_back({"assistant", false, false});
    out.push_back({"<|end_header_id|>", true, false});
    out.push_back({"\n\n", false, false});
  }
  return out;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool generation_prompt) const {
  std::string text;
  for (const Piece& p : pieces(messages, generation_prompt)) text += p.text;
  return text;
}

std::vector<int32_t> ChatTemplate::encode(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) const {
  std::vector<int32_t> ids;
  for (const Piece& p : pieces(messages, true)) {
    if (p.text.empty()) continue;
    if (p.marker) {
      if (auto id = tokenizer.special_token_id(p.text)) {
        ids.push_back(*id);
        continue;
      }
    }
    const std::vector<int32_t> piece = tokenizer.encode(p.text);  // plain text: markers in it stay text
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  return ids;
}

EncodedChat ChatTemplate::encode_for_training(const std::vector<ChatMessage>& messages,
                                              const Tokenizer& tokenizer) const {
  GPT_CHECK(std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "assistant"; }),
            "the conversation has no assistant message: nothing to learn from");
  EncodedChat out;
  for (const Piece& p : pieces(messages, false)) {
    if (p.text.empty()) continue;
    if (p.marker) {
      const auto id = tokenizer.special_token_id(p.text);
      GPT_CHECK(id.has_value(), "the tokenizer has no special token " + p.text + " (the " + name_ +
                                    " template needs it; gpt sft adds it)");
      out.ids.push_back(*id);
      out.is_reply.push_back(p.reply ? 1 : 0);
      continue;
    }
    const std::vector<int32_t> piece = tokenizer.encode(p.text);
    out.ids.insert(out.ids.end(), piece.begin(), piece.end());
    out.is_reply.insert(out.is_reply.end(), piece.size(), p.reply ? 1 : 0);
  }
  return out;
}

std::string ChatTemplate::jinja_source() const {
  if (name_ == "chatml") {
    return "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
           "{% endif %}";
  }
  return "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
         "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
         "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
}

void ChatTemplate::save_to(const std::filesystem::path& model_dir) const {
  const nlohmann::ordered_json j = {{"chat_template", jinja_source()},
                                    {"gpt_chat_template", name_},
                                    {"eos_token", end_of_turn_}};
  write_file_atomic(model_dir / "tokenizer_config.json", j.dump(2) + "\n");
}

}  // namespace gpt
