// The KV-cache path computes what the full model computes: at every step the
// logits of incremental decoding equal those of recomputing the whole context
// (tolerance: 2e-5 of the largest logit), also after the context window is full
// and the session has slid; and greedy decoding reproduces PyTorch's tokens.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpt/generation/generate.h"
#include "gpt/generation/kv_cache.h"
#include "gpt/io/safetensors.h"
#include "gpt/model/gpt.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

constexpr double kCacheTol = 2e-5;

ModelConfig config(PositionEncoding pe, int block = 16) {
  return testing::model_config(23, block, 2, 4, 32, pe);
}

void randomize(GPT& model, uint64_t seed) {
  model.init_weights(seed);
  Rng rng(seed + 1);
  for (auto& p : model.params) p += static_cast<float>(rng.normal()) * 0.1f;  // sharper than the init
}

class KvCache : public ::testing::TestWithParam<PositionEncoding> {};

TEST_P(KvCache, IncrementalLogitsMatchRecomputationThroughSlides) {
  const ModelConfig c = config(GetParam());
  GPT model(c), reference(c);
  randomize(model, 3);
  reference.params = model.params;
  InferenceSession session(model);
  Rng rng(9);
  std::vector<int32_t> prompt = {1, 5, 7, 2, 19};
  session.append(prompt.data(), static_cast<int64_t>(prompt.size()));
  double worst = 0;
  for (int step = 0; step < 40; ++step) {  // 5 + 40 tokens: slides at least twice in a context of 16
    const int32_t next = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(c.vocab_size));
    const float* logits = session.append(&next, 1);
    const auto& ctx = session.tokens();
    const auto T = static_cast<int64_t>(ctx.size());
    ASSERT_LE(T, c.block_size);
    reference.forward(ctx.data(), nullptr, 1, T);
    const float* ref = reference.logits() + (T - 1) * c.vocab_size;
    const double err = testing::relative_max_error(logits, ref, static_cast<size_t>(c.vocab_size));
    worst = std::max(worst, err);
    EXPECT_LT(err, kCacheTol) << "step " << step << ", context " << T;
  }
  EXPECT_GE(session.slides(), 2);
  std::printf("[ measured ] worst cache-vs-recompute error %.2e over %lld slides\n", worst,
              static_cast<long long>(session.slides()));
}

TEST_P(KvCache, PrefillGivesEveryPositionsLogits) {
  const ModelConfig c = config(GetParam());
  GPT model(c), reference(c);
  randomize(model, 4);
  reference.params = model.params;
  InferenceSession session(model);
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  const auto n = static_cast<int64_t>(tokens.size());
  session.append(tokens.data(), 6);
  session.append(tokens.data() + 6, n - 6, /*all_logits=*/true);  // a second chunk on top of the cache
  reference.forward(tokens.data(), nullptr, 1, n);
  for (int64_t i = 6; i < n; ++i) {
    EXPECT_LT(testing::relative_max_error(session.logits() + (i - 6) * c.vocab_size,
                                          reference.logits() + i * c.vocab_size, static_cast<size_t>(c.vocab_size)),
              kCacheTol)
        << "position " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Positions, KvCache, ::testing::Values(PositionEncoding::kLearned, PositionEncoding::kSinusoidal),
                         [](const auto& info) { return to_string(info.param); });

TEST(KvCache, GreedyDecodingMatchesPyTorch) {
  for (const std::string name : {"tiny_learned_tied", "tiny_sinusoidal_untied"}) {
    const auto f = SafetensorsFile::load(testing::fixture(name + ".safetensors"));
    GPT model(ModelConfig::from_json(nlohmann::json::parse(f.metadata().at("config"))));
    for (const TensorInfo& t : model.layout().tensors())
      f.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);
    std::vector<int32_t> prompt(4), expected(12);
    f.read_i32("greedy.prompt", {4}, prompt.data());
    f.read_i32("greedy.tokens", {12}, expected.data());

    InferenceSession session(model);
    GenerateOptions opts;
    opts.sampling.greedy = true;
    opts.max_new_tokens = 12;
    const auto tok = make_byte_tokenizer();  // only to turn ids into bytes; ids < 64 here
    const GenerateResult r = generate(session, *tok, prompt, opts);
    EXPECT_EQ(r.tokens, expected) << name;
  }
}

TEST(KvCache, DecodingAllocatesNothingPerToken) {
  // The session owns all its memory; decoding only reuses it.
  const ModelConfig c = config(PositionEncoding::kLearned, 64);
  GPT model(c);
  model.init_weights(1);
  InferenceSession session(model);
  const std::vector<int32_t> prompt = {1, 2, 3};
  session.append(prompt.data(), 3);
  const float* logits_before = session.logits();
  const size_t history_capacity = session.tokens().capacity();
  for (int32_t i = 0; i < 50; ++i) {
    const int32_t token = i % c.vocab_size;
    session.append(&token, 1);
  }
  EXPECT_EQ(session.logits(), logits_before);
  EXPECT_EQ(session.tokens().capacity(), history_capacity);
}

}  // namespace
}  // namespace gpt
