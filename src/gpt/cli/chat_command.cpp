// gpt chat: an interactive loop. Each line you type is appended to the running
// text and the model continues it; the context is kept between turns.
// Commands: /reset (forget the conversation), /quit (or end of input).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/cli/sampling_flags.h"
#include "gpt/generation/generate.h"
#include "gpt/cli/model_flags.h"
#include "gpt/util/error.h"
#include "gpt/util/utf8.h"

namespace gpt::cli {

Command add_chat_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("chat", "Talk to a model: each line you type is continued");
  app->footer("\nExamples:\n  gpt chat --model out/mymodel\n  gpt chat --model gpt2-q8_0.gguf --temperature 0.7 --top-k 40");
  struct Options {
    ModelFlags model;
    GenerateOptions gen;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  o->gen.max_new_tokens = 200;
  o->gen.stop = {"\n\n"};
  add_model_flags(app, o->model);
  add_kv_cache_flag(app, o->model);
  add_sampling_flags(app, o->gen);
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  auto run = [o]() -> int {
    validate_sampling_flags(o->gen);
    ComputeContext compute(compute_options(o->model, o->threads));
    const ComputeScope scope(compute);
    OpenedModel m = open_model(o->model, /*dequantize=*/false, /*inference=*/true);
    const InferenceWeights weights = m.inference_weights();
    InferenceSession session(weights, o->model.kv_cache_type(), compute.options());
    const bool interactive = ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);
    if (interactive) {
      std::fprintf(stderr, "gpt chat: type text and press Enter; the model continues it. /reset forgets, /quit ends.\n");
    }
    std::string line;
    uint64_t turn = 0;
    while (true) {
      if (interactive) {
        std::fputs("\n> ", stdout);
        std::fflush(stdout);
      }
      if (!std::getline(std::cin, line)) break;
      if (line == "/quit" || line == "/exit") break;
      if (line == "/reset") {
        session.reset();
        if (interactive) std::fputs("(conversation forgotten)\n", stdout);
        continue;
      }
      if (line.empty()) continue;
      try {
        if (auto bad = find_invalid_utf8(line)) throw Error("input is not valid UTF-8 (offset " + std::to_string(*bad) + ")");
        const std::vector<int32_t> ids = m.tokenizer->encode(line + "\n");
        GenerateOptions gen = o->gen;
        gen.seed = o->gen.seed + turn++;
        generate(session, *m.tokenizer, ids, gen, [](const std::string& piece) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        });
        std::fputc('\n', stdout);
        std::fflush(stdout);
      } catch (const Error& e) {
        // A bad line should not end the conversation.
        std::fprintf(stderr, "gpt: error: %s\n", e.what());
        if (!interactive) return 1;
      }
    }
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
