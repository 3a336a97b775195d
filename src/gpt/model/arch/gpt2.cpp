// GPT-2 (Hugging Face's GPT2LMHeadModel): learned (or sinusoidal) positions,
// pre-LayerNorm blocks, GELU MLP of width 4C, biases everywhere, tied head.
// Its config keys, tensor table, training pass (GPT's forward and backward
// through the blocks) and inference pass (one sequence's or many's).
#include <nlohmann/json.hpp>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/embedding.h"
#include "gpt/kernels/gelu.h"
#include "gpt/kernels/layernorm.h"
#include "gpt/kernels/matmul.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

nlohmann::json gpt2_to_json(const ModelConfig& c) {
  return {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"vocab_size", c.vocab_size},
      {"n_positions", c.block_size},
      {"n_ctx", c.block_size},
      {"n_embd", c.n_embd},
      {"n_layer", c.n_layer},
      {"n_head", c.n_head},
      {"n_inner", nullptr},
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", c.layer_norm_epsilon},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"position_encoding", to_string(c.position_encoding)},
  };
}

void gpt2_from_json(const nlohmann::json& j, ModelConfig& c) {
  c.arch = Architecture::kGpt2;
  c.vocab_size = config_int(j, "vocab_size", 0, true);
  c.block_size = config_int(j, "n_positions", 0, true);
  c.n_embd = config_int(j, "n_embd", 0, true);
  c.n_layer = config_int(j, "n_layer", 0, true);
  c.n_head = config_int(j, "n_head", 0, true);
  if (j.contains("n_inner") && !j["n_inner"].is_null()) {
    GPT_CHECK(j["n_inner"].is_number_integer() && j["n_inner"].get<int64_t>() == 4LL * c.n_embd,
              "config.json: only n_inner = 4 * n_embd is supported");
  }
  if (j.contains("activation_function")) {
    GPT_CHECK(j["activation_function"].is_string(), "config.json: activation_function must be a string");
    const auto act = j["activation_function"].get<std::string>();
    GPT_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh",
              "config.json: unsupported activation_function '" + act + "' (gpt.cpp uses tanh GELU)");
  }
  c.layer_norm_epsilon = config_number(j, "layer_norm_epsilon", c.layer_norm_epsilon);
  c.tie_word_embeddings = config_bool(j, "tie_word_embeddings", c.tie_word_embeddings);
  if (j.contains("position_encoding")) {
    GPT_CHECK(j["position_encoding"].is_string(), "config.json: position_encoding must be a string");
    c.position_encoding = parse_position_encoding(j["position_encoding"].get<std::string>());
  }
}

void gpt2_validate(const ModelConfig& c) {
  GPT_CHECK(c.position_encoding != PositionEncoding::kRotary, "gpt2 has learned or sinusoidal positions, not rotary");
  GPT_CHECK(c.n_kv_head == 0 || c.n_kv_head == c.n_head, "grouped-query attention (n-kv-head) needs --arch llama");
  GPT_CHECK(c.ffn_hidden == 0 || c.ffn_hidden == 4 * c.n_embd, "gpt2's MLP is 4 * n-embd wide (--ffn-hidden is llama's)");
  GPT_CHECK(!c.attention_bias, "attention_bias is a llama-family option (gpt2 always has biases)");
}

