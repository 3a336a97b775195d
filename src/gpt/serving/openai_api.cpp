#include "gpt/serving/openai_api.h"

#include <cmath>

#include "gpt/util/error.h"

namespace gpt::serving {
namespace {

using nlohmann::json;

ApiError bad(const std::string& param, const std::string& message, const std::string& code = "") {
  return {400, message, param, code};
}

// Field readers: absent or null -> nullopt; a wrong type or range -> ApiError naming the field.
const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number(const json& body, const char* name, double lo, double hi) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) throw bad(name, std::string("'") + name + "' must be a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    throw bad(name, std::string("'") + name + "' must be between " + json(lo).dump() + " and " + json(hi).dump() +
                        " (got " + v->dump() + ")");
  }
  return x;
}

std::optional<int64_t> integer(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) throw bad(name, std::string("'") + name + "' must be an integer");
  // Unsigned values past int64 are out of range whatever the bounds.
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    throw bad(name, std::string("'") + name + "' is out of range");
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    throw bad(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                        " (got " + std::to_string(x) + ")");
  }
  return x;
}

std::optional<bool> boolean(const json& body, const char* name) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) throw bad(name, std::string("'") + name + "' must be true or false");
  return v->get<bool>();
}

// Text of a chat message's content: a string, or an array of {"type": "text", "text"} parts.
std::string message_content(const json& content, const std::string& param) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw bad(param, "'" + param + "' must be a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    const auto type = part.is_object() ? part.find("type") : part.end();
    const auto txt = part.is_object() ? part.find("text") : part.end();
    if (!part.is_object() || type == part.end() || *type != "text" || txt == part.end() || !txt->is_string()) {
      throw bad(param, "'" + param + "' parts must be {\"type\": \"text\", \"text\": string} (this model reads text only)");
    }
    text += txt->get_ref<const std::string&>();
  }
  return text;
}

