// --model and --quantize, shared by the commands that run a model.
#pragma once
#include <string>

#include <CLI/CLI.hpp>

#include "gpt/generation/kv_cache.h"
#include "gpt/io/model_loader.h"
#include "gpt/kernels/compute_context.h"

namespace gpt::cli {

struct ModelFlags {
  std::string model, quantize, dtype = "fp32", kv_cache = "auto", adapter, rope_scaling = "none";
  float rope_factor = 1.0f;
  KvCacheType kv_cache_type() const { return parse_kv_cache_type(kv_cache); }
};

// --kv-cache, for the commands that generate.
inline void add_kv_cache_flag(CLI::App* app, ModelFlags& flags) {
  app->add_option("--kv-cache", flags.kv_cache,
                  "Keys and values kept for generation: f32, f16 (half the memory and reads) or auto "
                  "(f16 for compact weights, f32 for fp32)")
      ->check(CLI::IsMember({"auto", "f32", "f16"}))->capture_default_str();
}

inline void add_model_flags(CLI::App* app, ModelFlags& flags, bool allow_quantize = true) {
  app->add_option("--model", flags.model,
                  "Model: a gpt.cpp checkpoint, a Hugging Face GPT-2 or Llama-family directory, or a GGUF file")
      ->required();
  app->add_option("--adapter", flags.adapter,
                  "A LoRA adapter directory (gpt sft --lora-rank, or PEFT's) merged into the model when it loads");
  app->add_option("--rope-factor", flags.rope_factor,
                  "RoPE models: run at this many times the trained context")->capture_default_str();
  app->add_option("--rope-scaling", flags.rope_scaling,
                  "RoPE models past their context: none (extrapolate), linear (interpolate positions) or yarn")
      ->check(CLI::IsMember({"none", "linear", "yarn"}))->capture_default_str();
  if (allow_quantize) {
    app->add_option("--quantize", flags.quantize,
                    "Convert the weights when loading: f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, or a K-quant mix "
                    "q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, q6_k (f32 dequantizes a GGUF file)");
    app->add_option("--dtype", flags.dtype, "Matrix products over many tokens (prompts): fp32 or bf16")
        ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  }
}

// How a command runs the model: --dtype and --threads (0: all cores).
inline ComputeOptions compute_options(const ModelFlags& flags, int threads) {
  return {parse_matmul_precision(flags.dtype), threads};
}

// `inference`: the model only generates (fp32 matrices may be re-laid as panels
// for the few-rows kernels, unless products run in bf16, which want oneDNN).
inline OpenedModel open_model(const ModelFlags& flags, bool dequantize = false, bool inference = false) {
  ModelOpenOptions options;
  options.dequantize = dequantize;
  options.panels = inference && !dequantize && parse_matmul_precision(flags.dtype) == MatmulPrecision::kFloat32;
  if (!flags.quantize.empty()) options.convert_to = QuantRecipe::parse(flags.quantize);
  options.adapter = flags.adapter;
  options.rope_factor = flags.rope_factor;
  options.rope_scaling = parse_rope_scaling(flags.rope_scaling);
  return gpt::open_model(flags.model, options);
}

}  // namespace gpt::cli
