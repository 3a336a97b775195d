// A real `gpt serve` for tests: started on a free loopback port, talked to over
// HTTP, stopped with a signal.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace gpt::testing {

class ServerProcess {
 public:
  // `args`: everything after `gpt serve` except --port. Waits (up to 60 s) for
  // the "listening on" line; port() is 0 if it never came.
  explicit ServerProcess(const std::string& args) {
    log_ = (dir_ / "serve.log").string();
    const std::string cmd = "exec " + std::string(GPT_BINARY) + " serve --port 0 " + args + " </dev/null >/dev/null 2>" + log_;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 600 && port_ == 0; ++i) {
      std::smatch m;
      const std::string text = log();
      if (std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
        break;
      }
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // it exited: an error on the command line
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) stop(SIGKILL);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  httplib::Client client(int timeout_seconds = 60) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(timeout_seconds, 0);
    c.set_write_timeout(timeout_seconds, 0);
    return c;
  }
  // Sends `sig` and waits (up to 30 s, then SIGKILL); the exit status.
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    return wait_exit();
  }
  // Waits for the server to exit by itself (up to 30 s, then SIGKILL); the exit status.
  int wait_exit() {
    if (pid_ <= 0) return -1;
    int status = 0;
    for (int i = 0; i < 300; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return 137;
  }
  void signal(int sig) const { ::kill(pid_, sig); }

 private:
  TempDir dir_;
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct HttpResult {
  int status = 0;
  nlohmann::json body;
  std::string text;
  std::string retry_after;
};

inline HttpResult post(httplib::Client& c, const std::string& path, const std::string& body,
                       const httplib::Headers& headers = {}) {
  HttpResult r;
  auto res = c.Post(path.c_str(), headers, body, "application/json");
  if (!res) return r;
  r.status = res->status;
  r.text = res->body;
  r.body = nlohmann::json::parse(res->body, nullptr, false);
  r.retry_after = res->get_header_value("Retry-After");
  return r;
}
inline HttpResult post(httplib::Client& c, const std::string& path, const nlohmann::json& body,
                       const httplib::Headers& headers = {}) {
  return post(c, path, body.dump(), headers);
}
inline HttpResult get(httplib::Client& c, const std::string& path, const httplib::Headers& headers = {}) {
  HttpResult r;
  auto res = c.Get(path.c_str(), headers);
  if (!res) return r;
  r.status = res->status;
  r.text = res->body;
  r.body = nlohmann::json::parse(res->body, nullptr, false);
  return r;
}

// The data lines of a server-sent event stream ("[DONE]" kept as text).
inline std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    const std::string event = body.substr(at, end - at);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    at = end + 2;
  }
  return out;
}

// A value of the Prometheus text (the first sample of that name), or -1.
inline double metric(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

}  // namespace gpt::testing
