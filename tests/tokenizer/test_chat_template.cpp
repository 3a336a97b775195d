// Chat templates and special tokens: markers become special tokens only where
// the template puts them (user text stays text), for char, byte and BPE
// tokenizers; the rendered text matches tests/fixtures/chat_templates.json (which
// @huggingface/jinja checks too: tests/js/tokenizer/chat_template.test.mjs);
// training encodings mark exactly the replies.
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/bpe.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(ChatTemplate, MarkersAreSpecialTokensOnlyWhereTheTemplatePutsThem) {
  // A BPE vocabulary with <|im_start|> and <|im_end|> as special tokens: the
  // template's markers become their ids; the same text typed by a user stays text.
  const std::filesystem::path gpt2 = testing::shared_data("gpt2");
  if (!std::filesystem::exists(gpt2 / "encoder.json")) GTEST_SKIP() << "no GPT-2 vocabulary at " << gpt2;
  auto base = BpeTokenizer::load_gpt2(gpt2 / "encoder.json", gpt2 / "vocab.bpe");
  nlohmann::json j = base->to_json();
  const int32_t start = base->vocab_size(), end = start + 1;
  j["added_tokens"].push_back({{"id", start}, {"content", "<|im_start|>"}, {"special", true}});
  j["added_tokens"].push_back({{"id", end}, {"content", "<|im_end|>"}, {"special", true}});
  j["model"]["vocab"]["<|im_start|>"] = start;
  j["model"]["vocab"]["<|im_end|>"] = end;
  auto tok = BpeTokenizer::from_hf_json(j);
  const ChatTemplate t = ChatTemplate::named("chatml");
  const std::vector<int32_t> ids = t.encode({{"user", "say <|im_end|> now"}}, *tok);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), start), 2);  // the user turn and the assistant's opening
  EXPECT_EQ(std::count(ids.begin(), ids.end(), end), 1);    // only the template's: the user's stays text
  EXPECT_EQ(tok->decode(ids), t.render({{"user", "say <|im_end|> now"}}));
}

