// gpt.cpp's Jinja engine: Python's semantics where chat templates rely on them
// (what transformers renders with), one-line errors naming the line, and a
// model's Jinja chat template end to end: markers as special tokens only where
// the template writes them, replies marked for training. Real templates are
// checked against @huggingface/jinja in tests/js/tokenizer/chat_template.test.mjs.
#include <gtest/gtest.h>

#include <algorithm>

#include "gpt/io/checkpoint.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/jinja.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/util/error.h"
#include "test_support.h"

namespace gpt {
namespace {

std::string render(const std::string& source, const jinja::Value& vars = jinja::Value::object()) {
  return jinja::Template(source).render(vars);
}

std::string error_of(const std::string& source) {
  try {
    render(source);
  } catch (const Error& e) {
    return e.what();
  }
  return "(rendered)";
}

TEST(Jinja, ExpressionsFollowPython) {
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }}"), "3 -4 2 3.5 1024 7");
  EXPECT_EQ(render("{{ true }} {{ none }} {{ [1, 'a', none] }} {{ {'k': 1.0} }} {{ 10.0 }} {{ 1 if false else 2 }}"),
            "True None [1, 'a', None] {'k': 1.0} 10.0 2");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}|{{ 'x' in 'xyz' }}{{ 2 not in [1] }}"),
            "a1None|ababab|[1, 2]|TrueTrue");
  // str.strip with an argument strips only those characters (@huggingface/jinja
  // 0.5 ignores the argument; transformers, in Python, does not).
  EXPECT_EQ(render("[{{ '\\n x \\n'.lstrip('\\n') }}][{{ 'xxaxx'.strip('x') }}][{{ '  a  '.rstrip() }}]"), "[ x \n][a][  a]");
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c']");
  EXPECT_EQ(render("{{ 'hello wORLD'.title() }} {{ 'hello wORLD' | title }} {{ 'hELLO' | capitalize }}"),
            "Hello World Hello World Hello");
  // Lengths and slices count characters, not bytes or UTF-16 units.
  EXPECT_EQ(render("{{ '한국어👍' | length }} {{ '한국어👍'[1:3] }} {{ '한국어👍'[::-1] }} {{ [1,2,3,4][::-2] }}"),
            "4 국어 👍어국한 [4, 2]");
  EXPECT_EQ(render("{{ undefined_name }}|{{ undefined_name is defined }}|{{ x.y.z }}|{{ none is none }}"), "|False||True");
  // Jinja's precedence: * over ~ over +; filters apply after a unary sign.
  EXPECT_EQ(render("{{ 'n=' ~ 2 * 3 }} {{ -1 | abs }} {{ 1 + 2 | string | length }}"), "n=6 1 2");
  // Integers as Python's, without overflow; counted slices and ranges.
  EXPECT_EQ(render("{{ 2 ** 62 }} {{ -7 // -1 }} {{ 'ab'[1::9223372036854775807] }} {{ range(10, 0, -4) | join(',') }}"),
            "4611686018427387904 7 b 10,6,2");
  // Unicode: whitespace, case and character offsets.
  EXPECT_EQ(render("[{{ '\u3000 a\u00a0b '.strip() }}] {{ 'ÉCOLE'.lower() }} {{ 'émile' | capitalize }} "
                   "{{ '한국어 abc'.find('abc') }} {{ 'a\u3000b'.split() | length }}"),
            "[a\u00a0b] école Émile 4 2");
  EXPECT_EQ(render("{{ {'b': [1, 2.5, none, true], 'a': 'é\"'} | tojson }}"), R"({"b": [1, 2.5, null, true], "a": "é\""})");
  EXPECT_EQ(render("{{ {'a': [1, {'b': 2}]} | tojson(indent=2) }}"), "{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ]\n}");
}

