// Hugging Face GPT-2 import against PyTorch: tests/fixtures/hf_gpt2_tiny is a tiny
// GPT-2 with the real GPT-2 vocabulary in the hub's layout (float16 safetensors,
// Conv1D weights, attn.bias buffers, vocab.json + merges.txt), made by
// tools/hf_gpt2_reference.py together with PyTorch's logits, loss and greedy
// continuation (hf_gpt2_tiny_reference.json).
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gpt/generation/generate.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/safetensors.h"
#include "test_support.h"

namespace gpt {
namespace {

using testing::fixture;
using testing::TempDir;

nlohmann::json reference() {
  std::ifstream in(fixture("hf_gpt2_tiny_reference.json"));
  return nlohmann::json::parse(in);
}

// Logits of every position of the reference text against PyTorch's: the
// log-sum-exp, the top 8 (ids and values) and 32 fixed probe ids.
double worst_logit_error(GPT& model, const nlohmann::json& ref) {
  const std::vector<int32_t> ids = ref["ids"].get<std::vector<int32_t>>();
  const auto T = static_cast<int64_t>(ids.size());
  model.forward(ids.data(), nullptr, 1, T);
  const int64_t V = model.config().vocab_size;
  const auto probes = ref["probe_ids"].get<std::vector<int32_t>>();
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = model.logits() + t * V;
    const nlohmann::json& r = ref["rows"][static_cast<size_t>(t)];
    double mx = row[0];
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
    worst = std::max(worst, std::fabs(mx + std::log(sum) - r["logsumexp"].get<double>()));
    const auto top_ids = r["top_ids"].get<std::vector<int32_t>>();
    const auto top_logits = r["top_logits"].get<std::vector<double>>();
    for (size_t k = 0; k < top_ids.size(); ++k) worst = std::max(worst, std::fabs(row[top_ids[k]] - top_logits[k]));
    const auto probe_logits = r["probe_logits"].get<std::vector<double>>();
    for (size_t k = 0; k < probes.size(); ++k) worst = std::max(worst, std::fabs(row[probes[k]] - probe_logits[k]));
  }
  return worst;
}

TEST(HuggingFaceImport, TokenizerLogitsLossAndGreedyMatchPyTorch) {
  const nlohmann::json ref = reference();
  LoadedModel m = load_model(fixture("hf_gpt2_tiny"));
  EXPECT_EQ(m.model->config().vocab_size, 50257);
  EXPECT_EQ(m.tokenizer->vocab_size(), 50257);
  const auto ids = ref["ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(m.tokenizer->encode(ref["text"].get<std::string>()), ids);

  const double err = worst_logit_error(*m.model, ref);
  std::printf("[ info ] worst logit difference vs PyTorch: %.2e (logits span about +-10)\n", err);
  EXPECT_LT(err, 1e-4);

  std::vector<int32_t> x(ids.begin(), ids.end() - 1), y(ids.begin() + 1, ids.end());
  const float loss = m.model->forward(x.data(), y.data(), 1, static_cast<int64_t>(x.size()));
  EXPECT_NEAR(loss, ref["loss"].get<double>(), 1e-4);

  InferenceSession session(*m.model);
  GenerateOptions gen;
  gen.sampling.greedy = true;
  gen.max_new_tokens = 24;
  const GenerateResult r = generate(session, *m.tokenizer, ref["greedy"]["prompt"].get<std::vector<int32_t>>(), gen);
  EXPECT_EQ(r.tokens, ref["greedy"]["tokens"].get<std::vector<int32_t>>());
}

// The same weights as float32 with every name under "transformer." (how some
// exports store them) and without the attn.bias buffers.
TEST(HuggingFaceImport, Float32AndTransformerPrefix) {
  TempDir dir;
  const auto src = fixture("hf_gpt2_tiny");
  for (const char* f : {"config.json", "vocab.json", "merges.txt"}) std::filesystem::copy(src / f, dir / f);
  const SafetensorsFile st = SafetensorsFile::load(src / "model.safetensors");
  LoadedModel m = load_model(src);
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<float>> keep;
  keep.reserve(m.model->layout().tensors().size());
  for (const TensorInfo& t : m.model->layout().tensors()) {
    keep.emplace_back(t.numel);
    st.read_f32(t.name, t.shape, keep.back().data());
    tensors.push_back({"transformer." + t.name, t.shape, keep.back().data()});
  }
  write_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  LoadedModel m32 = load_model(dir.path());
  EXPECT_EQ(m32.model->params, m.model->params);
  EXPECT_LT(worst_logit_error(*m32.model, reference()), 1e-4);
}

TEST(HuggingFaceImport, WhatGptCppSavesLoadsBackWithHuggingFaceNames) {
  TempDir dir;
  LoadedModel m = load_model(fixture("hf_gpt2_tiny"));
  save_checkpoint(dir / "ckpt", {m.model.get(), m.tokenizer.get()});
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "ckpt" / "config.json"));
  EXPECT_EQ(cfg["model_type"], "gpt2");
  EXPECT_EQ(cfg["architectures"][0], "GPT2LMHeadModel");
  const SafetensorsFile st = SafetensorsFile::load(dir / "ckpt" / "model.safetensors");
  EXPECT_TRUE(st.contains("h.1.attn.c_attn.weight"));
  EXPECT_TRUE(st.contains("wte.weight"));
  EXPECT_TRUE(std::filesystem::exists(dir / "ckpt" / "tokenizer.json"));
  LoadedModel back = load_model(dir / "ckpt");
  EXPECT_EQ(back.model->params, m.model->params);
}

}  // namespace
}  // namespace gpt
