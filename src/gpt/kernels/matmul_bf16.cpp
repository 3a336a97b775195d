#include "gpt/kernels/matmul_bf16.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "gpt/kernels/bf16_primitives.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/thread_share.h"
#include "gpt/util/error.h"

namespace gpt {

namespace {

std::atomic<bool> g_force_portable{false};
// Largest operand converted at once (elements); see gemm_bf16_split.
std::atomic<int64_t> g_split_budget{int64_t(1) << 22};

// The upper 16 bits of x rounded to nearest, ties to even (NaN is not special-cased:
// inputs of a training step are finite or the step fails anyway).
inline uint32_t round_to_bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return bits + 0x7FFFu + ((bits >> 16) & 1u);
}

// Rows [r0, r1) of rows x cols floats (leading dimension ld) -> contiguous bf16.
GPT_MULTIVERSION void to_bf16_rows(const float* x, int64_t r0, int64_t r1, int64_t cols, int64_t ld, uint16_t* out) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = static_cast<uint16_t>(round_to_bf16_bits(x[r * ld + c]) >> 16);
  }
}

void to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* out) {
  for_each_thread_share(rows, [&](int64_t r0, int64_t r1) { to_bf16_rows(x, r0, r1, cols, ld, out); },
                        rows * cols > 65536);
}

// The same values widened back to float (the portable fallback's inputs).
GPT_MULTIVERSION void round_rows_share(const float* x, int64_t r0, int64_t r1, int64_t cols, int64_t ld, float* out) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t bits = round_to_bf16_bits(x[r * ld + c]) & 0xFFFF0000u;
      std::memcpy(out + r * cols + c, &bits, 4);
    }
  }
}

void round_rows(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out) {
  for_each_thread_share(rows, [&](int64_t r0, int64_t r1) { round_rows_share(x, r0, r1, cols, ld, out); },
                        rows * cols > 65536);
}

}  // namespace

Bf16Primitives::Bf16Primitives() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

bool Bf16Primitives::native_available() {
  static const bool available = [] {
    try {  // a probe: does oneDNN have a bf16 matmul for this CPU?
      const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
      make(engine, Key{false, false, 16, 16, 16, 16, 16, false, 1.0f});
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return available;
}

size_t Bf16Primitives::cached() {
  const std::lock_guard lock(mutex_);
  return lru_.size();
}

Bf16Primitives::Prepared Bf16Primitives::make(const dnnl::engine& engine, const Key& k) {
  const auto [ta, tb, M, N, K, ldb, ldc, accumulate, alpha] = k;
  using dt = dnnl::memory::data_type;
  const dnnl::memory::desc ad({M, K}, dt::bf16, ta ? dnnl::memory::dims{1, M} : dnnl::memory::dims{K, 1});
  const dnnl::memory::desc bd({K, N}, dt::bf16, tb ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
  const dnnl::memory::desc cd({M, N}, dt::f32, dnnl::memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  // Scratch memory comes from us, kept between calls: oneDNN would otherwise
  // allocate (and the kernel zero) fresh pages on every call.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (accumulate) {  // C += A @ B (beta = 1)
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), attr, engine);
  return {dnnl::matmul(pd), ad, bd, cd, pd.scratchpad_desc()};
}

const Bf16Primitives::Prepared& Bf16Primitives::find_or_make(const Key& key) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);  // now the most recent
    return lru_.front().second;
  }
  lru_.emplace_front(key, make(engine_, key));
  index_.emplace(key, lru_.begin());
  if (lru_.size() > kMaxCached) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return lru_.front().second;
}

