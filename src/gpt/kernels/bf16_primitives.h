// Internal to the kernels: a ComputeContext's oneDNN bf16 matmul primitives, one
// per product shape, and the scratch they run with (matmul_bf16.cpp).
#pragma once
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace gpt {

class Bf16Primitives {
 public:
  // A prompt of every length makes a new shape: at most this many primitives are
  // kept, the least recently used evicted first.
  static constexpr size_t kMaxCached = 32;

  Bf16Primitives();
  // True when oneDNN has a bf16 matmul for this CPU (probed once per process).
  static bool native_available();

  // C (M,N) = alpha * op(A) @ op(B) + beta * C with A (and B, unless B16 holds it
  // already in bf16 with leading dimension ldb) rounded to bf16. Thread-safe.
  void run(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, const uint16_t* B16, int64_t ldb, float beta, float* C, int64_t ldc);
  // The portable path: the same products by the float32 GEMM on rounded copies.
  void run_emulated(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
  size_t cached();

 private:
  using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float>;
  struct Prepared {
    dnnl::matmul matmul;
    dnnl::memory::desc a, b, c, scratchpad;
  };
  static Prepared make(const dnnl::engine& engine, const Key& k);
  const Prepared& find_or_make(const Key& key);

  std::mutex mutex_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::list<std::pair<Key, Prepared>> lru_;  // most recently used first
  std::map<Key, std::list<std::pair<Key, Prepared>>::iterator> index_;
  std::vector<uint16_t> a16_, b16_;
  std::vector<uint8_t> scratchpad_;
  std::vector<float> a_round_, b_round_;  // the emulated path's rounded copies
};

}  // namespace gpt
