// cpp-httplib (what gpt serve uses) against GNU libmicrohttpd on the server's two
// kinds of traffic, each from Debian: a small JSON request answered with a small
// JSON body (/tokenize, errors, non-streamed completions), and a stream of 64
// server-sent events (a streamed completion, without the model). Drive it with
// wrk from another shell:
//   build/bench/bench_http_servers --library httplib --port 18090 &
//   wrk -t2 -c16 -d10s -s bench/http_post.lua http://127.0.0.1:18090/echo
//   wrk -t2 -c16 -d10s http://127.0.0.1:18090/stream
// bench/http_servers.sh runs both libraries under both loads.
#include <microhttpd.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <httplib.h>

namespace {

const std::string kAnswer =
    R"({"id":"cmpl-0123456789abcdef","object":"text_completion","created":1796428409,"model":"model",)"
    R"("choices":[{"index":0,"text":" and the quick brown fox jumps over the lazy dog","finish_reason":"length"}],)"
    R"("usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}})";
const std::string kEvent =
    R"(data: {"id":"cmpl-0123456789abcdef","object":"text_completion","created":1796428409,"model":"model",)"
    R"("choices":[{"index":0,"text":" fox","logprobs":null,"finish_reason":null}]})"
    "\n\n";
constexpr int kEvents = 64;

int serve_httplib(int port, int threads) {
  httplib::Server s;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_tcp_nodelay(true);  // as gpt serve does (small writes must not wait for an ACK)
  s.Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(req.body.empty() ? "{}" : kAnswer, "application/json");
  });
  s.Get("/stream", [](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("text/event-stream", [](size_t, httplib::DataSink& sink) {
      for (int i = 0; i < kEvents; ++i) {
        if (!sink.write(kEvent.data(), kEvent.size())) return false;
      }
      sink.done();
      return true;
    });
  });
  return s.listen("127.0.0.1", port) ? 0 : 1;
}

// libmicrohttpd: the body arrives over several calls; the answer goes once it is whole.
struct Upload {
  std::string body;
};
ssize_t stream_events(void* cls, uint64_t, char* buf, size_t max) {
  int& sent = *static_cast<int*>(cls);
  if (sent == kEvents) return MHD_CONTENT_READER_END_OF_STREAM;
  if (max < kEvent.size()) return 0;
  std::memcpy(buf, kEvent.data(), kEvent.size());
  ++sent;
  return static_cast<ssize_t>(kEvent.size());
}
MHD_Result handle(void*, MHD_Connection* c, const char* url, const char* method, const char*, const char* data,
                  size_t* size, void** state) {
  if (std::strcmp(method, "POST") == 0) {
    if (*state == nullptr) {
      *state = new Upload;
      return MHD_YES;
    }
    auto* up = static_cast<Upload*>(*state);
    if (*size > 0) {
      up->body.append(data, *size);
      *size = 0;
      return MHD_YES;
    }
    const std::string& body = up->body.empty() ? std::string("{}") : kAnswer;
    MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    const MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    delete up;
    *state = nullptr;
    return ok;
  }
  if (std::strcmp(url, "/stream") != 0) return MHD_NO;
  auto* sent = new int(0);
  MHD_Response* r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_events, sent,
                                                      [](void* p) { delete static_cast<int*>(p); });
  MHD_add_response_header(r, "Content-Type", "text/event-stream");
  const MHD_Result ok = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return ok;
}

int serve_microhttpd(int port, int threads) {
  MHD_Daemon* d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, static_cast<uint16_t>(port),
                                   nullptr, nullptr, &handle, nullptr, MHD_OPTION_THREAD_POOL_SIZE,
                                   static_cast<unsigned>(threads), MHD_OPTION_CONNECTION_LIMIT, 1024u,
                                   MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
  if (d == nullptr) return 1;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  int sig;
  sigwait(&set, &sig);
  MHD_stop_daemon(d);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string library = "httplib";
  int port = 18090, threads = 24;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--library") library = argv[i + 1];
    else if (flag == "--port") port = std::stoi(argv[i + 1]);
    else if (flag == "--threads") threads = std::stoi(argv[i + 1]);
  }
  std::fprintf(stderr, "bench_http_servers: %s on 127.0.0.1:%d, %d threads\n", library.c_str(), port, threads);
  if (library == "httplib") return serve_httplib(port, threads);
  if (library == "microhttpd") return serve_microhttpd(port, threads);
  std::fprintf(stderr, "unknown --library %s (httplib or microhttpd)\n", library.c_str());
  return 2;
}
