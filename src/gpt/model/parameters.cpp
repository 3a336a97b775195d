#include "gpt/model/parameters.h"

namespace gpt {

ParameterLayout::ParameterLayout(const ModelConfig& config) : config_(config) {
  const int64_t V = config.vocab_size, T = config.block_size, C = config.n_embd;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    TensorInfo t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.numel = 1;
    for (int64_t d : t.shape) t.numel *= static_cast<size_t>(d);
    t.offset = total_;
    t.weight_decay = t.shape.size() >= 2;
    total_ += t.numel;
    tensors_.push_back(std::move(t));
  };
  add("wte.weight", {V, C});
  if (config.position_encoding == PositionEncoding::kLearned) add("wpe.weight", {T, C});
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C});
    add(p + "ln_1.bias", {C});
    add(p + "attn.c_attn.weight", {C, 3 * C});
    add(p + "attn.c_attn.bias", {3 * C});
    add(p + "attn.c_proj.weight", {C, C});
    add(p + "attn.c_proj.bias", {C});
    add(p + "ln_2.weight", {C});
    add(p + "ln_2.bias", {C});
    add(p + "mlp.c_fc.weight", {C, 4 * C});
    add(p + "mlp.c_fc.bias", {4 * C});
    add(p + "mlp.c_proj.weight", {4 * C, C});
    add(p + "mlp.c_proj.bias", {C});
  }
  add("ln_f.weight", {C});
  add("ln_f.bias", {C});
  if (!config.tie_word_embeddings) add("lm_head.weight", {V, C});
}

const TensorInfo* ParameterLayout::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

template <class T>
BasicModelWeights<T> ParameterLayout::bind_as(T* base) const {
  // Tensors were added in a fixed order; walk the same order.
  size_t i = 0;
  auto next = [&]() { return base + tensors_[i++].offset; };
  BasicModelWeights<T> w{};
  w.wte = next();
  w.wpe = config_.position_encoding == PositionEncoding::kLearned ? next() : nullptr;
  w.layers.resize(static_cast<size_t>(config_.n_layer));
  for (auto& L : w.layers) {
    L.ln_1_weight = next();
    L.ln_1_bias = next();
    L.attn_c_attn_weight = next();
    L.attn_c_attn_bias = next();
    L.attn_c_proj_weight = next();
    L.attn_c_proj_bias = next();
    L.ln_2_weight = next();
    L.ln_2_bias = next();
    L.mlp_c_fc_weight = next();
    L.mlp_c_fc_bias = next();
    L.mlp_c_proj_weight = next();
    L.mlp_c_proj_bias = next();
  }
  w.ln_f_weight = next();
  w.ln_f_bias = next();
  w.lm_head = config_.tie_word_embeddings ? w.wte : next();
  return w;
}

ModelWeights ParameterLayout::bind(float* base) const { return bind_as(base); }
ConstModelWeights ParameterLayout::bind(const float* base) const { return bind_as(base); }

}  // namespace gpt
