// Drawing a training log: `gpt plot` and the loss curve `gpt train` leaves beside
// its checkpoint. (Training writes the log; drawing is the command line's.)
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gpt/training/training_log.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/viz/svg.h"

namespace gpt::cli {

inline std::string training_log_svg(const std::vector<LogEntry>& log, const std::string& title) {
  std::vector<LossPoint> points;
  points.reserve(log.size());
  for (const auto& e : log) {
    points.push_back({e.step, static_cast<double>(e.loss),
                      e.val_loss ? std::optional<double>(*e.val_loss) : std::nullopt});
  }
  return loss_curve_svg(points, title);
}

inline void draw_training_log(const std::string& log_path, const std::string& svg_path, const std::string& title) {
  write_file_atomic(svg_path, training_log_svg(read_training_log(log_path), title));
}

// Any number a trainer logs (reward, kl, accuracy, ...), with "val_<metric>" as the
// held-out series where the log has it. gpt::Error if no entry has the metric.
inline void draw_log_metric(const std::string& log_path, const std::string& metric, const std::string& svg_path,
                            const std::string& title) {
  if (metric == "loss") return draw_training_log(log_path, svg_path, title);
  std::vector<LossPoint> points;
  for (const LogEntry& e : read_training_log(log_path)) {
    LossPoint p{e.step, std::nullopt, std::nullopt};
    if (auto it = e.extra.find(metric); it != e.extra.end() && it->is_number()) p.loss = it->get<double>();
    if (auto it = e.extra.find("val_" + metric); it != e.extra.end() && it->is_number()) p.val_loss = it->get<double>();
    if (p.loss || p.val_loss) points.push_back(p);
  }
  GPT_CHECK(!points.empty(), log_path + " has no \"" + metric + "\" values");
  write_file_atomic(svg_path, loss_curve_svg(points, title, metric));
}

// Runs side by side, or one run against time: each log's validation curve of
// `metric` where it has one, else its training curve (one log: both), against
// steps or against minutes of wall-clock (the `elapsed` seconds gpt train logs),
// with an optional target line. gpt::Error for a log without the metric, or
// without elapsed times when minutes are asked for.
inline void draw_log_comparison(const std::vector<std::string>& logs, const std::vector<std::string>& labels,
                                const std::string& metric, bool minutes, std::optional<double> target,
                                const std::string& svg_path, const std::string& title) {
  GPT_CHECK(labels.empty() || labels.size() == logs.size(),
            "--label: " + std::to_string(labels.size()) + " labels for " + std::to_string(logs.size()) + " logs");
  const std::string val_key = metric == "loss" ? "val_loss" : "val_" + metric;
  std::vector<CurveSeries> series;
  for (size_t i = 0; i < logs.size(); ++i) {
    // Unnamed runs by their directory (out/run/train_log.jsonl -> out/run).
    std::string name = labels.empty() ? std::filesystem::path(logs[i]).parent_path().string() : labels[i];
    if (name.empty()) name = logs[i];
    const std::string prefix = labels.empty() ? std::string() : name + ": ";
    CurveSeries train{logs.size() == 1 ? prefix + "train " + metric : name, "train", {}, false, {}};
    CurveSeries val{logs.size() == 1 ? prefix + "validation " + metric : name, "val", {}, true, {}};
    for (const LogEntry& e : read_training_log(logs[i])) {
      double x = static_cast<double>(e.step);
      if (minutes) {
        const auto it = e.extra.find("elapsed");
        GPT_CHECK(it != e.extra.end() && it->is_number(), logs[i] + " has no elapsed times (gpt train writes them)");
        x = it->get<double>() / 60.0;
      }
      std::optional<double> y, v;
      if (metric == "loss") {
        y = e.loss;
        if (e.val_loss) v = *e.val_loss;
      } else {
        if (auto it = e.extra.find(metric); it != e.extra.end() && it->is_number()) y = it->get<double>();
        if (auto it = e.extra.find(val_key); it != e.extra.end() && it->is_number()) v = it->get<double>();
      }
      if (y) train.points.emplace_back(x, *y);
      if (v) val.points.emplace_back(x, *v);
    }
    GPT_CHECK(has_finite_point(train) || has_finite_point(val), logs[i] + " has no finite \"" + metric + "\" values");
    if (logs.size() == 1) {
      train.color = "#1f77b4";
      val.color = "#ff7f0e";
      series = {train, val};
    } else if (has_finite_point(val)) {
      series.push_back(val);
    } else {
      train.name += " (train)";
      series.push_back(train);
    }
  }
  const std::string y_label = metric == "loss" ? (logs.size() == 1 ? "loss (nats/token)" : "validation loss (nats/token)") : metric;
  write_file_atomic(svg_path, curves_svg(series, title, minutes ? "minutes" : "step", y_label, target));
}

}  // namespace gpt::cli