std::vector<TensorSpec> gpt2_tensors(const ModelConfig& c) {
  const int64_t V = c.vocab_size, T = c.block_size, C = c.n_embd;
  std::vector<TensorSpec> t;
  t.push_back({"wte.weight", {V, C}, WeightRole::kTokenEmbedding});
  if (c.position_encoding == PositionEncoding::kLearned) t.push_back({"wpe.weight", {T, C}, WeightRole::kPositionEmbedding});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    t.push_back({p + "ln_1.weight", {C}, WeightRole::kNorm1Weight, l});
    t.push_back({p + "ln_1.bias", {C}, WeightRole::kNorm1Bias, l});
    t.push_back({p + "attn.c_attn.weight", {C, 3 * C}, WeightRole::kQkvWeight, l});
    t.push_back({p + "attn.c_attn.bias", {3 * C}, WeightRole::kQkvBias, l});
    t.push_back({p + "attn.c_proj.weight", {C, C}, WeightRole::kAttnProjWeight, l});
    t.push_back({p + "attn.c_proj.bias", {C}, WeightRole::kAttnProjBias, l});
    t.push_back({p + "ln_2.weight", {C}, WeightRole::kNorm2Weight, l});
    t.push_back({p + "ln_2.bias", {C}, WeightRole::kNorm2Bias, l});
    t.push_back({p + "mlp.c_fc.weight", {C, 4 * C}, WeightRole::kMlpInWeight, l});
    t.push_back({p + "mlp.c_fc.bias", {4 * C}, WeightRole::kMlpInBias, l});
    t.push_back({p + "mlp.c_proj.weight", {4 * C, C}, WeightRole::kMlpOutWeight, l});
    t.push_back({p + "mlp.c_proj.bias", {C}, WeightRole::kMlpOutBias, l});
  }
  t.push_back({"ln_f.weight", {C}, WeightRole::kFinalNormWeight});
  t.push_back({"ln_f.bias", {C}, WeightRole::kFinalNormBias});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {V, C}, WeightRole::kLmHead});
  return t;
}

int64_t gpt2_tensor_count(const ModelConfig& c) {
  return 12LL * c.n_layer + 3 + (c.position_encoding == PositionEncoding::kLearned) + (c.tie_word_embeddings ? 0 : 1);
}

double gpt2_parameter_estimate(const ModelConfig& c) {
  return 12.0 * c.n_layer * c.n_embd * double(c.n_embd) + double(c.vocab_size + c.block_size) * c.n_embd;
}

std::string gpt2_first_tensor(int l) { return "h." + std::to_string(l) + ".ln_1.weight"; }

// Inference: positions are added to the embeddings (the learned table, else
// the sinusoid computed once); LayerNorm; the MLP's product, then GELU in place.
void gpt2_inference_tables(const InferenceWeights& w, int64_t positions, InferenceTables& out) {
  if (w.wpe != nullptr) return;
  out.sinusoid.resize(static_cast<size_t>(positions * w.config.n_embd));
  sinusoidal_positions(out.sinusoid.data(), positions, w.config.n_embd);
}

int64_t gpt2_mlp_width(const ModelConfig& c) { return c.mlp_in_dim(); }

void gpt2_embed(const InferenceWeights& w, const int32_t* tokens, InferenceRows& r) {
  const int64_t C = w.config.n_embd;
  const float* table = w.wpe != nullptr ? w.wpe : r.tables->sinusoid.data();
  for (int64_t i = 0; i < r.n; ++i) {
    float* row = r.x + i * C;
    w.embed(tokens[i], row);
    const float* p = table + static_cast<int64_t>(r.positions[i]) * C;
    for (int64_t j = 0; j < C; ++j) row[j] += p[j];
  }
}

void gpt2_norm(const ModelConfig& c, float* out, float* stats, const float* x, const float* weight,
               const float* bias, int64_t rows) {
  layernorm_forward(out, stats, stats + rows, x, weight, bias, rows, c.n_embd, c.layer_norm_epsilon);
}

void gpt2_blocks(const InferenceWeights& w, InferenceRows& r, InferenceCache& cache) {
  const ModelConfig& c = w.config;
  const int64_t n = r.n, H = c.mlp_in_dim();
  QuantScratch& scratch = *r.scratch;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const InferenceLayer& L = w.layers[static_cast<size_t>(l)];
    // x = x + attn_proj(attention(qkv(ln_1(x)))), the residual added by the product.
    gpt2_norm(c, r.ln, r.stats, r.x, L.ln_1_weight, L.ln_1_bias, n);
    linear_apply(L.c_attn, r.qkv, r.ln, n, scratch);
    cache.attend(l, r);
    cache.attended(l, r);
    linear_apply(L.attn_proj, r.x, r.atty, n, scratch, r.x);
    // x = x + mlp_proj(gelu(fc(ln_2(x)))).
    gpt2_norm(c, r.ln, r.stats, r.x, L.ln_2_weight, L.ln_2_bias, n);
    linear_apply(L.c_fc, r.mlp, r.ln, n, scratch);
    gelu_forward(r.mlp, r.mlp, n * H);
    cache.activated(l, r.mlp, H);
    linear_apply(L.mlp_proj, r.x, r.mlp, n, scratch, r.x);
    cache.block_done(l, r);
  }
}

}  // namespace


