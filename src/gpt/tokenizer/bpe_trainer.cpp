#include "gpt/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <queue>
#include <unordered_set>

#include "gpt/util/error.h"
#include "gpt/util/progress.h"

namespace gpt {

void PieceCounts::add(std::string_view text) {
  for_each_gpt2_piece(text, [&](std::string_view piece) { ++counts_[std::string(piece)]; });
  sorted_.clear();
}

const std::vector<std::pair<std::string, int64_t>>& PieceCounts::sorted() const {
  if (sorted_.size() != counts_.size()) {
    sorted_.assign(counts_.begin(), counts_.end());
    std::sort(sorted_.begin(), sorted_.end());
  }
  return sorted_;
}

namespace {

uint64_t key_of(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  // Max-heap on count; for equal counts the smaller pair key comes first.
  bool operator<(const HeapEntry& o) const { return count < o.count || (count == o.count && pair > o.pair); }
};

}  // namespace

std::unique_ptr<BpeTokenizer> train_bpe(const PieceCounts& pieces, const BpeTrainOptions& options) {
  const int n_special = static_cast<int>(options.special_tokens.size());
  GPT_CHECK(options.vocab_size >= 256 + n_special, "--vocab-size must be at least 256 + the special tokens (" +
                                                   std::to_string(256 + n_special) + ")");
  GPT_CHECK(pieces.size() > 0, "no text to train the tokenizer on");
  const int n_merges_max = options.vocab_size - 256 - n_special;

  // Words as symbol sequences, with their counts.
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (const auto& [piece, count] : pieces.sorted()) {
    std::vector<int32_t> w(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) w[i] = static_cast<unsigned char>(piece[i]);
    words.push_back(std::move(w));
    freq.push_back(count);
  }
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words that had it (may be stale)
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const auto& w = words[wi];
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      const uint64_t k = key_of(w[i], w[i + 1]);
      pair_count[k] += freq[wi];
      auto& list = where[k];
      if (list.empty() || list.back() != static_cast<int32_t>(wi)) list.push_back(static_cast<int32_t>(wi));
    }
  }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [k, c] : pair_count) heap.push({c, k});

  // Token strings (raw bytes) per id.
  std::vector<std::string> bytes_of(256);
  for (int b = 0; b < 256; ++b) bytes_of[static_cast<size_t>(b)] = std::string(1, static_cast<char>(b));
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::unordered_map<std::string, int32_t> id_of_bytes;
  for (int b = 0; b < 256; ++b) id_of_bytes.emplace(bytes_of[static_cast<size_t>(b)], b);
  std::vector<int32_t> stamp(words.size(), -1);  // last merge that visited each word
  int32_t merge_serial = 0;
  std::unordered_set<uint64_t> touched;

  ProgressLine progress(n_merges_max, 0, std::max(1, n_merges_max / 20));
  while (static_cast<int>(bytes_of.size()) - 256 < n_merges_max && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.pair);
    const int64_t current = it == pair_count.end() ? 0 : it->second;
    if (current != top.count) {  // stale entry: re-queue the true count
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current <= 0) break;
    const auto a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    // Two merges can spell the same bytes ("ab"+"c", "a"+"bc"): they share one id.
    std::string joined = bytes_of[static_cast<size_t>(a)] + bytes_of[static_cast<size_t>(b)];
    auto [known, is_new] = id_of_bytes.emplace(joined, static_cast<int32_t>(bytes_of.size()));
    const int32_t merged = known->second;
    if (is_new) bytes_of.push_back(std::move(joined));
    merges.emplace_back(a, b);
    ++merge_serial;
    touched.clear();
    const std::vector<int32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t wi : affected) {
      if (stamp[static_cast<size_t>(wi)] == merge_serial) continue;
      stamp[static_cast<size_t>(wi)] = merge_serial;
      auto& w = words[static_cast<size_t>(wi)];
      const int64_t f = freq[static_cast<size_t>(wi)];
      bool has = false;
      for (size_t i = 0; i + 1 < w.size() && !has; ++i) has = w[i] == a && w[i + 1] == b;
      if (!has) continue;
      // Take the word's pairs out, merge, put the new word's pairs back in.
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        const uint64_t k = key_of(w[i], w[i + 1]);
        pair_count[k] -= f;
        touched.insert(k);
      }
      size_t out = 0;
      for (size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          w[out++] = merged;
          i += 2;
        } else {
          w[out++] = w[i++];
        }
      }
      w.resize(out);
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        const uint64_t k = key_of(w[i], w[i + 1]);
        pair_count[k] += f;
        touched.insert(k);
        auto& list = where[k];
        if (list.empty() || list.back() != wi) list.push_back(wi);
      }
    }
    for (uint64_t k : touched) {
      auto c = pair_count.find(k);
      if (c == pair_count.end()) continue;
      if (c->second <= 0) {
        pair_count.erase(c);
      } else if (k != top.pair) {
        heap.push({c->second, k});
      }
    }
    pair_count.erase(top.pair);
    if (options.progress) progress.update(static_cast<int64_t>(merges.size()), std::to_string(pieces.size()) + " distinct pieces");
  }
  if (options.progress) progress.finish();

  // Vocabulary and merges in GPT-2's byte alphabet; special tokens last.
  const auto& b2u = gpt2_byte_to_unicode();
  auto alphabet = [&](const std::string& raw) {
    std::string s;
    for (unsigned char c : raw) s += b2u[c];
    return s;
  };
  std::unordered_map<std::string, int32_t> vocab;
  for (size_t id = 0; id < bytes_of.size(); ++id) vocab.emplace(alphabet(bytes_of[id]), static_cast<int32_t>(id));
  std::vector<std::pair<std::string, std::string>> merge_strings;
  for (const auto& [a, b] : merges) {
    merge_strings.emplace_back(alphabet(bytes_of[static_cast<size_t>(a)]), alphabet(bytes_of[static_cast<size_t>(b)]));
  }
  std::vector<SpecialToken> special;
  for (const auto& s : options.special_tokens) {
    const auto id = static_cast<int32_t>(vocab.size());
    GPT_CHECK(vocab.emplace(s, id).second, "special token '" + s + "' collides with a learned token");
    special.push_back({s, id});
  }
  return std::make_unique<BpeTokenizer>(std::move(vocab), std::move(merge_strings), std::move(special));
}

}  // namespace gpt
