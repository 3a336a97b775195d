// How a caller's computations run: the precision of matrix products, the number
// of threads, and the primitives and scratch the products keep between calls.
//
// Whoever runs a model owns a ComputeContext (a trainer, an inference session, a
// command) and installs it on the calling thread with a ComputeScope for the
// length of a library call; the kernels read it from there. Nothing here is
// process-wide: two sessions on two threads, each with its own context, share no
// mutable state, and a scope restores the thread's previous context and OpenMP
// thread count when it ends. The library never changes either behind the
// caller's back.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace gpt {

// float32, or bfloat16 inputs with float32 accumulation and output (matmul_bf16.h).
enum class MatmulPrecision { kFloat32, kBFloat16 };
MatmulPrecision parse_matmul_precision(const std::string& name);  // "fp32" | "bf16"; gpt::Error otherwise

struct ComputeOptions {
  MatmulPrecision precision = MatmulPrecision::kFloat32;
  int threads = 0;  // OpenMP threads inside a scope; 0: the caller's setting
};

class Bf16Primitives;  // matmul_bf16.cpp: oneDNN bf16 matmuls by shape, and their scratch

class ComputeContext {
 public:
  explicit ComputeContext(ComputeOptions options = {});
  ~ComputeContext();
  ComputeContext(const ComputeContext&) = delete;
  ComputeContext& operator=(const ComputeContext&) = delete;

  const ComputeOptions& options() const { return options_; }
  MatmulPrecision precision() const { return options_.precision; }
  int threads() const { return options_.threads; }

  // This context's bf16 matmul primitives (a bounded cache) and scratch, made on
  // first use. Thread-safe: callers sharing a context take turns.
  Bf16Primitives& bf16();
  // Primitives in that cache (0 before any bf16 product).
  size_t bf16_cached_primitives();

 private:
  ComputeOptions options_;
  std::mutex bf16_mutex_;
  std::unique_ptr<Bf16Primitives> bf16_;
};

// Installs `context` on the calling thread until the scope ends (scopes nest),
// and sets OpenMP's thread count for the thread when the context names one.
class ComputeScope {
 public:
  explicit ComputeScope(ComputeContext& context);
  ~ComputeScope();
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

 private:
  ComputeContext* previous_;
  int previous_threads_;
};

// The context installed on this thread, or else the thread's own default one
// (float32, the caller's thread count).
ComputeContext& current_compute_context();
// What a computation started now on this thread would run with: its context's
// precision and the thread count in force.
ComputeOptions current_compute_options();

}  // namespace gpt
