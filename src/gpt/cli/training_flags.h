// What `gpt train` and `gpt sft` share: the optimisation flags, and a run
// (--config, --resume with overrides, progress, the loss plot, the summary line).
#pragma once
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "gpt/training/trainer.h"

namespace gpt::cli {

// Flags for every TrainOptions field both commands have (their help follows o.task).
void add_training_flags(CLI::App* app, TrainOptions& o, std::string& resume, std::string& config);
// `shape_flags` may not be combined with --init-from (the model decides them).
int run_training(CLI::App* app, const TrainOptions& o, const std::string& resume, const std::string& config,
                 const std::vector<std::string>& shape_flags);

}  // namespace gpt::cli
