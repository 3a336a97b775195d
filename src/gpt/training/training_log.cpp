#include "gpt/training/training_log.h"

#include <algorithm>

#include <cmath>
#include <fstream>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {
namespace fs = std::filesystem;

nlohmann::json LogEntry::to_json() const {
  nlohmann::json j = {{"step", step}, {"loss", loss}};
  if (val_loss) j["val_loss"] = *val_loss;
  j["lr"] = lr;
  j["grad_norm"] = grad_norm;
  j["tokens_per_sec"] = std::round(tokens_per_sec * 10) / 10;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

std::vector<LogEntry> read_training_log(const std::string& path) {
  std::error_code ec;
  GPT_CHECK(fs::exists(path, ec), "file not found: " + path);
  std::ifstream in(path);
  std::vector<LogEntry> log;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      if (in.peek() == EOF) break;  // a line torn by a killed run
      throw Error(path + ":" + std::to_string(line_no) + ": not a JSON object");
    }
    GPT_CHECK(j.is_object() && j.contains("step") && j["step"].is_number(),
              path + ":" + std::to_string(line_no) + ": not a training log entry (no \"step\")");
    LogEntry e;
    try {
      e.step = j["step"].get<int64_t>();
      if (j.contains("loss") && j["loss"].is_number()) e.loss = j["loss"].get<float>();
      if (j.contains("val_loss") && j["val_loss"].is_number()) e.val_loss = j["val_loss"].get<float>();
      e.lr = j.value("lr", 0.0f);
      e.grad_norm = j.value("grad_norm", 0.0f);
      e.tokens_per_sec = j.value("tokens_per_sec", 0.0);
      for (auto it = j.begin(); it != j.end(); ++it) {
        static const char* kKnown[] = {"step", "loss", "val_loss", "lr", "grad_norm", "tokens_per_sec"};
        if (std::none_of(std::begin(kKnown), std::end(kKnown), [&](const char* k) { return it.key() == k; }))
          e.extra[it.key()] = it.value();
      }
    } catch (const nlohmann::json::exception&) {
      throw Error(path + ":" + std::to_string(line_no) + ": a field of the log entry is not a number");
    }
    log.push_back(e);
  }
  return log;
}

TrainingLog::TrainingLog(fs::path path, std::optional<int64_t> resume_from_step) : path_(std::move(path)) {
  std::error_code ec;
  if (path_.has_parent_path()) fs::create_directories(path_.parent_path(), ec);
  if (!resume_from_step) {
    fs::remove(path_, ec);
    return;
  }
  if (!fs::exists(path_, ec)) return;
  // Keep the lines of steps <= the checkpoint's (a resumed run rewrites what follows).
  std::ifstream in(path_);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.is_object() && j.value("step", int64_t(0)) <= *resume_from_step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a torn last line from a killed run: drop it
    }
  }
  write_file_atomic(path_, kept);
}

void TrainingLog::append(const LogEntry& entry) { append_line(path_, entry.to_json().dump()); }

}  // namespace gpt
