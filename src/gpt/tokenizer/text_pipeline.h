// What a Hugging Face tokenizer.json does around its BPE model, for the
// families gpt.cpp reads:
//   GPT-2:            no normalizer, GPT-2's split pattern, GPT-2's byte alphabet;
//   Llama 3, Qwen2/3: (NFC), a Split regex (run by PCRE2), byte alphabet;
//   Llama 2, Mistral, TinyLlama (SentencePiece style): spaces become "▁" and
//                     "▁" is put before the text (a Prepend/Replace normalizer
//                     or a Metaspace pre-tokenizer), the vocabulary is written
//                     in text, a character it lacks falls back to <0xAB> byte
//                     tokens, and the decoder drops the leading space again.
// Anything else in a tokenizer.json (another normalizer or pre-tokenizer, a
// split behaviour gpt.cpp does not run) is refused in one line rather than
// giving other ids than the model's own tokenizer.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpt {

class Pcre2Pattern;

// The Split regexes of Llama 3 and of Qwen2/Qwen3 (which splits numbers into
// single digits): llama.cpp names them "llama-bpe" and "qwen2" in GGUF files.
extern const char* const kLlama3SplitPattern;
// SentencePiece's word marker, U+2581 "▁", as UTF-8.
extern const char* const kMetaspace;
extern const char* const kQwen2SplitPattern;

class TextPipeline {
 public:
  // GPT-2's (what gpt.cpp writes for the BPE vocabularies it trains).
  static TextPipeline gpt2();
  // The pipeline of a tokenizer.json; gpt::Error for parts gpt.cpp does not run.
  static TextPipeline from_hf_json(const nlohmann::json& tokenizer_json);

  // Vocabulary written in GPT-2's byte alphabet (else: text, SentencePiece style).
  bool byte_level() const { return byte_level_; }
  bool byte_fallback() const { return byte_fallback_; }
  // A pre-token that is itself a vocabulary entry is taken whole (Llama 3).
  bool ignore_merges() const { return ignore_merges_; }
  const std::optional<std::string>& unk_token() const { return unk_token_; }
  bool fuse_unk() const { return fuse_unk_; }
  // The special token the post-processor puts before a text (Llama's <s>).
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  // The decoder drops one leading space from a decoded text (SentencePiece).
  bool strip_leading_space() const { return strip_leading_space_; }
  // No pre-tokenizer: the whole segment is one word (Llama 2's files).
  bool splits() const { return !steps_.empty(); }
  // Pieces never span "x\ny" (x, y not spaces): a long text may be cut there and
  // its parts encoded in parallel.
  bool cuts_at_newlines() const { return cuts_at_newlines_; }

  // The Split regexes, in order (empty for GPT-2's pattern and SentencePiece).
  std::vector<std::string> split_patterns() const;
  // GPT-2's pipeline exactly (no normalizer, its pattern, byte alphabet).
  bool is_gpt2() const;
  // Puts SentencePiece's "▁" before a text (llama.cpp's add_space_prefix).
  bool prepends_metaspace() const;

  // One text segment between added tokens, normalized; `first`: it starts the text.
  bool normalizes() const { return !normalize_.empty(); }
  std::string normalize(std::string_view segment, bool first) const;
  // The pre-tokens of normalized text, in order, covering all of it.
  void for_each_piece(std::string_view text, const std::function<void(std::string_view)>& emit) const;

  // The tokenizer.json sections this pipeline was read from (normalizer,
  // pre_tokenizer, post_processor, decoder), written back by to_json().
  const nlohmann::json& sections() const { return sections_; }

 private:
  struct NormalizeStep {
    enum class Kind { kNfc, kPrepend, kReplace } kind;
    std::string from, to;
    bool first_only = false;     // Metaspace's prepend_scheme "first"
    bool unless_present = false;  // Metaspace: not when the text starts with it already
  };
  struct SplitStep {
    enum class Kind { kGpt2Pattern, kPattern, kMetaspace } kind;
    std::shared_ptr<const Pcre2Pattern> pattern;
    std::string source;  // the regex as written
    enum class Behavior { kIsolated, kMergedWithPrevious, kMergedWithNext, kRemoved } behavior = Behavior::kIsolated;
  };
  void split(const SplitStep& step, std::string_view text, const std::function<void(std::string_view)>& emit) const;

  std::vector<NormalizeStep> normalize_;
  std::vector<SplitStep> steps_;
  bool byte_level_ = true, byte_fallback_ = false, ignore_merges_ = false, fuse_unk_ = false;
  bool strip_leading_space_ = false, cuts_at_newlines_ = true;
  std::optional<std::string> unk_token_, bos_token_;
  nlohmann::json sections_;
};

}  // namespace gpt
