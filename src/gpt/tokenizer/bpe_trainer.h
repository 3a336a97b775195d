// Training a byte-level BPE vocabulary on text. The corpus is pre-tokenized
// (GPT-2's pattern) and counted once; then, merge after merge, the most frequent
// adjacent pair is joined. Pair counts are kept up to date incrementally: a merge
// only revisits the words that contain its pair (found through per-pair
// occurrence lists), and a max-heap with lazy deletion finds the next pair.
// Ties are broken deterministically: among pairs of equal count, the one whose
// (left id, right id) is smallest wins (ids: bytes 0-255, then merges in order).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gpt/tokenizer/bpe.h"

namespace gpt {

struct BpeTrainOptions {
  int vocab_size = 32000;                          // including the 256 bytes and the special tokens
  std::vector<std::string> special_tokens = {"<|endoftext|>"};
  bool progress = false;                           // progress line on stderr
};

// Counts of the pre-tokenized pieces of some text; add as many texts as you like.
class PieceCounts {
 public:
  void add(std::string_view text);
  const std::vector<std::pair<std::string, int64_t>>& sorted() const;  // by piece, for determinism
  size_t size() const { return counts_.size(); }

 private:
  std::unordered_map<std::string, int64_t> counts_;
  mutable std::vector<std::pair<std::string, int64_t>> sorted_;
};

std::unique_ptr<BpeTokenizer> train_bpe(const PieceCounts& pieces, const BpeTrainOptions& options);

}  // namespace gpt
