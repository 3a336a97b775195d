// Opens whatever model a user points at: a gpt.cpp checkpoint directory, a
// Hugging Face GPT-2 directory (config.json + model.safetensors + tokenizer
// files), or a GGUF file. fp32 weights become a GPT; compact ones (F16, BF16,
// Q8_0, Q4_0 in a GGUF file) stay compact for inference unless dequantized.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>

#include "gpt/kernels/quantize.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/model/quant_recipe.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

struct ModelOpenOptions {
  bool dequantize = false;              // always produce an fp32 GPT (training, attention maps)
  std::optional<QuantRecipe> convert_to;  // convert the matrices at load time (--quantize)
  // fp32 weights for inference only: re-laid as panels (InferenceWeights::in_panels)
  // on CPUs that run the few-rows kernels; `fp32` is then null.
  bool panels = false;
  // A LoRA adapter directory (PEFT's layout) merged into the weights at load
  // (the base is read as fp32 for it); its tokenizer and chat template, where
  // it has them, replace the base model's.
  std::filesystem::path adapter{};
  // RoPE models past their trained context: the context times rope_factor (> 1),
  // positions rotated as rope_scaling says (none: unscaled, extrapolated).
  float rope_factor = 1.0f;
  RopeScaling::Type rope_scaling = RopeScaling::Type::kNone;
};

// The config of `config` run at rope_factor times its context with that scaling
// (gpt::Error for a model without rotary positions, or one scaled already).
ModelConfig extended_context(const ModelConfig& config, float rope_factor, RopeScaling::Type scaling);

struct OpenedModel {
  std::shared_ptr<GPT> fp32;
  std::shared_ptr<QuantizedModel> quantized;
  std::optional<InferenceWeights> panels;  // fp32 in panels (ModelOpenOptions::panels)
  std::unique_ptr<Tokenizer> tokenizer;
  GgmlType type = GgmlType::kF32;  // of most matrix bytes
  // The chat template the model declares (tokenizer_config.json of the model
  // directory, or of the adapter's when one was merged), if any.
  std::optional<ChatTemplate> chat_template;
  std::string chat_template_problem;  // why a declared template could not be read

  const ModelConfig& config() const {
    return fp32 ? fp32->config() : panels ? panels->config : quantized->config();
  }
  // Weights for an InferenceSession: views that keep the model they point into
  // alive (they stay valid after this object is gone).
  InferenceWeights inference_weights() const;
};

OpenedModel open_model(const std::filesystem::path& path, const ModelOpenOptions& options = {});

}  // namespace gpt
