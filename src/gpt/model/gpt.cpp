#include "gpt/model/gpt.h"

#include "gpt/model/arch/architecture.h"

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
  weight_views_ = layout_.bind(static_cast<const float*>(params.data()));
  if (config_.position_encoding == PositionEncoding::kSinusoidal) {
    sinusoid_table_.resize(static_cast<size_t>(config_.block_size) * config_.n_embd);
    sinusoidal_positions(sinusoid_table_.data(), config_.block_size, config_.n_embd);
  }
  if (config_.position_encoding == PositionEncoding::kRotary)
    rope_ = RopeTable(config_.block_size, config_.head_size(), config_.rope_theta, config_.rope_scaling);
}

void GPT::init_weights(uint64_t seed) {
  Rng rng(seed);
  const float residual_std = 0.02f / std::sqrt(2.0f * static_cast<float>(config_.n_layer));
  for (const TensorInfo& t : layout_.tensors()) {
    float* p = params.data() + t.offset;
    const bool is_bias = t.shape.size() == 1 && !(t.role == WeightRole::kNorm1Weight ||
                                                  t.role == WeightRole::kNorm2Weight ||
                                                  t.role == WeightRole::kFinalNormWeight);
    if (t.shape.size() == 1 && !is_bias) {  // a norm's gain
      std::fill(p, p + t.numel, 1.0f);
    } else if (is_bias) {
      std::fill(p, p + t.numel, 0.0f);
    } else {
      const bool residual_proj = t.role == WeightRole::kAttnProjWeight || t.role == WeightRole::kMlpOutWeight;
      const float std = residual_proj ? residual_std : 0.02f;
      for (size_t i = 0; i < t.numel; ++i) p[i] = static_cast<float>(rng.normal()) * std;
    }
  }
}

void GPT::allocate_gradients() {
  if (grads.size() != layout_.total()) grads.assign(layout_.total(), 0.0f);
}

const ConstModelWeights& GPT::weights() const {
  if (weight_views_.wte != params.data()) [[unlikely]] weight_views_ = layout_.bind(static_cast<const float*>(params.data()));
  return weight_views_;
}

const ModelWeights& GPT::mutable_weights() {
  if (mutable_views_.wte != params.data()) [[unlikely]] mutable_views_ = layout_.bind(params.data());
  return mutable_views_;
}

const ModelWeights& GPT::gradients() {
  allocate_gradients();
  if (grad_views_.wte != grads.data()) [[unlikely]] grad_views_ = layout_.bind(grads.data());
  return grad_views_;
}

void GPT::zero_grad() {
  if (lora_) {  // a frozen base has no gradient buffer
    lora_->grads.assign(lora_->total(), 0.0f);
    return;
  }
  if (grads.size() != layout_.total()) return allocate_gradients();
  std::fill(grads.begin(), grads.end(), 0.0f);
}

float* GPT::head_gradient(int64_t& first_row) {
  first_row = 0;
  if (!lora_) return gradients().lm_head;
  if (lora_->config().trainable_tokens_begin < 0) return nullptr;  // a frozen head
  first_row = lora_->config().trainable_tokens_begin;
  return lora_token_grads();
}

float* GPT::lora_token_grads() {
  if (lora_->grads.size() != lora_->total()) lora_->grads.assign(lora_->total(), 0.0f);
  return lora_->grads.data() + lora_->token_delta_offset();
}

