// Chat messages -> the prompt a chat model was trained on. Templates are known
// by name (llama-server's --chat-template does the same): a model says which
// one it uses in its tokenizer_config.json ("chat_template", Hugging Face's
// Jinja source, recognised by its markers) or the server is told with
// --chat-template. Role markers become special tokens where the tokenizer has
// them; message text is always encoded as plain text, so a user cannot forge
// a marker.
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
  // The conversation, then the opening of the assistant's turn, as token ids.
  // gpt::Error for an unknown role or no messages.
  std::vector<int32_t> encode(const std::vector<ChatMessage>& messages, const Tokenizer& tokenizer) const;
  // The same as text (markers as written).
  std::string render(const std::vector<ChatMessage>& messages) const;
  // Text that ends the assistant's turn (a stop string for generation).
  const std::string& end_of_turn() const { return end_of_turn_; }

 private:
  struct Piece {
    std::string text;
    bool marker;  // a special token where the tokenizer has one
  };
  std::vector<Piece> pieces(const std::vector<ChatMessage>& messages) const;
  std::string name_, end_of_turn_;
};

}  // namespace gpt
