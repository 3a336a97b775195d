// The model shape the speed benchmarks default to: GPT-2 124M.
#pragma once
#include <memory>
#include <string>

#include "gpt/kernels/matmul.h"
#include "gpt/model/config.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"

namespace bench {

inline gpt::ModelConfig gpt2_124m_shape() {
  gpt::ModelConfig c;
  c.vocab_size = 50257;
  c.block_size = 1024;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  return c;
}

// A benchmark's weights of one type for `model` (initialised with `seed`):
// "f32" in panels where the CPU runs the few-rows kernels (as `gpt generate`
// loads a model), "f32-rowmajor" as the GPT holds them, else converted into
// `quantized`, which must outlive the weights.
inline gpt::InferenceWeights weights_of(const std::string& type, const gpt::GPT& model, uint64_t seed,
                                        std::unique_ptr<gpt::QuantizedModel>& quantized) {
  if (type == "f32-rowmajor") return gpt::InferenceWeights::view(model);
  const gpt::QuantRecipe recipe = gpt::QuantRecipe::parse(type);  // a type or a K-quant mix (q4_k_m, ...)
  if (recipe.base() != gpt::GgmlType::kF32) {
    quantized = gpt::QuantizedModel::quantize(model, recipe);
    return quantized->weights;
  }
  if (!gpt::few_rows_kernels()) return gpt::InferenceWeights::view(model);
  auto copy = std::make_shared<gpt::GPT>(model.config());
  copy->init_weights(seed);  // the same weights, re-laid
  return gpt::InferenceWeights::in_panels(std::move(copy));
}

}  // namespace bench
