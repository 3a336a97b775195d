// gpt serve: the model behind an OpenAI-compatible HTTP API and a web page.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "gpt/cli/commands.h"
#include "gpt/cli/model_flags.h"
#include "gpt/serving/server.h"
#include "gpt/util/error.h"

namespace gpt::cli {

Command add_serve_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand(
      "serve", "Serve a model over HTTP: an OpenAI-compatible API and a web page");
  app->footer("\nEndpoints: /v1/completions and /v1/chat/completions (streaming), /v1/models, /tokenize,\n"
              "/detokenize, /v1/inspect, /v1/explain, /health, /metrics, and the web page at /.\n\nExamples:\n  gpt serve --model out/mymodel                       # http://127.0.0.1:8080/\n  gpt serve --model gpt2-q8_0.gguf --parallel 8 --api-key secret --chat-template chatml\n  curl 127.0.0.1:8080/v1/completions -d '{\"prompt\": \"Hello\", \"max_tokens\": 20, \"stream\": true}'");
  struct Options {
    ModelFlags model;
    serving::ServerOptions server;
    std::string alias, chat_template;
    int parallel = 4, max_queue = 64, threads = 0;
    int64_t ctx_size = 0;
  };
  auto o = std::make_shared<Options>();
  add_model_flags(app, o->model);
  add_kv_cache_flag(app, o->model);
  app->add_option("--host", o->server.host, "Address to listen on (127.0.0.1: this machine only)")->capture_default_str();
  app->add_option("--port", o->server.port, "Port (0: any free one)")->capture_default_str()->check(CLI::Range(0, 65535));
  app->add_option("--parallel", o->parallel, "Sequences decoded together (each choice of a request is one)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-queue", o->max_queue, "Requests that may wait for a slot; more get 429 + Retry-After")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--api-key", o->server.api_key, "Require 'Authorization: Bearer KEY' (except / and /health)");
  app->add_option("--ctx-size", o->ctx_size,
                  "KV cache positions shared by all sequences (0: --parallel full contexts); when they run out "
                  "the youngest sequences wait")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--alias", o->alias, "Model name in the API (default: the model's file or directory name)");
  app->add_option("--chat-template", o->chat_template,
                  "Chat template for /v1/chat/completions: chatml or llama3 (default: the one the model declares "
                  "in tokenizer_config.json; none: chat requests get 400)");
  app->add_option("--max-tokens-limit", o->server.limits.max_tokens, "Largest max_tokens a request may ask for")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-n", o->server.limits.max_n, "Largest n (choices per request)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-stop", o->server.limits.max_stop, "Most stop strings per request")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--max-body", o->server.max_body_bytes, "Largest request body in bytes (413 above)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-inspect-tokens", o->server.inspect_max_tokens, "Longest text /v1/inspect takes, in tokens")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--drain-seconds", o->server.drain_seconds,
                  "On SIGINT/SIGTERM: how long running requests may finish before they are ended")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--threads", o->threads, "Compute threads (0: all cores)")->check(CLI::NonNegativeNumber);
  auto run = [o]() -> int {
    // Before any thread exists (the model's loading starts OpenMP's): the stop
    // signals go to the server's signal thread only.
    serving::block_stop_signals();
    GPT_CHECK(o->server.limits.max_n <= o->parallel,
              "--max-n " + std::to_string(o->server.limits.max_n) + " is more than --parallel " +
                  std::to_string(o->parallel) + " (a request's choices decode together)");
    ComputeContext compute(compute_options(o->model, o->threads));
    const ComputeScope scope(compute);
    OpenedModel m = open_model(o->model, /*dequantize=*/false, /*inference=*/true);
    serving::ServedModel served{m.inference_weights(), m.tokenizer.get(), {}, std::nullopt};
    const ModelConfig& c = m.config();
    const std::filesystem::path path(o->model.model);
    served.info.id = !o->alias.empty() ? o->alias
                                       : (path.has_filename() ? path.filename() : path.parent_path().filename()).string();
    // (Requests are checked against what the KV pool can hold, when --ctx-size is smaller.)
    const int64_t pool_positions = o->ctx_size > 0 ? o->ctx_size : static_cast<int64_t>(o->parallel) * c.block_size;
    served.info.context = std::min<int64_t>(c.block_size, pool_positions);
    served.info.vocab_size = c.vocab_size;
    served.info.created = static_cast<int64_t>(std::time(nullptr));
    if (!o->chat_template.empty()) {
      served.chat_template = ChatTemplate::named(o->chat_template);
    } else {
      GPT_CHECK(m.chat_template_problem.empty(), m.chat_template_problem);
      served.chat_template = m.chat_template;
    }
    serving::SchedulerOptions so;
    so.parallel = o->parallel;
    so.max_queue = o->max_queue;
    so.engine.kv_cache = o->model.kv_cache_type();
    so.engine.compute = compute.options();
    so.engine.preempt_when_full = true;
    const KvCacheType kv = resolve_kv_cache_type(so.engine.kv_cache, served.weights);
    const int64_t bytes_per_position = KvPagePool::bytes_per_position(c, kv);
    const int64_t positions = o->ctx_size > 0 ? o->ctx_size : static_cast<int64_t>(o->parallel) * c.block_size;
    so.engine.kv_bytes = positions * bytes_per_position;
    if (auto eot = m.tokenizer->special_token_id("<|endoftext|>")) so.stop_tokens.push_back(*eot);
    return serving::serve(o->server, served, so, [&](const std::string& host, int port) {
      std::fprintf(stderr, "gpt serve: %s (%s, context %lld, chat template %s), %d parallel, queue %d\n",
                   served.info.id.c_str(), ggml_type_name(m.type), static_cast<long long>(c.block_size),
                   served.chat_template ? served.chat_template->name().c_str() : "none", o->parallel, o->max_queue);
      std::fprintf(stderr, "gpt serve: listening on http://%s:%d\n", host.c_str(), port);
      std::fflush(stderr);
    });
  };
  return {app, run};
}

}  // namespace gpt::cli
