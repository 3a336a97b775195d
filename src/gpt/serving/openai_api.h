// OpenAI's completions and chat completions, as JSON in and out: requests are
// checked field by field (a wrong type or a value out of range is an ApiError
// naming the field, as OpenAI answers), responses and stream chunks are built in
// OpenAI's shapes. No HTTP here (server.cpp) and no model run (scheduler.h).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpt/generation/sampler.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt::serving {

// An error answered to the client: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status;           // 400, 401, 404, 413, 429, 503
  std::string message;  // one line
  std::string param;    // the request field at fault, or empty
  std::string code;     // OpenAI's code where it has one ("model_not_found", ...), or empty
  std::string type() const;
  nlohmann::json to_json() const;
};

// What the server accepts; each is a gpt serve flag.
struct ApiLimits {
  int64_t max_tokens = 2048;       // per request (also capped by the context)
  int max_n = 4;                   // choices per request
  int max_stop = 4;                // stop strings per request
  size_t max_stop_bytes = 256;     // bytes per stop string
  int max_top_logprobs = 20;
  int max_messages = 512;
};

// Text longer than this many bytes per position of the context is refused before
// it is tokenized (tokenizing is the one cost paid before a length is known).
inline constexpr int64_t kMaxBytesPerToken = 32;

struct ModelInfo {
  std::string id;  // what /v1/models lists and requests may name
  int64_t context = 0;
  int64_t vocab_size = 0;
  int64_t created = 0;
};

struct GenerationRequest {
  bool chat = false;
  std::vector<int32_t> prompt;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  SamplingOptions sampling;
  uint64_t seed = 0;
  int64_t max_tokens = 0;
  std::vector<std::string> stop;
  int logprobs = -1;  // -1: none; else the number of alternatives per token (0 allowed)
  bool echo = false;  // completions: the prompt's text before the completion
  bool ignore_eos = false;  // go on past the end-of-text token (llama.cpp's name; benchmarks)
};

// Parses a request body (already JSON) for /v1/completions or
// /v1/chat/completions. `chat_template` is null when the model has none (a chat
// request is then an error). Throws ApiError.
GenerationRequest parse_generation_request(const nlohmann::json& body, bool chat, const ModelInfo& model,
                                           const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                                           const ApiLimits& limits, uint64_t default_seed);

// One token as logprobs report it.
struct TokenLogprob {
  int32_t token;
  float logprob;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), most likely first
};

enum class Finish { kNone, kStop, kLength };
const char* finish_reason_name(Finish f);  // "stop", "length", or null for kNone

// Builders of OpenAI's response objects.
struct ChoiceResult {
  std::string text;
  std::vector<TokenLogprob> logprobs;
  Finish finish = Finish::kNone;
};
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  nlohmann::json to_json() const;
};
nlohmann::json completion_response(bool chat, const std::string& id, int64_t created, const ModelInfo& model,
                                   const std::vector<ChoiceResult>& choices, bool with_logprobs, const Usage& usage,
                                   const Tokenizer& tokenizer);
// One streamed chunk of choice `index`. `first` (chat): the delta opens with the role.
// `text_offset`: bytes of the choice's text before this chunk (completions' logprobs).
nlohmann::json completion_chunk(bool chat, const std::string& id, int64_t created, const ModelInfo& model, int index,
                                const std::string& text, const std::vector<TokenLogprob>& logprobs, bool with_logprobs,
                                Finish finish, bool first, const Tokenizer& tokenizer, size_t text_offset);
// The last chunk of a stream with stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk(bool chat, const std::string& id, int64_t created, const ModelInfo& model,
                           const Usage& usage);

// Serialised for the wire: invalid UTF-8 (a token may be part of a character) as U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace gpt::serving
