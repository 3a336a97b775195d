// The real server over HTTP: `gpt serve` started on a free loopback port, every
// endpoint streaming and not, every error case, a client that hangs up, a full
// queue, the API key, SIGTERM during a stream.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <thread>

#include "serving/server_process.h"

namespace gpt::testing {
namespace {

using nlohmann::json;

std::string tiny_model() { return fixture("hf_gpt2_tiny").string(); }

// A byte-level model big enough that 1,000 tokens take seconds on one thread:
// long streams for the hang-up, queue and shutdown tests. Built once.
const std::string& slow_model() {
  static TempDir dir;
  static const std::string path = [] {
    {
      std::ofstream text(dir / "fox.txt");
      for (int i = 0; i < 600; ++i) text << "The quick brown fox jumps over the lazy dog.\n";
    }
    const auto r = run_gpt("train --data " + (dir / "fox.txt").string() + " --tokenizer byte --out " +
                           (dir / "slow").string() +
                           " --n-layer 6 --n-head 6 --n-embd 384 --block-size 1024 --batch-size 1 --max-iters 1");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return (dir / "slow").string();
  }();
  return path;
}

// A raw connection: writes an HTTP request and reads what comes back, so a
// test can read part of a stream and hang up.
class RawConnection {
 public:
  RawConnection(int port, const std::string& path, const std::string& body) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    (void)!::write(fd_, req.data(), req.size());
  }
  ~RawConnection() { close(); }
  // Reads until `needle` has arrived (or end of stream); what was read so far.
  const std::string& read_until(const std::string& needle) {
    char buf[4096];
    while (got_.find(needle) == std::string::npos) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      got_.append(buf, static_cast<size_t>(n));
    }
    return got_;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string got_;
};

TEST(Server, CompletionIsWhatGenerateWritesAndItsSeedRepeatsIt) {
  ServerProcess server("--model " + tiny_model());
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  // Greedy: the same text `gpt generate --greedy` writes.
  const HttpResult greedy = post(c, "/v1/completions", json{{"prompt", "Hello world"}, {"max_tokens", 12}, {"temperature", 0}});
  ASSERT_EQ(greedy.status, 200) << greedy.text;
  const auto gen = run_gpt("generate --model " + tiny_model() + " --prompt 'Hello world' --max-tokens 12 --greedy");
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ("Hello world" + greedy.body["choices"][0]["text"].get<std::string>() + "\n", gen.out);
  EXPECT_EQ(greedy.body["object"], "text_completion");
  EXPECT_EQ(greedy.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(greedy.body["usage"]["completion_tokens"], 12);
  const HttpResult ids = post(c, "/tokenize", json{{"content", "Hello world"}});
  ASSERT_EQ(ids.status, 200);
  EXPECT_EQ(greedy.body["usage"]["prompt_tokens"], ids.body["tokens"].size());
  // Sampled: a seed gives the same text every time, and `gpt generate` gives it too.
  const json sampled = {{"prompt", "Hello world"}, {"max_tokens", 10}, {"seed", 99}, {"temperature", 0.9}};
  const HttpResult a = post(c, "/v1/completions", sampled), b = post(c, "/v1/completions", sampled);
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(a.body["choices"][0]["text"], b.body["choices"][0]["text"]);
  const auto gen2 = run_gpt("generate --model " + tiny_model() + " --prompt 'Hello world' --max-tokens 10 --seed 99 --temperature 0.9");
  EXPECT_EQ("Hello world" + a.body["choices"][0]["text"].get<std::string>() + "\n", gen2.out);
  // n choices are the samples of seeds seed, seed + 1, ...
  const HttpResult two = post(c, "/v1/completions", json{{"prompt", "Hello world"}, {"max_tokens", 10}, {"seed", 98},
                                                         {"temperature", 0.9}, {"n", 2}});
  ASSERT_EQ(two.status, 200) << two.text;
  ASSERT_EQ(two.body["choices"].size(), 2u);
  EXPECT_EQ(two.body["choices"][1]["text"], a.body["choices"][0]["text"]);
  EXPECT_EQ(two.body["choices"][1]["index"], 1);
  EXPECT_EQ(two.body["usage"]["completion_tokens"], 20);
  // A stop string ends the text before it.
  const std::string full = greedy.body["choices"][0]["text"];
  const std::string stop = full.substr(full.size() / 2, 2);
  const HttpResult stopped = post(c, "/v1/completions", json{{"prompt", "Hello world"}, {"max_tokens", 12},
                                                             {"temperature", 0}, {"stop", stop}});
  EXPECT_EQ(stopped.body["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(stopped.body["choices"][0]["finish_reason"], "stop");
}

TEST(Server, AStreamIsTheWholeAnswerInPiecesEndingWithDone) {
  ServerProcess server("--model " + tiny_model() + " --chat-template chatml");
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  for (const bool chat : {false, true}) {
    json req = {{"max_tokens", 10}, {"seed", 3}, {"logprobs", chat ? json(true) : json(2)}};
    if (chat) {  // (41 tokens of the tiny model's 64: the markers are plain text to GPT-2's vocabulary)
      req["messages"] = {{{"role", "system"}, {"content", "Be terse."}}, {{"role", "user"}, {"content", "Hi!"}}};
      req["top_logprobs"] = 2;
    } else {
      req["prompt"] = "Once upon a time";
    }
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const HttpResult whole = post(c, path, req);
    ASSERT_EQ(whole.status, 200) << whole.text;
    req["stream"] = true;
    req["stream_options"] = {{"include_usage", true}};
    const HttpResult streamed = post(c, path, req);
    ASSERT_EQ(streamed.status, 200) << streamed.text;
    const std::vector<std::string> events = sse_data(streamed.text);
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events.back(), "[DONE]");
    std::string text, finish;
    size_t tokens = 0;
    for (size_t i = 0; i + 2 < events.size(); ++i) {
      const json chunk = json::parse(events[i]);
      EXPECT_EQ(chunk["object"], chat ? "chat.completion.chunk" : "text_completion");
      const json& choice = chunk["choices"][0];
      if (chat && i == 0) {
        EXPECT_EQ(choice["delta"]["role"], "assistant");
      }
      text += chat ? choice["delta"].value("content", "") : choice["text"].get<std::string>();
      if (!choice["logprobs"].is_null()) tokens += chat ? choice["logprobs"]["content"].size() : choice["logprobs"]["tokens"].size();
      if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    }
    const json usage = json::parse(events[events.size() - 2]);
    EXPECT_EQ(usage["choices"], json::array());
    EXPECT_EQ(usage["usage"], whole.body["usage"]);
    const json& w = whole.body["choices"][0];
    EXPECT_EQ(text, chat ? w["message"]["content"].get<std::string>() : w["text"].get<std::string>());
    EXPECT_EQ(finish, w["finish_reason"]);
    EXPECT_EQ(tokens, whole.body["usage"]["completion_tokens"].get<size_t>());
  }
}

TEST(Server, LogprobsAreTheDistributionInspectShows) {
  ServerProcess server("--model " + tiny_model() + " --chat-template chatml");
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  const HttpResult r = post(c, "/v1/completions", json{{"prompt", "The cat sat"}, {"max_tokens", 1}, {"temperature", 0},
                                                       {"logprobs", 3}});
  ASSERT_EQ(r.status, 200) << r.text;
  const json& lp = r.body["choices"][0]["logprobs"];
  const HttpResult in = post(c, "/v1/inspect", json{{"text", "The cat sat"}, {"top", 3}, {"layer", 0}, {"head", 1}});
  ASSERT_EQ(in.status, 200) << in.text;
  const json& next = in.body["tokens"].back()["next"];
  ASSERT_EQ(next.size(), 3u);
  ASSERT_EQ(lp["top_logprobs"][0].size(), 3u);
  for (const json& n : next) {
    const std::string token = n["text"];
    ASSERT_TRUE(lp["top_logprobs"][0].contains(token)) << token;
    EXPECT_NEAR(std::exp(lp["top_logprobs"][0][token].get<double>()), n["prob"].get<double>(), 2e-4) << token;
  }
  // Greedy picks the most likely token.
  EXPECT_EQ(lp["tokens"][0], next[0]["text"]);
  // Attention: row i covers tokens 0..i and sums to 1.
  const json& att = in.body["attention"];
  ASSERT_EQ(att.size(), in.body["tokens"].size());
  for (size_t i = 0; i < att.size(); ++i) {
    ASSERT_EQ(att[i].size(), i + 1);
    double sum = 0;
    for (const auto& w : att[i]) sum += w.get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-3);
  }
  EXPECT_EQ(post(c, "/v1/inspect", json{{"text", "x"}, {"layer", 2}}).status, 400);  // the model has 2 layers
  // gpt explain's view of the same text: its output distribution is the one above.
  const HttpResult ex = post(c, "/v1/explain", json{{"text", "The cat sat"}});
  ASSERT_EQ(ex.status, 200) << ex.text;
  EXPECT_EQ(ex.body["blocks"].size(), 2u);
  EXPECT_NEAR(ex.body["output"]["top"][0]["prob"].get<double>(), next[0]["prob"].get<double>(), 2e-4);
  EXPECT_EQ(post(c, "/v1/explain", json{{"text", "The cat sat"}, {"position", 99}}).status, 400);
  EXPECT_EQ(post(c, "/v1/inspect", json{{"text", std::string(300, 'a') + " b"}}).status, 400);  // over the context
}

TEST(Server, BadRequestsGetOpenAIsErrorShape) {
  ServerProcess server("--model " + tiny_model() + " --max-body 4096");
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  struct Case {
    std::string path, body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {"/v1/completions", "{not json", 400, ""},
      {"/v1/completions", "{\"prompt\": \"\xff\xfe\"}", 400, ""},
      {"/v1/completions", "[1, 2]", 400, ""},
      {"/v1/completions", R"({"prompt": "x", "temperature": "hot"})", 400, "temperature"},
      {"/v1/completions", R"({"prompt": "x", "model": "gpt-4"})", 404, "model"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": 64})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": -3})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": "x", "n": 9})", 400, "n"},
      {"/v1/completions", R"({"prompt": "x", "stop": ["a","b","c","d","e"]})", 400, "stop"},
      {"/v1/completions", R"({"prompt": ")" + std::string(100, 'x') + " " + std::string(100, 'y') + R"("})", 400, "prompt"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})", 400, "messages"},
      {"/tokenize", R"({"content": 5})", 400, "content"},
      {"/detokenize", R"({"tokens": [1, 99999999]})", 400, "tokens"},
      {"/v1/nothing", "{}", 404, ""},
      {"/v1/completions", R"({"prompt": "x", "stop": )" + std::string(100, '[') + std::string(100, ']') + "}", 400, ""},
      {"/v1/completions", R"({"prompt": ")" + std::string(3000, 'a') + R"("})", 400, "prompt"},  // > 64 x 32 bytes
      {"/tokenize", R"({"content": "x", "with_pieces": 3})", 400, "with_pieces"},
      {"/v1/completions", "{\"prompt\": \"" + std::string(5000, 'a') + "\"}", 413, ""},
  };
  for (const Case& k : cases) {
    const HttpResult r = post(c, k.path, k.body);
    EXPECT_EQ(r.status, k.status) << k.path << " " << k.body.substr(0, 80) << " -> " << r.text;
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << r.text;
    const json& e = r.body["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty());
    EXPECT_TRUE(e["type"].is_string());
    EXPECT_TRUE(e.contains("param") && e.contains("code"));
    if (!k.param.empty()) {
      EXPECT_EQ(e["param"], k.param) << r.text;
    }
  }
  // The server is still there, and counted them.
  EXPECT_EQ(get(c, "/health").status, 200);
  const std::string metrics = get(c, "/metrics").text;
  EXPECT_NE(metrics.find("gptcpp_requests_total{endpoint=\"/v1/completions\",status=\"400\"}"), std::string::npos);
  EXPECT_NE(metrics.find("gptcpp_requests_total{endpoint=\"(error)\",status=\"413\"}"), std::string::npos);
}

