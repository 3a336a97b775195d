// All parameters live in one contiguous float buffer; this table cuts it into named
// views. Names and layouts are Hugging Face's for the architecture (GPT-2's Conv1D
// weights input-major, (in, out); Llama's nn.Linear weights output-major, (out,
// in)), so a checkpoint is the buffer written tensor by tensor. Each
// architecture's table is in model/arch/.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gpt/model/config.h"

namespace gpt {

// The view of ModelWeights a tensor starts. kPart: it continues the view of the
// tensor before it (Llama's k_proj and v_proj rows follow q_proj's, one fused
// q|k|v matrix; up_proj's follow gate_proj's).
enum class WeightRole {
  kTokenEmbedding, kPositionEmbedding, kNorm1Weight, kNorm1Bias, kQkvWeight, kQkvBias, kAttnProjWeight,
  kAttnProjBias, kNorm2Weight, kNorm2Bias, kMlpInWeight, kMlpInBias, kMlpOutWeight, kMlpOutBias,
  kFinalNormWeight, kFinalNormBias, kLmHead, kPart
};

struct TensorInfo {
  std::string name;            // e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // e.g. {C, 3C}
  size_t offset = 0;           // in floats from the start of the buffer
  size_t numel = 0;
  bool weight_decay = false;   // AdamW decays matrices only (ndim >= 2)
  WeightRole role = WeightRole::kPart;
  int layer = -1;              // its block, or -1
  bool out_major = false;      // a matrix stored (out, in), as nn.Linear keeps it
  // A matrix's input and output widths, whichever way it is stored.
  int64_t in_features() const { return out_major ? shape[1] : shape[0]; }
  int64_t out_features() const { return out_major ? shape[0] : shape[1]; }
};

// Pointers into a parameter-shaped buffer (parameters, gradients, or optimizer
// state): writable (ModelWeights) or read-only (ConstModelWeights).
// Shapes as GPT-2 keeps them / as Llama does (F: SwiGLU width, KV: kv_dim).
// Llama has no biases (null), except Qwen2's q|k|v bias.
template <class T>
struct BasicLayerWeights {
  T* ln_1_weight;         // (C)               input_layernorm (RMSNorm)
  T* ln_1_bias;           // (C)               null
  T* attn_c_attn_weight;  // (C, 3C)           q|k|v_proj (C + 2KV, C)
  T* attn_c_attn_bias;    // (3C)              (C + 2KV) or null
  T* attn_c_proj_weight;  // (C, C)            o_proj (C, C)
  T* attn_c_proj_bias;    // (C)               null
  T* ln_2_weight;         // (C)               post_attention_layernorm
  T* ln_2_bias;           // (C)               null
  T* mlp_c_fc_weight;     // (C, 4C)           gate|up_proj (2F, C)
  T* mlp_c_fc_bias;       // (4C)              null
  T* mlp_c_proj_weight;   // (4C, C)           down_proj (C, F)
  T* mlp_c_proj_bias;     // (C)               null
};

template <class T>
struct BasicModelWeights {
  T* wte;  // (V, C) token embedding; also the LM head when tied
  T* wpe;  // (T, C) learned positions, or nullptr (sinusoidal, rotary)
  std::vector<BasicLayerWeights<T>> layers;
  T* ln_f_weight;  // (C)
  T* ln_f_bias;    // (C), null for RMSNorm
  T* lm_head;      // (V, C): == wte when tied
};

using LayerWeights = BasicLayerWeights<float>;
using ModelWeights = BasicModelWeights<float>;
using ConstLayerWeights = BasicLayerWeights<const float>;
using ConstModelWeights = BasicModelWeights<const float>;

class ParameterLayout {
 public:
  explicit ParameterLayout(const ModelConfig& config);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  size_t total() const { return total_; }
  const TensorInfo* find(const std::string& name) const;
  // Views into a buffer of total() floats laid out by this table.
  ModelWeights bind(float* base) const;
  ConstModelWeights bind(const float* base) const;

 private:
  template <class T>
  BasicModelWeights<T> bind_as(T* base) const;

  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  size_t total_ = 0;
};

}  // namespace gpt
