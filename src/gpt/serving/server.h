// gpt serve: an OpenAI-compatible HTTP server (cpp-httplib) over the batched
// engine. Routes: POST /v1/completions, /v1/chat/completions (streaming as
// server-sent events), GET /v1/models, /health, /metrics (Prometheus), POST
// /tokenize, /detokenize, /v1/inspect (next-token distributions and attention
// weights of a text), and the web page at /. See docs/serving.md.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "gpt/model/inference_weights.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/serving/openai_api.h"
#include "gpt/serving/scheduler.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt::serving {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (the one taken is reported to on_listening)
  std::string api_key;  // empty: no authentication
  ApiLimits limits;
  size_t max_body_bytes = 1 << 20;
  int64_t inspect_max_tokens = 512;
  double drain_seconds = 10;  // on SIGINT/SIGTERM: how long running requests may go on
  int http_threads = 0;       // 0: parallel + max_queue + 8
};

struct ServedModel {
  InferenceWeights weights;
  const Tokenizer* tokenizer;
  ModelInfo info;
  std::optional<ChatTemplate> chat_template;
};

// Serves until SIGINT or SIGTERM (which the caller must have blocked in every
// thread, see block_stop_signals): then refuses new requests, lets running ones
// finish for up to drain_seconds, ends the rest cleanly (finish_reason
// "length"), and returns 0. gpt::Error if the address cannot be bound.
int serve(const ServerOptions& options, const ServedModel& model, SchedulerOptions scheduler_options,
          const std::function<void(const std::string& host, int port)>& on_listening);

// Blocks SIGINT and SIGTERM in the calling thread and the threads it starts
// afterwards, so that serve() receives them with sigwait. Call before any thread exists.
void block_stop_signals();

// The web page (web/index.html, embedded at build time).
std::string_view index_html();

}  // namespace gpt::serving
