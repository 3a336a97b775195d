// gpt eval: loss, perplexity and bits per byte of a model on a text file.
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/cli/model_flags.h"
#include "gpt/training/evaluate.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt::cli {

Command add_eval_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("eval", "Evaluate a model on a text file");
  app->footer("\nExamples:\n  gpt eval --model out/mymodel --data held_out.txt\n  gpt eval --model gpt2-q8_0.gguf --data held_out.txt --batch 4");
  struct Options {
    ModelFlags model;
    std::string data;
    int64_t batch = 8;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  add_model_flags(app, o->model);
  app->add_option("--data", o->data, "Text to evaluate on")->required();
  app->add_option("--batch", o->batch, "Windows per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  auto run = [o]() -> int {
    ComputeContext compute(compute_options(o->model, o->threads));
    const ComputeScope scope(compute);
    OpenedModel m = open_model(o->model);
    const std::string text = read_text_file(o->data);
    // fp32 models run batched training forward passes; compact ones the inference path.
    const TextEvaluation ev = m.fp32 ? evaluate_text(*m.fp32, *m.tokenizer, text, o->batch)
                                     : evaluate_text(m.quantized->weights, *m.tokenizer, text);
    const nlohmann::json out = {{"loss", ev.mean_loss},
                                {"perplexity", ev.perplexity},
                                {"bits_per_byte", ev.bits_per_byte},
                                {"tokens", ev.tokens},
                                {"weights", ggml_type_name(m.type)}};
    std::printf("%s\n", out.dump().c_str());
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
