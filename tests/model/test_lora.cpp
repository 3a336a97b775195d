// LoRA: a fresh adapter is the base model exactly; its gradients (with masked
// targets, dropout and trainable token rows) match finite differences; the base
// stays frozen with no gradient buffer; a merged adapter gives the unmerged
// logits; the PEFT files round-trip and refuse a model of another shape.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "gpt/io/peft_adapter.h"
#include "gpt/io/safetensors.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/model/gpt.h"
#include "gpt/model/lora.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

ModelConfig tiny_config(int vocab = 11) { return testing::model_config(vocab, 8, 2, 2, 8); }

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(V));
  return t;
}

GPT base_model(const ModelConfig& c) {
  GPT model(c);
  model.init_weights(7);
  Rng rng(3);
  for (auto& p : model.params) p += static_cast<float>(rng.normal()) * 0.2f;  // away from the init's symmetries
  return model;
}

std::shared_ptr<LoraAdapters> adapter_for(const GPT& model, LoraConfig lc, bool random_b) {
  auto a = std::make_shared<LoraAdapters>(model.config(), lc);
  a->init(5, model);
  if (random_b) {  // a trained adapter: B away from zero
    Rng rng(9);
    for (const TensorInfo& t : a->tensors())
      if (t.name.ends_with("lora_B.weight"))
        for (size_t i = 0; i < t.numel; ++i) a->params[t.offset + i] = static_cast<float>(rng.normal()) * 0.3f;
  }
  return a;
}

std::vector<float> logits_of(GPT& model, const std::vector<int32_t>& x, int64_t B, int64_t T) {
  model.forward(x.data(), nullptr, B, T);
  const size_t n = static_cast<size_t>(B * T * model.config().vocab_size);
  return {model.logits(), model.logits() + n};
}

// Adapters are laid out for GPT-2's Conv1D products: a llama model is refused
// in one line, not written into.
TEST(Lora, LlamaModelsAreRefusedInOneLine) {
  const GPT llama(testing::llama_config(32, 16, 1, 2, 1, 16));
  try {
    LoraAdapters::fresh(llama, LoraConfig{}, 1);
    FAIL() << "a llama model took a LoRA adapter";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "LoRA adapters are for gpt2 models only (llama's are not supported yet)");
  }
}

TEST(Lora, FreshAdapterGivesTheBaseModelsLogitsExactly) {
  GPT model = base_model(tiny_config());
  const auto x = random_tokens(12, 11, 1);
  const std::vector<float> before = logits_of(model, x, 2, 6);
  model.attach_lora(adapter_for(model, LoraConfig{}, /*random_b=*/false));
  const std::vector<float> after = logits_of(model, x, 2, 6);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ(before[i], after[i]) << i;  // B = 0: adds exactly 0
}

// d(loss)/d(adapter parameter) by central differences of forward_backward's loss
// (dropout's mask is fixed by the seed, so the loss is a smooth function).
void expect_adapter_gradients_match(GPT& model, LoraAdapters& a, const std::vector<int32_t>& x,
                                    const std::vector<int32_t>& y, int64_t B, int64_t T) {
  model.set_dropout_seed(42);
  model.zero_grad();
  model.forward_backward(x.data(), y.data(), B, T);
  const std::vector<float> analytic = a.grads;
  int checked = 0, failures = 0;
  for (const TensorInfo& t : a.tensors()) {
    for (size_t k = 0; k < std::min<size_t>(t.numel, 6); ++k) {
      const size_t i = t.offset + (k * 7919) % t.numel;
      const float saved = a.params[i];
      const float h = 1e-2f;
      auto loss_at = [&](float v) {
        a.params[i] = v;
        a.apply_token_rows(model);
        model.zero_grad();
        return static_cast<double>(model.forward_backward(x.data(), y.data(), B, T));
      };
      const double numeric = (loss_at(saved + h) - loss_at(saved - h)) / (2 * h);
      a.params[i] = saved;
      a.apply_token_rows(model);
      ++checked;
      if (std::abs(numeric - analytic[i]) > 1e-3 + 5e-2 * std::abs(analytic[i])) {
        ++failures;
        ADD_FAILURE() << t.name << "[" << (i - t.offset) << "]: numeric " << numeric << " analytic " << analytic[i];
      }
    }
  }
  EXPECT_GT(checked, 40);
  EXPECT_EQ(failures, 0);
}

