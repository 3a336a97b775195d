// Byte-level BPE as GPT-2 does it: text is split into pieces by GPT-2's
// pre-tokenization pattern (contractions, letters, numbers, other symbols,
// whitespace runs; Unicode categories from utf8proc), each piece's bytes are
// mapped to GPT-2's printable byte alphabet, and adjacent symbols are merged in
// the order of the merge list (lowest rank first) until no listed pair is left.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

// GPT-2's pre-tokenization: the byte ranges of the pieces of `text`, by the pattern
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Invalid UTF-8 bytes are treated as symbols of their own (category "other").
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);
// The same pieces, one by one, without building a list.
void for_each_gpt2_piece(std::string_view text, const std::function<void(std::string_view)>& emit);

// GPT-2's bijection between bytes and printable Unicode characters (as UTF-8).
const std::vector<std::string>& gpt2_byte_to_unicode();

class BpeTokenizer final : public Tokenizer {
 public:
  // vocab: token string (in GPT-2's byte alphabet) -> id; merges: pairs in rank
  // order; special tokens (must be in vocab) are matched only where allowed.
  BpeTokenizer(std::unordered_map<std::string, int32_t> vocab, std::vector<std::pair<std::string, std::string>> merges,
               std::vector<SpecialToken> special = {});

  // GPT-2's files: encoder.json (token -> id) and vocab.bpe (merges); also
  // Hugging Face's vocab.json + merges.txt, which have the same formats.
  // "<|endoftext|>" is a special token when the vocabulary has it.
  static std::unique_ptr<BpeTokenizer> load_gpt2(const std::filesystem::path& encoder_json,
                                                 const std::filesystem::path& vocab_bpe);
  // A Hugging Face tokenizer.json of a byte-level BPE model (what to_json() writes).
  static std::unique_ptr<BpeTokenizer> from_hf_json(const nlohmann::json& j);

  std::string type() const override { return "bpe"; }
  int vocab_size() const override { return static_cast<int>(token_bytes_.size()); }
  // Special tokens such as <|endoftext|> are encoded as plain text here.
  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_corpus(std::string_view text, int threads) const override {
    return encode(text, false, threads);
  }
  // With allow_special, the special tokens' text becomes their ids.
  std::vector<int32_t> encode(std::string_view text, bool allow_special, int threads = 1) const;
  const std::vector<SpecialToken>& special_tokens() const override { return special_; }
  std::unique_ptr<Tokenizer> with_special_tokens(const std::vector<std::string>& texts) const override;
  // Empty for an id past the vocabulary (a model's padding rows).
  std::string token_bytes(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < token_bytes_.size() ? token_bytes_[static_cast<size_t>(id)] : std::string();
  }
  // Hugging Face tokenizer.json (model BPE, ByteLevel pre-tokenizer and decoder).
  nlohmann::json to_json() const override;
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }
  // A token as written in vocabularies (GPT-2's printable byte alphabet).
  const std::string& token_string(int32_t id) const { return token_strings_.at(static_cast<size_t>(id)); }

 private:
  using Cache = std::unordered_map<std::string, std::vector<int32_t>>;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out, int threads) const;

  std::vector<std::string> token_bytes_;                 // id -> raw bytes
  std::vector<std::string> token_strings_;               // id -> GPT-2 alphabet string (for saving)
  std::vector<std::pair<std::string, std::string>> merges_;
  int32_t byte_id_[256];                                  // id of each single byte
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_of_;  // (left, right) -> (rank, merged id)
  std::vector<SpecialToken> special_;
};

}  // namespace gpt
