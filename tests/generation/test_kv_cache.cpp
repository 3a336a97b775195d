// The KV-cache path computes what the full model computes: at every step the
// logits of incremental decoding equal those of recomputing the whole context
// (tolerance: 2e-5 of the largest logit with an fp32 cache, 2e-3 with a float16
// one), also after the context window is full and the session has slid; and
// greedy decoding reproduces PyTorch's tokens.
#include <gtest/gtest.h>

#include <memory>
#include <type_traits>


#include <nlohmann/json.hpp>

#include "gpt/generation/generate.h"
#include "gpt/generation/kv_cache.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/model_loader.h"
#include "gpt/io/safetensors.h"
#include "gpt/kernels/attention.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/model/gpt.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

constexpr double kCacheTol = 2e-5;
constexpr double kHalfCacheTol = 2e-3;  // keys and values rounded to 11 significant bits

ModelConfig config(PositionEncoding pe, int block = 16) {
  return testing::model_config(23, block, 2, 4, 32, pe);
}

void randomize(GPT& model, uint64_t seed) {
  model.init_weights(seed);
  Rng rng(seed + 1);
  for (auto& p : model.params) p += static_cast<float>(rng.normal()) * 0.1f;  // sharper than the init
}

class KvCache : public ::testing::TestWithParam<std::tuple<PositionEncoding, KvCacheType>> {
 protected:
  ModelConfig cfg() const { return config(std::get<0>(GetParam())); }
  KvCacheType kv() const { return std::get<1>(GetParam()); }
  double tol() const { return kv() == KvCacheType::kF16 ? kHalfCacheTol : kCacheTol; }
};

TEST_P(KvCache, IncrementalLogitsMatchRecomputationThroughSlides) {
  const ModelConfig c = cfg();
  GPT model(c), reference(c);
  randomize(model, 3);
  reference.params = model.params;
  InferenceSession session(model, kv());
  ASSERT_EQ(session.kv_cache_type(), kv());
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
    EXPECT_LT(err, tol()) << "step " << step << ", context " << T;
  }
  EXPECT_GE(session.slides(), 2);
  std::printf("[ measured ] worst cache-vs-recompute error %.2e over %lld slides (%s cache)\n", worst,
              static_cast<long long>(session.slides()), kv_cache_type_name(kv()));
}

TEST_P(KvCache, PrefillGivesEveryPositionsLogits) {
  const ModelConfig c = cfg();
  GPT model(c), reference(c);
  randomize(model, 4);
  reference.params = model.params;
  InferenceSession session(model, kv());
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  const auto n = static_cast<int64_t>(tokens.size());
  session.append(tokens.data(), 6);
  session.append(tokens.data() + 6, n - 6, /*all_logits=*/true);  // a second chunk on top of the cache
  reference.forward(tokens.data(), nullptr, 1, n);
  for (int64_t i = 6; i < n; ++i) {
    EXPECT_LT(testing::relative_max_error(session.logits() + (i - 6) * c.vocab_size,
                                          reference.logits() + i * c.vocab_size, static_cast<size_t>(c.vocab_size)),
              tol())
        << "position " << i;
  }
}

// Prompts long enough that their attention goes by blocks of queries through
// GEMMs (a first chunk of 60 tokens, a second of 40 on top of it), then tokens one
// at a time through the per-query kernel (heads of 16: the AVX-512 one where the
// CPU has it): every position's logits as recomputed.
TEST_P(KvCache, LongPromptsAndTheTokensAfterThemMatchRecomputation) {
  const ModelConfig c = testing::model_config(23, 128, 2, 4, 64, std::get<0>(GetParam()));
  GPT model(c), reference(c);
  randomize(model, 5);
  reference.params = model.params;
  InferenceSession session(model, kv());
  Rng rng(11);
  std::vector<int32_t> tokens(105);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(c.vocab_size));
  const auto V = static_cast<size_t>(c.vocab_size);
  reference.forward(tokens.data(), nullptr, 1, static_cast<int64_t>(tokens.size()));
  session.append(tokens.data(), 60, /*all_logits=*/true);
  for (int64_t i = 0; i < 60; ++i) {
    ASSERT_LT(testing::relative_max_error(session.logits() + i * c.vocab_size, reference.logits() + i * c.vocab_size, V),
              tol())
        << "first chunk, position " << i;
  }
  session.append(tokens.data() + 60, 40, /*all_logits=*/true);
  for (int64_t i = 60; i < 100; ++i) {
    ASSERT_LT(testing::relative_max_error(session.logits() + (i - 60) * c.vocab_size,
                                          reference.logits() + i * c.vocab_size, V),
              tol())
        << "second chunk, position " << i;
  }
  for (int64_t i = 100; i < 105; ++i) {
    const float* logits = session.append(&tokens[static_cast<size_t>(i)], 1);
    ASSERT_LT(testing::relative_max_error(logits, reference.logits() + i * c.vocab_size, V), tol()) << "position " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Positions, KvCache,
                         ::testing::Combine(::testing::Values(PositionEncoding::kLearned, PositionEncoding::kSinusoidal),
                                            ::testing::Values(KvCacheType::kF32, KvCacheType::kF16)),
                         [](const auto& info) {
                           return to_string(std::get<0>(info.param)) + "_" +
                                  kv_cache_type_name(std::get<1>(info.param));
                         });

