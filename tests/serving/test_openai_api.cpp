// Requests are checked field by field, as OpenAI checks them; responses and
// chunks have OpenAI's shapes; chat templates render and encode conversations.
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "gpt/tokenizer/chat_template.h"
#include "gpt/serving/openai_api.h"
#include "gpt/tokenizer/bpe.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt::serving {
namespace {

using nlohmann::json;

const ModelInfo kModel{"m", 256, 256, 0};  // context 256, byte vocabulary
const ApiLimits kLimits{};

GenerationRequest parse(const json& body, bool chat = false, const ChatTemplate* t = nullptr) {
  static const auto tok = make_byte_tokenizer();
  return parse_generation_request(body, chat, kModel, *tok, t, kLimits, 42);
}

ApiError error_of(const json& body, bool chat = false, const ChatTemplate* t = nullptr) {
  try {
    parse(body, chat, t);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << body.dump();
  return {};
}

TEST(OpenAiApi, ACompletionRequestBecomesTokensAndSamplerSettings) {
  const GenerationRequest r = parse({{"model", "m"}, {"prompt", "hi"}, {"max_tokens", 5}, {"temperature", 0.5},
                                     {"top_p", 0.9}, {"n", 2}, {"stop", "\n"}, {"seed", 7}, {"top_k", 3},
                                     {"presence_penalty", 0.5}, {"logprobs", 2}});
  EXPECT_EQ(r.prompt, (std::vector<int32_t>{'h', 'i'}));
  EXPECT_EQ(r.max_tokens, 5);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(r.sampling.repeat_last_n, -1);  // OpenAI's penalties look at the whole text
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(r.seed, 7u);
  EXPECT_EQ(r.logprobs, 2);
  EXPECT_FALSE(r.sampling.greedy);
  EXPECT_TRUE(parse({{"prompt", "x"}, {"temperature", 0}}).sampling.greedy);
  EXPECT_EQ(parse({{"prompt", "x"}}).seed, 42u);        // no seed: the server's
  EXPECT_EQ(parse({{"prompt", "x"}}).max_tokens, 16);   // OpenAI's default for completions
  EXPECT_EQ(parse({{"prompt", {104, 105}}}).prompt, (std::vector<int32_t>{104, 105}));
  EXPECT_EQ(parse({{"prompt", {"hi"}}}).prompt, (std::vector<int32_t>{'h', 'i'}));
}

TEST(OpenAiApi, EveryBadFieldIsA400NamingIt) {
  struct Case {
    json body;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"prompt", 5}}, "prompt"},
      {{{"model", "m"}}, "prompt"},
      {{{"prompt", {"a", "b"}}}, "prompt"},
      {{{"prompt", {1, 999}}}, "prompt"},
      {{{"prompt", "x"}, {"max_tokens", "9"}}, "max_tokens"},
      {{{"prompt", "x"}, {"max_tokens", 0}}, "max_tokens"},
      {{{"prompt", "x"}, {"max_tokens", 3000}}, "max_tokens"},
      {{{"prompt", "x"}, {"max_tokens", 256}}, "max_tokens"},  // 1 + 256 > the context of 256
      {{{"prompt", std::string(256, 'a')}}, "prompt"},        // fills the context
      {{{"prompt", "x"}, {"temperature", "hot"}}, "temperature"},
      {{{"prompt", "x"}, {"temperature", 2.5}}, "temperature"},
      {{{"prompt", "x"}, {"top_p", 0}}, "top_p"},
      {{{"prompt", "x"}, {"n", 0}}, "n"},
      {{{"prompt", "x"}, {"n", 5}}, "n"},
      {{{"prompt", "x"}, {"n", 1.5}}, "n"},
      {{{"prompt", "x"}, {"stop", {"a", "b", "c", "d", "e"}}}, "stop"},
      {{{"prompt", "x"}, {"stop", {""}}}, "stop"},
      {{{"prompt", "x"}, {"stop", 3}}, "stop"},
      {{{"prompt", "x"}, {"stream", "yes"}}, "stream"},
      {{{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}, "stream_options"},
      {{{"prompt", "x"}, {"seed", "s"}}, "seed"},
      {{{"prompt", "x"}, {"presence_penalty", 3}}, "presence_penalty"},
      {{{"prompt", "x"}, {"logprobs", 21}}, "logprobs"},
      {{{"prompt", "x"}, {"top_k", -1}}, "top_k"},
      {{{"prompt", "x"}, {"tools", json::array({1})}}, "tools"},
      {{{"prompt", "x"}, {"logit_bias", {{"5", 10}}}}, "logit_bias"},
      {{{"prompt", "x"}, {"echo", true}, {"logprobs", 1}}, "echo"},
  };
  for (const Case& c : cases) {
    const ApiError e = error_of(c.body);
    EXPECT_EQ(e.status, 400) << c.body.dump();
    EXPECT_EQ(e.param, c.param) << c.body.dump() << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
    EXPECT_EQ(e.message.find('\n'), std::string::npos);
  }
  EXPECT_EQ(error_of({{"prompt", std::string(256, 'a')}}).code, "context_length_exceeded");
  const ApiError unknown = error_of({{"model", "gpt-4"}, {"prompt", "x"}});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.code, "model_not_found");
  const json shape = unknown.to_json();
  EXPECT_EQ(shape["error"]["type"], "not_found_error");
  EXPECT_EQ(shape["error"]["param"], "model");
}

