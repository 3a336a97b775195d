// The `gpt` command line: a thin layer over the library. Each subcommand lives in
// its own file and registers itself here.
#pragma once
#include <functional>

#include <CLI/CLI.hpp>

namespace gpt::cli {

// A registered subcommand: run() is called when it was selected on the command line.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_train_command(CLI::App& parent);
Command add_sft_command(CLI::App& parent);
Command add_reward_command(CLI::App& parent);
Command add_dpo_command(CLI::App& parent);
Command add_rlhf_command(CLI::App& parent);
Command add_kl_command(CLI::App& parent);
Command add_eval_command(CLI::App& parent);
Command add_generate_command(CLI::App& parent);
Command add_chat_command(CLI::App& parent);
Command add_attention_command(CLI::App& parent);
Command add_plot_command(CLI::App& parent);
Command add_tokenize_command(CLI::App& parent);
Command add_convert_command(CLI::App& parent);
Command add_serve_command(CLI::App& parent);
Command add_explain_command(CLI::App& parent);

}  // namespace gpt::cli