TEST(Lora, GradientsMatchFiniteDifferencesWithMaskedTargetsAndTrainableTokens) {
  GPT model = base_model(tiny_config(13));
  LoraConfig lc;
  lc.rank = 3;
  lc.alpha = 6;
  lc.trainable_tokens_begin = 11;  // tokens 11 and 12 were "added"
  auto a = adapter_for(model, lc, /*random_b=*/true);
  model.attach_lora(a);
  const int64_t B = 2, T = 6;
  auto x = random_tokens(B * T, 13, 1), y = random_tokens(B * T, 13, 2);
  x[3] = 11, x[8] = 12, y[5] = 12, y[9] = 11;  // the new tokens as inputs and as targets
  for (size_t i = 0; i < y.size(); i += 3) y[i] = kIgnoreTarget;  // a prompt's positions
  expect_adapter_gradients_match(model, *a, x, y, B, T);
  EXPECT_TRUE(model.grads.empty()) << "a frozen base must not get a gradient buffer";
}

TEST(Lora, GradientsMatchFiniteDifferencesWithDropoutOnSomeTargets) {
  GPT model = base_model(tiny_config());
  LoraConfig lc;
  lc.rank = 2;
  lc.alpha = 4;
  lc.dropout = 0.3f;
  lc.targets = LoraConfig::parse_targets("c_attn,mlp.c_proj");
  auto a = adapter_for(model, lc, /*random_b=*/true);
  model.attach_lora(a);
  const auto x = random_tokens(12, 11, 4), y = random_tokens(12, 11, 5);
  expect_adapter_gradients_match(model, *a, x, y, 2, 6);
  // A backward pass needs the training forward's activations (not an evaluation's).
  std::vector<float> lp(12), d(12, 1.0f);
  model.forward_logprobs(x.data(), y.data(), 2, 6, lp.data(), /*training=*/false);
  EXPECT_THROW(model.backward_logprobs(d.data()), Error);
  // Evaluation has no dropout: the loss differs from the training pass's.
  model.zero_grad();
  const float train_loss = model.forward_backward(x.data(), y.data(), 2, 6);
  const float eval_loss = model.forward(x.data(), y.data(), 2, 6);
  EXPECT_NE(train_loss, eval_loss);
}

