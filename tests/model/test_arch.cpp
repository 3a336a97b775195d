// The architectures' rules (model/arch/): config.json both ways, the tensor
// tables, one-line errors for configs gpt.cpp cannot run, and the inference
// pass's contract with whatever cache runs it.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpt/io/model_loader.h"
#include "gpt/kernels/quantize.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

nlohmann::json llama_json() {
  return {{"model_type", "llama"},         {"vocab_size", 100},          {"max_position_embeddings", 64},
          {"hidden_size", 64},             {"intermediate_size", 176},   {"num_hidden_layers", 2},
          {"num_attention_heads", 4},      {"num_key_value_heads", 2},   {"rms_norm_eps", 1e-6},
          {"rope_theta", 500000.0},        {"tie_word_embeddings", false}, {"hidden_act", "silu"}};
}

std::string error_of(const nlohmann::json& j) {
  try {
    ModelConfig::from_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(Architecture, LlamaConfigReadsHuggingFaceKeysAndWritesThemBack) {
  const ModelConfig c = ModelConfig::from_json(llama_json());
  EXPECT_TRUE(c.llama());
  EXPECT_EQ(c.position_encoding, PositionEncoding::kRotary);
  EXPECT_EQ(c.kv_heads(), 2);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_EQ(c.qkv_dim(), 128);
  EXPECT_EQ(c.mlp_hidden(), 176);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FALSE(c.tie_word_embeddings);
  const nlohmann::json back = c.to_json();
  EXPECT_EQ(back["model_type"], "llama");
  EXPECT_EQ(back["architectures"][0], "LlamaForCausalLM");
  const ModelConfig again = ModelConfig::from_json(back);
  EXPECT_EQ(again.to_json(), back);
  // Hugging Face's defaults where keys are absent: kv heads = heads, untied, eps 1e-6.
  nlohmann::json bare = llama_json();
  for (const char* k : {"num_key_value_heads", "rms_norm_eps", "rope_theta", "tie_word_embeddings"}) bare.erase(k);
  const ModelConfig d = ModelConfig::from_json(bare);
  EXPECT_EQ(d.kv_heads(), 4);
  EXPECT_FALSE(d.tie_word_embeddings);
  EXPECT_FLOAT_EQ(d.layer_norm_epsilon, 1e-6f);
  EXPECT_EQ(d.rope_theta, 10000.0f);
  // Qwen2: q/k/v biases.
  nlohmann::json qwen = llama_json();
  qwen["model_type"] = "qwen2";
  EXPECT_TRUE(ModelConfig::from_json(qwen).attention_bias);
  // gpt.cpp's default width for SwiGLU: GPT-2's MLP cost, 8C/3 rounded up to 64.
  ModelConfig w;
  w.arch = Architecture::kLlama;
  w.n_embd = 768;
  EXPECT_EQ(w.mlp_hidden(), 2048);
}

TEST(Architecture, LlamaTensorTableIsHuggingFacesAndFusesQkvAndGateUp) {
  const ModelConfig c = ModelConfig::from_json(llama_json());
  GPT model(c);
  const ParameterLayout& L = model.layout();
  const TensorInfo* q = L.find("model.layers.1.self_attn.q_proj.weight");
  const TensorInfo* k = L.find("model.layers.1.self_attn.k_proj.weight");
  const TensorInfo* v = L.find("model.layers.1.self_attn.v_proj.weight");
  ASSERT_TRUE(q && k && v);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{64, 64}));  // (out, in)
  EXPECT_EQ(k->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(k->offset, q->offset + q->numel);  // one (C + 2KV, C) matrix
  EXPECT_EQ(v->offset, k->offset + k->numel);
  const TensorInfo* gate = L.find("model.layers.0.mlp.gate_proj.weight");
  const TensorInfo* up = L.find("model.layers.0.mlp.up_proj.weight");
  ASSERT_TRUE(gate && up);
  EXPECT_EQ(up->offset, gate->offset + gate->numel);
  EXPECT_EQ(L.find("model.layers.0.mlp.down_proj.weight")->in_features(), 176);
  ASSERT_NE(L.find("lm_head.weight"), nullptr);
  EXPECT_EQ(L.find("model.layers.0.self_attn.q_proj.bias"), nullptr);
  EXPECT_EQ(static_cast<int64_t>(L.tensors().size()), architecture_rules(c.arch).tensor_count(c));
  const ConstModelWeights& w = model.weights();
  EXPECT_EQ(w.layers[1].attn_c_attn_weight, model.params.data() + q->offset);
  EXPECT_EQ(w.wpe, nullptr);
  EXPECT_EQ(w.ln_f_bias, nullptr);
  // Initialisation: gains 1, matrices random, residual projections smaller.
  model.init_weights(7);
  EXPECT_EQ(w.layers[0].ln_1_weight[5], 1.0f);
  EXPECT_NE(w.layers[0].attn_c_attn_weight[3], 0.0f);
  for (const ArchitectureRules* r : all_architectures()) {
    ModelConfig g = r->arch == Architecture::kLlama ? c : ModelConfig{};
    EXPECT_EQ(static_cast<int64_t>(ParameterLayout(g).tensors().size()), r->tensor_count(g)) << r->name;
  }
}

// rope_scaling both ways, and a model run past its context (what --rope-factor
// and --rope-scaling do when a model loads).
TEST(Architecture, RopeScalingReadsWritesAndExtendsTheContext) {
  nlohmann::json j = llama_json();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 16}};
  const ModelConfig c = ModelConfig::from_json(j);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kYarn);
  EXPECT_EQ(c.rope_scaling.factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_context, 16);
  EXPECT_EQ(ModelConfig::from_json(c.to_json()).to_json(), c.to_json());
  // The older key "type"; without original_max_position_embeddings, Hugging
  // Face's yarn takes max_position_embeddings as the original context.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  EXPECT_EQ(ModelConfig::from_json(j).rope_scaling.original_context, 64);
  const ModelConfig plain = ModelConfig::from_json(llama_json());
  const ModelConfig longer = extended_context(plain, 4.0f, RopeScaling::Type::kYarn);
  EXPECT_EQ(longer.block_size, 256);
  EXPECT_EQ(longer.rope_scaling.original_context, 64);
  EXPECT_EQ(extended_context(plain, 2.0f, RopeScaling::Type::kNone).rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_THROW(extended_context(longer, 2.0f, RopeScaling::Type::kLinear), Error);  // scaled already
  EXPECT_THROW(extended_context(ModelConfig{}, 2.0f, RopeScaling::Type::kLinear), Error);  // learned positions
  // The same tensors under the longer config: a GPT carries over its parameters.
  GPT model(plain);
  model.init_weights(2);
  const GPT moved = with_config(model, longer);
  EXPECT_EQ(moved.params, model.params);
  EXPECT_EQ(moved.config().block_size, 256);
}