TEST(KvCache, AutoTypeFollowsTheWeights) {
  // The AVX-512 and NEON attention kernels read a float16 cache in place for
  // heads a multiple of 16 wide (up to 128); elsewhere the cache would be widened
  // into scratch at every step, slower than fp32, so auto keeps fp32 there.
#if defined(__x86_64__)
  const bool in_place_cpu = __builtin_cpu_supports("avx512f") && !portable_kernels_forced();
#elif defined(__aarch64__)
  const bool in_place_cpu = !portable_kernels_forced();
#else
  const bool in_place_cpu = false;
#endif
  EXPECT_EQ(attention_f16_reads_in_place(16), in_place_cpu);
  EXPECT_EQ(attention_f16_reads_in_place(128), in_place_cpu);
  EXPECT_FALSE(attention_f16_reads_in_place(8));
  EXPECT_FALSE(attention_f16_reads_in_place(24));
  EXPECT_FALSE(attention_f16_reads_in_place(144));
  for (int heads : {2, 4}) {  // heads 16 and 8 wide
    const ModelConfig c = testing::model_config(23, 16, 2, heads, 32);
    GPT model(c);
    model.init_weights(1);
    EXPECT_EQ(InferenceSession(model).kv_cache_type(), KvCacheType::kF32);  // fp32 stays exact
    const KvCacheType compact = heads == 2 && in_place_cpu ? KvCacheType::kF16 : KvCacheType::kF32;
    for (GgmlType t : {GgmlType::kF16, GgmlType::kQ8_0}) {
      const auto q = QuantizedModel::quantize(model, t);
      EXPECT_EQ(InferenceSession(q->weights).kv_cache_type(), compact) << ggml_type_name(t) << " heads " << heads;
      EXPECT_EQ(InferenceSession(q->weights, KvCacheType::kF32).kv_cache_type(), KvCacheType::kF32);
      EXPECT_EQ(InferenceSession(q->weights, KvCacheType::kF16).kv_cache_type(), KvCacheType::kF16);
    }
  }
  EXPECT_EQ(parse_kv_cache_type("f16"), KvCacheType::kF16);
  try {
    parse_kv_cache_type("q8");
    FAIL() << "an unknown cache type was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown KV cache type 'q8' (expected auto, f32 or f16)");
  }
}

