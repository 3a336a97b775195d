// gpt generate: continue a prompt with a trained model, streaming the text; and
// optionally show the distribution the model chose each token from.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/cli/model_flags.h"
#include "gpt/cli/prompt_flags.h"
#include "gpt/cli/sampling_flags.h"
#include "gpt/generation/generate.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"
#include "gpt/viz/svg.h"

namespace gpt::cli {

Command add_generate_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("generate", "Generate text from a prompt");
  app->footer("\nExamples:\n  gpt generate --model out/mymodel --prompt \"ROMEO:\" --max-tokens 300 --temperature 0.8 --top-k 40\n  gpt generate --model out/mymodel --prompt \"ROMEO:\" --max-tokens 20 --show-probs 5\n  gpt generate --model gpt2-q8_0.gguf --prompt \"Hello\" --num-samples 8 --parallel 8");
  struct Options {
    ModelFlags model;
    std::string prompt, prompt_file;
    GenerateOptions gen;
    int num_samples = 1;
    int parallel = 0;
    int threads = 0;
    bool verbose = false, json = false;
  };
  auto o = std::make_shared<Options>();
  add_model_flags(app, o->model);
  add_kv_cache_flag(app, o->model);
  auto* prompt = app->add_option("--prompt", o->prompt, "Prompt text (default: read standard input)");
  app->add_option("--prompt-file", o->prompt_file, "Read the prompt from a file")->excludes(prompt);
  add_sampling_flags(app, o->gen);
  app->add_option("--num-samples", o->num_samples, "Independent samples (seeds seed, seed+1, ...)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--parallel", o->parallel,
                  "With --num-samples: samples decoded together on the batched engine (0: all, at most 16); "
                  "the prompt is read once")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--show-probs", o->gen.top_probs, "Show the K most likely next tokens at every step (stderr)")
      ->check(CLI::NonNegativeNumber);
  app->add_flag("--json", o->json, "With --show-probs: one JSON object per token on stdout instead of the text");
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  app->add_flag("--verbose", o->verbose, "Print prefill and decode speed to stderr");
  auto run = [o, prompt]() -> int {
    validate_sampling_flags(o->gen);
    ComputeContext compute(compute_options(o->model, o->threads));
    const ComputeScope scope(compute);
    const std::string text = read_prompt(o->prompt, o->prompt_file, prompt);
    OpenedModel m = open_model(o->model, /*dequantize=*/false, /*inference=*/true);
    const std::vector<int32_t> ids = m.tokenizer->encode_prompt(text);
    const int64_t context = m.config().block_size;
    GPT_CHECK(static_cast<int64_t>(ids.size()) <= context,
          "the prompt is " + std::to_string(ids.size()) + " tokens but the model's context is " +
              std::to_string(context) + "; shorten it");
    const bool json = o->json && o->gen.top_probs > 0;
    const Tokenizer& tok = *m.tokenizer;
    const InferenceWeights weights = m.inference_weights();
    if (o->num_samples > 1 && o->gen.top_probs == 0 && o->gen.max_new_tokens > 0) {
      // Several samples: decoded side by side, each printed whole, in order.
      EngineOptions eo;
      eo.kv_cache = o->model.kv_cache_type();
      eo.compute = compute.options();
      const int parallel = o->parallel > 0 ? std::min(o->parallel, o->num_samples) : std::min(o->num_samples, 16);
      const int64_t positions = std::min<int64_t>(context, static_cast<int64_t>(ids.size()) + o->gen.max_new_tokens);
      const ModelConfig& c = m.config();
      eo.kv_bytes = static_cast<int64_t>(parallel) * (positions + eo.page_size) *
                    KvPagePool::bytes_per_position(c, resolve_kv_cache_type(eo.kv_cache, weights));
      const SamplesReport report = generate_samples(weights, tok, ids, o->gen, o->num_samples, parallel, eo,
                                                    [&](int sample, const GenerateResult& r) {
                                                      if (sample > 0) std::fputs("\n---------------\n", stdout);
                                                      std::fwrite(text.data(), 1, text.size(), stdout);
                                                      std::fwrite(r.text.data(), 1, r.text.size(), stdout);
                                                      std::fputc('\n', stdout);
                                                      std::fflush(stdout);
                                                    });
      if (o->verbose) {
        std::fprintf(stderr, "gpt: %d samples, %d at a time: %lld tokens in %.3f s (%.1f tokens/s); prompt read once, "
                     "%lld positions shared\n", o->num_samples, parallel, static_cast<long long>(report.generated_tokens),
                     report.seconds, report.seconds > 0 ? report.generated_tokens / report.seconds : 0.0,
                     static_cast<long long>(report.reused_positions));
      }
      return 0;
    }
    InferenceSession session(weights, o->model.kv_cache_type(), compute.options());
    for (int sample = 0; sample < o->num_samples; ++sample) {
      if (sample > 0 && !json) std::fputs("\n---------------\n", stdout);
      session.reset();
      GenerateOptions gen = o->gen;
      gen.seed = o->gen.seed + static_cast<uint64_t>(sample);
      if (!json) std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      auto on_text = [&](const std::string& piece) {
        if (json) return;
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      };
      auto on_token = [&](const TokenEvent& ev) {
        if (gen.top_probs <= 0) return;
        if (json) {
          nlohmann::json top = nlohmann::json::array();
          for (const auto& t : ev.top) top.push_back({{"token", t.token}, {"text", tok.token_bytes(t.token)}, {"prob", t.prob}});
          nlohmann::json j = {{"sample", sample}, {"step", ev.step}, {"token", ev.token},
                              {"text", tok.token_bytes(ev.token)}, {"prob", ev.prob}, {"top", top}};
          std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
          std::fflush(stdout);
          return;
        }
        std::string line = "[" + std::to_string(ev.step) + "] chose " + visible_token(tok.token_bytes(ev.token));
        char buf[64];
        std::snprintf(buf, sizeof buf, " (p=%.3f) from:", ev.prob);
        line += buf;
        for (const auto& t : ev.top) {
          std::snprintf(buf, sizeof buf, " %.3f", t.prob);
          line += " " + visible_token(tok.token_bytes(t.token)) + buf;
        }
        std::fprintf(stderr, "%s\n", line.c_str());
      };
      const GenerateResult r = generate(session, tok, ids, gen, on_text, on_token);
      if (!json) std::fputc('\n', stdout);
      std::fflush(stdout);
      if (o->verbose) {
        std::fprintf(stderr, "gpt: prefill %lld tokens in %.3f s (%.1f tokens/s), decode %zu tokens in %.3f s (%.1f tokens/s)%s\n",
                     static_cast<long long>(r.prefill_tokens), r.prefill_seconds,
                     r.prefill_seconds > 0 ? r.prefill_tokens / r.prefill_seconds : 0.0, r.tokens.size(), r.decode_seconds,
                     r.decode_seconds > 0 ? static_cast<double>(r.tokens.size()) / r.decode_seconds : 0.0,
                     session.slides() > 0 ? " (context slid)" : "");
      }
    }
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