TEST(Jinja, StatementsScopesAndWhitespace) {
  // A set inside a loop stays in the loop; a namespace carries state out.
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1, 2] %}{% set x = i %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(render("{% for i in range(6) if i is odd %}{{ loop.index }}:{{ i }}{{ ',' if not loop.last }}{% endfor %}"),
            "1:1,2:3,3:5");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}"), "a1b2");
  EXPECT_EQ(render("{% for i in range(9) %}{% if i == 2 %}{% continue %}{% elif i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "013");
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', punct='?') }}"),
            "Hi a! Hi b?");
  EXPECT_EQ(render("{% set block %}in {{ 1 + 1 }}{% endset %}[{{ block }}]"), "[in 2]");
  // trim_blocks and lstrip_blocks, as Hugging Face renders; "-" strips more.
  EXPECT_EQ(render("a\n  {% if true %}\nb\n  {% endif %}\nc\n"), "a\nb\nc");
  EXPECT_EQ(render("a   {{- ' b ' -}}   c {# note #}d {#- note -#} e"), "a b c de");
}

TEST(Jinja, MistakesAreOneLineErrors) {
  EXPECT_EQ(error_of("{{ raise_exception('Roles must alternate') }}"), "chat template: Roles must alternate");
  EXPECT_EQ(error_of("line one\n{% if x %}never closed"), "chat template: 'if' without 'endif' (line 2)");
  EXPECT_EQ(error_of("{{ 1 + }}"), "chat template: unexpected '' (line 1)");
  EXPECT_EQ(error_of("{% frobnicate %}"), "chat template: unknown statement 'frobnicate' (line 1)");
  EXPECT_EQ(error_of("{{ 'x' | nosuchfilter }}"), "chat template: unknown filter 'nosuchfilter'");
  EXPECT_EQ(error_of("{{ 'unclosed }}"), "chat template: a string is not closed (line 1)");
  EXPECT_EQ(error_of("{{ 1 - 'a' }}"), "chat template: cannot apply '-' to 1 and 'a'");
  EXPECT_EQ(error_of("{{ 1 // 0 }}"), "chat template: division by zero");
  // A template from a downloaded file must not hang, crash or fill memory.
  EXPECT_EQ(error_of("{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}"), "chat template: a value cannot hold itself");
  EXPECT_EQ(error_of("{% set ns = namespace(a=[]) %}{% set ns.b = [ns.a] %}{{ ns.a.append(ns) }}"),
            "chat template: a value cannot hold itself");
  EXPECT_EQ(error_of("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}"),
            "chat template: an expression nested more than 200 deep");
  std::string nested;
  for (int i = 0; i < 300; ++i) nested += "{% if true %}";
  EXPECT_EQ(error_of(nested), "chat template: blocks nested more than 256 deep");
  EXPECT_EQ(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            "chat template: too deeply nested (more than 256 loops or macro calls)");
  EXPECT_EQ(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
            "chat template: the template runs too long (more than 2 million steps)");
  EXPECT_EQ(error_of("{{ 'x' * 100000000 }}"), "chat template: a string repeated past 64 MiB");
  EXPECT_EQ(error_of("{{ 99999999999999999999 }}"), "chat template: the number 99999999999999999999 is out of range (line 1)");
  EXPECT_EQ(error_of("{{ (-9223372036854775807 - 1) // -1 }}"), "chat template: integer overflow in '//'");
  EXPECT_EQ(error_of("{{ 9223372036854775807 + 1 }}"), "chat template: integer overflow in '+'");
  EXPECT_EQ(error_of("{{ 2 ** 63 }}"), "chat template: integer overflow in '**'");
  EXPECT_EQ(error_of("{{ 'abc' * 6148914691236517206 }}"), "chat template: a string repeated past 64 MiB");
  EXPECT_EQ(error_of("{{ range(100000) | unique | length }}"), "chat template: the template runs too long (more than 2 million steps)");
  EXPECT_EQ(error_of("{{ " + std::string("1") + [] {
              std::string chain;
              for (int i = 0; i < 2000; ++i) chain += " + 1";
              return chain;
            }() + " }}"),
            "chat template: an expression of more than 1000 operations");
  EXPECT_EQ(error_of("{% set d = {'a': 1} %}{% set d.a = 2 %}"), "chat template: cannot set 'a' of d, which is not a namespace");
  EXPECT_EQ(error_of("{% set ns = namespace(l=[]) %}{{ ns.l.append(ns.items) }}"), "chat template: a list holds values, not functions");
}

