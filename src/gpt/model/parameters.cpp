#include "gpt/model/parameters.h"

#include "gpt/model/arch/architecture.h"
#include "gpt/util/error.h"

namespace gpt {

ParameterLayout::ParameterLayout(const ModelConfig& config) : config_(config) {
  for (TensorSpec& s : architecture_rules(config.arch).tensors(config)) {
    TensorInfo t;
    t.name = std::move(s.name);
    t.shape = std::move(s.shape);
    t.numel = 1;
    for (int64_t d : t.shape) t.numel *= static_cast<size_t>(d);
    t.offset = total_;
    t.weight_decay = t.shape.size() >= 2;
    t.role = s.role;
    t.layer = s.layer;
    t.out_major = s.out_major;
    total_ += t.numel;
    tensors_.push_back(std::move(t));
  }
}

const TensorInfo* ParameterLayout::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

template <class T>
BasicModelWeights<T> ParameterLayout::bind_as(T* base) const {
  BasicModelWeights<T> w{};
  w.layers.assign(static_cast<size_t>(config_.n_layer), BasicLayerWeights<T>{});
  for (const TensorInfo& t : tensors_) {
    T* p = base + t.offset;
    BasicLayerWeights<T>* L = t.layer >= 0 ? &w.layers[static_cast<size_t>(t.layer)] : nullptr;
    switch (t.role) {
      case WeightRole::kTokenEmbedding: w.wte = p; break;
      case WeightRole::kPositionEmbedding: w.wpe = p; break;
      case WeightRole::kNorm1Weight: L->ln_1_weight = p; break;
      case WeightRole::kNorm1Bias: L->ln_1_bias = p; break;
      case WeightRole::kQkvWeight: L->attn_c_attn_weight = p; break;
      case WeightRole::kQkvBias: L->attn_c_attn_bias = p; break;
      case WeightRole::kAttnProjWeight: L->attn_c_proj_weight = p; break;
      case WeightRole::kAttnProjBias: L->attn_c_proj_bias = p; break;
      case WeightRole::kNorm2Weight: L->ln_2_weight = p; break;
      case WeightRole::kNorm2Bias: L->ln_2_bias = p; break;
      case WeightRole::kMlpInWeight: L->mlp_c_fc_weight = p; break;
      case WeightRole::kMlpInBias: L->mlp_c_fc_bias = p; break;
      case WeightRole::kMlpOutWeight: L->mlp_c_proj_weight = p; break;
      case WeightRole::kMlpOutBias: L->mlp_c_proj_bias = p; break;
      case WeightRole::kFinalNormWeight: w.ln_f_weight = p; break;
      case WeightRole::kFinalNormBias: w.ln_f_bias = p; break;
      case WeightRole::kLmHead: w.lm_head = p; break;
      case WeightRole::kPart: break;
    }
  }
  if (config_.tie_word_embeddings) w.lm_head = w.wte;
  return w;
}

ModelWeights ParameterLayout::bind(float* base) const { return bind_as(base); }
ConstModelWeights ParameterLayout::bind(const float* base) const { return bind_as(base); }

}  // namespace gpt
