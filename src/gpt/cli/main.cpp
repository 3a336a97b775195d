// gpt: train, evaluate and run GPT language models.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "gpt/cli/commands.h"
#include "gpt/distributed/communicator.h"
#include "gpt/kernels/build_info.h"
#include "gpt/util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"gpt.cpp: train, evaluate and run GPT language models", "gpt"};
  app.require_subcommand(1, 1);
  app.set_version_flag("--version", [] { return gpt::build_info(); },
                       "Print the version, the commit, and what this build uses on this CPU");
  // A flag given twice takes its last value, so scripts can append overrides.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::vector<gpt::cli::Command> commands = {
      gpt::cli::add_train_command(app),
      gpt::cli::add_sft_command(app),
      gpt::cli::add_reward_command(app),
      gpt::cli::add_dpo_command(app),
      gpt::cli::add_rlhf_command(app),
      gpt::cli::add_kl_command(app),
      gpt::cli::add_eval_command(app),
      gpt::cli::add_generate_command(app),
      gpt::cli::add_chat_command(app),
      gpt::cli::add_attention_command(app),
      gpt::cli::add_explain_command(app),
      gpt::cli::add_plot_command(app),
      gpt::cli::add_tokenize_command(app),
      gpt::cli::add_convert_command(app),
      gpt::cli::add_serve_command(app),
  };
  if (argc == 1) {  // bare `gpt`: show what it can do
    std::printf("%s", app.help().c_str());
    return 0;
  }
  if (argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const auto& c : commands) {
      known = known || c.app->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + c.app->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "gpt: error: unknown command '%s' (expected one of: %s)\n", argv[1], names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "gpt: error: %s (see gpt --help)\n", e.what());
    return 2;
  }
  // GPT_PARSE_ONLY=1: check the command line and stop (the tests check every
  // --help example this way; --help itself would stop before unknown flags are seen).
  if (const char* p = std::getenv("GPT_PARSE_ONLY"); p != nullptr && std::string(p) == "1") return 0;
  // Under mpirun, an error on one rank must stop them all, not leave them waiting.
  gpt::Communicator& comm = gpt::Communicator::world();
  // On a terminal, first clear a progress line the error would otherwise share.
  const char* clear = ::isatty(STDERR_FILENO) ? "\r\033[K" : "";
  // Every fatal path prints one line and, under mpirun, ends every rank: a rank
  // that returned alone would leave the others waiting in a collective forever.
  auto fail = [&](const char* message) {
    if (comm.distributed()) comm.abort(message);  // prints the message, does not return
    std::fprintf(stderr, "%sgpt: error: %s\n", clear, message);
    return 1;
  };
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const std::bad_alloc&) {
    return fail("out of memory");
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown internal error");
  }
  return 1;
}
