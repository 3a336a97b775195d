// --prompt / --prompt-file / standard input, shared by the commands that read a prompt.
#pragma once
#include <unistd.h>

#include <iostream>
#include <iterator>
#include <string>

#include <CLI/CLI.hpp>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/utf8.h"

namespace gpt::cli {

// The prompt text: --prompt-file's contents, else --prompt when given (`prompt_option`),
// else standard input when it is not a terminal. gpt::Error for none, an empty one,
// or invalid UTF-8.
inline std::string read_prompt(const std::string& prompt, const std::string& prompt_file,
                               const CLI::Option* prompt_option) {
  std::string text = prompt;
  if (!prompt_file.empty()) {
    text = read_text_file(prompt_file);
  } else if (prompt_option->count() == 0) {
    GPT_CHECK(!::isatty(STDIN_FILENO), "no prompt: pass --prompt TEXT, --prompt-file FILE or pipe text in");
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  GPT_CHECK(!text.empty(), "the prompt is empty");
  if (auto bad = find_invalid_utf8(text)) {
    throw Error("the prompt is not valid UTF-8 (first bad byte at offset " + std::to_string(*bad) + ")");
  }
  return text;
}

}  // namespace gpt::cli