void Bf16Primitives::run(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                         const float* B, const uint16_t* B16, int64_t ldb, float beta, float* C, int64_t ldc) {
  const std::lock_guard lock(mutex_);
  // A is stored (M, K), or (K, M) when transposed; B (K, N), or (N, K).
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  if (a16_.size() < static_cast<size_t>(a_rows * a_cols)) a16_.resize(static_cast<size_t>(a_rows * a_cols));
  to_bf16(A, a_rows, a_cols, lda, a16_.data());
  int64_t b_ld = ldb;
  if (B16 == nullptr) {
    if (b16_.size() < static_cast<size_t>(b_rows * b_cols)) b16_.resize(static_cast<size_t>(b_rows * b_cols));
    to_bf16(B, b_rows, b_cols, ldb, b16_.data());
    B16 = b16_.data();
    b_ld = b_cols;
  }
  if (beta != 0.0f && beta != 1.0f) {
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < N; ++c) C[r * ldc + c] *= beta;
    beta = 1.0f;
  }
  const Prepared& p = find_or_make(Key{ta, tb, M, N, K, b_ld, ldc, beta != 0.0f, alpha});
  if (scratchpad_.size() < p.scratchpad.get_size()) scratchpad_.resize(p.scratchpad.get_size());
  dnnl::memory am(p.a, engine_, a16_.data()), bm(p.b, engine_, const_cast<uint16_t*>(B16)), cm(p.c, engine_, C);
  dnnl::memory scratch(p.scratchpad, engine_, scratchpad_.data());
  p.matmul.execute(stream_,
                   {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, scratch}});
  stream_.wait();
}

void Bf16Primitives::run_emulated(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const std::lock_guard lock(mutex_);
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  if (a_round_.size() < static_cast<size_t>(a_rows * a_cols)) a_round_.resize(static_cast<size_t>(a_rows * a_cols));
  if (b_round_.size() < static_cast<size_t>(b_rows * b_cols)) b_round_.resize(static_cast<size_t>(b_rows * b_cols));
  round_rows(A, a_rows, a_cols, lda, a_round_.data());
  round_rows(B, b_rows, b_cols, ldb, b_round_.data());
  gemm_f32(ta, tb, M, N, K, alpha, a_round_.data(), a_cols, b_round_.data(), b_cols, beta, C, ldc);
}