// Llama 2's template over the tiny SentencePiece model's tokenizer (the fixture
// tools/hf_llama_reference.py writes).
TEST(JinjaChatTemplate, ModelTemplateEncodesAndMarksReplies) {
  LoadedModel m = load_model(testing::fixture("hf_llama_tiny"));
  const auto t = ChatTemplate::of_model(testing::fixture("hf_llama_tiny"));
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->is_jinja());
  EXPECT_EQ(t->end_of_turn(), "</s>");
  const std::vector<ChatMessage> chat = {{"system", "be brief"}, {"user", "the fox </s>"}, {"assistant", " the dog "},
                                         {"user", "then?"}};
  EXPECT_EQ(t->render(chat), "<s>[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nthe fox </s> [/INST] the dog </s><s>[INST] then? [/INST]");
  // The template's <s> and </s> are special tokens; the user's "</s>" stays text.
  const std::vector<int32_t> ids = t->encode(chat, *m.tokenizer);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
  // (Llama 2's tokenizer puts its "▁" before each text after a special token,
  // which decodes as a space: "<s> [INST]".)
  EXPECT_EQ(m.tokenizer->decode(ids), "<s> [INST] <<SYS>>\nbe brief\n<</SYS>>\n\nthe fox </s> [/INST] the dog </s><s> [INST] then? [/INST]");
  // Training: the assistant's words and the </s> that ends them are the replies.
  const EncodedChat e = t->encode_for_training({{"user", "the fox"}, {"assistant", "the dog"}, {"user", "x"}, {"assistant", "the fox"}},
                                               *m.tokenizer);
  ASSERT_EQ(e.ids.size(), e.is_reply.size());
  std::string replies;
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (e.is_reply[i]) replies += m.tokenizer->token_bytes(e.ids[i]);
  }
  EXPECT_EQ(replies, " the dog </s> the fox </s>");
  EXPECT_EQ(m.tokenizer->decode(e.ids), "<s> [INST] the fox [/INST] the dog </s><s> [INST] x [/INST] the fox </s>");
  // Roles that do not alternate: the template's own refusal, in one line.
  try {
    t->render({{"user", "a"}, {"user", "b"}});
    FAIL() << "rendered";
  } catch (const Error& err) {
    EXPECT_STREQ(err.what(), "chat template: Conversation roles must alternate user/assistant/user/assistant/...");
  }
}

// Templates that change the message text (trim it, keep part of it) still give
// the replies as the template renders them; one whose earlier turns change
// when later ones follow is refused in one line.
TEST(JinjaChatTemplate, RepliesAreFoundWhereTheTemplateRewritesThem) {
  const auto tok = make_byte_tokenizer()->with_special_tokens({"<|im_start|>", "<|im_end|>"});
  const ChatTemplate trims = ChatTemplate::from_jinja(
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}");
  ASSERT_TRUE(trims.is_jinja());
  EXPECT_EQ(trims.end_of_turn(), "<|im_end|>");
  const std::vector<ChatMessage> chat = {{"user", " q "}, {"assistant", "  padded  "}, {"user", "q2"}, {"assistant", "x"}};
  const EncodedChat e = trims.encode_for_training(chat, *tok);
  std::string replies;
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (e.is_reply[i]) replies += tok->token_bytes(e.ids[i]);
  }
  EXPECT_EQ(replies, "padded<|im_end|>x<|im_end|>");
  EXPECT_EQ(tok->decode(e.ids), trims.render(chat, false));

  const ChatTemplate rewrites = ChatTemplate::from_jinja(
      "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[a]{{ m.content.split('|')[-1] }}"
      "{% else %}[{{ m.role }}]{{ m.content }}{% endif %}{% endfor %}");
  try {
    rewrites.encode_for_training({{"user", "q"}, {"assistant", "think|say"}, {"user", "q2"}, {"assistant", "y"}}, *tok);
    FAIL() << "encoded";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("its replies cannot be found: fine-tune with --chat-template"), std::string::npos)
        << err.what();
  }
}

}  // namespace
}  // namespace gpt
