// The Llama family (Hugging Face's LlamaForCausalLM; Qwen2's q/k/v biases as
// attention_bias): rotary positions (rotate-half), RMSNorm, SwiGLU MLP,
// grouped-query attention, no other biases. Weights are nn.Linear's (out, in),
// as Hugging Face stores them; q_proj, k_proj and v_proj lie one after another,
// so they are one fused (C + 2KV, C) product, and gate_proj, up_proj one (2F, C).
#include <nlohmann/json.hpp>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/embedding.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/rmsnorm.h"
#include "gpt/kernels/rope.h"
#include "gpt/kernels/swiglu.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

nlohmann::json llama_to_json(const ModelConfig& c) {
  nlohmann::json j = {
      {"model_type", c.attention_bias ? "qwen2" : "llama"},
      {"architectures", {c.attention_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.block_size},
      {"hidden_size", c.n_embd},
      {"intermediate_size", c.mlp_hidden()},
      {"num_hidden_layers", c.n_layer},
      {"num_attention_heads", c.n_head},
      {"num_key_value_heads", c.kv_heads()},
      {"head_dim", c.head_size()},
      {"hidden_act", "silu"},
      {"rms_norm_eps", c.layer_norm_epsilon},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", nullptr},
      {"attention_bias", c.attention_bias},
      {"mlp_bias", false},
      {"tie_word_embeddings", c.tie_word_embeddings},
  };
  if (c.rope_scaling.type != RopeScaling::Type::kNone) {
    j["rope_scaling"] = {{"rope_type", to_string(c.rope_scaling.type)},
                         {"factor", c.rope_scaling.factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_context}};
    if (c.rope_scaling.type == RopeScaling::Type::kYarn) {
      j["rope_scaling"]["beta_fast"] = c.rope_scaling.beta_fast;
      j["rope_scaling"]["beta_slow"] = c.rope_scaling.beta_slow;
      if (c.rope_scaling.attention_factor > 0) j["rope_scaling"]["attention_factor"] = c.rope_scaling.attention_factor;
    }
  }
  return j;
}

void llama_from_json(const nlohmann::json& j, ModelConfig& c) {
  c.arch = Architecture::kLlama;
  c.position_encoding = PositionEncoding::kRotary;
  const std::string type = j.value("model_type", std::string("llama"));
  c.vocab_size = config_int(j, "vocab_size", 0, true);
  c.block_size = config_int(j, "max_position_embeddings", 0, true);
  c.n_embd = config_int(j, "hidden_size", 0, true);
  c.ffn_hidden = config_int(j, "intermediate_size", 0, true);
  c.n_layer = config_int(j, "num_hidden_layers", 0, true);
  c.n_head = config_int(j, "num_attention_heads", 0, true);
  c.n_kv_head = config_int(j, "num_key_value_heads", c.n_head, false);
  // Hugging Face's defaults where a key is absent: rms_norm_eps 1e-6, untied head.
  c.layer_norm_epsilon = config_number(j, "rms_norm_eps", 1e-6f);
  c.rope_theta = config_number(j, "rope_theta", 10000.0f);
  c.tie_word_embeddings = config_bool(j, "tie_word_embeddings", false);
  c.attention_bias = config_bool(j, "attention_bias", type == "qwen2");
  GPT_CHECK(!config_bool(j, "mlp_bias", false), "config.json: mlp_bias is not supported");
  if (j.contains("hidden_act")) {
    GPT_CHECK(j["hidden_act"].is_string() && j["hidden_act"].get<std::string>() == "silu",
              "config.json: hidden_act must be silu (SwiGLU)");
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    GPT_CHECK(c.n_head > 0 && c.n_embd % c.n_head == 0 &&
                  config_int(j, "head_dim", 0, true) == c.n_embd / c.n_head,
              "config.json: head_dim other than hidden_size / num_attention_heads is not supported");
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const nlohmann::json& s = j["rope_scaling"];
    GPT_CHECK(s.is_object(), "config.json: rope_scaling must be an object");
    const std::string kind = s.contains("rope_type") ? s["rope_type"].get<std::string>() : s.value("type", std::string("?"));
    try {
      c.rope_scaling.type = parse_rope_scaling(kind);
    } catch (const Error& e) {
      throw Error(std::string("config.json: ") + e.what());
    }
    if (c.rope_scaling.type != RopeScaling::Type::kNone) {
      c.rope_scaling.factor = config_number(s, "factor", 0.0f);
      // Hugging Face's yarn reads the original context from here (or the top level).
      const int top = config_int(j, "original_max_position_embeddings", 0, false);
      // Absent, Hugging Face's yarn takes max_position_embeddings as the original context.
      c.rope_scaling.original_context =
          config_int(s, "original_max_position_embeddings", top > 0 ? top : c.block_size, false);
      c.rope_scaling.beta_fast = config_number(s, "beta_fast", 32.0f);
      c.rope_scaling.beta_slow = config_number(s, "beta_slow", 1.0f);
      c.rope_scaling.attention_factor = config_number(s, "attention_factor", 0.0f);
    }
  }
  // Mistral's and Qwen2's sliding windows: full attention is only the same model
  // while the window covers the whole context.
  for (const char* key : {"sliding_window"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (j.contains("use_sliding_window") && j["use_sliding_window"].is_boolean() && !j["use_sliding_window"].get<bool>())
      continue;
    GPT_CHECK(config_int(j, key, 0, true) >= c.block_size,
              "config.json: a sliding window shorter than the context is not supported");
  }
}

void llama_validate(const ModelConfig& c) {
  GPT_CHECK(c.position_encoding == PositionEncoding::kRotary, "llama has rotary positions");
  GPT_CHECK(c.n_kv_head >= 0, "n-kv-head must be positive");
  GPT_CHECK(c.n_head % c.kv_heads() == 0, "n-kv-head (" + std::to_string(c.kv_heads()) + ") must divide n-head (" +
                                              std::to_string(c.n_head) + ")");
  GPT_CHECK(c.head_size() % 2 == 0, "rotary positions need an even head width, got " + std::to_string(c.head_size()));
  GPT_CHECK(c.ffn_hidden >= 0, "ffn-hidden must be positive");
  GPT_CHECK(c.rope_theta > 1.0f, "rope_theta must be greater than 1");
  if (c.rope_scaling.type != RopeScaling::Type::kNone) {
    GPT_CHECK(c.rope_scaling.factor >= 1.0f, "rope scaling factor must be at least 1");
    GPT_CHECK(c.rope_scaling.original_context > 0, "rope scaling needs the original context");
    GPT_CHECK(c.rope_scaling.beta_fast > c.rope_scaling.beta_slow && c.rope_scaling.beta_slow > 0,
              "yarn needs beta_fast > beta_slow > 0");
  }
}

std::vector<TensorSpec> llama_tensors(const ModelConfig& c) {
  const int64_t V = c.vocab_size, C = c.n_embd, KV = c.kv_dim(), F = c.mlp_hidden();
  std::vector<TensorSpec> t;
  t.push_back({"model.embed_tokens.weight", {V, C}, WeightRole::kTokenEmbedding});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {C}, WeightRole::kNorm1Weight, l});
    t.push_back({p + "self_attn.q_proj.weight", {C, C}, WeightRole::kQkvWeight, l, true});
    t.push_back({p + "self_attn.k_proj.weight", {KV, C}, WeightRole::kPart, l, true});
    t.push_back({p + "self_attn.v_proj.weight", {KV, C}, WeightRole::kPart, l, true});
    if (c.attention_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {C}, WeightRole::kQkvBias, l});
      t.push_back({p + "self_attn.k_proj.bias", {KV}, WeightRole::kPart, l});
      t.push_back({p + "self_attn.v_proj.bias", {KV}, WeightRole::kPart, l});
    }
    t.push_back({p + "self_attn.o_proj.weight", {C, C}, WeightRole::kAttnProjWeight, l, true});
    t.push_back({p + "post_attention_layernorm.weight", {C}, WeightRole::kNorm2Weight, l});
    t.push_back({p + "mlp.gate_proj.weight", {F, C}, WeightRole::kMlpInWeight, l, true});
    t.push_back({p + "mlp.up_proj.weight", {F, C}, WeightRole::kPart, l, true});
    t.push_back({p + "mlp.down_proj.weight", {C, F}, WeightRole::kMlpOutWeight, l, true});
  }
  t.push_back({"model.norm.weight", {C}, WeightRole::kFinalNormWeight});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {V, C}, WeightRole::kLmHead, -1, true});
  return t;
}