std::vector<int32_t> token_array(const json& arr, const ModelInfo& model, const char* param) {
  std::vector<int32_t> ids;
  for (const json& t : arr) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= model.vocab_size) {
      throw bad(param, std::string("'") + param + "' token ids must be integers in [0, " +
                           std::to_string(model.vocab_size) + ")");
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

std::vector<int32_t> encode_text(const Tokenizer& tokenizer, const std::string& text, const char* param,
                                 const ModelInfo& model) {
  if (static_cast<int64_t>(text.size()) > model.context * kMaxBytesPerToken) {
    throw bad(param, std::string("'") + param + "' is " + std::to_string(text.size()) + " bytes, more than the context of " +
                         std::to_string(model.context) + " tokens can hold", "context_length_exceeded");
  }
  try {
    return tokenizer.encode_prompt(text);
  } catch (const Error& e) {
    throw bad(param, std::string("'") + param + "' cannot be tokenized: " + e.what());
  }
}

// A completion with an empty prompt starts from the end-of-text token, as GPT-2 was trained.
std::optional<int32_t> end_of_text(const Tokenizer& tokenizer) {
  return tokenizer.special_token_id("<|endoftext|>");
}

void reject_unsupported(const json& body) {
  for (const char* name : {"tools", "functions", "tool_choice", "function_call", "suffix", "response_format"}) {
    if (field(body, name) != nullptr) throw bad(name, std::string("'") + name + "' is not supported by this server");
  }
  if (const json* lb = field(body, "logit_bias"); lb != nullptr && !(lb->is_object() && lb->empty())) {
    throw bad("logit_bias", "'logit_bias' is not supported by this server");
  }
  if (auto best_of = integer(body, "best_of", 1, 1 << 20); best_of && *best_of != 1) {
    throw bad("best_of", "'best_of' other than 1 is not supported by this server");
  }
}

std::string token_text(const Tokenizer& tokenizer, int32_t id) { return tokenizer.token_bytes(id); }

json bytes_of(const std::string& s) {
  json a = json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

json chat_logprobs(const std::vector<TokenLogprob>& tokens, const Tokenizer& tokenizer) {
  json content = json::array();
  for (const TokenLogprob& t : tokens) {
    json top = json::array();
    for (const auto& [id, lp] : t.top) {
      const std::string s = token_text(tokenizer, id);
      top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_of(s)}});
    }
    const std::string s = token_text(tokenizer, t.token);
    content.push_back({{"token", s}, {"logprob", t.logprob}, {"bytes", bytes_of(s)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json completion_logprobs(const std::vector<TokenLogprob>& tokens, const Tokenizer& tokenizer, size_t text_offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& t : tokens) {
    const std::string s = token_text(tokenizer, t.token);
    toks.push_back(s);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[token_text(tokenizer, id)] = lp;
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += s.size();
  }
  return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

}  // namespace

std::string ApiError::type() const {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "server_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json ApiError::to_json() const {
  return {{"error",
           {{"message", message},
            {"type", type()},
            {"param", param.empty() ? json() : json(param)},
            {"code", code.empty() ? json() : json(code)}}}};
}

const char* finish_reason_name(Finish f) {
  switch (f) {
    case Finish::kStop: return "stop";
    case Finish::kLength: return "length";
    case Finish::kNone: break;
  }
  return nullptr;
}

GenerationRequest parse_generation_request(const json& body, bool chat, const ModelInfo& model,
                                           const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                                           const ApiLimits& limits, uint64_t default_seed) {
  if (!body.is_object()) throw bad("", "the request body must be a JSON object");
  reject_unsupported(body);
  GenerationRequest r;
  r.chat = chat;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) throw bad("model", "'model' must be a string");
    if (m->get<std::string>() != model.id) {
      throw ApiError{404, "The model '" + m->get<std::string>() + "' does not exist (this server has '" + model.id + "')",
                     "model", "model_not_found"};
    }
  }

  if (chat) {
    if (chat_template == nullptr) {
      throw bad("messages", "this model has no chat template: use /v1/completions, or start the server with "
                            "--chat-template NAME",
                "chat_template_missing");
    }
    const json* messages = field(body, "messages");
    if (messages == nullptr || !messages->is_array() || messages->empty()) {
      throw bad("messages", "'messages' must be a non-empty array");
    }
    if (static_cast<int64_t>(messages->size()) > limits.max_messages) {
      throw bad("messages", "at most " + std::to_string(limits.max_messages) + " messages per request");
    }
    std::vector<ChatMessage> conversation;
    for (size_t i = 0; i < messages->size(); ++i) {
      const json& m = (*messages)[i];
      const std::string at = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        throw bad(at, "'" + at + "' must be an object with a string 'role'");
      }
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";  // OpenAI's newer name for it
      if (role != "system" && role != "user" && role != "assistant") {
        throw bad(at + ".role", "'" + at + ".role' must be system, developer, user or assistant (got '" + role + "')");
      }
      const auto content = m.find("content");
      conversation.push_back({role, content == m.end() ? std::string() : message_content(*content, at + ".content")});
    }
    int64_t bytes = 0;
    for (const ChatMessage& m : conversation) bytes += static_cast<int64_t>(m.content.size());
    if (bytes > model.context * kMaxBytesPerToken) {
      throw bad("messages", "the messages are " + std::to_string(bytes) + " bytes, more than the context of " +
                                std::to_string(model.context) + " tokens can hold", "context_length_exceeded");
    }
    try {
      r.prompt = chat_template->encode(conversation, tokenizer);
    } catch (const Error& e) {
      throw bad("messages", std::string("'messages' cannot be tokenized: ") + e.what());
    }
  } else {
    const json* prompt = field(body, "prompt");
    if (prompt == nullptr) throw bad("prompt", "'prompt' is required");
    if (prompt->is_string()) {
      r.prompt = encode_text(tokenizer, prompt->get<std::string>(), "prompt", model);
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
      r.prompt = token_array(*prompt, model, "prompt");
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      r.prompt = encode_text(tokenizer, (*prompt)[0].get<std::string>(), "prompt", model);
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_array()) {
      r.prompt = token_array((*prompt)[0], model, "prompt");
    } else if (prompt->is_array() && prompt->size() > 1) {
      throw bad("prompt", "one prompt per request: send several requests (they run together)");
    } else {
      throw bad("prompt", "'prompt' must be a string, an array of token ids, or an array of one of those");
    }
    if (r.prompt.empty()) {
      const auto eot = end_of_text(tokenizer);
      if (!eot) throw bad("prompt", "'prompt' is empty and this model has no end-of-text token to start from");
      r.prompt.push_back(*eot);
    }
    if (auto echo = boolean(body, "echo")) r.echo = *echo;
  }

  const auto P = static_cast<int64_t>(r.prompt.size());
  if (P >= model.context) {
    throw bad(chat ? "messages" : "prompt",
              "This model's maximum context length is " + std::to_string(model.context) + " tokens, but the " +
                  (chat ? "messages are " : "prompt is ") + std::to_string(P) + " tokens (leave room for at least one more)",
              "context_length_exceeded");
  }
  std::optional<int64_t> max_tokens = integer(body, "max_tokens", 1, INT64_MAX);
  if (chat) {
    if (auto m = integer(body, "max_completion_tokens", 1, INT64_MAX)) max_tokens = m;
  }
  if (max_tokens && *max_tokens > limits.max_tokens) {
    throw bad(chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
              "at most " + std::to_string(limits.max_tokens) + " new tokens per request (got " +
                  std::to_string(*max_tokens) + ")");
  }
  if (max_tokens && P + *max_tokens > model.context) {
    throw bad(chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
              "This model's maximum context length is " + std::to_string(model.context) + " tokens, but " +
                  std::to_string(P + *max_tokens) + " were requested (" + std::to_string(P) + " in the " +
                  (chat ? "messages" : "prompt") + ", " + std::to_string(*max_tokens) + " in the completion)",
              "context_length_exceeded");
  }
  // OpenAI's defaults: 16 for completions, up to the context for chat.
  r.max_tokens = max_tokens ? *max_tokens : std::min(limits.max_tokens, chat ? model.context - P : std::min<int64_t>(16, model.context - P));

  if (auto n = integer(body, "n", 1, limits.max_n)) r.n = static_cast<int>(*n);
  if (auto s = boolean(body, "stream")) r.stream = *s;
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) throw bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (auto u = boolean(*so, "include_usage")) r.include_usage = *u;
  }
  if (const json* stop = field(body, "stop")) {
    std::vector<const json*> items;  // (pointers: a client's JSON is never copied)
    if (stop->is_string()) {
      items.push_back(stop);
    } else if (stop->is_array()) {
      for (const json& s : *stop) items.push_back(&s);
    } else {
      throw bad("stop", "'stop' must be a string or an array of strings");
    }
    if (static_cast<int64_t>(items.size()) > limits.max_stop) {
      throw bad("stop", "at most " + std::to_string(limits.max_stop) + " stop strings");
    }
    for (const json* sp : items) {
      const json& s = *sp;
      if (!s.is_string() || s.get<std::string>().empty() || s.get<std::string>().size() > limits.max_stop_bytes) {
        throw bad("stop", "stop strings must be non-empty strings of at most " + std::to_string(limits.max_stop_bytes) +
                              " bytes");
      }
      r.stop.push_back(s.get<std::string>());
    }
  }
  if (chat) r.stop.push_back(chat_template->end_of_turn());

  SamplingOptions& so = r.sampling;
  if (auto t = number(body, "temperature", 0.0, 2.0)) {
    if (*t == 0.0) {
      so.greedy = true;
    } else {
      so.temperature = static_cast<float>(*t);
    }
  }
  if (auto p = number(body, "top_p", 0.0, 1.0)) {
    if (*p == 0.0) throw bad("top_p", "'top_p' must be greater than 0");
    so.top_p = static_cast<float>(*p);
  }
  if (auto p = number(body, "presence_penalty", -2.0, 2.0)) so.presence_penalty = static_cast<float>(*p);
  if (auto p = number(body, "frequency_penalty", -2.0, 2.0)) so.frequency_penalty = static_cast<float>(*p);
  // gpt.cpp's own (llama.cpp's names).
  if (auto k = integer(body, "top_k", 0, model.vocab_size)) so.top_k = static_cast<int>(*k);
  if (auto p = number(body, "min_p", 0.0, 1.0)) so.min_p = static_cast<float>(*p);
  if (auto p = number(body, "repeat_penalty", 1e-3, 100.0)) so.repeat_penalty = static_cast<float>(*p);
  if (auto n = integer(body, "repeat_last_n", -1, model.context)) so.repeat_last_n = static_cast<int>(*n);
  if (auto e = boolean(body, "ignore_eos")) r.ignore_eos = *e;
  // (presence/frequency apply over the whole context, as OpenAI's do, unless a window is asked for.)
  if (!body.contains("repeat_last_n") && (so.presence_penalty != 0.0f || so.frequency_penalty != 0.0f)) {
    so.repeat_last_n = -1;
  }
  try {
    so.validate();
  } catch (const Error& e) {
    throw bad("", e.what());
  }

  r.seed = default_seed;
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) throw bad("seed", "'seed' must be an integer");
    r.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : static_cast<uint64_t>(seed->get<int64_t>());
  }

  if (chat) {
    const bool want = boolean(body, "logprobs").value_or(false);
    const auto top = integer(body, "top_logprobs", 0, limits.max_top_logprobs);
    if (top && !want) throw bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (want) r.logprobs = static_cast<int>(top.value_or(0));
  } else if (auto lp = integer(body, "logprobs", 0, limits.max_top_logprobs)) {
    r.logprobs = static_cast<int>(*lp);
  }
  if (r.echo && r.logprobs >= 0) throw bad("echo", "'echo' with 'logprobs' (the prompt's logprobs) is not supported");
  return r;
}

