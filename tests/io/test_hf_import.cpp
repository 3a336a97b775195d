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
#include "gpt/generation/kv_cache.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/safetensors.h"
#include "gpt/util/error.h"
#include "test_support.h"

namespace gpt {
namespace {

using testing::fixture;
using testing::TempDir;

nlohmann::json reference(const char* name = "hf_gpt2_tiny_reference.json") {
  std::ifstream in(fixture(name));
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

// tests/fixtures/hf_llama_tiny (tools/hf_llama_reference.py): a Llama 2-layout
// directory with grouped-query attention, an untied head, bfloat16 weights in two
// shards named by model.safetensors.index.json, and a SentencePiece-style
// tokenizer that puts <s> first.
TEST(HuggingFaceImport, ShardedBf16LlamaMatchesPyTorch) {
  const nlohmann::json ref = reference("hf_llama_tiny_reference.json");
  LoadedModel m = load_model(fixture("hf_llama_tiny"));
  EXPECT_EQ(m.model->config().arch, Architecture::kLlama);
  EXPECT_EQ(m.model->config().kv_heads(), 2);
  const auto ids = ref["ids"].get<std::vector<int32_t>>();
  // Tokenizers.js's ids, <s> included.
  EXPECT_EQ(m.tokenizer->encode_prompt(ref["text"].get<std::string>()), ids);

  const double err = worst_logit_error(*m.model, ref);
  std::printf("[ info ] worst logit difference vs PyTorch: %.2e (logits span about +-15)\n", err);
  EXPECT_LT(err, 2e-4);
  std::vector<int32_t> x(ids.begin(), ids.end() - 1), y(ids.begin() + 1, ids.end());
  EXPECT_NEAR(m.model->forward(x.data(), y.data(), 1, static_cast<int64_t>(x.size())), ref["loss"].get<double>(), 1e-4);

  InferenceSession session(*m.model);
  GenerateOptions gen;
  gen.sampling.greedy = true;
  gen.max_new_tokens = 16;
  const GenerateResult r = generate(session, *m.tokenizer, ref["greedy"]["prompt"].get<std::vector<int32_t>>(), gen);
  EXPECT_EQ(r.tokens, ref["greedy"]["tokens"].get<std::vector<int32_t>>());
}

TEST(HuggingFaceImport, ShardIndexMistakesAreOneLineErrors) {
  const auto src = fixture("hf_llama_tiny");
  const auto error_of = [](const std::filesystem::path& dir) -> std::string {
    try {
      load_model(dir);
    } catch (const Error& e) {
      return e.what();
    }
    return "(loaded)";
  };
  const auto copy_with_index = [&](const TempDir& dir, const nlohmann::json& index) {
    for (const auto& e : std::filesystem::directory_iterator(src)) {
      if (e.path().filename() != "model.safetensors.index.json") std::filesystem::copy(e.path(), dir / e.path().filename());
    }
    std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  };
  const nlohmann::json good = nlohmann::json::parse(std::ifstream(src / "model.safetensors.index.json"));
  const std::string index = "/model.safetensors.index.json";
  {
    TempDir dir;
    nlohmann::json j = good;
    j["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
    copy_with_index(dir, j);
    EXPECT_EQ(error_of(dir.path()), dir.path().string() + index +
                                        " puts 'model.norm.weight' in model-00001-of-00002.safetensors, which does not hold it");
  }
  {
    TempDir dir;
    nlohmann::json j = good;
    j["weight_map"]["model.norm.weight"] = "../model-00002-of-00002.safetensors";
    copy_with_index(dir, j);
    EXPECT_EQ(error_of(dir.path()), dir.path().string() + index +
                                        ": '../model-00002-of-00002.safetensors' is not a file name in the model directory");
  }
  {
    TempDir dir;
    copy_with_index(dir, good);
    std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
    EXPECT_EQ(error_of(dir.path()), dir.path().string() + index + " names model-00002-of-00002.safetensors, which is missing");
  }
  {
    TempDir dir;
    nlohmann::json j = good;
    j["weight_map"].erase("model.layers.1.mlp.up_proj.weight");
    copy_with_index(dir, j);
    EXPECT_EQ(error_of(dir.path()), dir.path().string() + index +
                                        " holds 20 tensors, but 21 are needed (config.json and the weights disagree)");
  }
  {
    TempDir dir;
    copy_with_index(dir, {{"weight_map", nlohmann::json::array()}});
    EXPECT_EQ(error_of(dir.path()), dir.path().string() + index + " has no \"weight_map\" of tensor names to files");
  }
}

}  // namespace
}  // namespace gpt