void GPT::ensure_activations(int64_t B, int64_t T) {
  // Every buffer is indexed by the pass's own B*T, so any shape of no more
  // tokens fits (packed rows: fewer, longer rows than the padded batch).
  if (B * T <= acts_.B * acts_.T) return;
  const auto L = static_cast<size_t>(config_.n_layer), C = static_cast<size_t>(config_.n_embd),
             NH = static_cast<size_t>(config_.n_head), QKV = static_cast<size_t>(config_.qkv_dim()),
             H = static_cast<size_t>(config_.mlp_hidden()), H_IN = static_cast<size_t>(config_.mlp_in_dim());
  const auto BT = static_cast<size_t>(B * T);
  Activations& a = acts_;
  a.B = B;
  a.T = T;
  a.encoded.assign(BT * C, 0);
  a.ln.assign(BT * C, 0);
  a.proj.assign(BT * C, 0);
  a.ln1_mean.assign(L * BT, 0);
  a.ln1_rstd.assign(L * BT, 0);
  a.qkv.assign(L * BT * QKV, 0);
  a.atty.assign(L * BT * C, 0);
  a.att_lse.assign(L * static_cast<size_t>(B) * NH * static_cast<size_t>(T), 0);
  a.residual2.assign(L * BT * C, 0);
  a.ln2_mean.assign(L * BT, 0);
  a.ln2_rstd.assign(L * BT, 0);
  a.fch_gelu.assign(L * BT * H, 0);
  a.gelu_derivative.assign(L * BT * H_IN, 0);
  a.residual3.assign(L * BT * C, 0);
  a.lnf.assign(BT * C, 0);
  a.lnf_mean.assign(BT, 0);
  a.lnf_rstd.assign(BT, 0);
  a.logits.clear();  // sized by a forward pass without targets, if one comes
  a.lse.assign(BT, 0);
  a.losses.assign(BT, 0);
  a.d_residual.assign(BT * C, 0);
  a.d_ln.assign(BT * C, 0);
  a.d_atty.assign(BT * C, 0);
  a.d_qkv.assign(BT * QKV, 0);
  a.d_fch.assign(BT * H_IN, 0);
  if (H_IN != H) a.d_hidden.assign(BT * H, 0);  // a gated MLP: its hidden rows apart from gate|up
  tokens_.assign(BT, 0);
}

void GPT::attach_lora(std::shared_ptr<LoraAdapters> lora) {
  if (lora) {
    GPT_CHECK(!config_.llama(), "LoRA adapters are for gpt2 models only (llama's are not supported yet)");
    const ModelConfig& c = lora->model_config();
    GPT_CHECK(c.n_layer == config_.n_layer && c.n_embd == config_.n_embd && c.vocab_size == config_.vocab_size,
              "the LoRA adapter was made for another model shape");
    frozen_views_ = {};
    frozen_views_.layers.assign(static_cast<size_t>(config_.n_layer), LayerWeights{});
  }
  lora_ = std::move(lora);
}

float GPT::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T) {
  training_pass_ = false;
  forward_to_final_norm(tokens, B, T);
  const int64_t BT = B * T, V = config_.vocab_size, C = config_.n_embd;
  Activations& a = acts_;
  const float* lm_head = weights().lm_head;
  if (targets == nullptr) {  // logits (BT,V) = lnf (BT,C) @ lm_head^T (C,V), kept
    if (a.logits.size() < static_cast<size_t>(BT * V)) a.logits.resize(static_cast<size_t>(BT * V));
    gemm(false, true, BT, V, C, 1.0f, a.lnf.data(), C, lm_head, C, 0.0f, a.logits.data(), V);
    return 0.0f;
  }
  return lm_head_cross_entropy(a.losses.data(), a.lse.data(), a.lnf.data(), lm_head, targets, BT, C, V,
                               a.head);
}

float GPT::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                            float loss_scale, const GradientsReady& ready) {
  if (targets == nullptr) throw Error("a training pass needs targets");
  training_pass_ = true;
  forward_to_final_norm(tokens, B, T);
  training_pass_ = false;
  const int64_t BT = B * T, V = config_.vocab_size, C = config_.n_embd;
  Activations& a = acts_;
  int64_t counted = 0;
  for (int64_t i = 0; i < BT; ++i) counted += targets[i] != kIgnoreTarget;
  // LM head and loss, forward and backward together: dlnf (into d_ln) and the head's
  // weight gradient, for d(mean loss * loss_scale) over the targets that count. A
  // frozen head gets no gradient, except in the rows of LoRA's trainable tokens.
  int64_t dhead_first_row = 0;
  float* dhead = head_gradient(dhead_first_row);
  const float loss = lm_head_cross_entropy(a.losses.data(), a.lse.data(), a.lnf.data(), weights().lm_head, targets,
                                           BT, C, V, a.head, a.d_ln.data(), dhead,
                                           loss_scale / static_cast<float>(std::max<int64_t>(counted, 1)), 0,
                                           dhead_first_row);
  backward_from_final_norm(ready);
  return loss;
}

