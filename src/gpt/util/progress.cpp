#include "gpt/util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace gpt {

ProgressLine::ProgressLine(int64_t total, int64_t start, int64_t plain_every)
    : total_(total), start_(start), plain_every_(plain_every > 0 ? plain_every : 1),
      tty_(::isatty(STDERR_FILENO) != 0), t0_(std::chrono::steady_clock::now()) {}

std::string ProgressLine::format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--";
  char buf[32];
  const int total = static_cast<int>(s + 0.5);
  if (total >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", total / 3600, (total / 60) % 60);
  else if (total >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", total / 60, total % 60);
  else std::snprintf(buf, sizeof buf, "%ds", total);
  return buf;
}

void ProgressLine::update(int64_t done, const std::string& fields, bool force_newline) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const int64_t progressed = done - start_;
  const double eta = progressed > 0 ? elapsed / progressed * (total_ - done) : -1;
  const int width = 24;
  const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  char head[96];
  std::snprintf(head, sizeof head, "[%s] %lld/%lld", bar.c_str(), static_cast<long long>(done),
                static_cast<long long>(total_));
  std::string line = std::string(head) + " | " + fields + " | ETA " + format_duration(eta);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    if (force_newline) std::fprintf(stderr, "\n");
    dirty_ = !force_newline;
  } else if (force_newline || done % plain_every_ == 0 || done == total_) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (tty_ && dirty_) std::fprintf(stderr, "\n");
  dirty_ = false;
  std::fflush(stderr);
}

}  // namespace gpt
