// gpt chat: an interactive loop. A model with a chat template (gpt sft writes
// one) gets a conversation: each line is a user message, the reply ends at the
// template's end-of-turn marker, and the conversation is kept between turns
// (the oldest turns give way when it outgrows the context). A model without
// one continues the running text. --message answers once and exits.
// Commands: /reset (forget the conversation), /quit (or end of input).
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <iostream>
#include <sstream>
#include <memory>
#include <string>

#include <omp.h>

#include "gpt/cli/commands.h"
#include "gpt/cli/sampling_flags.h"
#include "gpt/generation/generate.h"
#include "gpt/cli/model_flags.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"

namespace gpt::cli {

Command add_chat_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("chat", "Talk to a model: each line you type is continued");
  app->footer("\nExamples:\n  gpt chat --model out/mymodel\n  gpt chat --model gpt2-q8_0.gguf --temperature 0.7 --top-k 40");
  struct Options {
    ModelFlags model;
    GenerateOptions gen;
    int threads = 0;
    std::string message, messages, system, chat_template;
  };
  auto o = std::make_shared<Options>();
  o->gen.max_new_tokens = 200;
  add_model_flags(app, o->model);
  add_kv_cache_flag(app, o->model);
  add_sampling_flags(app, o->gen);
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);
  auto* one = app->add_option("--message", o->message, "Answer this one message, print the reply and exit (for scripts)");
  app->add_option("--messages", o->messages,
                  "Answer each line of this file as a conversation of its own, one reply per line "
                  "(newlines in a reply written as \\n); the seed advances by one per line")
      ->excludes(one);
  app->add_option("--system", o->system, "A system message that opens the conversation (chat-template models)");
  app->add_option("--chat-template", o->chat_template,
                  "Use this template (chatml, llama3) instead of the one the model declares");
  auto run = [o]() -> int {
    validate_sampling_flags(o->gen);
    ComputeContext compute(compute_options(o->model, o->threads));
    const ComputeScope scope(compute);
    OpenedModel m = open_model(o->model, /*dequantize=*/false, /*inference=*/true);
    std::optional<ChatTemplate> tmpl = m.chat_template;
    if (!o->chat_template.empty()) {
      tmpl = ChatTemplate::named(o->chat_template);
    } else {
      GPT_CHECK(m.chat_template_problem.empty(), m.chat_template_problem);
    }
    GPT_CHECK(o->system.empty() || tmpl.has_value(),
              "--system needs a model with a chat template (gpt sft makes one; or pass --chat-template)");
    if (auto bad = find_invalid_utf8(o->system)) throw Error("--system is not valid UTF-8 (offset " + std::to_string(*bad) + ")");
    const InferenceWeights weights = m.inference_weights();
    InferenceSession session(weights, o->model.kv_cache_type(), compute.options());
    const int64_t context = m.config().block_size;
    std::vector<ChatMessage> conversation;
    if (!o->system.empty()) conversation.push_back({"system", o->system});
    uint64_t turn = 0;

    // One user message in, the reply printed as it comes (unless `quiet`: it is
    // only returned); the conversation grows.
    auto answer = [&](const std::string& line, bool quiet = false) -> std::string {
      if (auto bad = find_invalid_utf8(line)) throw Error("input is not valid UTF-8 (offset " + std::to_string(*bad) + ")");
      GenerateOptions gen = o->gen;
      gen.seed = o->gen.seed + turn++;
      std::function<void(const std::string&)> print = [](const std::string& piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      };
      if (quiet) print = {};
      if (!tmpl) {
        if (gen.stop.empty()) gen.stop = {"\n\n"};
        return generate(session, *m.tokenizer, m.tokenizer->encode(line + "\n"), gen, print).text;
      }
      gen.stop.push_back(tmpl->end_of_turn());
      // The conversation with this message; the oldest exchanges (a user message and
      // its reply, never the system message) give way until the prompt leaves room to answer.
      std::vector<ChatMessage> turns = conversation;
      turns.push_back({"user", line});
      const size_t first = !turns.empty() && turns[0].role == "system" ? 1 : 0;
      const int64_t room = std::min<int64_t>(gen.max_new_tokens, context / 2);
      std::vector<int32_t> ids = tmpl->encode(turns, *m.tokenizer);
      while (static_cast<int64_t>(ids.size()) + room > context && turns.size() > first + 1) {
        const size_t drop = turns.size() > first + 2 && turns[first + 1].role == "assistant" ? 2 : 1;
        turns.erase(turns.begin() + static_cast<std::ptrdiff_t>(first),
                    turns.begin() + static_cast<std::ptrdiff_t>(first + drop));
        ids = tmpl->encode(turns, *m.tokenizer);
      }
      GPT_CHECK(static_cast<int64_t>(ids.size()) < context,
                std::string(first == 1 ? "the system message and this message are" : "this message is") +
                    " too long for the model's context of " + std::to_string(context) + " tokens");
      // The reply stops where the context ends (no sliding window mid-answer).
      gen.max_new_tokens = std::min<int64_t>(gen.max_new_tokens, context - static_cast<int64_t>(ids.size()));
      session.reset();
      const GenerateResult r = generate(session, *m.tokenizer, ids, gen, print);
      turns.push_back({"assistant", r.text});
      conversation = std::move(turns);
      return r.text;
    };

    if (!o->message.empty()) {
      answer(o->message);
      std::fputc('\n', stdout);
      return 0;
    }
    if (!o->messages.empty()) {  // each line its own conversation, one reply per line
      std::istringstream lines(read_text_file(o->messages));
      std::string text;
      while (std::getline(lines, text)) {
        if (!text.empty() && text.back() == '\r') text.pop_back();  // CRLF files
        conversation.clear();
        if (!o->system.empty()) conversation.push_back({"system", o->system});
        std::string reply, raw;
        try {
          raw = answer(text, /*quiet=*/true);
        } catch (const Error& e) {  // one bad line: an empty reply keeps the lines aligned
          std::fprintf(stderr, "gpt: error: %s\n", e.what());
        }
        for (char ch : raw) {
          if (ch == '\n') reply += "\\n";
          else if (ch == '\\') reply += "\\\\";
          else reply += ch;
        }
        std::printf("%s\n", reply.c_str());
      }
      return 0;
    }
    const bool interactive = ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);
    if (interactive) {
      std::fprintf(stderr, tmpl ? "gpt chat: type a message and press Enter (template %s). /reset forgets, /quit ends.\n"
                                : "gpt chat: type text and press Enter; the model continues it. /reset forgets, /quit ends.\n",
                   tmpl ? tmpl->name().c_str() : "");
    }
    std::string line;
    while (true) {
      if (interactive) {
        std::fputs("\n> ", stdout);
        std::fflush(stdout);
      }
      if (!std::getline(std::cin, line)) break;
      if (line == "/quit" || line == "/exit") break;
      if (line == "/reset") {
        session.reset();
        conversation.clear();
        if (!o->system.empty()) conversation.push_back({"system", o->system});
        if (interactive) std::fputs("(conversation forgotten)\n", stdout);
        continue;
      }
      if (line.empty()) continue;
      try {
        answer(line);
        std::fputc('\n', stdout);
        std::fflush(stdout);
      } catch (const Error& e) {
        // A bad line should not end the conversation.
        std::fprintf(stderr, "gpt: error: %s\n", e.what());
        if (!interactive) return 1;
      }
    }
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
