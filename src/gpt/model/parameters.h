// All parameters live in one contiguous float buffer; this table cuts it into named
// views. Names and layouts are Hugging Face GPT-2's (Conv1D weights are stored
// input-major, (in, out)), so a checkpoint is the buffer written tensor by tensor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gpt/model/config.h"

namespace gpt {

struct TensorInfo {
  std::string name;            // e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // e.g. {C, 3C}
  size_t offset = 0;           // in floats from the start of the buffer
  size_t numel = 0;
  bool weight_decay = false;   // AdamW decays matrices only (ndim >= 2)
};

// Pointers into a parameter-shaped buffer (parameters, gradients, or optimizer
// state): writable (ModelWeights) or read-only (ConstModelWeights).
template <class T>
struct BasicLayerWeights {
  T* ln_1_weight;         // (C)
  T* ln_1_bias;           // (C)
  T* attn_c_attn_weight;  // (C, 3C)
  T* attn_c_attn_bias;    // (3C)
  T* attn_c_proj_weight;  // (C, C)
  T* attn_c_proj_bias;    // (C)
  T* ln_2_weight;         // (C)
  T* ln_2_bias;           // (C)
  T* mlp_c_fc_weight;     // (C, 4C)
  T* mlp_c_fc_bias;       // (4C)
  T* mlp_c_proj_weight;   // (4C, C)
  T* mlp_c_proj_bias;     // (C)
};

template <class T>
struct BasicModelWeights {
  T* wte;  // (V, C) token embedding; also the LM head when tied
  T* wpe;  // (T, C) learned positions, or nullptr for sinusoidal
  std::vector<BasicLayerWeights<T>> layers;
  T* ln_f_weight;  // (C)
  T* ln_f_bias;    // (C)
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
