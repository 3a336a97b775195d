// gpt generate: continue a prompt with a trained model, streaming the text.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/generation/generate.h"
#include "gpt/io/checkpoint.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"

namespace gpt::cli {

Command add_generate_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("generate", "Generate text from a prompt");
  struct Options {
    std::string model, prompt, prompt_file;
    GenerateOptions gen;
    int threads = 0;
    bool verbose = false;
  };
  auto o = std::make_shared<Options>();
  app->add_option("--model", o->model, "Model directory")->required();
  auto* prompt = app->add_option("--prompt", o->prompt, "Prompt text (default: read standard input)");
  app->add_option("--prompt-file", o->prompt_file, "Read the prompt from a file")->excludes(prompt);
  app->add_option("--max-tokens", o->gen.max_new_tokens, "Tokens to generate")->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_flag("--greedy", o->gen.sampling.greedy, "Always take the most likely token");
  app->add_option("--temperature", o->gen.sampling.temperature, "Softmax temperature")->capture_default_str();
  app->add_option("--top-k", o->gen.sampling.top_k, "Sample among the k most likely tokens (0: all)")->capture_default_str();
  app->add_option("--top-p", o->gen.sampling.top_p, "Nucleus sampling threshold")->capture_default_str();
  app->add_option("--seed", o->gen.seed, "Sampling seed (same seed, same text)")->capture_default_str();
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  app->add_flag("--verbose", o->verbose, "Print timing to standard error");
  auto run = [o, prompt]() -> int {
    o->gen.sampling.validate();
    if (o->threads > 0) omp_set_num_threads(o->threads);
    std::string text = o->prompt;
    if (!o->prompt_file.empty()) {
      text = read_text_file(o->prompt_file);
    } else if (prompt->count() == 0) {
      check(!::isatty(STDIN_FILENO), "no prompt: pass --prompt TEXT, --prompt-file FILE or pipe text in");
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }
    check(!text.empty(), "the prompt is empty");
    if (auto bad = find_invalid_utf8(text)) {
      throw Error("the prompt is not valid UTF-8 (first bad byte at offset " + std::to_string(*bad) + ")");
    }
    LoadedModel m = load_model(o->model);
    const std::vector<int32_t> ids = m.tokenizer->encode(text);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = generate(*m.model, *m.tokenizer, ids, o->gen, [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o->verbose) {
      std::fprintf(stderr, "gpt: %zu prompt tokens, %zu generated in %.2f s (%.1f tokens/s)\n", ids.size(),
                   out.size(), s, s > 0 ? static_cast<double>(out.size()) / s : 0.0);
    }
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
