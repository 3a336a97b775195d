#include "gpt/serving/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include <httplib.h>

#include "gpt/explain/explain.h"
#include "gpt/generation/kv_cache.h"
#include "gpt/util/error.h"
#include "gpt/util/utf8.h"

namespace gpt::serving {
namespace {

using nlohmann::json;
using clock_type = std::chrono::steady_clock;
constexpr int kMaxJsonDepth = 64;

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%016llx%llx", prefix, static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(counter++));
  return buf;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status, e.to_json());
}

// The request body as JSON: 400 for invalid UTF-8 or malformed JSON.
json parse_body(const httplib::Request& req) {
  if (auto bad = find_invalid_utf8(req.body)) {
    throw ApiError{400, "the request body is not valid UTF-8 (first bad byte at offset " + std::to_string(*bad) + ")",
                   "", ""};
  }
  // Nesting is bounded before parsing: copying a deeply nested value recurses.
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : req.body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  if (deepest > kMaxJsonDepth) {
    throw ApiError{400, "the request body nests more than " + std::to_string(kMaxJsonDepth) + " levels", "", ""};
  }
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) throw ApiError{400, "the request body is not valid JSON", "", ""};
  if (!body.is_object()) throw ApiError{400, "the request body must be a JSON object", "", ""};
  return body;
}

std::string address_of(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (a.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  } else if (a.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, buf, sizeof buf);
  }
  return buf;
}

uint16_t port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

// The socket of the request's connection (cpp-httplib 0.11 does not hand it to
// handlers): the open socket whose local port and peer address and port are the request's.
// The scheduler watches it to cancel the work of a client that hangs up.
int connection_socket(const httplib::Request& req) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof peer, local_len = sizeof local;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    if (port_of(peer) == req.remote_port && port_of(local) == req.local_port && address_of(peer) == req.remote_addr) {
      return fd;
    }
  }
  return -1;
}

// Accumulates a job's events into whole choices (non-streaming answers).
struct Collected {
  std::vector<ChoiceResult> choices;
  void add(JobEvent& e) {
    ChoiceResult& c = choices[static_cast<size_t>(e.choice)];
    c.text += e.text;
    for (TokenLogprob& t : e.logprobs) c.logprobs.push_back(std::move(t));
    if (e.finish != Finish::kNone) c.finish = e.finish;
  }
};

class Server {
 public:
  Server(const ServerOptions& options, const ServedModel& model, SchedulerOptions scheduler_options)
      : options_(options), model_(model), scheduler_(model.weights, *model.tokenizer, scheduler_options, metrics_) {
    routes();
  }

  int run(const std::function<void(const std::string&, int)>& on_listening) {
    const int threads = options_.http_threads > 0
                            ? options_.http_threads
                            : scheduler_.options().parallel + scheduler_.options().max_queue + 8;
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http_.set_payload_max_length(options_.max_body_bytes);
    http_.set_keep_alive_max_count(1000);
    // Each token is a small write: Nagle's algorithm would hold it until the
    // previous one is acknowledged (up to the client's 40 ms delayed ACK).
    http_.set_tcp_nodelay(true);
    // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would let a
    // second server bind the same port and silently take half of its connections.
    http_.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    int port = options_.port;
    if (port == 0) {
      port = http_.bind_to_any_port(options_.host);
      if (port <= 0) throw Error("cannot listen on " + options_.host + " (any port)");
    } else if (!http_.bind_to_port(options_.host, port)) {
      throw Error("cannot listen on " + options_.host + ":" + std::to_string(port) +
                  " (in use, or not an address of this machine)");
    }
    std::thread signals([this] { wait_for_stop_signal(); });
    std::thread listener([&] {
      if (!http_.listen_after_bind() && !stopping_) listen_failed_ = true;
      if (!stopping_) ::kill(::getpid(), SIGTERM);  // (the listener failed: wake the signal thread)
    });
    if (on_listening) on_listening(options_.host, port);
    scheduler_.run();  // the engine, on this thread (see Scheduler::run), until the signal thread stops it
    listener.join();
    signals.join();
    if (listen_failed_) throw Error("the HTTP listener stopped unexpectedly");
    return 0;
  }

