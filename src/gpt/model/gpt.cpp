#include "gpt/model/gpt.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/kernels/embedding.h"
#include "gpt/kernels/gelu.h"
#include "gpt/kernels/layernorm.h"
#include "gpt/kernels/matmul.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"

namespace gpt {

GPT::GPT(const ModelConfig& config) : config_(config), layout_(config) {
  config_.validate();
  params.assign(layout_.total(), 0.0f);
  grads.assign(layout_.total(), 0.0f);
  if (config_.position_encoding == PositionEncoding::kSinusoidal) {
    sinusoid_table_.resize(static_cast<size_t>(config_.block_size) * config_.n_embd);
    sinusoidal_positions(sinusoid_table_.data(), config_.block_size, config_.n_embd);
  }
}

void GPT::init_weights(uint64_t seed) {
  Rng rng(seed);
  const float residual_std = 0.02f / std::sqrt(2.0f * static_cast<float>(config_.n_layer));
  for (const TensorInfo& t : layout_.tensors()) {
    float* p = params.data() + t.offset;
    const bool is_bias = t.name.ends_with(".bias");
    const bool is_norm = t.name.find("ln_") != std::string::npos;
    if (is_norm && !is_bias) {
      std::fill(p, p + t.numel, 1.0f);
    } else if (is_bias) {
      std::fill(p, p + t.numel, 0.0f);
    } else {
      const bool residual_proj = t.name.ends_with("c_proj.weight");
      const float std = residual_proj ? residual_std : 0.02f;
      for (size_t i = 0; i < t.numel; ++i) p[i] = static_cast<float>(rng.normal()) * std;
    }
  }
}

const ModelWeights& GPT::weights() {
  if (weight_views_.wte != params.data()) weight_views_ = layout_.bind(params.data());
  return weight_views_;
}

const ModelWeights& GPT::gradients() {
  if (grad_views_.wte != grads.data()) grad_views_ = layout_.bind(grads.data());
  return grad_views_;
}

void GPT::zero_grad() { std::fill(grads.begin(), grads.end(), 0.0f); }

void GPT::ensure_activations(int64_t B, int64_t T) {
  if (B <= acts_.B && T <= acts_.T) return;
  B = std::max(B, acts_.B);  // grow, never shrink: earlier shapes must still fit
  T = std::max(T, acts_.T);
  const auto L = static_cast<size_t>(config_.n_layer), C = static_cast<size_t>(config_.n_embd),
             NH = static_cast<size_t>(config_.n_head), V = static_cast<size_t>(config_.vocab_size);
  const auto BT = static_cast<size_t>(B * T);
  Activations& a = acts_;
  a.B = B;
  a.T = T;
  a.encoded.assign(BT * C, 0);
  a.ln1.assign(L * BT * C, 0);
  a.ln1_mean.assign(L * BT, 0);
  a.ln1_rstd.assign(L * BT, 0);
  a.qkv.assign(L * BT * 3 * C, 0);
  a.atty.assign(L * BT * C, 0);
  a.att_lse.assign(L * static_cast<size_t>(B) * NH * static_cast<size_t>(T), 0);
  a.residual2.assign(L * BT * C, 0);
  a.ln2.assign(L * BT * C, 0);
  a.ln2_mean.assign(L * BT, 0);
  a.ln2_rstd.assign(L * BT, 0);
  a.fch.assign(L * BT * 4 * C, 0);
  a.fch_gelu.assign(L * BT * 4 * C, 0);
  a.residual3.assign(L * BT * C, 0);
  a.lnf.assign(BT * C, 0);
  a.lnf_mean.assign(BT, 0);
  a.lnf_rstd.assign(BT, 0);
  a.logits.assign(BT * V, 0);
  a.lse.assign(BT, 0);
  a.losses.assign(BT, 0);
  a.targets.assign(BT, 0);
  a.d_residual.assign(BT * C, 0);
  a.d_ln.assign(BT * C, 0);
  a.d_atty.assign(BT * C, 0);
  a.d_qkv.assign(BT * 3 * C, 0);
  a.d_fch.assign(BT * 4 * C, 0);
  tokens_.assign(BT, 0);
}

float GPT::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T) {
  // Hot path: build error messages only when something is wrong.
  if (B <= 0 || T <= 0) throw Error("forward needs a non-empty batch");
  if (T > config_.block_size) {
    throw Error("sequence of " + std::to_string(T) + " tokens is longer than the context (block size " +
                std::to_string(config_.block_size) + ")");
  }
  const int64_t V = config_.vocab_size, C = config_.n_embd, NH = config_.n_head;
  const int64_t BT = B * T;
  for (int64_t i = 0; i < BT; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      throw Error("token id " + std::to_string(tokens[i]) + " outside the vocabulary of " + std::to_string(V));
    }
  }
  ensure_activations(B, T);
  B_ = B;
  T_ = T;
  std::copy(tokens, tokens + BT, tokens_.begin());
  Activations& a = acts_;
  const ModelWeights& w = weights();

  // Token + position embedding.
  const float* pos = w.wpe != nullptr ? w.wpe : sinusoid_table_.data();
  embedding_forward(a.encoded.data(), tokens, w.wte, pos, B, T, C);

  const float* residual = a.encoded.data();
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    float* ln1 = a.ln1.data() + l * BT * C;
    float* ln1_mean = a.ln1_mean.data() + l * BT;
    float* ln1_rstd = a.ln1_rstd.data() + l * BT;
    float* qkv = a.qkv.data() + l * BT * 3 * C;
    float* atty = a.atty.data() + l * BT * C;
    float* att_lse = a.att_lse.data() + l * B * NH * T;
    float* residual2 = a.residual2.data() + l * BT * C;
    float* ln2 = a.ln2.data() + l * BT * C;
    float* ln2_mean = a.ln2_mean.data() + l * BT;
    float* ln2_rstd = a.ln2_rstd.data() + l * BT;
    float* fch = a.fch.data() + l * BT * 4 * C;
    float* fch_gelu = a.fch_gelu.data() + l * BT * 4 * C;
    float* residual3 = a.residual3.data() + l * BT * C;

    // x = x + attn(ln_1(x))
    layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, L.ln_1_weight, L.ln_1_bias, BT, C,
                      config_.layer_norm_epsilon);
    linear_forward(qkv, ln1, L.attn_c_attn_weight, L.attn_c_attn_bias, BT, C, 3 * C);
    attention_forward(atty, att_lse, qkv, B, T, C, NH);
    linear_forward(residual2, atty, L.attn_c_proj_weight, L.attn_c_proj_bias, BT, C, C, residual);
    // x = x + mlp(ln_2(x))
    layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, L.ln_2_weight, L.ln_2_bias, BT, C,
                      config_.layer_norm_epsilon);
    linear_forward(fch, ln2, L.mlp_c_fc_weight, L.mlp_c_fc_bias, BT, C, 4 * C);
    gelu_forward(fch_gelu, fch, BT * 4 * C);
    linear_forward(residual3, fch_gelu, L.mlp_c_proj_weight, L.mlp_c_proj_bias, BT, 4 * C, C,
                   residual2);
    residual = residual3;
  }

  // Final LayerNorm and the LM head: logits (BT,V) = lnf (BT,C) @ lm_head^T (C,V).
  layernorm_forward(a.lnf.data(), a.lnf_mean.data(), a.lnf_rstd.data(), residual, w.ln_f_weight,
                    w.ln_f_bias, BT, C, config_.layer_norm_epsilon);
  gemm(false, true, BT, V, C, 1.0f, a.lnf.data(), C, w.lm_head, C, 0.0f, a.logits.data(), V);

  has_targets_ = targets != nullptr;
  if (!has_targets_) return 0.0f;
  std::copy(targets, targets + BT, a.targets.begin());
  return cross_entropy_forward(a.losses.data(), a.lse.data(), a.logits.data(), targets, BT, V);
}

