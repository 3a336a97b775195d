// The server's counters, gauges and latency histograms, written in Prometheus'
// text format for /metrics. Thread-safe: handlers and the engine thread update it.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace gpt::serving {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  void write(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void request(const std::string& endpoint, int status);
  void tokens(int64_t prompt, int64_t generated);
  void cancelled();  // a client went away before its answer was done
  void latency(double request_seconds, double first_token_seconds);
  // Gauges are read from the engine when /metrics is asked (see server.cpp).
  struct Gauges {
    int64_t queued = 0, running_sequences = 0, kv_pages_used = 0, kv_pages_total = 0, kv_pages_cached = 0;
    int64_t preemptions = 0, reused_positions = 0;
  };
  std::string prometheus(const Gauges& g) const;
  int64_t cancelled_total() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0, cancelled_ = 0;
  Histogram request_seconds_, first_token_seconds_;
};

}  // namespace gpt::serving
