#include "gpt/kernels/compute_context.h"

#include <omp.h>

#include "gpt/kernels/bf16_primitives.h"
#include "gpt/util/error.h"

namespace gpt {

namespace {
thread_local ComputeContext* t_current = nullptr;
}  // namespace

MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "fp32" || name == "f32") return MatmulPrecision::kFloat32;
  if (name == "bf16") return MatmulPrecision::kBFloat16;
  throw Error("unknown --dtype '" + name + "' (expected fp32 or bf16)");
}

ComputeContext::ComputeContext(ComputeOptions options) : options_(options) {
  GPT_CHECK(options_.threads >= 0, "thread count must not be negative, got " + std::to_string(options_.threads));
}

ComputeContext::~ComputeContext() = default;

Bf16Primitives& ComputeContext::bf16() {
  const std::lock_guard lock(bf16_mutex_);
  if (!bf16_) bf16_ = std::make_unique<Bf16Primitives>();
  return *bf16_;
}

size_t ComputeContext::bf16_cached_primitives() {
  const std::lock_guard lock(bf16_mutex_);
  return bf16_ ? bf16_->cached() : 0;
}

ComputeScope::ComputeScope(ComputeContext& context)
    : previous_(t_current), previous_threads_(omp_get_max_threads()) {
  t_current = &context;
  if (context.threads() > 0) omp_set_num_threads(context.threads());
}

ComputeScope::~ComputeScope() {
  t_current = previous_;
  if (omp_get_max_threads() != previous_threads_) omp_set_num_threads(previous_threads_);
}

ComputeOptions current_compute_options() {
  return {current_compute_context().precision(), omp_get_max_threads()};
}

ComputeContext& current_compute_context() {
  if (t_current != nullptr) return *t_current;
  thread_local ComputeContext fallback;
  return fallback;
}

}  // namespace gpt
