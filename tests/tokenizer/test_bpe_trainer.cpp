// BPE training: a hand-worked corpus gives the expected merges, training is
// deterministic, and a trained tokenizer saved as Hugging Face tokenizer.json
// reloads and encodes identically.
#include <cstdlib>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/bpe_trainer.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(BpeTrainer, HandWorkedCorpus) {
  // Pieces: "ab" x1, " ab" x2, " abc" x1 (space is 'Ġ' in the byte alphabet).
  // Pair counts: (a,b)=4, (Ġ,a)=3, (b,c)=1 -> merge "a b"; then (Ġ,ab)=3 -> "Ġ ab";
  // then (Ġab,c)=1 -> "Ġab c". Nothing is left to merge after that.
  PieceCounts counts;
  counts.add("ab ab ab abc");
  BpeTrainOptions opts;
  opts.vocab_size = 256 + 10 + 1;
  const auto tok = train_bpe(counts, opts);
  using M = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(tok->merges(), (M{{"a", "b"}, {"Ġ", "ab"}, {"Ġab", "c"}}));
  EXPECT_EQ(tok->vocab_size(), 256 + 3 + 1);  // stops early: no pair left
  EXPECT_EQ(tok->encode(" abc ab"), (std::vector<int32_t>{258, 257}));
  EXPECT_EQ(tok->token_bytes(259), "<|endoftext|>");
}

TEST(BpeTrainer, TiesAreBrokenBySmallerPairIds) {
  PieceCounts counts;
  counts.add("xy\nba");  // pieces xy, \n, ba: (x,y) and (b,a) occur once each; (b,a) has the smaller ids
  BpeTrainOptions opts;
  opts.vocab_size = 256 + 1;
  opts.special_tokens = {};
  const auto tok = train_bpe(counts, opts);
  ASSERT_EQ(tok->merges().size(), 1u);
  EXPECT_EQ(tok->merges()[0], (std::pair<std::string, std::string>{"b", "a"}));
}

TEST(BpeTrainer, DeterministicAndSavedTokenizersReloadIdentically) {
  const auto data = testing::shared_data("tinyshakespeare.txt");
  std::string text;
  if (std::filesystem::exists(data) && std::getenv("GPT_TEST_NO_SHARED_DATA") == nullptr) {
    text = read_text_file(data).substr(0, 300000);
  } else {
    // Enough distinct words for 1000 merges: syllables combined three at a time.
    const char* syllables[] = {"ka", "lo", "mi", "ren", "tha", "os", "vel", "un", "qui", "bar", "ne", "sto", "ph",
                               "ix", "dra", "gu", "el", "mor", "ae", "zin", "cu", "ty", "wen"};
    for (int i = 0; i < 12000; ++i) {
      text += std::string(i % 5 == 0 ? " The " : " ") + syllables[i % 23] + syllables[(i * 7 + 3) % 19] +
              syllables[(i / 23) % 17] + (i % 11 == 0 ? ",\n" : "");
    }
  }
  PieceCounts counts;
  counts.add(text);
  counts.add("그리고 한국어도 배운다. 그리고 또 배운다.");
  BpeTrainOptions opts;
  opts.vocab_size = 1000;
  const auto a = train_bpe(counts, opts);
  const auto b = train_bpe(counts, opts);
  EXPECT_EQ(a->to_json().dump(), b->to_json().dump());
  EXPECT_EQ(a->vocab_size(), 1000);

  testing::TempDir dir;
  save_tokenizer(*a, dir / "tokenizer.json");
  const auto j = nlohmann::json::parse(read_text_file(dir / "tokenizer.json"));
  EXPECT_EQ(j["model"]["type"], "BPE");  // Hugging Face's layout
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["added_tokens"][0]["content"], "<|endoftext|>");
  const auto back = load_tokenizer(dir / "tokenizer.json");
  const std::string sample = text.substr(1000, 5000) + "그리고 새 문장";
  EXPECT_EQ(back->encode(sample), a->encode(sample));
  EXPECT_EQ(back->decode(a->encode(sample)), sample);
  EXPECT_LT(a->encode(sample).size(), sample.size() / 2);  // it does compress
}

TEST(BpeTrainer, RejectsImpossibleSizes) {
  PieceCounts counts;
  counts.add("text");
  BpeTrainOptions opts;
  opts.vocab_size = 100;
  EXPECT_THROW(train_bpe(counts, opts), Error);
  EXPECT_THROW(train_bpe(PieceCounts{}, BpeTrainOptions{}), Error);
}

}  // namespace
}  // namespace gpt
