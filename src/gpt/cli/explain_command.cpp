// gpt explain: one prediction of a model, step by step, as an HTML report (or JSON).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include <nlohmann/json.hpp>

#include "gpt/cli/commands.h"
#include "gpt/cli/model_flags.h"
#include "gpt/cli/prompt_flags.h"
#include "gpt/explain/explain.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"

namespace gpt::cli {

Command add_explain_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand(
      "explain", "Watch one prediction step by step, as a self-contained HTML report");
  app->footer("\nThe report: the tokens, the embedding, each block's attention and contributions with a logit lens,\n"
              "and the output distribution.\n\nExamples:\n  gpt explain --model out/mymodel --prompt \"To be, or not to\" --out explain.html\n  gpt explain --model gpt2-q8_0.gguf --prompt-file prompt.txt --position 5 --lang ko --out explain.html\n  gpt explain --model out/mymodel --prompt \"To be\" --json");
  struct Options {
    ModelFlags model;
    std::string prompt, prompt_file, out, lang = "en";
    int64_t position = -1;
    int top = 10, threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  add_model_flags(app, o->model);
  auto* prompt = app->add_option("--prompt", o->prompt, "Text whose next token is explained (default: standard input)");
  app->add_option("--prompt-file", o->prompt_file, "Read the prompt from a file")->excludes(prompt);
  app->add_option("--position", o->position, "Token whose next-token prediction is explained (default: the last)");
  app->add_option("--top", o->top, "Most likely tokens listed")->capture_default_str()->check(CLI::Range(1, 1000));
  app->add_option("--lang", o->lang, "Language of the explanations: en or ko")
      ->check(CLI::IsMember({"en", "ko"}))->capture_default_str();
  app->add_option("--out", o->out, "HTML file to write (with --json: a JSON file; default standard output)");
  app->add_flag("--json", o->json, "The same data as JSON");
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  auto run = [o, prompt]() -> int {
    GPT_CHECK(o->json || !o->out.empty(), "--out FILE.html is required (or --json)");
    ComputeContext compute(compute_options(o->model, o->threads));
    const ComputeScope scope(compute);
    const std::string text = read_prompt(o->prompt, o->prompt_file, prompt);
    OpenedModel m = open_model(o->model, /*dequantize=*/false, /*inference=*/true);
    const Explanation e = explain(m.inference_weights(), *m.tokenizer, text, o->position, o->top);
    const std::string out = o->json ? explanation_json(e).dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
                                    : explanation_html(e, o->lang);
    if (o->out.empty()) {
      std::fwrite(out.data(), 1, out.size(), stdout);
    } else {
      write_file_atomic(o->out, out);
      std::printf("%s\n", o->out.c_str());
    }
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