int64_t llama_tensor_count(const ModelConfig& c) {
  return (c.attention_bias ? 12LL : 9LL) * c.n_layer + 2 + (c.tie_word_embeddings ? 0 : 1);
}

double llama_parameter_estimate(const ModelConfig& c) {
  const double C = c.n_embd, KV = c.kv_dim(), F = c.mlp_hidden();
  return c.n_layer * (C * (C + 2 * KV) + C * C + 3 * C * F) + double(c.vocab_size) * C * (c.tie_word_embeddings ? 1 : 2);
}

std::string llama_first_tensor(int l) { return "model.layers." + std::to_string(l) + ".input_layernorm.weight"; }

// Inference: q and k rotated before the cache takes the keys (a cached key is
// never rotated again, but for a shift), grouped-query attention over the
// cache's NKV heads, RMSNorm, SwiGLU of gate|up into the rows after them.
void llama_inference_tables(const InferenceWeights& w, int64_t positions, InferenceTables& out) {
  const ModelConfig& c = w.config;
  out.rope = RopeTable(positions, c.head_size(), c.rope_theta, c.rope_scaling);
}

int64_t llama_mlp_width(const ModelConfig& c) { return 3 * c.mlp_hidden(); }

void llama_embed(const InferenceWeights& w, const int32_t* tokens, InferenceRows& r) {
  for (int64_t i = 0; i < r.n; ++i) w.embed(tokens[i], r.x + i * w.config.n_embd);
}