TEST(Architecture, ConfigsGptCppCannotRunGetOneLineErrors) {
  nlohmann::json j = llama_json();
  j["num_key_value_heads"] = 3;
  EXPECT_EQ(error_of(j), "n-kv-head (3) must divide n-head (4)");
  j = llama_json();
  j["num_attention_heads"] = 5;
  EXPECT_EQ(error_of(j), "n-head (5) must divide n-embd (64)");
  j = llama_json();
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(error_of(j), "config.json: rope scaling 'dynamic' is not supported (gpt.cpp runs none, linear or yarn)");
  j = llama_json();
  j["model_type"] = "mamba";
  EXPECT_EQ(error_of(j), "config.json: model_type 'mamba' is not supported (gpt.cpp runs gpt2, llama, qwen2, mistral)");
  j = llama_json();
  j["hidden_act"] = "gelu";
  EXPECT_EQ(error_of(j), "config.json: hidden_act must be silu (SwiGLU)");
  j = llama_json();
  j["model_type"] = "mistral";
  j["sliding_window"] = 32;
  EXPECT_EQ(error_of(j), "config.json: a sliding window shorter than the context is not supported");
  j = llama_json();
  j.erase("intermediate_size");
  EXPECT_EQ(error_of(j), "config.json is missing \"intermediate_size\"");
  j = llama_json();
  j["hidden_size"] = 60;  // head width 15: no rotary pairs
  j["num_key_value_heads"] = 4;
  EXPECT_EQ(error_of(j), "rotary positions need an even head width, got 15");
  ModelConfig g;
  g.n_kv_head = 2;
  g.n_head = 4;
  EXPECT_THROW(g.validate(), Error);
  EXPECT_THROW(parse_architecture("mamba"), Error);
}

// The plainest cache an architecture's inference pass can run with: every
// layer's keys and values by position, attention as softmax(q k^T / sqrt(hs)) v
// in double, a query head h reading key/value head h / (NH / NKV). It records
// the hooks in the order they come.
class PlainCache : public InferenceCache {
 public:
  explicit PlainCache(const ModelConfig& c)
      : c_(c),
        k_(static_cast<size_t>(c.n_layer * c.block_size * c.kv_dim())),
        v_(k_.size()) {}
  void attend(int64_t l, InferenceRows& r) override {
    const int64_t C = c_.n_embd, NH = c_.n_head, hs = c_.head_size(), KV = c_.kv_dim(), QKV = c_.qkv_dim(),
                  group = NH / c_.kv_heads();
    events.push_back("attend " + std::to_string(l));
    for (int64_t i = 0; i < r.n; ++i) {
      const float* row = r.qkv + i * QKV;
      const int64_t at = (l * c_.block_size + r.positions[i]) * KV;
      std::copy(row + C, row + C + KV, k_.begin() + at);
      std::copy(row + C + KV, row + C + 2 * KV, v_.begin() + at);
    }
    for (int64_t i = 0; i < r.n; ++i) {  // rows see every cached position up to their own
      const int64_t P = r.positions[i] + 1;
      for (int64_t h = 0; h < NH; ++h) {
        const float* q = r.qkv + i * QKV + h * hs;
        const int64_t kvh = h / group;
        std::vector<double> w(static_cast<size_t>(P));
        double max = -INFINITY, sum = 0;
        for (int64_t j = 0; j < P; ++j) {
          const float* k = k_.data() + (l * c_.block_size + j) * KV + kvh * hs;
          double dot = 0;
          for (int64_t d = 0; d < hs; ++d) dot += double(q[d]) * k[d];
          w[static_cast<size_t>(j)] = dot / std::sqrt(double(hs));
          max = std::max(max, w[static_cast<size_t>(j)]);
        }
        for (double& x : w) sum += x = std::exp(x - max);
        for (int64_t d = 0; d < hs; ++d) {
          double y = 0;
          for (int64_t j = 0; j < P; ++j)
            y += w[static_cast<size_t>(j)] * v_[static_cast<size_t>((l * c_.block_size + j) * KV + kvh * hs + d)];
          r.atty[i * C + h * hs + d] = static_cast<float>(y / sum);
        }
      }
    }
  }
  void attended(int64_t l, const InferenceRows&) override { events.push_back("attended " + std::to_string(l)); }
  void activated(int64_t l, const float*, int64_t width) override {
    events.push_back("activated " + std::to_string(l) + " width " + std::to_string(width));
  }
  void block_done(int64_t l, const InferenceRows&) override { events.push_back("done " + std::to_string(l)); }
  std::vector<std::string> events;