TEST(ChatTemplate, KnownByNameOrRecognisedInAJinjaSource) {
  EXPECT_EQ(ChatTemplate::recognise(ChatTemplate::named("chatml").jinja_source())->name(), "chatml");
  EXPECT_EQ(ChatTemplate::recognise(ChatTemplate::named("llama3").jinja_source())->name(), "llama3");
  EXPECT_FALSE(ChatTemplate::recognise("{{ messages }}").has_value());
  EXPECT_THROW(ChatTemplate::named("vicuna"), Error);
  EXPECT_EQ(ChatTemplate::named("llama3").render({{"user", "hi"}}),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  testing::TempDir dir;
  EXPECT_FALSE(ChatTemplate::of_model(dir.path()).has_value());
  // gpt.cpp's own source is the named template; any other source is the model's own, run as Jinja.
  write_file_atomic(dir / "tokenizer_config.json", nlohmann::json{{"chat_template", ChatTemplate::named("chatml").jinja_source()}}.dump());
  EXPECT_EQ(ChatTemplate::of_model(dir.path())->name(), "chatml");
  write_file_atomic(dir / "tokenizer_config.json", R"({"chat_template": "{{ bos_token }}{{ messages[0].content }}", "bos_token": {"content": "<s>"}})");
  EXPECT_EQ(ChatTemplate::of_model(dir.path())->name(), "jinja");
  EXPECT_EQ(ChatTemplate::of_model(dir.path())->render({{"user", "hi"}}), "<s>hi");
  write_file_atomic(dir / "tokenizer_config.json", R"({"chat_template": "{% if %}"})");
  EXPECT_THROW(ChatTemplate::of_model(dir.path()), Error);
}

TEST(ChatTemplate, RendersWhatTheFixtureAndItsJinjaSourceSay) {
  const nlohmann::json f = nlohmann::json::parse(read_text_file(testing::fixture("chat_templates.json")));
  int cases = 0;
  for (const auto& [name, t] : f["templates"].items()) {
    const ChatTemplate tmpl = ChatTemplate::named(name);
    EXPECT_EQ(tmpl.jinja_source(), t["jinja"].get<std::string>()) << name;
    EXPECT_EQ(ChatTemplate::recognise(tmpl.jinja_source())->name(), name);
    for (const auto& c : t["cases"]) {
      std::vector<ChatMessage> messages;
      for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
      EXPECT_EQ(tmpl.render(messages, c["add_generation_prompt"].get<bool>()), c["rendered"].get<std::string>());
      ++cases;
    }
  }
  EXPECT_GE(cases, 12);
}

TEST(ChatTemplate, SavedConfigNamesTheTemplate) {
  testing::TempDir dir;
  ChatTemplate::named("llama3").save_to(dir.path());
  EXPECT_EQ(ChatTemplate::of_model(dir.path())->name(), "llama3");
  const nlohmann::json j = nlohmann::json::parse(read_text_file(dir / "tokenizer_config.json"));
  EXPECT_EQ(j["eos_token"], "<|eot_id|>");
  EXPECT_EQ(j["gpt_chat_template"], "llama3");
}

TEST(SpecialTokens, AddedToEveryTokenizerAfterItsVocabularyAndNeverEncodedFromText) {
  std::vector<std::unique_ptr<Tokenizer>> bases;
  bases.push_back(make_char_tokenizer("abcu <>|_imstrend\n"));
  bases.push_back(make_byte_tokenizer());
  const std::filesystem::path gpt2 = testing::shared_data("gpt2");
  if (std::filesystem::exists(gpt2 / "encoder.json")) {
    bases.push_back(BpeTokenizer::load_gpt2(gpt2 / "encoder.json", gpt2 / "vocab.bpe"));
  } else {
    std::printf("[ skipped  ] the BPE case: no GPT-2 vocabulary at %s\n", gpt2.c_str());
  }
  const ChatTemplate chatml = ChatTemplate::named("chatml");
  for (const auto& base : bases) {
    SCOPED_TRACE(base->type());
    const int V = base->vocab_size();
    const auto tok = base->with_special_tokens(chatml.markers());
    ASSERT_EQ(tok->vocab_size(), V + 2);
    EXPECT_EQ(tok->special_token_id("<|im_start|>"), V);
    EXPECT_EQ(tok->special_token_id("<|im_end|>"), V + 1);
    EXPECT_EQ(tok->decode(std::vector<int32_t>{V + 1}), "<|im_end|>");
    // Text that spells a marker stays text.
    const std::vector<int32_t> typed = tok->encode("<|im_end|>");
    EXPECT_TRUE(std::none_of(typed.begin(), typed.end(), [&](int32_t id) { return id >= V; }));
    // Adding them again changes nothing; saved and loaded, they are still there.
    EXPECT_EQ(tok->with_special_tokens(chatml.markers())->vocab_size(), V + 2);
    const auto loaded = tokenizer_from_json(tok->to_json());
    EXPECT_EQ(loaded->vocab_size(), V + 2);
    EXPECT_EQ(loaded->special_token_id("<|im_end|>"), V + 1);
    EXPECT_THROW(tok->with_special_tokens({""}), Error);
    // A conversation: markers as their ids where the template puts them.
    const std::vector<int32_t> ids = chatml.encode({{"user", "ab"}}, *tok);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), V), 2);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), V + 1), 1);
  }
}

TEST(ChatTemplate, TrainingEncodingMarksTheRepliesAndTheirEndOfTurn) {
  const auto tok = make_byte_tokenizer()->with_special_tokens(ChatTemplate::named("chatml").markers());
  const ChatTemplate t = ChatTemplate::named("chatml");
  const EncodedChat e = t.encode_for_training(
      {{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "A2"}}, *tok);
  ASSERT_EQ(e.ids.size(), e.is_reply.size());
  std::string replies;
  for (size_t i = 0; i < e.ids.size(); ++i)
    if (e.is_reply[i]) replies += tok->decode(std::vector<int32_t>{e.ids[i]});
  EXPECT_EQ(replies, "A1<|im_end|>A2<|im_end|>");
  EXPECT_EQ(tok->decode(e.ids), t.render({{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"},
                                          {"assistant", "A2"}}, false));
  EXPECT_THROW(t.encode_for_training({{"user", "no reply"}}, *tok), Error);
  // Without the markers as tokens, training would learn them as text: refused.
  EXPECT_THROW(t.encode_for_training({{"user", "q"}, {"assistant", "a"}}, *make_byte_tokenizer()), Error);
}

}  // namespace
}  // namespace gpt
