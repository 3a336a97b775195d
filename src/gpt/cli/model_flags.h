// --model and --quantize, shared by the commands that run a model.
#pragma once
#include <string>

#include <CLI/CLI.hpp>

#include "gpt/io/model_loader.h"
#include "gpt/kernels/matmul.h"

namespace gpt::cli {

struct ModelFlags {
  std::string model, quantize, dtype = "fp32";
};

inline void add_model_flags(CLI::App* app, ModelFlags& flags, bool allow_quantize = true) {
  app->add_option("--model", flags.model,
                  "Model: a gpt.cpp checkpoint or Hugging Face GPT-2 directory, or a GGUF file")
      ->required();
  if (allow_quantize) {
    app->add_option("--quantize", flags.quantize,
                    "Convert the weights when loading: f16, bf16, q8_0 or q4_0 (f32 dequantizes a GGUF file)");
    app->add_option("--dtype", flags.dtype, "Matrix products over many tokens (prompts): fp32 or bf16")
        ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  }
}

inline OpenedModel open_model(const ModelFlags& flags, bool dequantize = false) {
  set_matmul_precision(parse_matmul_precision(flags.dtype));
  ModelOpenOptions options;
  options.dequantize = dequantize;
  if (!flags.quantize.empty()) options.convert_to = parse_ggml_type(flags.quantize);
  return gpt::open_model(flags.model, options);
}

}  // namespace gpt::cli
