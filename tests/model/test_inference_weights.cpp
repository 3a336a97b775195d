// Inference weights in panels (InferenceWeights::in_panels): the same model, re-laid
// in place for the few-rows kernels, reads the same embeddings and decodes to
// the same logits as the GPT's own row-major matrices.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "gpt/generation/kv_cache.h"
#include "gpt/kernels/matmul.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(InferenceWeights, PanelsDecodeAsTheRowMajorModelDoes) {
  if (!few_rows_kernels()) GTEST_SKIP() << "skipped: this CPU has no AVX-512 or NEON, so models are never re-laid in panels";
  for (bool tied : {true, false}) {
    // 101 tokens: the last panel of the LM head is 5 wide.
    ModelConfig c = testing::model_config(101, 64, 2, 2, 32);
    c.tie_word_embeddings = tied;
    GPT model(c);
    model.init_weights(5);
    auto copy = std::make_shared<GPT>(c);
    copy->init_weights(5);
    const InferenceWeights rows = InferenceWeights::view(model);
    const InferenceWeights panels = InferenceWeights::in_panels(copy);
    EXPECT_EQ(panels.bytes_per_token(), rows.bytes_per_token());
    std::vector<float> a(static_cast<size_t>(c.n_embd)), b(a.size());
    for (int32_t t = 0; t < c.vocab_size; ++t) {
      rows.embed(t, a.data());
      panels.embed(t, b.data());
      ASSERT_EQ(a, b) << "embedding of token " << t << (tied ? ", tied" : ", untied");
    }
    InferenceSession s_rows(rows, KvCacheType::kF32), s_panels(panels, KvCacheType::kF32);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 20; ++i) prompt.push_back((i * 37) % c.vocab_size);
    s_rows.append(prompt.data(), static_cast<int64_t>(prompt.size()), /*all_logits=*/true);
    s_panels.append(prompt.data(), static_cast<int64_t>(prompt.size()), /*all_logits=*/true);
    EXPECT_LT(testing::relative_max_error(s_panels.logits(), s_rows.logits(), prompt.size() * static_cast<size_t>(c.vocab_size)),
              1e-5);
    const float *la = nullptr, *lb = nullptr;
    for (int32_t t = 3; t < 13; ++t) {
      la = s_rows.append(&t, 1);
      lb = s_panels.append(&t, 1);
      ASSERT_LT(testing::relative_max_error(lb, la, static_cast<size_t>(c.vocab_size)), 1e-5) << "decoding token " << t;
    }
  }
}

}  // namespace
}  // namespace gpt
