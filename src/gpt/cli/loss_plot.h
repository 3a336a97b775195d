// Drawing a training log: `gpt plot` and the loss curve `gpt train` leaves beside
// its checkpoint. (Training writes the log; drawing is the command line's.)
#pragma once
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

}  // namespace gpt::cli
