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

// Throws gpt::Error(message) when condition is false.
void check(bool condition, const std::string& message);

}  // namespace gpt
