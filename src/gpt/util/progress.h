// A one-line live progress display on stderr: bar, step, rate, ETA and whatever
// fields the caller adds. On a terminal it redraws in place; otherwise it prints a
// line every `plain_every` updates so logs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace gpt {

class ProgressLine {
 public:
  ProgressLine(int64_t total, int64_t start = 0, int64_t plain_every = 100);
  // `done` units finished so far; `fields` is appended after the bar.
  void update(int64_t done, const std::string& fields, bool force_newline = false);
  // The end moved (a run whose time budget fixed its last step).
  void set_total(int64_t total) { total_ = total; }
  void finish();
  static std::string format_duration(double seconds);

 private:
  int64_t total_;
  int64_t start_;
  int64_t plain_every_;
  bool tty_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace gpt