namespace {

// Native bf16 instructions are not always faster: AMX and AMD's AVX512_BF16 run
// bf16 products at about twice the float32 rate, but an Intel Xeon without AMX
// issues VDPBF16PS on one port and runs them at half of it, slower than rounding
// the inputs for the float32 GEMM. Both compute bf16 products with float32
// accumulation, so in auto mode the faster one is measured once, interleaved, on
// a transformer-sized product.
bool native_measured_faster() {
  constexpr int64_t M = 256, N = 768, K = 768;
  std::vector<float> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(K * N)), c(static_cast<size_t>(M * N));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) * 0.125f - 0.25f;
  Bf16Primitives primitives;  // its own: nothing of the caller's is touched
  auto best_seconds = [&](bool native) {
    double best = 1e30;
    for (int rep = 0; rep < 4; ++rep) {  // the first call also builds the primitive
      const auto t0 = std::chrono::steady_clock::now();
      if (native) {
        primitives.run(false, false, M, N, K, 1.0f, a.data(), K, b.data(), nullptr, N, 0.0f, c.data(), N);
      } else {
        primitives.run_emulated(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
      }
      if (rep > 0) best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  double native = 1e30, emulated = 1e30;
  for (int round = 0; round < 2; ++round) {
    native = std::min(native, best_seconds(true));
    emulated = std::min(emulated, best_seconds(false));
  }
  return native <= 1.25 * emulated;  // native stays unless it clearly loses
}

// -1: not chosen yet (GPT_BF16_GEMM, else auto).
std::atomic<int> g_mode{-1};

Bf16GemmMode current_mode() {
  int m = g_mode.load();
  if (m < 0) {
    const char* env = std::getenv("GPT_BF16_GEMM");
    m = static_cast<int>(env != nullptr && *env != '\0' ? parse_bf16_gemm_mode(env) : Bf16GemmMode::kAuto);
    g_mode.store(m);
  }
  return static_cast<Bf16GemmMode>(m);
}

}  // namespace

Bf16GemmMode parse_bf16_gemm_mode(const std::string& name) {
  if (name == "auto") return Bf16GemmMode::kAuto;
  if (name == "native") return Bf16GemmMode::kNative;
  if (name == "emulated") return Bf16GemmMode::kEmulated;
  throw Error("GPT_BF16_GEMM must be auto, native or emulated, not '" + name + "'");
}

void set_bf16_gemm_mode(Bf16GemmMode mode) { g_mode.store(static_cast<int>(mode)); }

bool bf16_gemm_native_available() {
  return Bf16Primitives::native_available() && !g_force_portable.load() && !portable_kernels_forced();
}

bool bf16_gemm_native() {
  const Bf16GemmMode mode = current_mode();  // first: a bad GPT_BF16_GEMM is an error on every CPU
  if (!bf16_gemm_native_available()) return false;
  switch (mode) {
    case Bf16GemmMode::kNative: return true;
    case Bf16GemmMode::kEmulated: return false;
    case Bf16GemmMode::kAuto: break;
  }
  static const bool faster = native_measured_faster();
  return faster;
}
void force_portable_bf16_gemm(bool force) { g_force_portable.store(force); }

void round_to_bf16(const float* x, float* out, int64_t n) { round_rows(x, 1, n, n, out); }

void set_bf16_gemm_split_budget(int64_t elements) { g_split_budget.store(std::max<int64_t>(elements, 64)); }

void to_bf16_matrix(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* out) {
  to_bf16(x, rows, cols, ld, out);
}

namespace {

// Both entry points: B is float32 (converted per call) or, with B16 non-null,
// already bf16. Products whose converted operands exceed the budget are halved
// along their largest such dimension (halves of K accumulate into C, beta = 1),
// so the bf16 copies stay small: the LM head's (B*T, vocab) operands would
// otherwise need ~180 MB of copies for GPT-2.
void gemm_bf16_split(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, const uint16_t* B16, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const bool convert_b = B16 == nullptr;
  const int64_t budget = g_split_budget.load();
  // B's element at (row, col) offsets, whichever pointer holds it.
  auto b_at = [&](int64_t offset) { return std::pair{convert_b ? B + offset : B, convert_b ? B16 : B16 + offset}; };
  if (M * K > budget || (convert_b && K * N > budget)) {
    if (M >= K && (!convert_b || M >= N) && M > 1) {
      const int64_t m = M / 2;
      gemm_bf16_split(ta, tb, m, N, K, alpha, A, lda, B, B16, ldb, beta, C, ldc);
      gemm_bf16_split(ta, tb, M - m, N, K, alpha, ta ? A + m : A + m * lda, lda, B, B16, ldb, beta, C + m * ldc, ldc);
      return;
    }
    if (convert_b && N >= K && N > 1) {
      const int64_t n = N / 2;
      const auto [b, b16] = b_at(tb ? n * ldb : n);
      gemm_bf16_split(ta, tb, M, n, K, alpha, A, lda, B, B16, ldb, beta, C, ldc);
      gemm_bf16_split(ta, tb, M, N - n, K, alpha, A, lda, b, b16, ldb, beta, C + n, ldc);
      return;
    }
    if (K > 1) {
      const int64_t k = K / 2;
      const auto [b, b16] = b_at(tb ? k : k * ldb);
      gemm_bf16_split(ta, tb, M, N, k, alpha, A, lda, B, B16, ldb, beta, C, ldc);
      gemm_bf16_split(ta, tb, M, N, K - k, alpha, ta ? A + k * lda : A + k, lda, b, b16, ldb, 1.0f, C, ldc);
      return;
    }
  }
  Bf16Primitives& primitives = current_compute_context().bf16();
  if (bf16_gemm_native()) {
    try {
      primitives.run(ta, tb, M, N, K, alpha, A, lda, B, B16, ldb, beta, C, ldc);
      return;
    } catch (const dnnl::error& e) {
      throw Error(std::string("oneDNN bf16 matmul failed: ") + e.what());
    }
  }
  primitives.run_emulated(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

void gemm_bf16_with_b16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!bf16_gemm_native()) throw Error("gemm_bf16_with_b16 needs oneDNN's bf16 kernels");
  gemm_bf16_split(trans_a, trans_b, M, N, K, alpha, A, lda, nullptr, B, ldb, beta, C, ldc);
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_bf16_split(trans_a, trans_b, M, N, K, alpha, A, lda, B, nullptr, ldb, beta, C, ldc);
}

}  // namespace gpt