TEST(Server, EndpointsForModelsTokensHealthMetricsAndThePage) {
  ServerProcess server("--model " + tiny_model() + " --alias tiny");
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  const HttpResult models = get(c, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.body["object"], "list");
  EXPECT_EQ(models.body["data"][0]["id"], "tiny");
  EXPECT_EQ(get(c, "/v1/models/tiny").body["id"], "tiny");
  EXPECT_EQ(get(c, "/v1/models/other").status, 404);
  EXPECT_EQ(post(c, "/v1/completions", json{{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 1}}).status, 200);
  const HttpResult ids = post(c, "/tokenize", json{{"content", "Hello, world"}, {"with_pieces", true}});
  ASSERT_EQ(ids.status, 200);
  json tokens = json::array();
  for (const auto& t : ids.body["tokens"]) tokens.push_back(t["id"]);
  EXPECT_EQ(ids.body["tokens"][1]["piece"], ",");
  EXPECT_EQ(post(c, "/detokenize", json{{"tokens", tokens}}).body["content"], "Hello, world");
  EXPECT_EQ(get(c, "/health").body["status"], "ok");
  const HttpResult page = get(c, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.text.find("<title>gpt.cpp</title>"), std::string::npos);
  const std::string metrics = get(c, "/metrics").text;
  for (const char* name : {"gptcpp_queue_length", "gptcpp_running_sequences", "gptcpp_kv_pages_used",
                           "gptcpp_generated_tokens_total", "gptcpp_request_seconds_count",
                           "gptcpp_time_to_first_token_seconds_count"}) {
    EXPECT_GE(metric(metrics, name), 0) << name;
  }
  EXPECT_EQ(metric(metrics, "gptcpp_generated_tokens_total"), 1);
}

