// StopTextStream: what a reader may be shown while tokens arrive.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpt/generation/text_stream.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

std::string feed(StopTextStream& s, const std::vector<std::string>& pieces, std::vector<std::string>* shown = nullptr) {
  std::string out;
  for (const auto& p : pieces) {
    const std::string got = s.push(p);
    if (shown) shown->push_back(got);
    out += got;
  }
  return out + s.flush();
}

TEST(TextStream, HoldsBackPartialCharactersUntilTheyComplete) {
  StopTextStream s;
  std::vector<std::string> shown;
  // "é" (C3 A9) and "😀" (F0 9F 98 80) split across tokens.
  const std::string all = feed(s, {"caf", "\xC3", "\xA9 ", "\xF0\x9F", "\x98", "\x80!"}, &shown);
  EXPECT_EQ(all, "caf\xC3\xA9 \xF0\x9F\x98\x80!");
  EXPECT_EQ(shown[1], "");  // half a character is never shown
  EXPECT_EQ(shown[2], "\xC3\xA9 ");
  EXPECT_EQ(shown[3], "");
  EXPECT_EQ(shown[4], "");
  EXPECT_EQ(shown[5], "\xF0\x9F\x98\x80!");
  EXPECT_FALSE(s.stopped());
}

TEST(TextStream, StopsAtTheFirstStopStringEvenAcrossTokensAndNeverShowsIt) {
  StopTextStream s({"<|im_end|>", "\n\n"});
  std::vector<std::string> shown;
  const std::string all = feed(s, {"Hello", " there<|", "im_", "end|>", " more"}, &shown);
  EXPECT_EQ(all, "Hello there");
  EXPECT_EQ(s.text(), "Hello there");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(shown[1], " there");  // "<|" waits: it may begin the stop string
  EXPECT_EQ(shown[4], "");        // nothing after the stop
}

TEST(TextStream, AHeldBackPrefixThatDoesNotBecomeAStopIsShown) {
  StopTextStream s({"<|im_end|>"});
  std::vector<std::string> shown;
  const std::string all = feed(s, {"a <", "|im", "x"}, &shown);
  EXPECT_EQ(shown[0], "a ");
  EXPECT_EQ(shown[1], "");
  EXPECT_EQ(shown[2], "<|imx");
  EXPECT_EQ(all, "a <|imx");
  EXPECT_FALSE(s.stopped());
}

TEST(TextStream, EmptyStopStringIsAnError) { EXPECT_THROW(StopTextStream({"ok", ""}), Error); }

}  // namespace
}  // namespace gpt
