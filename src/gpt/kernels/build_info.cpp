#include "gpt/kernels/build_info.h"

#include <fstream>

#include <dnnl.hpp>
#if defined(GPT_GEMM_OPENBLAS)
#include <cblas.h>
#endif

#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/float16.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/matmul_bf16.h"
#include "gpt/kernels/quantize.h"

#ifndef GPT_GIT_COMMIT
#define GPT_GIT_COMMIT "unknown"
#endif
#ifndef GPT_VERSION
#define GPT_VERSION "0.1.0"
#endif

namespace gpt {
namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, implementer, part;
  const auto value = [&] {
    const size_t colon = line.find(':');
    const size_t start = colon == std::string::npos ? std::string::npos : line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  };
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return value();
    // ARM's /proc/cpuinfo names no model: its implementer and part numbers instead.
    if (line.rfind("CPU implementer", 0) == 0 && implementer.empty()) implementer = value();
    if (line.rfind("CPU part", 0) == 0 && part.empty()) part = value();
  }
  if (!implementer.empty()) return "ARM CPU (implementer " + implementer + ", part " + part + ")";
  return "unknown CPU";
}

std::string dispatch_level() {
#if defined(__x86_64__)
  switch (multiversion_level()) {
#if defined(__clang__)
    case 4: return "AVX-512F clones (clang)";
    case 3: return "AVX2 clones (clang)";
#else
    case 4: return "x86-64-v4 (AVX-512)";
    case 3: return "x86-64-v3 (AVX2)";
#endif
    default: return GPT_HAS_MULTIVERSION ? "x86-64 baseline" : "x86-64 baseline (built without runtime dispatch)";
  }
#elif defined(__aarch64__)
  return "AArch64 baseline (portable loops, vectorised for NEON by the compiler)";
#else
  return "portable";
#endif
}

}  // namespace

// Versions chosen by the same rule as GPT_MULTIVERSION's clones (dispatch.h), so
// what the loader picks for this function it picks for them.
#if GPT_HAS_MULTIVERSION && defined(__clang__)
__attribute__((target("default"))) int dispatch_probe() { return 0; }
__attribute__((target("avx2"))) int dispatch_probe() { return 3; }
__attribute__((target("avx512f"))) int dispatch_probe() { return 4; }
#elif GPT_HAS_MULTIVERSION
__attribute__((target("default"))) int dispatch_probe() { return 0; }
__attribute__((target("arch=x86-64-v3"))) int dispatch_probe() { return 3; }
__attribute__((target("arch=x86-64-v4"))) int dispatch_probe() { return 4; }
#else
int dispatch_probe() { return 0; }
#endif

int multiversion_level() { return dispatch_probe(); }

const char* version_string() { return GPT_VERSION " (commit " GPT_GIT_COMMIT ")"; }

std::string build_info() {
  const dnnl_version_t* v = dnnl_version();
#ifdef GPT_WITH_MPI
  const char* mpi = "on (run under mpirun for data parallel training)";
#else
  const char* mpi = "off";
#endif
  std::string s = "gpt.cpp " GPT_VERSION " (commit " GPT_GIT_COMMIT ")\n";
  s += "CPU: " + cpu_model() + "\n";
  s += "hand-written loops: " + dispatch_level() + "\n";
#if defined(__aarch64__)
  s += std::string("few-rows fp32 products in panels: ") + (few_rows_kernels() ? "yes (NEON)" : "no (GEMM)") + "\n";
#else
  s += std::string("few-rows fp32 products in panels: ") + (few_rows_kernels() ? "yes (AVX-512)" : "no (GEMM)") + "\n";
#endif
  s += std::string("Q8_0/Q4_0 products: ") + quant_kernels_name(quant_kernels()) + "\n";
  s += std::string("bf16 matrix products: ") +
       (bf16_gemm_native_available() ? "oneDNN bf16 kernels available" : "emulated (fp32 GEMM on bf16-rounded inputs)") + "\n";
  s += std::string("float16 conversion: ") + (float16_uses_f16c() ? "F16C" : "portable") + "\n";
  s += "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + "\n";
#if defined(GPT_GEMM_OPENBLAS)
  s += std::string("fp32 GEMM: OpenBLAS (") + openblas_get_config() + ")\n";
#else
  s += "fp32 GEMM: oneDNN\n";
#endif
  s += std::string("MPI: ") + mpi;
  return s;
}

}  // namespace gpt