TEST(OpenAiApi, ChatNeedsATemplateAndWellFormedMessages) {
  EXPECT_EQ(error_of({{"messages", {{{"role", "user"}, {"content", "hi"}}}}}, true).code, "chat_template_missing");
  const ChatTemplate t = ChatTemplate::named("chatml");
  const GenerationRequest r = parse({{"messages", {{{"role", "system"}, {"content", "Be brief."}},
                                                   {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}}}},
                                     {"max_completion_tokens", 3}, {"logprobs", true}, {"top_logprobs", 4}},
                                    true, &t);
  const std::string text(r.prompt.begin(), r.prompt.end());
  EXPECT_EQ(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(r.max_tokens, 3);
  EXPECT_EQ(r.logprobs, 4);
  EXPECT_EQ(r.stop, std::vector<std::string>{"<|im_end|>"});  // the turn ends at the template's marker
  EXPECT_EQ(parse({{"messages", {{{"role", "user"}, {"content", "hi"}}}}}, true, &t).max_tokens,
            256 - 52);  // up to the context: 52 bytes of prompt
  EXPECT_EQ(error_of({{"messages", json::array()}}, true, &t).param, "messages");
  EXPECT_EQ(error_of({{"messages", {{{"role", "tool"}, {"content", "x"}}}}}, true, &t).param, "messages[0].role");
  EXPECT_EQ(error_of({{"messages", {{{"role", "user"}, {"content", 5}}}}}, true, &t).param, "messages[0].content");
  EXPECT_EQ(error_of({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"top_logprobs", 2}}, true, &t).param,
            "top_logprobs");
}

TEST(OpenAiApi, ResponsesAndChunksHaveOpenAIsShapes) {
  const auto tok = make_byte_tokenizer();
  std::vector<ChoiceResult> choices(1);
  choices[0].text = "ab";
  choices[0].finish = Finish::kLength;
  choices[0].logprobs = {{'a', -0.5f, {{'a', -0.5f}, {'b', -1.5f}}}, {'b', -0.25f, {}}};
  const json chat = completion_response(true, "id1", 5, kModel, choices, true, {3, 2}, *tok);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "ab");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "b");
  EXPECT_EQ(chat["usage"]["total_tokens"], 5);
  const json text = completion_response(false, "id2", 5, kModel, choices, true, {3, 2}, *tok);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["logprobs"]["tokens"], json({"a", "b"}));
  EXPECT_EQ(text["choices"][0]["logprobs"]["text_offset"], json({0, 1}));
  const json first = completion_chunk(true, "id", 5, kModel, 0, "", {}, false, Finish::kNone, true, *tok, 0);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const json last = completion_chunk(true, "id", 5, kModel, 0, "", {}, false, Finish::kStop, false, *tok, 0);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(usage_chunk(false, "id", 5, kModel, {1, 2})["choices"], json::array());
  // A token that is part of a UTF-8 character is sent as U+FFFD, never as invalid JSON.
  EXPECT_EQ(dump(json("\xC3")), "\"\xEF\xBF\xBD\"");
}

}  // namespace
}  // namespace gpt::serving
