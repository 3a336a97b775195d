// gpt convert: between gpt.cpp / Hugging Face directories and GGUF files, with
// optional quantization (--quantize q8_0 | q4_0 | f16 | bf16).
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/cli/model_flags.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/gguf_model.h"
#include "gpt/util/error.h"

namespace gpt::cli {

Command add_convert_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("convert", "Convert a model to GGUF (quantized or not) or a Hugging Face directory");
  app->footer("\nExamples:\n  gpt convert --model out/mymodel --to gguf --out model.gguf\n  gpt convert --model path/to/gpt2 --to gguf --quantize q4_k_m --out gpt2-q4_k_m.gguf\n  gpt convert --model gpt2-q8_0.gguf --to hf --out gpt2-hf\n  gpt convert --model out/myllama --rope-scaling yarn --rope-factor 4 --out myllama-4x.gguf");
  struct Options {
    ModelFlags model;
    std::string to = "gguf", out, name;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  add_model_flags(app, o->model, /*allow_quantize=*/false);
  app->add_option("--to", o->to, "gguf (a llama.cpp file) or hf (a directory Hugging Face's GPT2LMHeadModel loads)")
      ->check(CLI::IsMember({"gguf", "hf"}))->capture_default_str();
  app->add_option("--out", o->out, "Output file (gguf) or directory (hf)")->required();
  app->add_option("--quantize,--type", o->model.quantize,
                  "Weights of the GGUF matrices: f32 (default), f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, or one of "
                  "llama.cpp's K-quant mixes q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k");
  app->add_option("--name", o->name, "general.name written into a GGUF file (default: the input's name)");
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  auto run = [o]() -> int {
    ComputeContext compute({MatmulPrecision::kFloat32, o->threads});
    const ComputeScope scope(compute);
    const QuantRecipe recipe = o->model.quantize.empty() ? QuantRecipe(GgmlType::kF32) : QuantRecipe::parse(o->model.quantize);
    GPT_CHECK(o->to == "gguf" || recipe.base() == GgmlType::kF32,
          "--quantize applies to GGUF output; a Hugging Face directory holds fp32 weights");
    ModelOpenOptions options;
    options.dequantize = true;  // every output is written from fp32 weights
    options.adapter = o->model.adapter;  // merged into the weights written
    // A RoPE model written to run past its context (rope_scaling in config.json, rope.scaling.* in GGUF).
    options.rope_factor = o->model.rope_factor;
    options.rope_scaling = parse_rope_scaling(o->model.rope_scaling);
    OpenedModel m = gpt::open_model(o->model.model, options);
    const std::filesystem::path in_path = std::filesystem::path(o->model.model).lexically_normal();
    std::string name = o->name;
    if (name.empty()) name = in_path.has_filename() ? in_path.filename().string() : in_path.parent_path().filename().string();
    if (o->to == "gguf") {
      export_gguf(*m.fp32, *m.tokenizer, o->out, recipe, name, m.chat_template ? &*m.chat_template : nullptr);
    } else {
      CheckpointContents c;
      c.model = m.fp32.get();
      c.tokenizer = m.tokenizer.get();
      if (m.chat_template) c.chat_template = &*m.chat_template;  // a chat model stays one
      save_checkpoint(o->out, c);
    }
    std::error_code ec;
    const auto bytes = o->to == "gguf" ? std::filesystem::file_size(o->out, ec) : 0;
    nlohmann::json summary = {{"out", o->out}, {"format", o->to}, {"type", recipe.name()},
                              {"parameters", m.fp32->num_parameters()}};
    if (bytes > 0) summary["bytes"] = bytes;
    std::printf("%s\n", summary.dump().c_str());
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