// Packed rows (GPT::set_packing) against one padded row per example: the same
// loss and gradients (model dropout, and LoRA with its dropout: both masks key on
// each example's row and position), learned and sinusoidal positions; bad
// layouts refused.
TEST(Packing, PackedRowsGiveThePaddedLossAndGradients) {
  for (const PositionEncoding pe : {PositionEncoding::kLearned, PositionEncoding::kSinusoidal}) {
    for (const bool lora : {false, true}) {
      const ModelConfig c = testing::model_config(11, 16, 2, 2, 8, pe);
      GPT model = base_model(c);
      model.set_dropout(0.2f);  // the model's dropout masks key on example and position too
      std::shared_ptr<LoraAdapters> a;
      if (lora) {
        LoraConfig lc;
        lc.rank = 2;
        lc.alpha = 4;
        lc.dropout = 0.3f;
        a = adapter_for(model, lc, /*random_b=*/true);
        model.attach_lora(a);
      }
      const std::vector<int64_t> lengths = {7, 3, 5, 1};
      const int64_t B = 4, Tpad = 7, Tpack = 16;
      const auto tokens = random_tokens(static_cast<size_t>(B * Tpad), 11, 21);
      auto targets = random_tokens(static_cast<size_t>(B * Tpad), 11, 22);
      targets[2] = kIgnoreTarget;  // a prompt token
      // Padded: row r holds example r, the rest ignored.
      std::vector<int32_t> xp(static_cast<size_t>(B * Tpad), 0), yp(xp.size(), kIgnoreTarget);
      // Packed: examples 0 and 2 in row 0 (7 + 5 = 12, 4 tokens of padding), 1 and 3 in row 1.
      std::vector<int32_t> xk(static_cast<size_t>(2 * Tpack), 0), yk(xk.size(), kIgnoreTarget), pos(xk.size()), ex(xk.size());
      std::vector<int64_t> fill = {0, 0};
      for (int64_t e : {0, 2, 1, 3}) {
        const int64_t row = e % 2, len = lengths[static_cast<size_t>(e)];
        for (int64_t t = 0; t < len; ++t) {
          const auto src = static_cast<size_t>(e * Tpad + t), dst = static_cast<size_t>(row * Tpack + fill[static_cast<size_t>(row)] + t);
          xp[src] = xk[dst] = tokens[src];
          yp[src] = yk[dst] = targets[src];
          pos[dst] = static_cast<int32_t>(t);
          ex[dst] = static_cast<int32_t>(e);
        }
        fill[static_cast<size_t>(row)] += len;
      }
      for (int64_t row = 0; row < 2; ++row)
        for (int64_t t = fill[static_cast<size_t>(row)], p = 0; t < Tpack; ++t, ++p) {
          pos[static_cast<size_t>(row * Tpack + t)] = static_cast<int32_t>(p);
          ex[static_cast<size_t>(row * Tpack + t)] = static_cast<int32_t>(B + row);
        }
      const auto grads = [&]() -> std::vector<float> { return lora ? a->grads : model.grads; };
      model.zero_grad();
      if (a) std::fill(a->grads.begin(), a->grads.end(), 0.0f);
      model.set_dropout_seed(99, 4);
      const float padded = model.forward_backward(xp.data(), yp.data(), B, Tpad);
      const std::vector<float> g_padded = grads();
      model.zero_grad();
      if (a) std::fill(a->grads.begin(), a->grads.end(), 0.0f);
      model.set_packing(pos, ex);
      const float packed = model.forward_backward(xk.data(), yk.data(), 2, Tpack);
      const std::vector<float> g_packed = grads();
      const std::string what = std::string(lora ? "LoRA" : "full") + (pe == PositionEncoding::kLearned ? " learned" : " sinusoidal");
      EXPECT_NEAR(packed, padded, 1e-6f * std::abs(padded)) << what;
      ASSERT_EQ(g_packed.size(), g_padded.size());
      EXPECT_LT(testing::relative_max_error(g_packed.data(), g_padded.data(), g_padded.size()), 1e-5) << what;
      // A layout changed between a forward pass and what reads it is refused.
      model.set_packing({}, {});
      EXPECT_THROW(model.attention_weights(0), Error);
      model.set_packing(pos, ex);
      // A layout for another shape, or one whose positions do not count up along an example.
      EXPECT_THROW(model.forward_backward(xk.data(), yk.data(), 1, Tpack), Error);
      std::vector<int32_t> bad = pos;
      bad[3] = 5;
      model.set_packing(bad, ex);
      EXPECT_THROW(model.forward_backward(xk.data(), yk.data(), 2, Tpack), Error);
      std::vector<int32_t> far = pos;
      far[0] = 16;
      EXPECT_THROW(model.set_packing(far, ex), Error);
      model.set_packing({}, {});
      EXPECT_FALSE(model.packed());
    }
  }
}