// Embedding, blocks and final LayerNorm (into acts_.lnf) for tokens (B_, T_).
template <>
void GPT::forward_blocks<Architecture::kGpt2>(const int32_t* tokens) {
  const int64_t B = B_, T = T_, BT = B * T, C = config_.n_embd, NH = config_.n_head;
  Activations& a = acts_;
  const ConstModelWeights& w = weights();

  // Token + position embedding.
  const float* pos = w.wpe != nullptr ? w.wpe : sinusoid_table_.data();
  embedding_forward(a.encoded.data(), tokens, w.wte, pos, B, T, C, packing_positions());
  const DropoutKey key = dropout_key();
  if (dropped_out_) dropout_forward(a.encoded.data(), nullptr, BT, C, dropout_, dropout_site(0), key);

  // Every residual add is fused with the LayerNorm that reads its result: the
  // blocks' second LayerNorm, the next block's first one, or the final one.
  float* ln = a.ln.data();      // one LayerNorm output at a time
  float* proj = a.proj.data();  // a sublayer's product before the residual add
  layernorm_forward(ln, a.ln1_mean.data(), a.ln1_rstd.data(), a.encoded.data(), w.layers[0].ln_1_weight,
                    w.layers[0].ln_1_bias, BT, C, config_.layer_norm_epsilon);
  const float* residual = a.encoded.data();
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const ConstLayerWeights& L = w.layers[static_cast<size_t>(l)];
    float* qkv = a.qkv.data() + l * BT * 3 * C;
    float* atty = a.atty.data() + l * BT * C;
    float* att_lse = a.att_lse.data() + l * B * NH * T;
    float* residual2 = a.residual2.data() + l * BT * C;
    float* fch_gelu = a.fch_gelu.data() + l * BT * 4 * C;
    float* gelu_derivative = a.gelu_derivative.data() + l * BT * 4 * C;
    float* residual3 = a.residual3.data() + l * BT * C;

    // x = x + attn(ln_1(x)); ln holds ln_1(x).
    const int li = static_cast<int>(l);
    linear_forward(qkv, ln, L.attn_c_attn_weight, L.attn_c_attn_bias, BT, C, 3 * C);
    lora_forward(li, LoraTarget::kAttnQkv, ln, BT, qkv);
    const AttentionDropout att_drop = attention_dropout(li);
    attention_forward(atty, att_lse, qkv, B, T, C, NH, packing_positions(), dropped_out_ ? &att_drop : nullptr);
    linear_forward(proj, atty, L.attn_c_proj_weight, nullptr, BT, C, C);
    lora_forward(li, LoraTarget::kAttnProj, atty, BT, proj);
    if (dropped_out_) dropout_forward(proj, L.attn_c_proj_bias, BT, C, dropout_, dropout_site(2 + 3 * l), key);
    residual_layernorm_forward(residual2, ln, a.ln2_mean.data() + l * BT, a.ln2_rstd.data() + l * BT, residual,
                               proj, dropped_out_ ? nullptr : L.attn_c_proj_bias, L.ln_2_weight, L.ln_2_bias, BT, C,
                               config_.layer_norm_epsilon);
    // x = x + mlp(ln_2(x)); the MLP's bias and GELU are one pass after its product.
    // The product lands in gelu_derivative, which the GELU pass overwrites.
    linear_forward(gelu_derivative, ln, L.mlp_c_fc_weight, nullptr, BT, C, 4 * C);
    lora_forward(li, LoraTarget::kMlpFc, ln, BT, gelu_derivative);
    bias_gelu_forward(gelu_derivative, fch_gelu, gelu_derivative, L.mlp_c_fc_bias, BT, 4 * C);
    linear_forward(proj, fch_gelu, L.mlp_c_proj_weight, nullptr, BT, 4 * C, C);
    lora_forward(li, LoraTarget::kMlpProj, fch_gelu, BT, proj);
    if (dropped_out_) dropout_forward(proj, L.mlp_c_proj_bias, BT, C, dropout_, dropout_site(3 + 3 * l), key);
    const bool last = l + 1 == config_.n_layer;
    const ConstLayerWeights* next = last ? nullptr : &w.layers[static_cast<size_t>(l + 1)];
    residual_layernorm_forward(residual3, last ? a.lnf.data() : ln,
                               last ? a.lnf_mean.data() : a.ln1_mean.data() + (l + 1) * BT,
                               last ? a.lnf_rstd.data() : a.ln1_rstd.data() + (l + 1) * BT, residual2, proj,
                               dropped_out_ ? nullptr : L.mlp_c_proj_bias, last ? w.ln_f_weight : next->ln_1_weight,
                               last ? w.ln_f_bias : next->ln_1_bias, BT, C, config_.layer_norm_epsilon);
    residual = residual3;
  }
}

