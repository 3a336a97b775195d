// Byte-level BPE: GPT-2's pre-tokenization rules, id-for-id parity with GPT-2 as
// computed by js-tiktoken (tools/gpt2_reference.mjs -> tests/fixtures/gpt2_bpe_cases.json),
// exact round trips of arbitrary bytes, and clear errors for malformed files.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/bpe.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (auto p : gpt2_pretokenize(text)) out.emplace_back(p);
  return out;
}

TEST(Gpt2Pretokenize, FollowsThePattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("it's they're DON'T"), (V{"it", "'s", " they", "'re", " DON", "'", "T"}));
  EXPECT_EQ(pieces("a   b"), (V{"a", "  ", " b"}));         // the run leaves one space to the word
  EXPECT_EQ(pieces("a \nb"), (V{"a", " ", "\n", "b"}));
  EXPECT_EQ(pieces("x  "), (V{"x", "  "}));                 // trailing run stays whole
  EXPECT_EQ(pieces("abc123 456!!?"), (V{"abc", "123", " 456", "!!?"}));
  EXPECT_EQ(pieces("한국어 텍스트"), (V{"한국어", " 텍스트"}));  // \p{L} beyond ASCII
  EXPECT_EQ(pieces("x²½"), (V{"x", "²½"}));                 // \p{N} includes No
  EXPECT_EQ(pieces("\xff\xfe" "a"), (V{"\xff\xfe", "a"}));  // invalid bytes are symbols
  std::string all;
  for (const auto& p : pieces("any text, \t\n re-joins\xc3 exactly  ")) all += p;
  EXPECT_EQ(all, "any text, \t\n re-joins\xc3 exactly  ");
}

class Gpt2Bpe : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto dir = testing::shared_data("gpt2");
    if (!std::filesystem::exists(dir / "encoder.json")) GTEST_SKIP() << "SKIPPED: " << dir << " not found (needs ../shared/data)";
    tok = BpeTokenizer::load_gpt2(dir / "encoder.json", dir / "vocab.bpe");
  }
  std::unique_ptr<BpeTokenizer> tok;
};

TEST_F(Gpt2Bpe, MatchesTiktokenIdForId) {
  const auto cases = nlohmann::json::parse(read_text_file(testing::fixture("gpt2_bpe_cases.json")));
  ASSERT_GE(cases.size(), 8u);
  EXPECT_EQ(tok->vocab_size(), 50257);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(text), expected) << c["name"];
    EXPECT_EQ(tok->decode(expected), text) << c["name"];
  }
  EXPECT_EQ(tok->token_bytes(50256), "<|endoftext|>");
}

TEST_F(Gpt2Bpe, RoundTripsArbitraryBytes) {
  Rng rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng.next_u64() % 64, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng.next_u64() % 4 == 0 ? rng.next_u64() & 0xFF : " aZ9'\n"[rng.next_u64() % 6]);
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
}

TEST_F(Gpt2Bpe, SavedAndReloadedEncodesIdentically) {
  testing::TempDir dir;
  save_tokenizer(*tok, dir / kHfTokenizerFileName);
  const auto back = load_tokenizer(dir.path());
  EXPECT_EQ(back->type(), "bpe");
  const std::string text = "Saved, reloaded: 같은 토큰 ids? Yes — 100%.";
  EXPECT_EQ(back->encode(text), tok->encode(text));
  EXPECT_EQ(load_tokenizer(testing::shared_data("gpt2"))->encode(text), tok->encode(text));  // GPT-2's directory
  // Hugging Face's names for the same two files.
  testing::TempDir hf;
  std::filesystem::copy_file(testing::shared_data("gpt2") / "encoder.json", hf / "vocab.json");
  std::filesystem::copy_file(testing::shared_data("gpt2") / "vocab.bpe", hf / "merges.txt");
  EXPECT_EQ(load_tokenizer(hf.path())->encode(text), tok->encode(text));
}

TEST(BpeFiles, MalformedFilesAreClearErrors) {
  testing::TempDir dir;
  nlohmann::json vocab = nlohmann::json::object();
  const auto& b2u = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab[b2u[static_cast<size_t>(b)]] = b;
  vocab["ab"] = 256;
  write_file_atomic(dir / "encoder.json", vocab.dump());
  write_file_atomic(dir / "vocab.bpe", "#version: 0.2\na b\n");
  auto tok = BpeTokenizer::load_gpt2(dir / "encoder.json", dir / "vocab.bpe");
  EXPECT_EQ(tok->encode("abab"), (std::vector<int32_t>{256, 256}));
  auto error_of = [&]() -> std::string {
    try {
      BpeTokenizer::load_gpt2(dir / "encoder.json", dir / "vocab.bpe");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  write_file_atomic(dir / "vocab.bpe", "a zz\n");
  EXPECT_NE(error_of().find("names a token not in the vocabulary"), std::string::npos) << error_of();
  write_file_atomic(dir / "vocab.bpe", "abc\n");
  EXPECT_NE(error_of().find("expected two tokens"), std::string::npos) << error_of();
  write_file_atomic(dir / "vocab.bpe", "a b\n");
  write_file_atomic(dir / "encoder.json", "{\"a\": ");
  EXPECT_NE(error_of().find("not valid JSON"), std::string::npos) << error_of();
  vocab.erase(b2u[7]);
  write_file_atomic(dir / "encoder.json", vocab.dump());
  EXPECT_NE(error_of().find("ids are not contiguous"), std::string::npos) << error_of();
}

// Tokenizers gpt.cpp does not read yet would load and give other ids than
// their own: Llama 3's / Qwen2's split pattern, Llama 2's SentencePiece-style
// BPE. Each is refused in one line; GPT-2's own form loads.
TEST(BpeFiles, OtherPreTokenizersAreRefusedNotMisread) {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& b2u = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab[b2u[static_cast<size_t>(b)]] = b;
  const nlohmann::json base = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                               {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                               {"normalizer", nullptr}};
  EXPECT_EQ(BpeTokenizer::from_hf_json(base)->vocab_size(), 256);
  const auto error_of = [](const nlohmann::json& j) -> std::string {
    try {
      BpeTokenizer::from_hf_json(j);
    } catch (const Error& e) {
      return e.what();
    }
    return "(accepted)";
  };
  nlohmann::json llama3 = base;
  llama3["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", nlohmann::json::array()}};
  EXPECT_EQ(error_of(llama3),
            "tokenizer.json: pre-tokenizer 'Sequence' is not supported yet (gpt.cpp reads GPT-2's byte-level BPE)");
  nlohmann::json llama2 = base;
  llama2["pre_tokenizer"] = nullptr;
  llama2["normalizer"] = {{"type", "Sequence"}};
  EXPECT_NE(error_of(llama2).find("normalizer 'Sequence' is not supported yet"), std::string::npos);
  llama2["normalizer"] = nullptr;
  llama2["model"]["byte_fallback"] = true;
  EXPECT_EQ(error_of(llama2), "tokenizer.json: byte-fallback BPE (SentencePiece style) is not supported yet");
}

}  // namespace
}  // namespace gpt
