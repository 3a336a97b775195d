// Shared helpers for the test programs.
#pragma once
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpt/kernels/matmul_bf16.h"
#include "gpt/model/config.h"

namespace gpt::testing {

// C++ heap allocations so far in this process (allocation_counter.cpp).
long heap_allocations();

inline std::filesystem::path source_dir() { return GPT_SOURCE_DIR; }
inline std::filesystem::path fixture(const std::string& name) { return source_dir() / "tests" / "fixtures" / name; }
// ../shared/data beside the checkout (present on developer machines and in CI).
inline std::filesystem::path shared_data(const std::string& name) {
  return source_dir().parent_path() / "shared" / "data" / name;
}
// A file of an npm package the Node tests install (tests/js/node_modules), or an
// empty path when it is not installed.
inline std::filesystem::path npm_package_file(const std::string& package, const std::string& file) {
  const auto path = source_dir() / "tests" / "js" / "node_modules" / package / file;
  return std::filesystem::exists(path) ? path : std::filesystem::path();
}

// A SentencePiece-style vocabulary (Llama 2's layout): characters and "▁", byte
// tokens, <unk>/<s>/</s>, merges into words.
inline nlohmann::json tiny_sentencepiece_json() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  int id = 3;
  const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) vocab[std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">"] = id++;
  for (const char* t : {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d", "\xE2\x96\x81h", "ll", "\xE2\x96\x81he",
                        "\xE2\x96\x81hell", "\xE2\x96\x81hello", "\xE2\x96\x81w", "or", "\xE2\x96\x81wor",
                        "\xE2\x96\x81worl", "\xE2\x96\x81world", "\xE2\x96\x81\xE2\x96\x81"}) {
    vocab[t] = id++;
  }
  const nlohmann::json merges = {"\xE2\x96\x81 \xE2\x96\x81", "\xE2\x96\x81 h", "l l", "\xE2\x96\x81h e", "\xE2\x96\x81he ll", "\xE2\x96\x81hell o",
                                 "\xE2\x96\x81 w", "o r", "\xE2\x96\x81w or", "\xE2\x96\x81wor l", "\xE2\x96\x81worl d"};
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", i}, {"content", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>"}, {"special", true}});
  }
  return {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab},
        {"merges", merges}}},
  };
}

// A model shape for tests: vocab, context, layers, heads, width.
inline ModelConfig model_config(int vocab, int block, int layers, int heads, int width,
                                PositionEncoding pe = PositionEncoding::kLearned) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.block_size = block;
  c.n_layer = layers;
  c.n_head = heads;
  c.n_embd = width;
  c.position_encoding = pe;
  return c;
}

// A Llama-architecture shape for tests: rotary positions, RMSNorm, SwiGLU,
// kv_heads key/value heads.
inline ModelConfig llama_config(int vocab, int block, int layers, int heads, int kv_heads, int width) {
  ModelConfig c = model_config(vocab, block, layers, heads, width, PositionEncoding::kRotary);
  c.arch = Architecture::kLlama;
  c.n_kv_head = kv_heads;
  c.tie_word_embeddings = false;
  return c;
}

// Restores OpenMP's thread count on scope exit, so a
// failed ASSERT (which returns early) leaves later tests on the usual count.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(omp_get_max_threads()) {}
  ~ThreadCountGuard() { omp_set_num_threads(saved_); }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int saved_;
};

// Runs bf16 products in `mode` until scope exit, then back to auto (also when a
// failed ASSERT returns early).
class Bf16GemmModeGuard {
 public:
  explicit Bf16GemmModeGuard(Bf16GemmMode mode) { set_bf16_gemm_mode(mode); }
  ~Bf16GemmModeGuard() { set_bf16_gemm_mode(Bf16GemmMode::kAuto); }
  Bf16GemmModeGuard(const Bf16GemmModeGuard&) = delete;
  Bf16GemmModeGuard& operator=(const Bf16GemmModeGuard&) = delete;
};

// A fresh directory under /tmp, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "gpt-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `gpt <args>` through the shell, standard input from `stdin_file`.
// `env`: assignments put before the command ("NAME=value ...").
inline CommandResult run_gpt(const std::string& args, const std::string& stdin_file = "/dev/null",
                             const std::string& env = "") {
  TempDir tmp;
  const std::string cmd = env + (env.empty() ? "" : " ") + std::string(GPT_BINARY) + " " + args + " <" + stdin_file +
                          " >" + (tmp / "out").string() +
                          " 2>" + (tmp / "err").string();
  CommandResult r;
  const int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const std::filesystem::path& p) {
    std::string s;
    if (FILE* f = std::fopen(p.c_str(), "rb")) {
      std::array<char, 4096> buf;
      size_t n;
      while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) s.append(buf.data(), n);
      std::fclose(f);
    }
    return s;
  };
  r.out = slurp(tmp / "out");
  r.err = slurp(tmp / "err");
  return r;
}

// Memory figures mean nothing under AddressSanitizer (shadow memory, quarantine).
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GPT_TEST_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define GPT_TEST_UNDER_ASAN 1
#endif
#ifdef GPT_TEST_UNDER_ASAN
inline constexpr bool kUnderAddressSanitizer = true;
#else
inline constexpr bool kUnderAddressSanitizer = false;
#endif

// Runs `gpt <args>` (output discarded) and returns its exit code and its peak
// resident memory in bytes (the kernel's ru_maxrss of that process alone).
struct MeasuredRun {
  int exit_code = -1;
  long peak_rss_bytes = 0;
  double seconds = 0;
};
inline MeasuredRun run_gpt_measured(const std::string& args) {
  const std::string cmd = "exec " + std::string(GPT_BINARY) + " " + args + " </dev/null >/dev/null 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  MeasuredRun r;
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.peak_rss_bytes = usage.ru_maxrss * 1024L;
  return r;
}

// max |a - b| / max |b|: the error relative to the tensor's scale.
inline double relative_max_error(const float* a, const float* b, size_t n) {
  double max_diff = 0, max_ref = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    // A NaN or infinity where the reference has a number is an infinite error
    // (std::max would pass over a NaN difference).
    if (!std::isfinite(a[i]) && std::isfinite(b[i])) return std::numeric_limits<double>::infinity();
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(b[i])));
  }
  return max_diff / max_ref;
}

}  // namespace gpt::testing
