// Generation loop: streaming whole UTF-8 characters, stop strings, determinism.
#include <gtest/gtest.h>

#include "gpt/generation/generate.h"
#include "gpt/model/gpt.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/util/utf8.h"
#include "test_support.h"

namespace gpt {
namespace {

struct Fixture {
  Fixture() : model(make_config()) { model.init_weights(11); }
  static ModelConfig make_config() {
    return testing::model_config(256, 32, 1, 2, 16);
  }
  GPT model;
  std::unique_ptr<Tokenizer> bytes = make_byte_tokenizer();
};

TEST(Generate, StreamsOnlyWholeUtf8CharactersAndReassemblesTheText) {
  Fixture f;
  InferenceSession session(f.model);
  GenerateOptions opts;
  opts.max_new_tokens = 200;  // random bytes: plenty of partial and invalid sequences
  std::string streamed;
  std::vector<size_t> boundaries;
  const auto r = generate(session, *f.bytes, {65, 66}, opts, [&](const std::string& piece) {
    streamed += piece;
    boundaries.push_back(streamed.size());
  });
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.text, f.bytes->decode(r.tokens));
  ASSERT_GT(boundaries.size(), 1u);
  // No piece ends inside a valid multi-byte character of the final text (bytes
  // that never form a character are passed on as they are).
  std::vector<bool> inside(r.text.size() + 1, false);
  for (size_t i = 0; i < r.text.size(); ++i) {
    const auto lead = static_cast<unsigned char>(r.text[i]);
    const size_t len = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
    if (len > 1 && i + len <= r.text.size() && !find_invalid_utf8(std::string_view(r.text).substr(i, len))) {
      for (size_t k = 1; k < len; ++k) inside[i + k] = true;
    }
  }
  for (size_t b : boundaries) {
    std::string around;
    for (size_t k = b >= 4 ? b - 4 : 0; k < std::min(b + 4, r.text.size()); ++k) around += std::to_string(static_cast<unsigned char>(r.text[k])) + (k + 1 == b ? " | " : " ");
    EXPECT_FALSE(inside[b]) << "a piece ends inside a character at byte " << b << ": " << around;
  }
}

TEST(Generate, StopsAtAStopStringAndDoesNotPrintIt) {
  Fixture f;
  // Find what the model writes greedily, then ask it to stop inside that text.
  GenerateOptions opts;
  opts.sampling.greedy = true;
  opts.max_new_tokens = 12;
  InferenceSession s1(f.model);
  const std::string full = generate(s1, *f.bytes, {72, 105}, opts).text;
  ASSERT_GE(full.size(), 8u);
  opts.stop = {full.substr(5, 2)};
  InferenceSession s2(f.model);
  std::string streamed;
  const auto r = generate(s2, *f.bytes, {72, 105}, opts, [&](const std::string& p) { streamed += p; });
  EXPECT_TRUE(r.stopped);
  const size_t first = full.find(opts.stop[0]);
  EXPECT_EQ(r.text, full.substr(0, first));
  EXPECT_EQ(streamed, r.text);
}

TEST(Generate, SameSeedSameTextDifferentSeedDifferentText) {
  Fixture f;
  GenerateOptions opts;
  opts.max_new_tokens = 40;
  InferenceSession a(f.model), b(f.model), c(f.model);
  const auto ra = generate(a, *f.bytes, {1, 2, 3}, opts);
  const auto rb = generate(b, *f.bytes, {1, 2, 3}, opts);
  opts.seed += 1;
  const auto rc = generate(c, *f.bytes, {1, 2, 3}, opts);
  EXPECT_EQ(ra.tokens, rb.tokens);
  EXPECT_NE(ra.tokens, rc.tokens);
}

TEST(Generate, ContinuesPastTheContextBySliding) {
  Fixture f;
  InferenceSession session(f.model);
  GenerateOptions opts;
  opts.max_new_tokens = 100;  // context is 32
  const auto r = generate(session, *f.bytes, {1, 2}, opts);
  EXPECT_EQ(r.tokens.size(), 100u);
  EXPECT_GT(session.slides(), 0);
  EXPECT_LE(session.position(), 32);
}

}  // namespace
}  // namespace gpt