void GPT::forward_logprobs(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, float* logprobs,
                           bool training) {
  training_pass_ = training;
  last_forward_trained_ = training;
  forward_to_final_norm(tokens, B, T);
  training_pass_ = false;
  const int64_t BT = B * T, V = config_.vocab_size, C = config_.n_embd;
  Activations& a = acts_;
  targets_.clear();
  if (targets == nullptr) {
    std::fill(logprobs, logprobs + BT, 0.0f);
    return;
  }
  targets_.assign(targets, targets + BT);
  bool any = false;
  for (int64_t i = 0; i < BT && !any; ++i) any = targets[i] != kIgnoreTarget;
  if (any) {
    lm_head_cross_entropy(a.losses.data(), a.lse.data(), a.lnf.data(), weights().lm_head, targets, BT, C, V, a.head);
  } else {
    std::fill(a.losses.begin(), a.losses.begin() + BT, 0.0f);
  }
  for (int64_t i = 0; i < BT; ++i) logprobs[i] = targets[i] == kIgnoreTarget ? 0.0f : -a.losses[static_cast<size_t>(i)];
}

void GPT::backward_logprobs(const float* dlogprobs, const float* dhidden, const GradientsReady& ready) {
  GPT_CHECK(B_ > 0, "backward_logprobs needs forward_logprobs first");
  GPT_CHECK(!lora_ || last_forward_trained_, "backward_logprobs with a LoRA adapter needs a training forward_logprobs");
  const int64_t BT = B_ * T_, V = config_.vocab_size, C = config_.n_embd;
  Activations& a = acts_;
  // The LM head again, only for the rows whose log-probability matters: d(-loss_r) = dlogprobs[r].
  weighted_targets_.assign(static_cast<size_t>(BT), kIgnoreTarget);
  row_dloss_.assign(static_cast<size_t>(BT), 0.0f);
  bool any = false;
  if (!targets_.empty() && dlogprobs != nullptr) {
    for (int64_t i = 0; i < BT; ++i) {
      if (targets_[static_cast<size_t>(i)] == kIgnoreTarget || dlogprobs[i] == 0.0f) continue;
      weighted_targets_[static_cast<size_t>(i)] = targets_[static_cast<size_t>(i)];
      row_dloss_[static_cast<size_t>(i)] = -dlogprobs[i];
      any = true;
    }
  }
  if (any) {
    int64_t dhead_first_row = 0;
    float* dhead = head_gradient(dhead_first_row);
    lm_head_cross_entropy(a.losses.data(), a.lse.data(), a.lnf.data(), weights().lm_head, weighted_targets_.data(), BT,
                          C, V, a.head, a.d_ln.data(), dhead, 0.0f, 0, dhead_first_row, row_dloss_.data());
  } else {
    std::fill(a.d_ln.begin(), a.d_ln.begin() + BT * C, 0.0f);
  }
  if (dhidden != nullptr) {
    float* d = a.d_ln.data();
    for (int64_t i = 0; i < BT * C; ++i) d[i] += dhidden[i];
  }
  backward_from_final_norm(ready);
}

void GPT::forward_to_final_norm(const int32_t* tokens, int64_t B, int64_t T) {
  // Hot path: build error messages only when something is wrong.
  if (B <= 0 || T <= 0) throw Error("forward needs a non-empty batch");
  if (T > config_.block_size) {
    throw Error("sequence of " + std::to_string(T) + " tokens is longer than the context (block size " +
                std::to_string(config_.block_size) + ")");
  }
  const int64_t V = config_.vocab_size;
  const int64_t BT = B * T;
  for (int64_t i = 0; i < BT; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      throw Error("token id " + std::to_string(tokens[i]) + " outside the vocabulary of " + std::to_string(V));
    }
  }
  if (packed()) {
    // Checked here, once per pass, so the kernels can trust the layout.
    GPT_CHECK(static_cast<int64_t>(packed_positions_.size()) == BT,
              "packed layout of " + std::to_string(packed_positions_.size()) + " tokens for a batch of " +
                  std::to_string(BT));
    for (int64_t i = 0; i < BT; ++i) {
      const int32_t p = packed_positions_[static_cast<size_t>(i)];
      const bool row_start = i % T == 0;
      const bool ok = p == 0 ? (row_start || packed_examples_[static_cast<size_t>(i)] !=
                                                 packed_examples_[static_cast<size_t>(i - 1)])
                             : !row_start && p == packed_positions_[static_cast<size_t>(i - 1)] + 1 &&
                                   packed_examples_[static_cast<size_t>(i)] ==
                                       packed_examples_[static_cast<size_t>(i - 1)];
      if (!ok) throw Error("packed layout: token " + std::to_string(i) + " has position " + std::to_string(p));
    }
  }
  forward_packing_version_ = packing_version_;
  ensure_activations(B, T);
  B_ = B;
  T_ = T;
  std::copy(tokens, tokens + BT, tokens_.begin());
  // Dropout (training passes only): on the embeddings, each block's attention
  // weights, and its two residual branches, as nanoGPT.
  dropped_out_ = training_pass_ && dropout_ > 0.0f;
  (this->*architecture_rules(config_.arch).train_forward)(tokens);
}