void llama_norm(const ModelConfig& c, float* out, float* stats, const float* x, const float* weight,
                const float* /*bias*/, int64_t rows) {
  rmsnorm_forward(out, stats, x, weight, rows, c.n_embd, c.layer_norm_epsilon);
}

void llama_blocks(const InferenceWeights& w, InferenceRows& r, InferenceCache& cache) {
  const ModelConfig& c = w.config;
  const int64_t n = r.n, NH = c.n_head, NKV = c.kv_heads(), hs = c.head_size(), QKV = c.qkv_dim(),
                F = c.mlp_hidden();
  QuantScratch& scratch = *r.scratch;
  float* gate_up = r.mlp;
  float* hidden = r.mlp + n * 2 * F;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const InferenceLayer& L = w.layers[static_cast<size_t>(l)];
    // x = x + o_proj(attention(rope(q), rope(k), v)), q|k|v = qkv_proj(rmsnorm_1(x)).
    llama_norm(c, r.ln, r.stats, r.x, L.ln_1_weight, nullptr, n);
    linear_apply(L.c_attn, r.qkv, r.ln, n, scratch);
    rope_forward(r.qkv, n, QKV, NH + NKV, hs, r.tables->rope, r.positions, n);
    cache.attend(l, r);
    cache.attended(l, r);
    linear_apply(L.attn_proj, r.x, r.atty, n, scratch, r.x);
    // x = x + down(silu(gate) * up), gate|up = one product of rmsnorm_2(x).
    llama_norm(c, r.ln, r.stats, r.x, L.ln_2_weight, nullptr, n);
    linear_apply(L.c_fc, gate_up, r.ln, n, scratch);
    swiglu_forward(hidden, gate_up, n, F);
    cache.activated(l, hidden, F);
    linear_apply(L.mlp_proj, r.x, hidden, n, scratch, r.x);
    cache.block_done(l, r);
  }
}

}  // namespace