 private:
  ModelConfig c_;
  std::vector<float> k_, v_;
};

// Every architecture's inference pass, over rows at positions 0..4 then 5..8
// (one pass continuing another through the cache), gives the logits of its
// training pass over all nine tokens: one block, read two ways. The hooks come
// once per layer in order, with the MLP width the rules promise.
TEST(Architecture, InferencePassWithAnyCacheMatchesTheTrainingPass) {
  std::vector<ModelConfig> configs = {
      testing::model_config(37, 16, 2, 4, 32, PositionEncoding::kLearned),
      testing::model_config(37, 16, 2, 4, 32, PositionEncoding::kSinusoidal),
      testing::llama_config(37, 16, 2, 4, 2, 32),
  };
  ModelConfig qwen = testing::llama_config(37, 16, 2, 4, 1, 32);
  qwen.attention_bias = true;
  configs.push_back(qwen);
  for (const ModelConfig& c : configs) {
    SCOPED_TRACE(to_string(c.arch) + " " + std::to_string(static_cast<int>(c.position_encoding)) + " kv heads " +
                 std::to_string(c.kv_heads()));
    const ArchitectureRules& rules = architecture_rules(c.arch);
    GPT model(c);
    model.init_weights(5);
    Rng rng(6);
    for (auto& p : model.params) p += static_cast<float>(rng.normal()) * 0.05f;
    const std::vector<int32_t> tokens = {3, 17, 0, 36, 8, 8, 21, 2, 30};
    const int64_t T = static_cast<int64_t>(tokens.size()), C = c.n_embd, V = c.vocab_size;
    model.forward(tokens.data(), nullptr, 1, T);

    const InferenceWeights w = InferenceWeights::view(model);
    InferenceTables tables;
    rules.inference_tables(w, c.block_size, tables);
    PlainCache cache(c);
    QuantScratch scratch;
    std::vector<float> x(T * C), ln(T * C), stats(2 * T), qkv(T * c.qkv_dim()), atty(T * C),
        mlp(T * rules.mlp_width(c)), logits(V);
    std::vector<int32_t> positions(T);
    for (int64_t i = 0; i < T; ++i) positions[i] = static_cast<int32_t>(i);
    double worst = 0;
    for (const auto& [first, n] : {std::pair<int64_t, int64_t>{0, 5}, {5, 4}}) {
      InferenceRows rows{n, positions.data() + first, x.data(), ln.data(), stats.data(), qkv.data(), atty.data(),
                         mlp.data(), &tables, &scratch};
      rules.embed(w, tokens.data() + first, rows);
      rules.blocks(w, rows, cache);
      for (int64_t i = 0; i < n; ++i) {
        rules.norm(c, ln.data(), stats.data(), x.data() + i * C, w.ln_f_weight, w.ln_f_bias, 1);
        linear_apply(w.lm_head, logits.data(), ln.data(), 1, scratch);
        const float* ref = model.logits() + (first + i) * V;
        worst = std::max(worst, testing::relative_max_error(logits.data(), ref, static_cast<size_t>(V)));
      }
    }
    EXPECT_LT(worst, 2e-5);
    const int64_t width = c.llama() ? c.mlp_hidden() : 4 * C;
    ASSERT_EQ(cache.events.size(), static_cast<size_t>(2 * 4 * c.n_layer));
    for (int pass = 0; pass < 2; ++pass) {
      for (int l = 0; l < c.n_layer; ++l) {
        const size_t at = static_cast<size_t>(pass * 4 * c.n_layer + 4 * l);
        const std::string ls = std::to_string(l);
        EXPECT_EQ(cache.events[at], "attend " + ls);
        EXPECT_EQ(cache.events[at + 1], "attended " + ls);
        EXPECT_EQ(cache.events[at + 2], "activated " + ls + " width " + std::to_string(width));
        EXPECT_EQ(cache.events[at + 3], "done " + ls);
      }
    }
  }
}

}  // namespace
}  // namespace gpt