 private:
  void wait_for_stop_signal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    std::fprintf(stderr, "gpt serve: %s: no new requests; letting running ones finish (up to %.0f s)\n",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", options_.drain_seconds);
    stopping_ = true;
    // A second signal ends the process at once (default action, on this thread only).
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    scheduler_.stop_accepting();
    if (!scheduler_.wait_idle(std::chrono::milliseconds(static_cast<int64_t>(options_.drain_seconds * 1000)))) {
      std::fprintf(stderr, "gpt serve: ending the requests still running\n");
      scheduler_.end_all();
    }
    // The handlers write their last bytes (cpp-httplib stops calling a stream's
    // provider once the listener stops), then the listener stops and its threads
    // join; then the engine loop ends.
    const auto deadline = clock_type::now() + std::chrono::seconds(5);
    while (open_responses_ > 0 && clock_type::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    // (A signal during start-up: stop() does nothing until the listener runs.)
    while (!http_.is_running() && !listen_failed_ && clock_type::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    http_.stop();
    scheduler_.stop();
  }

  bool authorised(const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty()) return true;
    if (req.get_header_value("Authorization") == "Bearer " + options_.api_key) return true;
    send_error(res, {401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "", "invalid_api_key"});
    return false;
  }

  // Wraps a handler: authentication, ApiError -> OpenAI's error shape, counting.
  httplib::Server::Handler api(const std::string& endpoint,
                               std::function<void(const httplib::Request&, httplib::Response&)> handler,
                               bool needs_key = true) {
    return [this, endpoint, handler, needs_key](const httplib::Request& req, httplib::Response& res) {
      try {
        if (!needs_key || authorised(req, res)) handler(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const Error& e) {
        send_error(res, {400, e.what(), "", ""});
      } catch (const nlohmann::json::exception& e) {
        send_error(res, {400, std::string("a field has the wrong type: ") + e.what(), "", ""});
      } catch (const std::exception& e) {
        send_error(res, {500, e.what(), "", ""});
      }
      metrics_.request(endpoint, res.status);
    };
  }

  void routes() {
    http_.Get("/", api("/", [](const httplib::Request&, httplib::Response& res) {
      const std::string_view page = index_html();
      res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    }, false));
    http_.Get("/health", api("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (stopping_) {
        send_json(res, 503, {{"status", "shutting down"}});
      } else {
        send_json(res, 200, {{"status", "ok"}});
      }
    }, false));
    http_.Get("/metrics", api("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.prometheus(scheduler_.gauges()), "text/plain; version=0.0.4");
    }));
    auto models = [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json()})}});
    };
    http_.Get("/v1/models", api("/v1/models", models));
    http_.Get("/models", api("/v1/models", models));
    http_.Get(R"(/v1/models/(.+))", api("/v1/models/{id}", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.matches[1] != model_.info.id) {
        throw ApiError{404, "The model '" + std::string(req.matches[1]) + "' does not exist", "model", "model_not_found"};
      }
      send_json(res, 200, model_json());
    }));
    for (const bool chat : {false, true}) {
      const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
      auto h = api(path, [this, chat](const httplib::Request& req, httplib::Response& res) { generate(req, res, chat); });
      http_.Post(path, h);
      http_.Post(chat ? "/chat/completions" : "/completions", h);
    }
    http_.Post("/tokenize", api("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = parse_body(req);
      const auto it = body.find("content");
      if (it == body.end() || !it->is_string()) throw ApiError{400, "'content' must be a string", "content", ""};
      const std::vector<int32_t> ids = encode_field(it->get<std::string>(), "content");
      json tokens = json::array();
      const auto wp = body.find("with_pieces");
      if (wp != body.end() && !wp->is_boolean()) throw ApiError{400, "'with_pieces' must be true or false", "with_pieces", ""};
      const bool pieces = wp != body.end() && wp->get<bool>();
      for (int32_t id : ids) {
        if (pieces) {
          tokens.push_back({{"id", id}, {"piece", model_.tokenizer->token_bytes(id)}});
        } else {
          tokens.push_back(id);
        }
      }
      send_json(res, 200, {{"tokens", tokens}});
    }));
    http_.Post("/detokenize", api("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = parse_body(req);
      const auto it = body.find("tokens");
      if (it == body.end() || !it->is_array()) throw ApiError{400, "'tokens' must be an array of token ids", "tokens", ""};
      std::vector<int32_t> ids;
      for (const json& t : *it) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= model_.info.vocab_size) {
          throw ApiError{400, "'tokens' must hold token ids in [0, " + std::to_string(model_.info.vocab_size) + ")",
                         "tokens", ""};
        }
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      send_json(res, 200, {{"content", model_.tokenizer->decode(ids)}});
    }));
    http_.Post("/v1/inspect", api("/v1/inspect", [this](const httplib::Request& req, httplib::Response& res) {
      inspect(req, res);
    }));
    // gpt explain's data (explain/explain.h) for one position of a text.
    http_.Post("/v1/explain", api("/v1/explain", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = parse_body(req);
      const auto text = body.find("text");
      if (text == body.end() || !text->is_string()) throw ApiError{400, "'text' must be a string", "text", ""};
      check_text_size(text->get<std::string>(), "text");
      int64_t position = -1;
      if (const auto p = body.find("position"); p != body.end() && !p->is_null()) {
        if (!p->is_number_integer()) throw ApiError{400, "'position' must be an integer", "position", ""};
        position = p->get<int64_t>();
        if (position < 0) throw ApiError{400, "'position' must not be negative", "position", ""};
      }
      const auto slot = reserve_inspection();
      json out;
      scheduler_.run_between_steps([&] {
        try {
          out = explanation_json(explain(model_.weights, *model_.tokenizer, text->get<std::string>(), position, 10));
        } catch (const Error& e) {
          throw ApiError{400, e.what(), "text", ""};
        }
      });
      send_json(res, 200, out);
    }));
    // Anything else, and errors cpp-httplib answers itself (413 for a body over
    // the limit, 400 for a malformed request): OpenAI's error shape.
    http_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message = res.status == 404   ? "no such endpoint: " + req.method + " " + req.path
                            : res.status == 413 ? "the request body is over the limit of " +
                                                      std::to_string(options_.max_body_bytes) + " bytes"
                                                : "bad request";
      send_error(res, {res.status, message, "", ""});
      // (A fixed label: paths come from clients, and each label value is kept forever.)
      metrics_.request("(error)", res.status);
    });
    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, {500, what, "", ""});
    });
  }

  // Tokenizing is the one cost paid before a length is known: text longer than
  // any context's worth is refused first (kMaxBytesPerToken per position).
  void check_text_size(const std::string& text, const char* param) const {
    const size_t limit = static_cast<size_t>(model_.info.context) * kMaxBytesPerToken;
    if (text.size() > limit) {
      throw ApiError{400, std::string("'") + param + "' is " + std::to_string(text.size()) + " bytes; at most " +
                              std::to_string(limit) + " are taken (" + std::to_string(kMaxBytesPerToken) +
                              " per position of the context)", param, "context_length_exceeded"};
    }
  }

  // A request field's text as tokens: 400 naming the field if it is too long or
  // cannot be tokenized.
  std::vector<int32_t> encode_field(const std::string& text, const char* param) const {
    check_text_size(text, param);
    try {
      return model_.tokenizer->encode(text);
    } catch (const Error& e) {
      throw ApiError{400, std::string("'") + param + "' cannot be tokenized: " + e.what(), param, ""};
    }
  }

  // Inspections run between decoding steps, one per step: a few at a time, more
  // get 429. Held until the returned guard goes away.
  std::shared_ptr<void> reserve_inspection() {
    ++inspections_;
    std::shared_ptr<void> guard(nullptr, [this](void*) { --inspections_; });
    if (inspections_ > kMaxInspections) throw ApiError{429, "too many inspections at once; retry later", "", ""};
    return guard;
  }

  json model_json() const {
    return {{"id", model_.info.id},
            {"object", "model"},
            {"created", model_.info.created},
            {"owned_by", "gpt.cpp"},
            {"meta", {{"n_ctx_train", model_.info.context}, {"n_vocab", model_.info.vocab_size}}}};
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    const json body = parse_body(req);
    const uint64_t default_seed = std::random_device{}() * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(unix_time());
    GenerationRequest r = parse_generation_request(body, chat, model_.info, *model_.tokenizer,
                                                   model_.chat_template ? &*model_.chat_template : nullptr,
                                                   options_.limits, default_seed);
    const bool stream = r.stream;
    const std::string echo = r.echo ? model_.tokenizer->decode(r.prompt) : "";
    std::shared_ptr<Job> job = scheduler_.submit(std::move(r), connection_socket(req));
    // Counted until the last byte is written (shutdown waits for them).
    auto open = std::shared_ptr<void>(nullptr, [this](void*) { --open_responses_; });
    ++open_responses_;
    const std::string id = random_id(chat ? "chatcmpl" : "cmpl");
    const int64_t created = unix_time();
    if (!stream) {
      Collected all;
      all.choices.resize(static_cast<size_t>(job->request().n));
      std::vector<JobEvent> events;
      bool done = false;
      while (!done) {
        events.clear();
        done = job->wait(events, std::chrono::milliseconds(200));
        for (JobEvent& e : events) all.add(e);
      }
      if (auto err = job->error()) throw ApiError{503, *err, "", ""};
      if (!echo.empty()) {
        for (ChoiceResult& c : all.choices) c.text = echo + c.text;
      }
      const Usage usage{static_cast<int64_t>(job->request().prompt.size()), job->completion_tokens()};
      send_json(res, 200, completion_response(chat, id, created, model_.info, all.choices, job->request().logprobs >= 0,
                                              usage, *model_.tokenizer));
      return;
    }
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider("text/event-stream", [this, job, id, created, chat, echo, open](size_t, httplib::DataSink& sink) {
      const GenerationRequest& r = job->request();
      std::vector<bool> opened(static_cast<size_t>(r.n), false);
      std::vector<size_t> offsets(static_cast<size_t>(r.n), 0);
      auto send = [&](const json& j) {
        const std::string line = "data: " + dump(j) + "\n\n";
        if (!sink.write(line.data(), line.size())) {
          job->cancel();  // the client hung up
          return false;
        }
        return true;
      };
      if (!echo.empty()) {
        for (int c = 0; c < r.n; ++c) {
          if (!send(completion_chunk(chat, id, created, model_.info, c, echo, {}, false, Finish::kNone, false,
                                     *model_.tokenizer, 0))) {
            return false;
          }
          offsets[static_cast<size_t>(c)] = echo.size();
        }
      }
      std::vector<JobEvent> events;
      bool done = false;
      while (!done) {
        events.clear();
        done = job->wait(events, std::chrono::milliseconds(200));
        for (const JobEvent& e : events) {
          const auto c = static_cast<size_t>(e.choice);
          const bool first = chat && !opened[c];
          if (e.text.empty() && e.logprobs.empty() && e.finish == Finish::kNone && !first) continue;
          opened[c] = true;
          if (!send(completion_chunk(chat, id, created, model_.info, e.choice, e.text, e.logprobs, r.logprobs >= 0,
                                     e.finish, first, *model_.tokenizer, offsets[c]))) {
            return false;
          }
          // (Offsets of the tokens' own bytes, as in a whole answer: text may be held back.)
          for (const TokenLogprob& t : e.logprobs) offsets[c] += model_.tokenizer->token_bytes(t.token).size();
        }
      }
      if (auto err = job->error()) {
        send(ApiError{503, *err, "", ""}.to_json());
      } else if (r.include_usage) {
        send(usage_chunk(chat, id, created, model_.info,
                         {static_cast<int64_t>(r.prompt.size()), job->completion_tokens()}));
      }
      const std::string end = "data: [DONE]\n\n";
      sink.write(end.data(), end.size());
      sink.done();
      return true;
    });
  }

  // For a text: each token, the model's most likely next tokens after it (and
  // the probability of the token that actually follows), and one layer's
  // attention weights (one head, or all heads' mean with head -1).
  void inspect(const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    const auto text = body.find("text");
    if (text == body.end() || !text->is_string()) throw ApiError{400, "'text' must be a string", "text", ""};
    const ModelConfig& c = model_.weights.config;
    auto int_field = [&](const char* name, int64_t def, int64_t lo, int64_t hi) {
      const auto it = body.find(name);
      if (it == body.end() || it->is_null()) return def;
      if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
        throw ApiError{400, std::string("'") + name + "' must be an integer in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "]", name, ""};
      }
      return it->get<int64_t>();
    };
    const int64_t layer = int_field("layer", c.n_layer - 1, 0, c.n_layer - 1);
    const int64_t head = int_field("head", -1, -1, c.n_head - 1);
    const int64_t top = int_field("top", 5, 0, options_.limits.max_top_logprobs);
    const std::vector<int32_t> ids = encode_field(text->get<std::string>(), "text");
    if (ids.empty()) throw ApiError{400, "'text' is empty", "text", ""};
    const int64_t limit = std::min<int64_t>(options_.inspect_max_tokens, c.block_size);
    if (static_cast<int64_t>(ids.size()) > limit) {
      throw ApiError{400, "'text' is " + std::to_string(ids.size()) + " tokens; at most " + std::to_string(limit) +
                              " can be inspected", "text", "context_length_exceeded"};
    }
    const auto T = static_cast<int64_t>(ids.size());
    const int64_t V = c.vocab_size, NH = c.n_head;
    const auto slot = reserve_inspection();
    std::vector<float> logits, attention;
    scheduler_.run_between_steps([&] {
      if (!inspector_) {
        inspector_ = std::make_unique<InferenceSession>(model_.weights, scheduler_.options().engine.kv_cache,
                                                        scheduler_.options().engine.compute);
      }
      inspector_->reset();
      inspector_->capture_attention(static_cast<int>(layer));
      const float* last = inspector_->append(ids.data(), T, /*all_logits=*/true);
      logits.assign(last - (T - 1) * V, last + V);
      attention = inspector_->captured_attention();
    });
    auto round4 = [](float x) { return std::round(static_cast<double>(x) * 1e4) / 1e4; };
    json tokens = json::array();
    for (int64_t i = 0; i < T; ++i) {
      // softmax of this position's logits: the distribution of the token after it.
      const float* row = logits.data() + i * V;
      float max = row[0];
      for (int64_t v = 1; v < V; ++v) max = std::max(max, row[v]);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v] - max));
      auto prob = [&](int64_t v) { return static_cast<float>(std::exp(static_cast<double>(row[v] - max)) / sum); };
      std::vector<int32_t> order(static_cast<size_t>(V));
      for (int64_t v = 0; v < V; ++v) order[static_cast<size_t>(v)] = static_cast<int32_t>(v);
      const auto k = static_cast<size_t>(std::min<int64_t>(top, V));
      std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(k), order.end(),
                        [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      json next = json::array();
      for (size_t j = 0; j < k; ++j) {
        next.push_back({{"id", order[j]}, {"text", model_.tokenizer->token_bytes(order[j])}, {"prob", round4(prob(order[j]))}});
      }
      json t = {{"id", ids[static_cast<size_t>(i)]}, {"text", model_.tokenizer->token_bytes(ids[static_cast<size_t>(i)])},
                {"next", next}};
      if (i + 1 < T) t["next_actual_prob"] = round4(prob(ids[static_cast<size_t>(i + 1)]));
      tokens.push_back(t);
    }
    json weights = json::array();
    for (int64_t i = 0; i < T; ++i) {
      json row = json::array();
      for (int64_t j = 0; j <= i; ++j) {
        double w = 0;
        for (int64_t h = 0; h < NH; ++h) {
          if (head >= 0 && h != head) continue;
          w += attention[static_cast<size_t>((h * T + i) * T + j)];
        }
        row.push_back(round4(static_cast<float>(head >= 0 ? w : w / static_cast<double>(NH))));
      }
      weights.push_back(row);
    }
    send_json(res, 200, {{"model", model_.info.id},
                         {"n_layer", c.n_layer},
                         {"n_head", c.n_head},
                         {"layer", layer},
                         {"head", head},
                         {"tokens", tokens},
                         {"attention", weights}});
  }

  const ServerOptions& options_;
  const ServedModel& model_;
  Metrics metrics_;
  Scheduler scheduler_;
  httplib::Server http_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<InferenceSession> inspector_;  // engine thread only
  static constexpr int kMaxInspections = 2;
  std::atomic<int> inspections_{0};
  std::atomic<int> open_responses_{0};  // generation responses not yet fully written
  std::atomic<bool> listen_failed_{false};
};

}  // namespace

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up is a failed write, not the end of the server
}

int serve(const ServerOptions& options, const ServedModel& model, SchedulerOptions scheduler_options,
          const std::function<void(const std::string&, int)>& on_listening) {
  Server server(options, model, std::move(scheduler_options));
  return server.run(on_listening);
}

}  // namespace gpt::serving