void GPT::backward(float loss_scale) { backward(loss_scale, GradientsReady()); }

void GPT::backward(float loss_scale, const GradientsReady& ready) {
  if (!has_targets_) throw Error("backward needs a forward pass with targets");
  has_targets_ = false;  // the logits are consumed below
  const int64_t B = B_, T = T_, BT = B * T;
  const int64_t V = config_.vocab_size, C = config_.n_embd, NH = config_.n_head;
  Activations& a = acts_;
  const ModelWeights& w = weights();
  const ModelWeights& g = gradients();

  // d(mean loss)/dlogits, in place of the logits.
  float* dlogits = a.logits.data();
  cross_entropy_backward_inplace(dlogits, a.lse.data(), a.targets.data(), BT, V,
                                 loss_scale / static_cast<float>(BT));
  // LM head: dlnf = dlogits @ lm_head, dlm_head += dlogits^T @ lnf.
  float* dlnf = a.d_ln.data();
  gemm(false, false, BT, C, V, 1.0f, dlogits, V, w.lm_head, C, 0.0f, dlnf, C);
  gemm(true, false, V, C, BT, 1.0f, dlogits, V, a.lnf.data(), C, 1.0f, g.lm_head, C);

  float* dres = a.d_residual.data();
  std::fill(a.d_residual.begin(), a.d_residual.begin() + BT * C, 0.0f);
  const float* last_residual = a.residual3.data() + (config_.n_layer - 1) * BT * C;
  layernorm_backward(dres, g.ln_f_weight, g.ln_f_bias, dlnf, last_residual, w.ln_f_weight,
                     a.lnf_mean.data(), a.lnf_rstd.data(), BT, C);
  // Buffer order: wte, wpe, h.0 ... h.{L-1}, ln_f, [lm_head]. A tied head's gradient
  // lives in wte, which the embedding backward finishes last.
  auto offset_of = [&](const float* p) { return static_cast<size_t>(p - grads.data()); };
  if (ready) ready(offset_of(g.ln_f_weight), grads.size());

  for (int64_t l = config_.n_layer - 1; l >= 0; --l) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    const LayerWeights& dL = g.layers[static_cast<size_t>(l)];
    const float* residual = l == 0 ? a.encoded.data() : a.residual3.data() + (l - 1) * BT * C;
    const float* ln1 = a.ln1.data() + l * BT * C;
    const float* qkv = a.qkv.data() + l * BT * 3 * C;
    const float* atty = a.atty.data() + l * BT * C;
    const float* att_lse = a.att_lse.data() + l * B * NH * T;
    const float* residual2 = a.residual2.data() + l * BT * C;
    const float* ln2 = a.ln2.data() + l * BT * C;
    const float* fch = a.fch.data() + l * BT * 4 * C;
    const float* fch_gelu = a.fch_gelu.data() + l * BT * 4 * C;

    // MLP: residual3 = residual2 + c_proj(gelu(c_fc(ln_2(residual2)))). dres is d residual3,
    // which is also d(MLP output); the residual passes it on unchanged to residual2.
    float* dfch = a.d_fch.data();
    linear_backward(dfch, dL.mlp_c_proj_weight, dL.mlp_c_proj_bias, dres, fch_gelu,
                    L.mlp_c_proj_weight, BT, 4 * C, C);
    gelu_backward(dfch, fch, dfch, BT * 4 * C);
    float* dln2 = a.d_ln.data();
    linear_backward(dln2, dL.mlp_c_fc_weight, dL.mlp_c_fc_bias, dfch, ln2, L.mlp_c_fc_weight,
                    BT, C, 4 * C);
    layernorm_backward(dres, dL.ln_2_weight, dL.ln_2_bias, dln2, residual2, L.ln_2_weight,
                       a.ln2_mean.data() + l * BT, a.ln2_rstd.data() + l * BT, BT, C);
    // Attention: residual2 = residual + c_proj(attn(c_attn(ln_1(residual)))).
    float* datty = a.d_atty.data();
    linear_backward(datty, dL.attn_c_proj_weight, dL.attn_c_proj_bias, dres, atty,
                    L.attn_c_proj_weight, BT, C, C);
    float* dqkv = a.d_qkv.data();
    attention_backward(dqkv, datty, qkv, atty, att_lse, B, T, C, NH);
    float* dln1 = a.d_ln.data();
    linear_backward(dln1, dL.attn_c_attn_weight, dL.attn_c_attn_bias, dqkv, ln1,
                    L.attn_c_attn_weight, BT, C, 3 * C);
    layernorm_backward(dres, dL.ln_1_weight, dL.ln_1_bias, dln1, residual, L.ln_1_weight,
                       a.ln1_mean.data() + l * BT, a.ln1_rstd.data() + l * BT, BT, C);
    if (ready) {
      const size_t end = l + 1 < config_.n_layer ? offset_of(g.layers[static_cast<size_t>(l + 1)].ln_1_weight)
                                                 : offset_of(g.ln_f_weight);
      ready(offset_of(dL.ln_1_weight), end);
    }
  }
  embedding_backward(g.wte, g.wpe, dres, tokens_.data(), B, T, C);
  if (ready) ready(0, offset_of(g.layers[0].ln_1_weight));
}

const float* GPT::attention_weights(int layer) {
  check(layer >= 0 && layer < config_.n_layer, "layer " + std::to_string(layer) + " out of range");
  check(B_ > 0, "attention_weights needs a forward pass first");
  const int64_t B = B_, T = T_, C = config_.n_embd, NH = config_.n_head;
  attention_view_.resize(static_cast<size_t>(NH * T * T));
  attention_probabilities(attention_view_.data(), acts_.qkv.data() + layer * B * T * 3 * C,
                          acts_.att_lse.data() + layer * B * NH * T, 0, T, C, NH);
  return attention_view_.data();
}

}  // namespace gpt
