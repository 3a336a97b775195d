#include "gpt/serving/metrics.h"

#include <cstdio>

namespace gpt::serving {
namespace {
std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
}  // namespace

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : request_seconds_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      first_token_seconds_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}) {}

void Metrics::request(const std::string& endpoint, int status) {
  const std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::tokens(int64_t prompt, int64_t generated) {
  const std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

void Metrics::cancelled() {
  const std::lock_guard lock(mutex_);
  ++cancelled_;
}

int64_t Metrics::cancelled_total() const {
  const std::lock_guard lock(mutex_);
  return cancelled_;
}

void Metrics::latency(double request_seconds, double first_token_seconds) {
  const std::lock_guard lock(mutex_);
  request_seconds_.observe(request_seconds);
  if (first_token_seconds >= 0) first_token_seconds_.observe(first_token_seconds);
}

std::string Metrics::prometheus(const Gauges& g) const {
  const std::lock_guard lock(mutex_);
  std::string out;
  auto counter = [&](const char* name, const char* help, int64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
           std::to_string(v) + "\n";
  };
  auto gauge = [&](const char* name, const char* help, int64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " +
           std::to_string(v) + "\n";
  };
  out += "# HELP gptcpp_requests_total HTTP requests answered, by endpoint and status.\n"
         "# TYPE gptcpp_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += "gptcpp_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  }
  counter("gptcpp_prompt_tokens_total", "Prompt tokens of accepted generation requests.", prompt_tokens_);
  counter("gptcpp_generated_tokens_total", "Tokens generated.", generated_tokens_);
  counter("gptcpp_requests_cancelled_total", "Generation requests whose client went away before the end.", cancelled_);
  counter("gptcpp_preemptions_total", "Sequences that gave their KV pages back to let older ones go on.", g.preemptions);
  counter("gptcpp_prompt_positions_reused_total", "Prompt positions read from the prefix cache instead of computed.",
          g.reused_positions);
  gauge("gptcpp_queue_length", "Requests waiting for a free slot.", g.queued);
  gauge("gptcpp_running_sequences", "Sequences decoding now.", g.running_sequences);
  gauge("gptcpp_kv_pages_used", "KV cache pages held by sequences.", g.kv_pages_used);
  gauge("gptcpp_kv_pages_cached", "KV cache pages kept only by the prefix cache.", g.kv_pages_cached);
  gauge("gptcpp_kv_pages_total", "KV cache pages in the pool.", g.kv_pages_total);
  request_seconds_.write(out, "gptcpp_request_seconds", "Time from a generation request to its last token.");
  first_token_seconds_.write(out, "gptcpp_time_to_first_token_seconds", "Time from a generation request to its first token.");
  return out;
}

}  // namespace gpt::serving
