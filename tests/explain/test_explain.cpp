// gpt explain's numbers are the model's own: the logit lens after the last block
// is the output distribution, the attention weights are the training model's,
// and the sublayers' outputs add up to the residual stream.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "gpt/explain/explain.h"
#include "gpt/generation/kv_cache.h"
#include "gpt/kernels/quantize.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

GPT model(PositionEncoding pe) {
  GPT m(testing::model_config(256, 32, 3, 4, 32, pe));
  m.init_weights(7);
  Rng rng(8);
  for (auto& p : m.params) p += static_cast<float>(rng.normal()) * 0.1f;
  return m;
}

std::vector<float> softmax_of(const float* logits, int64_t V) {
  std::vector<float> p(logits, logits + V);
  const float max = *std::max_element(p.begin(), p.end());
  double sum = 0;
  for (float& x : p) sum += x = std::exp(x - max);
  for (float& x : p) x = static_cast<float>(x / sum);
  return p;
}

TEST(Explain, TheLastLogitLensIsTheOutputAndAttentionIsTheModels) {
  const auto tok = make_byte_tokenizer();
  const std::string prompt = "The cat sat on the mat.";
  for (const PositionEncoding pe : {PositionEncoding::kLearned, PositionEncoding::kSinusoidal}) {
    GPT m = model(pe);
    const InferenceWeights w = InferenceWeights::view(m);
    for (const int64_t position : {int64_t{-1}, int64_t{4}}) {
      const Explanation e = explain(w, *tok, prompt, position, 5);
      const int64_t P = e.position + 1, V = m.config().vocab_size;
      EXPECT_EQ(e.position, position < 0 ? static_cast<int64_t>(prompt.size()) - 1 : position);
      // The model's distribution at the position (all logits of a fresh session).
      InferenceSession s(m, KvCacheType::kF32);
      const std::vector<int32_t> ids = tok->encode(prompt);
      s.append(ids.data(), static_cast<int64_t>(ids.size()), true);
      const std::vector<float> expected = softmax_of(s.logits() + e.position * V, V);
      ASSERT_EQ(e.lens_last.size(), expected.size());
      for (int64_t v = 0; v < V; ++v) {
        EXPECT_NEAR(e.lens_last[v], expected[v], 1e-6);
        EXPECT_NEAR(e.probabilities[v], expected[v], 1e-6);
      }
      EXPECT_EQ(e.top[0].token, static_cast<int32_t>(std::max_element(expected.begin(), expected.end()) - expected.begin()));
      // Attention: GPT::attention_weights' row at the position, every layer and head.
      m.forward(ids.data(), nullptr, 1, static_cast<int64_t>(ids.size()));
      const int64_t T = static_cast<int64_t>(ids.size());
      for (int l = 0; l < m.config().n_layer; ++l) {
        const float* att = m.attention_weights(l);
        for (int h = 0; h < m.config().n_head; ++h) {
          const auto& got = e.blocks[static_cast<size_t>(l)].heads[static_cast<size_t>(h)].weights;
          ASSERT_EQ(static_cast<int64_t>(got.size()), P);
          for (int64_t j = 0; j < P; ++j) EXPECT_NEAR(got[j], att[(h * T + e.position) * T + j], 1e-6) << l << " " << h;
        }
      }
      // The stream is the embedding plus every sublayer's output.
      const int64_t C = m.config().n_embd;
      std::vector<double> sum(e.embedded.begin(), e.embedded.end());
      for (size_t l = 0; l < e.blocks.size(); ++l) {
        for (int64_t j = 0; j < C; ++j) sum[j] += e.attention_outputs[l][j] + e.ffn_outputs[l][j];
      }
      double diff = 0, scale = 0;
      for (int64_t j = 0; j < C; ++j) {
        diff = std::max(diff, std::abs(sum[j] - e.final_residual[j]));
        scale = std::max(scale, std::abs(static_cast<double>(e.final_residual[j])));
      }
      EXPECT_LT(diff / scale, 1e-5);
      // Embedding = token vector + position vector.
      for (int64_t j = 0; j < C; ++j) EXPECT_NEAR(e.embedded[j], e.token_vector[j] + e.position_vector[j], 1e-6);
      EXPECT_EQ(e.nearest[0].token, ids[static_cast<size_t>(e.position)]);  // a token is nearest to itself
    }
  }
}