TEST(Lora, MergedAdapterGivesTheUnmergedLogits) {
  GPT model = base_model(tiny_config(13));
  LoraConfig lc;
  lc.rank = 4;
  lc.trainable_tokens_begin = 11;
  auto a = adapter_for(model, lc, /*random_b=*/true);
  Rng rng(12);
  for (size_t i = a->tensors().back().offset; i < a->total(); ++i) a->params[i] += static_cast<float>(rng.normal()) * 0.1f;
  a->apply_token_rows(model);
  model.attach_lora(a);
  auto x = random_tokens(12, 13, 6);
  x[2] = 12;
  const std::vector<float> unmerged = logits_of(model, x, 2, 6);
  GPT merged(model.config());
  merged.params = model.params;
  a->merge_into(merged);
  const std::vector<float> m = logits_of(merged, x, 2, 6);
  float worst = 0;
  for (size_t i = 0; i < m.size(); ++i) worst = std::max(worst, std::abs(m[i] - unmerged[i]));
  EXPECT_LE(worst, 1e-6f) << "merged and unmerged logits differ by " << worst;
}

TEST(Lora, PeftFilesRoundTripAndRefuseAnotherBase) {
  GPT model = base_model(tiny_config(13));
  LoraConfig lc;
  lc.rank = 2;
  lc.targets = LoraConfig::parse_targets("c_attn,c_fc");
  lc.trainable_tokens_begin = 11;
  auto a = adapter_for(model, lc, /*random_b=*/true);
  const testing::TempDir tmp;
  const std::filesystem::path dir = tmp / "adapter";
  std::filesystem::create_directories(dir);
  write_adapter_files(dir, *a, "base-model", 11);
  // PEFT's names and shapes.
  const SafetensorsFile st = SafetensorsFile::load(dir / kAdapterWeightsFile);
  EXPECT_EQ(st.entry("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight").shape, (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(st.entry("base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight").shape, (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(st.entry("base_model.model.transformer.wte.token_adapter.trainable_tokens_delta").shape,
            (std::vector<int64_t>{2, 8}));
  EXPECT_FALSE(st.contains("base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"));

  ModelConfig base = model.config();
  base.vocab_size = 11;
  const LoadedAdapter loaded = load_adapter(dir, base);
  EXPECT_EQ(loaded.adapter->params, a->params);
  EXPECT_EQ(loaded.adapter->config().rank, 2);
  EXPECT_EQ(loaded.base_model, "base-model");

  ModelConfig wider = base;
  wider.n_embd = 16;
  wider.n_head = 2;
  EXPECT_THROW(
      {
        try {
          load_adapter(dir, wider);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("another base model"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  ModelConfig other_vocab = base;
  other_vocab.vocab_size = 12;
  EXPECT_THROW(load_adapter(dir, other_vocab), Error);
  EXPECT_THROW(load_adapter(dir.parent_path(), base), Error);  // not an adapter directory
}

TEST(Lora, RejectsBadOptions) {
  LoraConfig lc;
  lc.rank = 0;
  EXPECT_THROW(lc.validate(), Error);
  EXPECT_THROW(LoraConfig::parse_targets("c_attn,q_proj"), Error);
  EXPECT_THROW(LoraConfig::parse_targets(""), Error);
  lc.rank = 4;
  lc.dropout = 1.0f;
  EXPECT_THROW(lc.validate(), Error);
}

TEST(GPTModel, NewVocabularyRowsStartAtTheMeanRow) {
  GPT model = base_model(tiny_config());
  GPT grown = with_vocabulary(model, 13);
  const int64_t C = 8;
  for (int64_t i = 0; i < C; ++i) {
    double mean = 0;
    for (int64_t r = 0; r < 11; ++r) mean += model.weights().wte[r * C + i];
    mean /= 11;
    EXPECT_NEAR(grown.weights().wte[11 * C + i], mean, 1e-6);
    EXPECT_NEAR(grown.weights().wte[12 * C + i], mean, 1e-6);
  }
  // Old tokens keep their logits.
  const auto x = random_tokens(12, 11, 1);
  const std::vector<float> a = logits_of(model, x, 2, 6), b = logits_of(grown, x, 2, 6);
  for (int64_t r = 0; r < 12; ++r)
    for (int64_t v = 0; v < 11; ++v) EXPECT_EQ(a[static_cast<size_t>(r * 11 + v)], b[static_cast<size_t>(r * 13 + v)]);
  EXPECT_THROW(with_vocabulary(model, 10), Error);
}

}  // namespace
}  // namespace gpt