TEST(KvCache, GreedyDecodingMatchesPyTorch) {
  for (const std::string name : {"tiny_learned_tied", "tiny_sinusoidal_untied", "tiny_llama_gqa_tied",
                                 "tiny_llama_untied", "tiny_qwen2_bias_mqa"}) {
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

// The cached pass (a prompt in one append, then one token at a time) gives
// PyTorch's logits at every position, both architectures, fp32 and f16 caches:
// RoPE at the right positions, keys rotated before they are cached, grouped
// heads reading their shared key/value head.
TEST(KvCache, LogitsMatchPyTorchAtEveryPosition) {
  for (const std::string name : {"tiny_learned_tied", "tiny_llama_gqa_tied", "tiny_llama_untied",
                                 "tiny_qwen2_bias_mqa", "tiny_llama_linear_x2", "tiny_llama_yarn_x2"}) {
    const auto f = SafetensorsFile::load(testing::fixture(name + ".safetensors"));
    GPT model(ModelConfig::from_json(nlohmann::json::parse(f.metadata().at("config"))));
    for (const TensorInfo& t : model.layout().tensors())
      f.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);
    const auto& shape = f.entry("tokens").shape;
    const int64_t B = shape[0], T = shape[1], V = model.config().vocab_size;
    std::vector<int32_t> tokens(static_cast<size_t>(B * T));
    f.read_i32("tokens", shape, tokens.data());
    std::vector<float> ref(static_cast<size_t>(B * T * V));
    f.read_f32("logits", {B, T, V}, ref.data());
    for (KvCacheType kv : {KvCacheType::kF32, KvCacheType::kF16}) {
      InferenceSession session(model, kv);
      const int64_t prompt = T / 2;
      std::vector<float> ours(static_cast<size_t>(T * V));
      const float* first = session.append(tokens.data(), prompt, true);
      std::copy(first - (prompt - 1) * V, first + V, ours.begin());
      for (int64_t t = prompt; t < T; ++t) {
        const float* l = session.append(tokens.data() + t, 1);
        std::copy(l, l + V, ours.begin() + t * V);
      }
      const double err = testing::relative_max_error(ours.data(), ref.data(), ours.size());
      EXPECT_LT(err, kv == KvCacheType::kF32 ? 5e-6 : 2e-3) << name << " " << kv_cache_type_name(kv);
    }
  }
}

// A full context: a RoPE model shifts its cache (the newest half moves to the
// front, keys rotated back) instead of reading the kept tokens again. In one
// block the keys depend only on their own token and position, so the logits
// after a shift are those of a session that read only the kept tokens; GPT-2
// reads them again.
TEST(KvCache, RopeModelsShiftTheCacheWhenTheContextFills) {
  const auto tokens = [](int64_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7 + 3) % 50);
    return t;
  };
  for (const KvCacheType kv : {KvCacheType::kF32, KvCacheType::kF16}) {
    ModelConfig c = testing::llama_config(50, 32, 1, 4, 2, 32);
    c.rope_theta = 100.0f;  // angles that turn fast: a wrong rotation shows
    GPT model(c);
    model.init_weights(3);
    for (float& p : model.params) p += 0.05f * std::sin(static_cast<float>(&p - model.params.data()));
    const std::vector<int32_t> t = tokens(40);
    InferenceSession s(model, kv), fresh(model, kv);
    s.append(t.data(), 20);
    for (int64_t i = 20; i < 32; ++i) s.append(t.data() + i, 1);  // 32 positions: the context is full
    fresh.append(t.data() + 16, 16);  // what the shift keeps: tokens 16 .. 31 at positions 0 .. 15
    const double tol = kv == KvCacheType::kF32 ? 1e-5 : 5e-3;
    for (int64_t i = 32; i < 40; ++i) {  // token 32 slides (shift by 16), then decoding goes on
      const std::vector<float> got = [&] {
        const float* l = s.append(t.data() + i, 1);
        return std::vector<float>(l, l + 50);
      }();
      const float* want = fresh.append(t.data() + i, 1);
      EXPECT_LT(testing::relative_max_error(got.data(), want, 50), tol) << kv_cache_type_name(kv) << " token " << i;
    }
    EXPECT_EQ(s.slides(), 1);
    EXPECT_EQ(s.shifts(), 1);
  }
  // GPT-2's learned positions: the kept tokens are read again instead.
  GPT gpt2(testing::model_config(50, 32, 1, 2, 32));
  gpt2.init_weights(3);
  InferenceSession g(gpt2);
  const std::vector<int32_t> t = tokens(33);
  g.append(t.data(), 32);
  g.append(t.data() + 32, 1);
  EXPECT_EQ(g.slides(), 1);
  EXPECT_EQ(g.shifts(), 0);
}

TEST(KvCache, DecodingAllocatesNothingPerToken) {
  // The session owns all its memory; decoding only reuses it: no heap allocation
  // per token for any weight type or cache type (checks on the per-token path
  // build their messages only when they fail).
  const ModelConfig c = testing::model_config(64, 64, 2, 2, 64);
  GPT model(c);
  model.init_weights(1);
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    std::unique_ptr<QuantizedModel> q;
    if (type != GgmlType::kF32) q = QuantizedModel::quantize(model, type);
    const InferenceWeights weights = q ? q->weights : InferenceWeights::view(model);
    for (KvCacheType kv : {KvCacheType::kF32, KvCacheType::kF16}) {
      InferenceSession session(weights, kv);
      const std::vector<int32_t> prompt = {1, 2, 3};
      session.append(prompt.data(), 3);
      const int32_t first = 4;
      session.append(&first, 1);  // the first decoding step may size scratch
      const long before = testing::heap_allocations();
      for (int32_t i = 0; i < 50; ++i) {
        const int32_t token = i % c.vocab_size;
        session.append(&token, 1);
      }
      EXPECT_EQ(testing::heap_allocations() - before, 0) << ggml_type_name(type) << " weights, " << kv_cache_type_name(kv)
                                                         << " cache";
    }
  }
}