// The training pass: embedding, blocks and final RMSNorm (into acts_.lnf) for
// tokens (B_, T_). Each residual add is fused with the RMSNorm that reads it.
// RoPE rotates q and k in place after the q|k|v product; the attention kernel
// stores nothing T x T. Dropout at nanoGPT's sites, as gpt2's.
template <>
void GPT::forward_blocks<Architecture::kLlama>(const int32_t* tokens) {
  const int64_t B = B_, T = T_, BT = B * T, C = config_.n_embd, NH = config_.n_head, NKV = config_.kv_heads(),
                hs = config_.head_size(), QKV = config_.qkv_dim(), F = config_.mlp_hidden();
  const float eps = config_.layer_norm_epsilon;
  Activations& a = acts_;
  const ConstModelWeights& w = weights();
  const int32_t* positions = packing_positions();

  embedding_forward(a.encoded.data(), tokens, w.wte, nullptr, B, T, C);
  const DropoutKey key = dropout_key();
  if (dropped_out_) dropout_forward(a.encoded.data(), nullptr, BT, C, dropout_, dropout_site(0), key);

  float* ln = a.ln.data();
  float* proj = a.proj.data();
  rmsnorm_forward(ln, a.ln1_rstd.data(), a.encoded.data(), w.layers[0].ln_1_weight, BT, C, eps);
  const float* residual = a.encoded.data();
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const ConstLayerWeights& L = w.layers[static_cast<size_t>(l)];
    float* qkv = a.qkv.data() + l * BT * QKV;
    float* atty = a.atty.data() + l * BT * C;
    float* att_lse = a.att_lse.data() + l * B * NH * T;
    float* residual2 = a.residual2.data() + l * BT * C;
    float* gate_up = a.gelu_derivative.data() + l * BT * 2 * F;
    float* hidden = a.fch_gelu.data() + l * BT * F;
    float* residual3 = a.residual3.data() + l * BT * C;

    // x = x + o_proj(attn(rope(q), rope(k), v)), q|k|v = qkv_proj(rmsnorm_1(x)) in ln.
    linear_forward_out_in(qkv, ln, L.attn_c_attn_weight, L.attn_c_attn_bias, BT, C, QKV);
    rope_forward(qkv, BT, QKV, NH + NKV, hs, rope_, positions, T);
    const AttentionDropout att_drop = attention_dropout(static_cast<int>(l));
    attention_forward(atty, att_lse, qkv, B, T, C, NH, positions, dropped_out_ ? &att_drop : nullptr, NKV);
    linear_forward_out_in(proj, atty, L.attn_c_proj_weight, nullptr, BT, C, C);
    if (dropped_out_) dropout_forward(proj, nullptr, BT, C, dropout_, dropout_site(2 + 3 * l), key);
    residual_rmsnorm_forward(residual2, ln, a.ln2_rstd.data() + l * BT, residual, proj, L.ln_2_weight, BT, C, eps);
    // x = x + down(silu(gate) * up), gate|up = one product of rmsnorm_2(x).
    linear_forward_out_in(gate_up, ln, L.mlp_c_fc_weight, nullptr, BT, C, 2 * F);
    swiglu_forward(hidden, gate_up, BT, F);
    linear_forward_out_in(proj, hidden, L.mlp_c_proj_weight, nullptr, BT, F, C);
    if (dropped_out_) dropout_forward(proj, nullptr, BT, C, dropout_, dropout_site(3 + 3 * l), key);
    const bool last = l + 1 == config_.n_layer;
    residual_rmsnorm_forward(residual3, last ? a.lnf.data() : ln,
                             last ? a.lnf_rstd.data() : a.ln1_rstd.data() + (l + 1) * BT, residual2, proj,
                             last ? w.ln_f_weight : w.layers[static_cast<size_t>(l + 1)].ln_1_weight, BT, C, eps);
    residual = residual3;
  }
}

