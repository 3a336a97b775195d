// Chat messages -> the tokens a chat model reads. Templates are known by name
// (llama-server's --chat-template does the same): a model says which one it
// uses in its tokenizer_config.json ("chat_template", Hugging Face's Jinja
// source, recognised by its markers; "gpt_chat_template", the name, where
// gpt.cpp wrote the file) or a command is told with --chat-template. Role
// markers become special tokens where the tokenizer has them; message text is
// always encoded as plain text, so a user cannot forge a marker.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

// A whole conversation as training data: its tokens, and which of them the
// model should learn to write (each assistant reply and its end-of-turn marker).
struct EncodedChat {
  std::vector<int32_t> ids;
  std::vector<uint8_t> is_reply;  // 1 for assistant tokens, per id
};

class ChatTemplate {
 public:
  // gpt::Error for an unknown name; names() lists the known ones.
  static ChatTemplate named(const std::string& name);
  static std::vector<std::string> names();
  // The template a Hugging Face Jinja source is an instance of, if any.
  static std::optional<ChatTemplate> recognise(const std::string& jinja_source);
  // The template a model directory declares (tokenizer_config.json), if any.
  static std::optional<ChatTemplate> of_model(const std::filesystem::path& model);

  const std::string& name() const { return name_; }
  // The markers this template needs as special tokens (what fine-tuning adds).
  std::vector<std::string> markers() const;
  // The conversation, then the opening of the assistant's turn, as token ids.
  // gpt::Error for an unknown role or no messages.
  std::vector<int32_t> encode(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) const;
  // A finished conversation (no assistant opening appended), with its replies
  // marked. gpt::Error if it has no assistant message, or if the tokenizer lacks
  // the template's markers (training must see them as single tokens).
  EncodedChat encode_for_training(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) const;
  // The same as text (markers as written); without the assistant's opening when
  // !generation_prompt (Jinja's add_generation_prompt).
  std::string render(const std::vector<ChatMessage>& messages, bool generation_prompt = true) const;
  // Text that ends the assistant's turn (a stop string for generation).
  const std::string& end_of_turn() const { return end_of_turn_; }
  // Hugging Face's Jinja source for this template (what tokenizer_config.json holds).
  std::string jinja_source() const;
  // Writes tokenizer_config.json into a model directory: the Jinja source, the
  // name, and the end-of-turn marker as eos_token. Replaces the file atomically.
  void save_to(const std::filesystem::path& model_dir) const;

 private:
  struct Piece {
    std::string text;
    bool marker;  // a special token where the tokenizer has one
    bool reply;   // written by the assistant (learned in fine-tuning)
  };
  std::vector<Piece> pieces(const std::vector<ChatMessage>& messages, bool generation_prompt) const;
  std::string name_, end_of_turn_;
};

}  // namespace gpt
