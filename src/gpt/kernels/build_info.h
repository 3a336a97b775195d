// What this build is and what it uses on this CPU (`gpt --version`): version,
// commit, the CPU, the dispatch level of the hand-written loops, the quantized,
// bf16 and few-rows paths, oneDNN's version, MPI on or off.
#pragma once
#include <string>

namespace gpt {

std::string build_info();
// "0.1.0 (commit abc1234)": the first line's version, for the C API's gpt_version().
const char* version_string();

}  // namespace gpt