template <>
void GPT::backward_blocks<Architecture::kGpt2>(const GradientsReady& ready) {
  const int64_t B = B_, T = T_, BT = B * T;
  const int64_t C = config_.n_embd, NH = config_.n_head;
  Activations& a = acts_;
  const ConstModelWeights& w = weights();
  // Under LoRA the base is frozen: every base gradient pointer is null, and the
  // kernels skip those products.
  const bool frozen = lora_ != nullptr;
  const ModelWeights& g = frozen ? frozen_views_ : gradients();
  LoraAdapters* lora = lora_.get();
  const DropoutKey seed = dropout_key();

  const float* dlnf = a.d_ln.data();
  float* dres = a.d_residual.data();
  std::fill(a.d_residual.begin(), a.d_residual.begin() + BT * C, 0.0f);
  const float* last_residual = a.residual3.data() + (config_.n_layer - 1) * BT * C;
  layernorm_backward(dres, g.ln_f_weight, g.ln_f_bias, dlnf, last_residual, w.ln_f_weight,
                     a.lnf_mean.data(), a.lnf_rstd.data(), BT, C);
  // Buffer order: wte, wpe, h.0 ... h.{L-1}, ln_f, [lm_head]. A tied head's gradient
  // lives in wte, which the embedding backward finishes last.
  auto offset_of = [&](const float* p) { return static_cast<size_t>(p - grads.data()); };
  if (ready && !frozen) ready(offset_of(g.ln_f_weight), grads.size());

  float* ln = a.ln.data();  // free in the backward pass: remade LayerNorm outputs
  for (int64_t l = config_.n_layer - 1; l >= 0; --l) {
    const ConstLayerWeights& L = w.layers[static_cast<size_t>(l)];
    const LayerWeights& dL = g.layers[static_cast<size_t>(l)];
    const float* residual = l == 0 ? a.encoded.data() : a.residual3.data() + (l - 1) * BT * C;
    const float* qkv = a.qkv.data() + l * BT * 3 * C;
    const float* atty = a.atty.data() + l * BT * C;
    const float* att_lse = a.att_lse.data() + l * B * NH * T;
    const float* residual2 = a.residual2.data() + l * BT * C;

    // MLP: residual3 = residual2 + c_proj(gelu(c_fc(ln_2(residual2)))). dres is d residual3,
    // which is also d(MLP output); the residual passes it on unchanged to residual2.
    const float* fch_gelu = a.fch_gelu.data() + l * BT * 4 * C;
    const float* gelu_derivative = a.gelu_derivative.data() + l * BT * 4 * C;
    float* dfch = a.d_fch.data();
    const int li = static_cast<int>(l);
    // With dropout the branch's gradient is the residual's through the mask (into proj, free here).
    const float* dmlp = dres;
    if (dropped_out_) {
      dropout_backward(a.proj.data(), dres, BT, C, dropout_, dropout_site(3 + 3 * l), seed);
      dmlp = a.proj.data();
    }
    linear_backward(dfch, dL.mlp_c_proj_weight, dL.mlp_c_proj_bias, dmlp, fch_gelu,
                    L.mlp_c_proj_weight, BT, 4 * C, C);
    if (lora) lora->backward(li, LoraTarget::kMlpProj, fch_gelu, dmlp, BT, dfch, seed);
    bias_gelu_backward(dfch, dL.mlp_c_fc_bias, gelu_derivative, dfch, BT, 4 * C);
    const float* ln2_mean = a.ln2_mean.data() + l * BT;
    const float* ln2_rstd = a.ln2_rstd.data() + l * BT;
    layernorm_apply(ln, residual2, ln2_mean, ln2_rstd, L.ln_2_weight, L.ln_2_bias, BT, C);
    float* dln2 = a.d_ln.data();
    linear_backward(dln2, dL.mlp_c_fc_weight, nullptr, dfch, ln, L.mlp_c_fc_weight, BT, C, 4 * C);
    if (lora) lora->backward(li, LoraTarget::kMlpFc, ln, dfch, BT, dln2, seed);
    layernorm_backward(dres, dL.ln_2_weight, dL.ln_2_bias, dln2, residual2, L.ln_2_weight,
                       ln2_mean, ln2_rstd, BT, C);
    // Attention: residual2 = residual + c_proj(attn(c_attn(ln_1(residual)))).
    float* datty = a.d_atty.data();
    const float* dattn = dres;
    if (dropped_out_) {
      dropout_backward(a.proj.data(), dres, BT, C, dropout_, dropout_site(2 + 3 * l), seed);
      dattn = a.proj.data();
    }
    linear_backward(datty, dL.attn_c_proj_weight, dL.attn_c_proj_bias, dattn, atty,
                    L.attn_c_proj_weight, BT, C, C);
    if (lora) lora->backward(li, LoraTarget::kAttnProj, atty, dattn, BT, datty, seed);
    float* dqkv = a.d_qkv.data();
    const AttentionDropout att_drop = attention_dropout(li);
    attention_backward(dqkv, datty, qkv, atty, att_lse, B, T, C, NH, packing_positions(),
                       dropped_out_ ? &att_drop : nullptr);
    const float* ln1_mean = a.ln1_mean.data() + l * BT;
    const float* ln1_rstd = a.ln1_rstd.data() + l * BT;
    layernorm_apply(ln, residual, ln1_mean, ln1_rstd, L.ln_1_weight, L.ln_1_bias, BT, C);
    float* dln1 = a.d_ln.data();
    linear_backward(dln1, dL.attn_c_attn_weight, dL.attn_c_attn_bias, dqkv, ln, L.attn_c_attn_weight, BT, C,
                    3 * C);
    if (lora) lora->backward(li, LoraTarget::kAttnQkv, ln, dqkv, BT, dln1, seed);
    layernorm_backward(dres, dL.ln_1_weight, dL.ln_1_bias, dln1, residual, L.ln_1_weight, ln1_mean, ln1_rstd, BT,
                       C);
    if (ready && !frozen) {
      const size_t end = l + 1 < config_.n_layer ? offset_of(g.layers[static_cast<size_t>(l + 1)].ln_1_weight)
                                                 : offset_of(g.ln_f_weight);
      ready(offset_of(dL.ln_1_weight), end);
    }
  }
  if (dropped_out_) dropout_backward(dres, dres, BT, C, dropout_, dropout_site(0), seed);
  if (!frozen) {
    embedding_backward(g.wte, g.wpe, dres, tokens_.data(), B, T, C, packing_positions());
    if (ready) ready(0, offset_of(g.layers[0].ln_1_weight));
  } else if (lora->config().trainable_tokens_begin >= 0) {
    // Only the rows of the adapter's trainable tokens learn.
    const int32_t first = lora->config().trainable_tokens_begin;
    float* dtok = lora_token_grads();
    for (int64_t i = 0; i < BT; ++i) {
      if (tokens_[static_cast<size_t>(i)] < first) continue;
      float* row = dtok + (tokens_[static_cast<size_t>(i)] - first) * C;
      const float* d = dres + i * C;
      for (int64_t k = 0; k < C; ++k) row[k] += d[k];
    }
  }
}

template <>
const ArchitectureRules& rules_of<Architecture::kGpt2>() {
  static const ArchitectureRules rules{
      Architecture::kGpt2, "gpt2", {"gpt2"},
      gpt2_to_json, gpt2_from_json, gpt2_validate, gpt2_tensors,
      gpt2_tensor_count, gpt2_parameter_estimate, gpt2_first_tensor,
      &GPT::forward_blocks<Architecture::kGpt2>, &GPT::backward_blocks<Architecture::kGpt2>,
      gpt2_inference_tables, gpt2_mlp_width, gpt2_embed, gpt2_blocks, gpt2_norm};
  return rules;
}

}  // namespace gpt
