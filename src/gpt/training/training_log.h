// The training log: one JSON object per optimizer step, appended as training
// goes (readable while it runs, and by `gpt plot`).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpt {

struct LogEntry {
  int64_t step = 0;
  float loss = 0;
  std::optional<float> val_loss;
  float lr = 0;
  float grad_norm = 0;
  double tokens_per_sec = 0;
  nlohmann::json extra = nlohmann::json::object();  // what else a trainer logs (accuracy, margin, ...)
  nlohmann::json to_json() const;
};

// Reads a JSON-lines training log (a torn last line is skipped); throws gpt::Error
// for a missing file or a line that is not a log entry.
std::vector<LogEntry> read_training_log(const std::string& path);

// Appends entries to a log file. A resumed run first drops what follows its
// checkpoint's step; a new run starts the file afresh.
class TrainingLog {
 public:
  TrainingLog(std::filesystem::path path, std::optional<int64_t> resume_from_step);
  void append(const LogEntry& entry);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace gpt