TEST(Explain, WorksOnQuantizedWeights) {
  GPT m = model(PositionEncoding::kLearned);
  const auto q = QuantizedModel::quantize(m, GgmlType::kQ8_0);
  const auto tok = make_byte_tokenizer();
  const Explanation e = explain(q->weights, *tok, "hello there", -1, 3);
  InferenceSession s(q->weights, KvCacheType::kF32);
  const std::vector<int32_t> ids = tok->encode("hello there");
  const std::vector<float> expected = softmax_of(s.append(ids.data(), static_cast<int64_t>(ids.size())), 256);
  for (int64_t v = 0; v < 256; ++v) EXPECT_NEAR(e.lens_last[v], expected[v], 1e-6);
  const std::string html = explanation_html(e, "ko");
  EXPECT_NE(html.find("로짓 렌즈"), std::string::npos);
  EXPECT_NE(html.find("id=\"block-2\""), std::string::npos);
}

TEST(Explain, BadInputIsAOneLineError) {
  GPT m = model(PositionEncoding::kLearned);
  const InferenceWeights w = InferenceWeights::view(m);
  const auto tok = make_byte_tokenizer();
  EXPECT_THROW(explain(w, *tok, ""), Error);
  EXPECT_THROW(explain(w, *tok, std::string(33, 'a')), Error);  // the context is 32
  EXPECT_THROW(explain(w, *tok, "abc", 3), Error);
  try {
    explain(w, *tok, "abc", 7);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the prompt"), std::string::npos);
  }
}

TEST(Explain, TheReportIsSelfContainedAndShowsUnprintableTokensSafely) {
  GPT m = model(PositionEncoding::kLearned);
  const auto tok = make_byte_tokenizer();
  const Explanation e = explain(InferenceWeights::view(m), *tok, "a\x01<b>&\xC3\xA9", -1, 5);
  const std::string html = explanation_html(e);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find('\x01'), std::string::npos);
  EXPECT_NE(html.find("&lt;x01&gt;"), std::string::npos);  // a control byte, shown as hex (as visible_token shows it)
  EXPECT_NE(html.find(">&lt;<small>"), std::string::npos);  // text is escaped (a byte token: "<")
  EXPECT_NE(html.find(">&amp;<small>"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  for (const char* id : {"id=\"tokens\"", "id=\"embedding\"", "id=\"blocks\"", "id=\"output\""}) {
    EXPECT_NE(html.find(id), std::string::npos) << id;
  }
}

TEST(Explain, TheCommandWritesTheReportOrJsonAndRefusesBadInput) {
  const std::string model = testing::fixture("hf_gpt2_tiny").string();
  testing::TempDir dir;
  auto r = testing::run_gpt("explain --model " + model + " --prompt 'Hello there' --out " + (dir / "r.html").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "r.html"));
  r = testing::run_gpt("explain --model " + model + " --prompt 'Hello there' --json --position 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["position"], 0);
  EXPECT_EQ(j["blocks"].size(), 2u);
  EXPECT_EQ(j["tokens"][0]["piece"], "Hello");
  struct Bad {
    std::string args, message;
  };
  for (const Bad& b : {Bad{"--prompt '' --json", "the prompt is empty"},
                       Bad{"--prompt 'Hello there' --position 5 --json", "outside the prompt"},
                       Bad{"--prompt '" + std::string(200, 'x') + " " + std::string(200, 'y') + "' --json", "context is 64"},
                       Bad{"--prompt 'Hi'", "--out"}}) {
    r = testing::run_gpt("explain --model " + model + " " + b.args);
    EXPECT_EQ(r.exit_code, 1) << b.args;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

}  // namespace
}  // namespace gpt