void GPT::backward_from_final_norm(const GradientsReady& ready) {
  check_packing_unchanged();
  (this->*architecture_rules(config_.arch).train_backward)(ready);
}

void GPT::set_dropout(float p) {
  GPT_CHECK(p >= 0.0f && p < 1.0f, "dropout must be in [0, 1), got " + std::to_string(p));
  dropout_ = p;
}

void GPT::set_packing(std::span<const int32_t> positions, std::span<const int32_t> examples) {
  GPT_CHECK(positions.size() == examples.size(), "packed layout: positions and examples differ in length");
  for (int32_t p : positions)
    GPT_CHECK(p >= 0 && p < config_.block_size, "packed layout: position " + std::to_string(p) + " outside the context");
  packed_positions_.assign(positions.begin(), positions.end());
  packed_examples_.assign(examples.begin(), examples.end());
  ++packing_version_;
}

void GPT::check_packing_unchanged() const {
  GPT_CHECK(packing_version_ == forward_packing_version_,
            "set_packing was called between a forward pass and its backward pass (or attention_weights)");
}

const float* GPT::attention_weights(int layer) {
  GPT_CHECK(layer >= 0 && layer < config_.n_layer, "layer " + std::to_string(layer) + " out of range");
  GPT_CHECK(B_ > 0, "attention_weights needs a forward pass first");
  check_packing_unchanged();
  const int64_t B = B_, T = T_, C = config_.n_embd, NH = config_.n_head;
  attention_view_.resize(static_cast<size_t>(NH * T * T));
  attention_probabilities(attention_view_.data(), acts_.qkv.data() + layer * B * T * config_.qkv_dim(),
                          acts_.att_lse.data() + layer * B * NH * T, 0, T, C, NH, packing_positions(),
                          config_.kv_heads());
  return attention_view_.data();
}

GPT with_vocabulary(const GPT& model, int vocab_size) {
  const ModelConfig& old = model.config();
  GPT_CHECK(vocab_size >= old.vocab_size, "a vocabulary can only grow (" + std::to_string(old.vocab_size) + " -> " +
                                              std::to_string(vocab_size) + ")");
  ModelConfig c = old;
  c.vocab_size = vocab_size;
  GPT out(c);
  for (const TensorInfo& t : out.layout().tensors()) {
    const TensorInfo* src = model.layout().find(t.name);
    GPT_CHECK(src != nullptr, "tensor " + t.name + " missing from the model");
    std::copy_n(model.params.data() + src->offset, src->numel, out.params.data() + t.offset);
  }
  reset_token_rows(out, old.vocab_size, vocab_size);
  return out;
}

GPT with_config(const GPT& model, const ModelConfig& config) {
  GPT out(config);
  const auto& a = model.layout().tensors();
  const auto& b = out.layout().tensors();
  GPT_CHECK(a.size() == b.size(), "the new config has other tensors than the model");
  for (size_t i = 0; i < a.size(); ++i)
    GPT_CHECK(a[i].name == b[i].name && a[i].shape == b[i].shape, "the new config changes tensor " + a[i].name);
  out.params = model.params;
  return out;
}

void reset_token_rows(GPT& model, int begin, int end) {
  const ModelConfig& c = model.config();
  GPT_CHECK(begin > 0 && begin <= end && end <= c.vocab_size, "token rows out of range");
  const int64_t C = c.n_embd;
  const ModelWeights& w = model.mutable_weights();
  for (float* table : {w.wte, c.tie_word_embeddings ? nullptr : w.lm_head}) {
    if (table == nullptr) continue;
    std::vector<double> mean(static_cast<size_t>(C), 0.0);
    for (int64_t r = 0; r < begin; ++r)
      for (int64_t i = 0; i < C; ++i) mean[static_cast<size_t>(i)] += table[r * C + i];
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < C; ++i) table[r * C + i] = static_cast<float>(mean[static_cast<size_t>(i)] / begin);
  }
}

}  // namespace gpt