TEST(KvCache, AllLogitsBeyondTheContextIsAnError) {
  // Logits for every token cannot be given when the tokens exceed the context:
  // an error, not (n, V) logits of which the first rows were never computed.
  const ModelConfig c = testing::model_config(16, 8, 1, 2, 8);
  GPT model(c);
  model.init_weights(1);
  InferenceSession session(model);
  const std::vector<int32_t> tokens(12, 3);
  EXPECT_THROW(session.append(tokens.data(), 12, true), Error);
  EXPECT_NO_THROW(session.append(tokens.data(), 12, false));  // only the last logits: the newest 8 tokens
  session.reset();
  EXPECT_NO_THROW(session.append(tokens.data(), 8, true));
}

TEST(KvCache, WeightsFromOpenModelOutliveIt) {
  // open_model's views keep the model alive: a session may outlive the OpenedModel.
  testing::TempDir dir;
  GPT model(testing::model_config(256, 16, 1, 2, 32));
  model.init_weights(5);
  const auto tok = make_byte_tokenizer();
  save_checkpoint(dir / "m", {&model, tok.get()});
  std::unique_ptr<InferenceSession> session;
  {
    const OpenedModel m = open_model(dir / "m", {.dequantize = false, .convert_to = GgmlType::kQ8_0});
    session = std::make_unique<InferenceSession>(m.inference_weights());
  }
  const auto q = QuantizedModel::quantize(model, GgmlType::kQ8_0);
  InferenceSession reference(q->weights);
  const std::vector<int32_t> prompt = {10, 20, 30};
  const float* a = session->append(prompt.data(), 3);
  std::vector<float> got(a, a + 256);
  EXPECT_EQ(testing::relative_max_error(got.data(), reference.append(prompt.data(), 3), 256), 0.0);
}

static_assert(!std::is_copy_constructible_v<QuantizedStorage>, "views into its own bytes: no copies");
static_assert(std::is_move_constructible_v<QuantizedStorage>, "a vector's bytes stay put when moved");
static_assert(!std::is_copy_constructible_v<QuantizedModel> && !std::is_move_constructible_v<QuantizedModel>,
              "its weights point into itself");
static_assert(std::is_same_v<decltype(std::declval<const GPT&>().weights()), const ConstModelWeights&>,
              "reading a model's weights needs no mutable model");

}  // namespace
}  // namespace gpt

namespace gpt {
namespace {

TEST(KvCache, CapturedAttentionIsTheModelsOwn) {
  // What /v1/inspect shows: a session's captured weights (recomputed from the
  // cache) equal the training model's attention probabilities, in one call or
  // in pieces (the rows of later pieces attend to the earlier ones' keys).
  const ModelConfig c = testing::model_config(23, 16, 2, 4, 32);
  GPT model(c);
  randomize(model, 11);
  const std::vector<int32_t> tokens = {1, 5, 9, 2, 7, 7, 3, 11, 4, 0};
  const auto T = static_cast<int64_t>(tokens.size());
  for (const KvCacheType kv : {KvCacheType::kF32, KvCacheType::kF16}) {
    for (int layer = 0; layer < c.n_layer; ++layer) {
      model.forward(tokens.data(), nullptr, 1, T);
      const float* expected = model.attention_weights(layer);  // (NH, T, T)
      InferenceSession whole(model, kv);
      whole.capture_attention(layer);
      whole.append(tokens.data(), T);
      const std::vector<float>& got = whole.captured_attention();
      ASSERT_EQ(got.size(), static_cast<size_t>(c.n_head * T * T));
      const double tol = kv == KvCacheType::kF16 ? 2e-3 : 1e-5;
      EXPECT_LT(testing::relative_max_error(got.data(), expected, got.size()), tol) << "layer " << layer;
      // In two pieces: the second's rows over all 10 positions.
      InferenceSession pieces(model, kv);
      pieces.capture_attention(layer);
      pieces.append(tokens.data(), 6);
      pieces.append(tokens.data() + 6, T - 6);
      const std::vector<float>& tail = pieces.captured_attention();  // (NH, 4, T)
      ASSERT_EQ(tail.size(), static_cast<size_t>(c.n_head * 4 * T));
      for (int64_t h = 0; h < c.n_head; ++h) {
        for (int64_t i = 0; i < 4; ++i) {
          for (int64_t j = 0; j < T; ++j) {
            EXPECT_NEAR(tail[static_cast<size_t>((h * 4 + i) * T + j)], expected[(h * T + 6 + i) * T + j], tol);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace gpt
