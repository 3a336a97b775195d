// Character and byte tokenizers: round trips, saving, and errors for text they
// cannot express.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/tokenizer.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"
#include "gpt/util/utf8.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(CharTokenizer, SortedUniqueCharactersAndRoundTrip) {
  const std::string text = "hello, 세상! héllo";
  auto tok = make_char_tokenizer(text);
  EXPECT_EQ(tok->type(), "char");
  EXPECT_EQ(tok->vocab_size(), 10);  // h e l o , space 세 상 ! é
  const auto ids = tok->encode(text);
  EXPECT_EQ(ids.size(), 16u);  // one id per character, not per byte
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(tok->encode(" "), std::vector<int32_t>{0});  // space is the smallest code point
}

TEST(CharTokenizer, ErrorsNameTheProblem) {
  auto tok = make_char_tokenizer("abc");
  try {
    tok->encode("abz");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("U+007A 'z'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_char_tokenizer("ok\xff"), Error);  // invalid UTF-8
  EXPECT_THROW(tok->decode(std::vector<int32_t>{3}), Error);
  EXPECT_THROW(tok->decode(std::vector<int32_t>{-1}), Error);
}

TEST(ByteTokenizer, RoundTripsArbitraryBytes) {
  auto tok = make_byte_tokenizer();
  Rng rng(1);
  std::string bytes(1000, '\0');
  for (auto& c : bytes) c = static_cast<char>(rng.next_u64() & 0xFF);
  EXPECT_EQ(tok->decode(tok->encode(bytes)), bytes);
  EXPECT_EQ(tok->vocab_size(), 256);
}

TEST(Tokenizer, SavedAndLoadedTokenizersEncodeIdentically) {
  testing::TempDir dir;
  auto tok = make_char_tokenizer("The quick brown fox — 빠른 갈색 여우\n");
  save_tokenizer(*tok, dir / "t.json");
  auto back = load_tokenizer(dir / "t.json");
  EXPECT_EQ(back->encode("fox 여우\n"), tok->encode("fox 여우\n"));
  save_tokenizer(*make_byte_tokenizer(), dir / kTokenizerFileName);
  EXPECT_EQ(load_tokenizer(dir.path())->type(), "byte");  // a directory works too
}

TEST(Tokenizer, RejectsMalformedFiles) {
  EXPECT_THROW(tokenizer_from_json(nlohmann::json{{"type", "wordpiece"}}), Error);
  EXPECT_THROW(tokenizer_from_json(nlohmann::json{{"type", "char"}}), Error);
  EXPECT_THROW(tokenizer_from_json(nlohmann::json{{"type", "char"}, {"tokens", {"ab"}}}), Error);
  EXPECT_THROW(tokenizer_from_json(nlohmann::json{{"type", "char"}, {"tokens", {"b", "a"}}}), Error);
  EXPECT_THROW(load_tokenizer("/nonexistent/tokenizer.json"), Error);
}

TEST(Utf8, CompletePrefixHoldsBackPartialCharacters) {
  const std::string han = "한";  // 3 bytes
  EXPECT_EQ(complete_utf8_prefix("ab" + han.substr(0, 2)), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab" + han), 5u);
  EXPECT_EQ(complete_utf8_prefix("ab\xff"), 3u);  // invalid bytes are not held back forever
  EXPECT_FALSE(find_invalid_utf8("ok 한글").has_value());
  EXPECT_EQ(find_invalid_utf8("ok\xc3("), std::optional<size_t>(2));
  EXPECT_EQ(find_invalid_utf8("\xed\xa0\x80"), std::optional<size_t>(0));  // a UTF-16 surrogate
}

}  // namespace
}  // namespace gpt