template <>
void GPT::backward_blocks<Architecture::kLlama>(const GradientsReady& ready) {
  const int64_t B = B_, T = T_, BT = B * T, C = config_.n_embd, NH = config_.n_head, NKV = config_.kv_heads(),
                hs = config_.head_size(), QKV = config_.qkv_dim(), F = config_.mlp_hidden();
  Activations& a = acts_;
  const ConstModelWeights& w = weights();
  const ModelWeights& g = gradients();  // LoRA is refused for llama: the base always learns
  const DropoutKey seed = dropout_key();
  const int32_t* positions = packing_positions();

  float* dres = a.d_residual.data();
  std::fill(a.d_residual.begin(), a.d_residual.begin() + BT * C, 0.0f);
  const float* last_residual = a.residual3.data() + (config_.n_layer - 1) * BT * C;
  rmsnorm_backward(dres, g.ln_f_weight, a.d_ln.data(), last_residual, w.ln_f_weight, a.lnf_rstd.data(), BT, C);
  auto offset_of = [&](const float* p) { return static_cast<size_t>(p - grads.data()); };
  if (ready) ready(offset_of(g.ln_f_weight), grads.size());

  float* ln = a.ln.data();
  for (int64_t l = config_.n_layer - 1; l >= 0; --l) {
    const ConstLayerWeights& L = w.layers[static_cast<size_t>(l)];
    const LayerWeights& dL = g.layers[static_cast<size_t>(l)];
    const float* residual = l == 0 ? a.encoded.data() : a.residual3.data() + (l - 1) * BT * C;
    const float* qkv = a.qkv.data() + l * BT * QKV;
    const float* atty = a.atty.data() + l * BT * C;
    const float* att_lse = a.att_lse.data() + l * B * NH * T;
    const float* residual2 = a.residual2.data() + l * BT * C;
    const float* gate_up = a.gelu_derivative.data() + l * BT * 2 * F;
    const float* hidden = a.fch_gelu.data() + l * BT * F;
    const float* ln2_rstd = a.ln2_rstd.data() + l * BT;
    const float* ln1_rstd = a.ln1_rstd.data() + l * BT;

    // MLP: dres is d(residual3) = d(MLP output); the residual passes it on to residual2.
    const float* dmlp = dres;
    if (dropped_out_) {
      dropout_backward(a.proj.data(), dres, BT, C, dropout_, dropout_site(3 + 3 * l), seed);
      dmlp = a.proj.data();
    }
    float* dhidden = a.d_hidden.data();
    float* dgate_up = a.d_fch.data();
    linear_backward_out_in(dhidden, dL.mlp_c_proj_weight, nullptr, dmlp, hidden, L.mlp_c_proj_weight, BT, F, C);
    swiglu_backward(dgate_up, dhidden, gate_up, BT, F);
    rmsnorm_apply(ln, residual2, ln2_rstd, L.ln_2_weight, BT, C);
    float* dln = a.d_ln.data();
    linear_backward_out_in(dln, dL.mlp_c_fc_weight, nullptr, dgate_up, ln, L.mlp_c_fc_weight, BT, C, 2 * F);
    rmsnorm_backward(dres, dL.ln_2_weight, dln, residual2, L.ln_2_weight, ln2_rstd, BT, C);
    // Attention: residual2 = residual + o_proj(attn(...)).
    const float* dattn = dres;
    if (dropped_out_) {
      dropout_backward(a.proj.data(), dres, BT, C, dropout_, dropout_site(2 + 3 * l), seed);
      dattn = a.proj.data();
    }
    float* datty = a.d_atty.data();
    linear_backward_out_in(datty, dL.attn_c_proj_weight, nullptr, dattn, atty, L.attn_c_proj_weight, BT, C, C);
    float* dqkv = a.d_qkv.data();
    const AttentionDropout att_drop = attention_dropout(static_cast<int>(l));
    attention_backward(dqkv, datty, qkv, atty, att_lse, B, T, C, NH, positions, dropped_out_ ? &att_drop : nullptr,
                       NKV);
    rope_backward(dqkv, BT, QKV, NH + NKV, hs, rope_, positions, T);
    rmsnorm_apply(ln, residual, ln1_rstd, L.ln_1_weight, BT, C);
    linear_backward_out_in(dln, dL.attn_c_attn_weight, dL.attn_c_attn_bias, dqkv, ln, L.attn_c_attn_weight, BT, C,
                           QKV);
    rmsnorm_backward(dres, dL.ln_1_weight, dln, residual, L.ln_1_weight, ln1_rstd, BT, C);
    if (ready) {
      const size_t end = l + 1 < config_.n_layer ? offset_of(g.layers[static_cast<size_t>(l + 1)].ln_1_weight)
                                                 : offset_of(g.ln_f_weight);
      ready(offset_of(dL.ln_1_weight), end);
    }
  }
  if (dropped_out_) dropout_backward(dres, dres, BT, C, dropout_, dropout_site(0), seed);
  embedding_backward(g.wte, nullptr, dres, tokens_.data(), B, T, C, positions);
  if (ready) ready(0, offset_of(g.layers[0].ln_1_weight));
}

template <>
const ArchitectureRules& rules_of<Architecture::kLlama>() {
  static const ArchitectureRules rules{
      Architecture::kLlama, "llama", {"llama", "qwen2", "mistral"},
      llama_to_json, llama_from_json, llama_validate, llama_tensors,
      llama_tensor_count, llama_parameter_estimate, llama_first_tensor,
      &GPT::forward_blocks<Architecture::kLlama>, &GPT::backward_blocks<Architecture::kLlama>,
      llama_inference_tables, llama_mlp_width, llama_embed, llama_blocks, llama_norm};
  return rules;
}

}  // namespace gpt
