// Chat messages -> the tokens a chat model reads. Two kinds of template:
//   named (chatml, llama3): gpt.cpp's own, what `gpt sft` trains with and
//     writes ("gpt_chat_template" in tokenizer_config.json, beside its Jinja
//     source), chosen with --chat-template;
//   a model's Jinja source ("chat_template" in tokenizer_config.json or a GGUF
//     file's tokenizer.chat_template), rendered by gpt.cpp's Jinja engine
//     exactly as Hugging Face renders it (jinja.h).
// Role markers become special tokens where the tokenizer has them; message
// text is always encoded as plain text, so a user cannot forge a marker.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

namespace jinja {
class Template;
}

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
  // A model's Jinja source, with the texts its bos_token and eos_token stand
  // for; gpt::Error "chat template: ..." if it does not parse. gpt.cpp's own
  // sources come back as the named templates.
  static ChatTemplate from_jinja(const std::string& source, const std::string& bos_token = "",
                                 const std::string& eos_token = "");
  // The named template whose Jinja source this is exactly, if any.
  static std::optional<ChatTemplate> recognise(const std::string& jinja_source);
  // The template a model directory declares (tokenizer_config.json), if any.
  static std::optional<ChatTemplate> of_model(const std::filesystem::path& model);
  // The template a tokenizer_config.json declares, if any.
  static std::optional<ChatTemplate> of_config_file(const std::filesystem::path& file);

  // "chatml", "llama3", or "jinja" for a model's own source.
  const std::string& name() const { return name_; }
  bool is_jinja() const { return jinja_ != nullptr; }
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
  // A Jinja template's rendering cut into pieces: the tokenizer's special tokens
  // the template wrote are markers, message text never is; with mark_replies,
  // assistant messages (and the template's text after each up to its end of
  // turn) are replies.
  std::vector<Piece> jinja_pieces(const std::vector<ChatMessage>& messages, bool generation_prompt,
                                  const Tokenizer& tokenizer, bool mark_replies) const;
  std::string render_jinja(const std::vector<ChatMessage>& messages, bool generation_prompt) const;
  // Pieces of a rendering: special tokens as markers, the rest text; with
  // `replies`, text between kReplyBegin and kReplyEnd is a reply (and, with
  // tail_after_reply, what follows up to the end of its turn).
  std::vector<Piece> cut_rendering(const std::string& text, const Tokenizer& tokenizer, bool replies,
                                   bool tail_after_reply) const;
  std::string name_, end_of_turn_;
  std::shared_ptr<const jinja::Template> jinja_;
  std::string source_, bos_token_, eos_token_;
};

}  // namespace gpt