json Usage::to_json() const {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {
json finish_json(Finish f) {
  const char* name = finish_reason_name(f);
  return name ? json(name) : json();
}
}  // namespace

json completion_response(bool chat, const std::string& id, int64_t created, const ModelInfo& model,
                         const std::vector<ChoiceResult>& choices, bool with_logprobs, const Usage& usage,
                         const Tokenizer& tokenizer) {
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json lp = json();
    if (with_logprobs) lp = chat ? chat_logprobs(c.logprobs, tokenizer) : completion_logprobs(c.logprobs, tokenizer, 0);
    if (chat) {
      out_choices.push_back({{"index", i},
                             {"message", {{"role", "assistant"}, {"content", c.text}}},
                             {"logprobs", lp},
                             {"finish_reason", finish_json(c.finish)}});
    } else {
      out_choices.push_back({{"index", i}, {"text", c.text}, {"logprobs", lp}, {"finish_reason", finish_json(c.finish)}});
    }
  }
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model.id},
          {"system_fingerprint", "gpt.cpp"},
          {"choices", out_choices},
          {"usage", usage.to_json()}};
}

json completion_chunk(bool chat, const std::string& id, int64_t created, const ModelInfo& model, int index,
                      const std::string& text, const std::vector<TokenLogprob>& logprobs, bool with_logprobs,
                      Finish finish, bool first, const Tokenizer& tokenizer, size_t text_offset) {
  json lp = json();
  if (with_logprobs && !logprobs.empty()) {
    lp = chat ? chat_logprobs(logprobs, tokenizer) : completion_logprobs(logprobs, tokenizer, text_offset);
  }
  json choice;
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = text;
    choice = {{"index", index}, {"delta", delta}, {"logprobs", lp}, {"finish_reason", finish_json(finish)}};
  } else {
    choice = {{"index", index}, {"text", text}, {"logprobs", lp}, {"finish_reason", finish_json(finish)}};
  }
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model.id},
          {"system_fingerprint", "gpt.cpp"},
          {"choices", json::array({choice})}};
}

json usage_chunk(bool chat, const std::string& id, int64_t created, const ModelInfo& model, const Usage& usage) {
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model.id},
          {"system_fingerprint", "gpt.cpp"},
          {"choices", json::array()},
          {"usage", usage.to_json()}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace gpt::serving
