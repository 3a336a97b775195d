// Tokenizers turn text into token ids and back. Two simple ones live here:
//   char: one token per Unicode character seen in the training text (nanoGPT's
//         shakespeare_char), vocabulary sorted by code point;
//   byte: one token per byte value (vocab 256), works on any input;
//   bpe:  byte-level BPE (bpe.h), e.g. GPT-2's vocabulary. A tokenizer is saved next to
// the model as tokenizer.gpt.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace gpt {

inline constexpr const char* kTokenizerFileName = "tokenizer.gpt.json";   // char and byte
inline constexpr const char* kHfTokenizerFileName = "tokenizer.json";    // BPE, Hugging Face's format

// A token that stands for a marker (<|endoftext|>, <|im_start|>, ...). encode()
// never produces one: text that spells a marker stays text, so a user cannot
// forge one; a chat template asks for them by name (special_token_id).
struct SpecialToken {
  std::string text;  // e.g. "<|endoftext|>"
  int32_t id;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string type() const = 0;
  virtual int vocab_size() const = 0;
  // Throws gpt::Error if the text holds something the vocabulary cannot express.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // A whole corpus (training data), on up to `threads` threads where the
  // tokenizer can split the work; the same ids as encode().
  virtual std::vector<int32_t> encode_corpus(std::string_view text, int /*threads*/) const { return encode(text); }
  // The bytes of one token (may be part of a UTF-8 character for byte tokenizers);
  // empty for an id past the vocabulary (a model's padding rows).
  virtual std::string token_bytes(int32_t id) const = 0;
  virtual nlohmann::json to_json() const = 0;
  virtual const std::vector<SpecialToken>& special_tokens() const = 0;
  // A copy with `texts` added as special tokens at ids vocab_size(), vocab_size() + 1, ...
  // (those it has already are kept where they are). gpt::Error for an empty text.
  virtual std::unique_ptr<Tokenizer> with_special_tokens(const std::vector<std::string>& texts) const = 0;

  std::optional<int32_t> special_token_id(std::string_view text) const;

  // The token a model expects before a text (Llama's <s>), if its tokenizer
  // puts one there.
  virtual std::optional<int32_t> bos_id() const { return std::nullopt; }
  // Text between special tokens: each segment is plain text, or a special
  // token's id. Appends the ids; ends (if given) gets where each segment's ids
  // end. A segment's text is encoded as what follows the one before it
  // (SentencePiece puts its "▁" only before a text's first segment or all).
  struct Segment {
    std::string_view text;
    std::optional<int32_t> special;
  };
  virtual void encode_segments(const std::vector<Segment>& segments, std::vector<int32_t>& ids,
                               std::vector<size_t>* ends = nullptr) const;
  // A prompt as the model reads it: bos_id() (if any), then the text's tokens.
  std::vector<int32_t> encode_prompt(std::string_view text) const;

  // Concatenated token bytes (SentencePiece-style vocabularies drop the leading
  // space their encoder added); throws gpt::Error for ids outside the vocabulary.
  virtual std::string decode(std::span<const int32_t> ids) const;
};

std::unique_ptr<Tokenizer> make_char_tokenizer(std::string_view corpus);
std::unique_ptr<Tokenizer> make_byte_tokenizer();
std::unique_ptr<Tokenizer> tokenizer_from_json(const nlohmann::json& j);

// `path` is a tokenizer file (tokenizer.gpt.json, a Hugging Face tokenizer.json)
// or a directory holding one, or GPT-2's encoder.json + vocab.bpe, or Hugging
// Face's vocab.json + merges.txt.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);
// The tokenizer file in a directory, or an empty path.
std::filesystem::path find_tokenizer(const std::filesystem::path& dir);
// The file name a tokenizer is saved under in a checkpoint.
std::string tokenizer_file_name(const Tokenizer& tokenizer);
void save_tokenizer(const Tokenizer& tokenizer, const std::filesystem::path& file);

}  // namespace gpt
