#include "gpt/util/error.h"

namespace gpt {

void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace gpt