TEST(Server, AnApiKeyIsRequiredWhereItIsSet) {
  ServerProcess server("--model " + tiny_model() + " --api-key sesame");
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  const json req = {{"prompt", "x"}, {"max_tokens", 1}};
  const HttpResult none = post(c, "/v1/completions", req);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.body["error"]["type"], "authentication_error");
  EXPECT_EQ(post(c, "/v1/completions", req, {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(get(c, "/v1/models").status, 401);
  EXPECT_EQ(get(c, "/metrics").status, 401);
  EXPECT_EQ(post(c, "/v1/completions", req, {{"Authorization", "Bearer sesame"}}).status, 200);
  EXPECT_EQ(get(c, "/health").status, 200);  // for load balancers
  EXPECT_EQ(get(c, "/").status, 200);        // the page asks for the key itself
}

TEST(Server, AClientThatHangsUpHasItsSequenceCancelled) {
  ServerProcess server("--model " + slow_model() + " --threads 1");
  ASSERT_GT(server.port(), 0) << server.log();
  auto c = server.client();
  for (const bool stream : {true, false}) {
    RawConnection conn(server.port(), "/v1/completions",
                       json{{"prompt", "The"}, {"max_tokens", 1000}, {"stream", stream}}.dump());
    if (stream) {
      conn.read_until("data: ");  // the first token came
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    conn.close();
    // Cancelled before the next step: far fewer than 1,000 tokens, and nothing left running.
    double running = 1;
    std::string metrics;
    for (int i = 0; i < 100 && running != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      metrics = get(c, "/metrics").text;
      running = metric(metrics, "gptcpp_running_sequences");
    }
    EXPECT_EQ(running, 0) << metrics;
    EXPECT_EQ(metric(metrics, "gptcpp_requests_cancelled_total"), stream ? 1 : 2);
    EXPECT_EQ(metric(metrics, "gptcpp_kv_pages_used"), 0);
  }
  EXPECT_LT(metric(get(c, "/metrics").text, "gptcpp_generated_tokens_total"), 600);
}

TEST(Server, AFullQueueAnswers429WithRetryAfter) {
  ServerProcess server("--model " + slow_model() + " --threads 1 --parallel 1 --max-n 1 --max-queue 1");
  ASSERT_GT(server.port(), 0) << server.log();
  const std::string long_request = json{{"prompt", "The"}, {"max_tokens", 1000}, {"stream", true}}.dump();
  RawConnection running(server.port(), "/v1/completions", long_request);
  running.read_until("data: ");  // it holds the one slot
  RawConnection waiting(server.port(), "/v1/completions", long_request);
  auto c = server.client();
  std::string metrics;
  for (int i = 0; i < 100 && metric(metrics, "gptcpp_queue_length") != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    metrics = get(c, "/metrics").text;
  }
  ASSERT_EQ(metric(metrics, "gptcpp_queue_length"), 1);
  const HttpResult refused = post(c, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1}});
  EXPECT_EQ(refused.status, 429) << refused.text;
  EXPECT_EQ(refused.retry_after, "1");
  EXPECT_EQ(refused.body["error"]["type"], "rate_limit_error");
  running.close();  // the waiting one starts
  waiting.read_until("data: ");
  waiting.close();
}

TEST(Server, SigtermEndsRunningStreamsCleanlyAndExitsZero) {
  ServerProcess server("--model " + slow_model() + " --threads 1 --drain-seconds 0.2");
  ASSERT_GT(server.port(), 0) << server.log();
  RawConnection conn(server.port(), "/v1/completions", json{{"prompt", "The"}, {"max_tokens", 1000}, {"stream", true}}.dump());
  conn.read_until("data: ");
  server.signal(SIGTERM);
  const std::string got = conn.read_until("data: [DONE]");
  EXPECT_NE(got.find("data: [DONE]"), std::string::npos) << got.substr(got.size() > 400 ? got.size() - 400 : 0);
  EXPECT_NE(got.find("\"finish_reason\":\"length\""), std::string::npos);
  conn.close();
  EXPECT_EQ(server.wait_exit(), 0) << server.log();  // (a second signal would end it at once)
  EXPECT_NE(server.log().find("SIGTERM"), std::string::npos);
}

TEST(Server, BadFlagsAndAnAddressInUseAreOneLineErrors) {
  const auto bad = run_gpt("serve --model " + tiny_model() + " --parallel 0");
  EXPECT_EQ(bad.exit_code, 2);
  const auto template_unknown = run_gpt("serve --model " + tiny_model() + " --chat-template vicuna --port 0");
  EXPECT_EQ(template_unknown.exit_code, 1);
  EXPECT_NE(template_unknown.err.find("unknown chat template"), std::string::npos);
  ServerProcess first("--model " + tiny_model());
  ASSERT_GT(first.port(), 0);
  const auto taken = run_gpt("serve --model " + tiny_model() + " --port " + std::to_string(first.port()));
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_NE(taken.err.find("cannot listen"), std::string::npos) << taken.err;
}

}  // namespace
}  // namespace gpt::testing
