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

#include "gpt/tokenizer/text_pipeline.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

// GPT-2's pre-tokenization: the byte ranges of the pieces of `text`, by the pattern
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Invalid UTF-8 bytes are treated as symbols of their own (category "other").
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);
// The same pieces, one by one, without building a list.
void for_each_gpt2_piece(std::string_view text, const std::function<void(std::string_view)>& emit);

// SentencePiece's byte tokens: "<0xAB>" -> 0xAB; -1 for any other token.
int sentencepiece_byte(std::string_view token);

// GPT-2's bijection between bytes and printable Unicode characters (as UTF-8).
const std::vector<std::string>& gpt2_byte_to_unicode();

// The BPE model: a piece's symbols (bytes in GPT-2's byte alphabet, or the
// characters of a SentencePiece-style vocabulary with <0xAB> byte fallback) are
// merged in the order of the merge list (lowest rank first) until no listed
// pair is left. What happens to text before and after is the TextPipeline.
class BpeTokenizer final : public Tokenizer {
 public:
  // vocab: token string (as the vocabulary writes it) -> id; merges: pairs in rank
  // order; special tokens (must be in vocab) are matched only where allowed.
  BpeTokenizer(std::unordered_map<std::string, int32_t> vocab, std::vector<std::pair<std::string, std::string>> merges,
               std::vector<SpecialToken> special = {}, TextPipeline pipeline = TextPipeline::gpt2());

  // GPT-2's files: encoder.json (token -> id) and vocab.bpe (merges); also
  // Hugging Face's vocab.json + merges.txt, which have the same formats.
  // "<|endoftext|>" is a special token when the vocabulary has it.
  static std::unique_ptr<BpeTokenizer> load_gpt2(const std::filesystem::path& encoder_json,
                                                 const std::filesystem::path& vocab_bpe);
  // A Hugging Face tokenizer.json of a BPE model (GPT-2's, Llama 3's and Qwen's
  // byte-level BPE, Llama 2's and Mistral's SentencePiece-style BPE).
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
  std::string decode(std::span<const int32_t> ids) const override;
  void encode_segments(const std::vector<Segment>& segments, std::vector<int32_t>& ids,
                       std::vector<size_t>* ends = nullptr) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  // Hugging Face tokenizer.json: the model, and the pipeline as it was read.
  nlohmann::json to_json() const override;
  const TextPipeline& pipeline() const { return pipeline_; }
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }
  // A token as written in vocabularies (GPT-2's printable byte alphabet, or
  // SentencePiece's text with "▁").
  const std::string& token_string(int32_t id) const { return token_strings_.at(static_cast<size_t>(id)); }
  std::optional<int32_t> id_of(const std::string& written) const {
    auto it = id_of_.find(written);
    return it == id_of_.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }

 private:
  using Cache = std::unordered_map<std::string, std::vector<int32_t>>;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const;
  // The symbols of a piece before merging: its bytes, or (SentencePiece style)
  // its characters, each falling back to byte tokens or <unk>.
  void initial_symbols(std::string_view piece, std::vector<int32_t>& ids) const;
  void for_each_word(std::string_view normalized, const std::function<void(std::string_view)>& emit) const;
  // One segment between special tokens; `first`: it starts the text.
  void encode_plain(std::string_view text, std::vector<int32_t>& out, int threads, bool first) const;
  size_t safe_cut_near(std::string_view text, size_t pos) const;

  TextPipeline pipeline_;
  std::vector<std::string> token_bytes_;                 // id -> raw bytes
  std::vector<std::string> token_strings_;               // id -> string as the vocabulary writes it
  std::unordered_map<std::string, int32_t> id_of_;       // string as written -> id
  std::vector<std::pair<std::string, std::string>> merges_;
  int32_t byte_id_[256];                                  // id of each byte's token (-1: none)
  int32_t unk_id_ = -1;
  std::optional<int32_t> bos_id_;
  // SentencePiece style: no token holds "▁" after another character, so a text
  // may be cut before each "▁" that follows one and the words encoded apart.
  bool metaspace_words_ = false;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_of_;  // (left, right) -> (rank, merged id)
  std::vector<SpecialToken> special_;
};

}  // namespace gpt
