// Errors that reach the user: one line, no stack trace. Everything that can fail
// because of input (files, flags, shapes) throws gpt::Error; the CLI prints it.
#pragma once
#include <stdexcept>
#include <string>

namespace gpt {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace gpt

// Throws gpt::Error(message) when `condition` is false. A macro so that the
// message (often a concatenation of strings) is built only when the check fails:
// checks sit in per-token and per-row paths that must not allocate.
#define GPT_CHECK(condition, ...)                                 \
  do {                                                            \
    if (!(condition)) [[unlikely]] throw ::gpt::Error(__VA_ARGS__); \
  } while (0)
