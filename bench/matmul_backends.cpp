// GEMM backends on the shapes of a training step (out = inp @ W, and the two
// products of the backward pass), in GFLOP/s. The numbers behind the choice of
// oneDNN for fp32 matrix products.
//   build/bench/bench_matmul_backends                     # OpenBLAS as Debian ships it
//   OPENBLAS_CORETYPE=SkylakeX build/bench/bench_matmul_backends   # OpenBLAS with AVX-512 kernels
#include <benchmark/benchmark.h>

#include <vector>

#include <oneapi/dnnl/dnnl.h>
#ifdef GPT_BENCH_OPENBLAS
#include <cblas.h>
#endif

namespace {

// {rows = B*T, inner, outer}: baby (B*T = 768, C = 128), shakespeare-char (C = 384),
// gpt2-124M (B*T = 1024, C = 768, and its LM head over 50257 tokens).
const std::vector<std::vector<int64_t>> kShapes = {
    {768, 128, 384}, {768, 128, 512}, {768, 512, 128}, {768, 384, 1152}, {768, 1536, 384},
    {1024, 768, 2304}, {1024, 768, 3072}, {1024, 3072, 768}, {1024, 768, 50257},
};

// 0: forward out = A @ W; 1: dinp = dout @ W^T; 2: dW = A^T @ dout.
template <class Gemm>
void run(benchmark::State& state, Gemm gemm) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2), kind = state.range(3);
  std::vector<float> a(static_cast<size_t>(M * K), 0.5f), w(static_cast<size_t>(K * N), 0.25f),
      out(static_cast<size_t>(M * N), 0.0f);
  for (auto _ : state) {
    if (kind == 0) gemm(false, false, M, N, K, a.data(), K, w.data(), N, out.data(), N);
    if (kind == 1) gemm(false, true, M, K, N, out.data(), N, w.data(), N, a.data(), K);
    if (kind == 2) gemm(true, false, K, N, M, a.data(), K, out.data(), N, w.data(), N);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

void BM_onednn(benchmark::State& state) {
  run(state, [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                int64_t ldb, float* C, int64_t ldc) {
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
  });
}

#ifdef GPT_BENCH_OPENBLAS
void BM_openblas(benchmark::State& state) {
  run(state, [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                int64_t ldb, float* C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(M),
                static_cast<int>(N), static_cast<int>(K), 1.0f, A, static_cast<int>(lda), B, static_cast<int>(ldb),
                0.0f, C, static_cast<int>(ldc));
  });
}
#endif

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "kind"});
  for (const auto& s : kShapes)
    for (int64_t kind = 0; kind < 3; ++kind) b->Args({s[0], s[1], s[2], kind});
  b->UseRealTime()->MinTime(0.2);
}

}  // namespace

BENCHMARK(BM_onednn)->Apply(shapes);
#ifdef GPT_BENCH_OPENBLAS
BENCHMARK(BM_openblas)->Apply(shapes);
#endif
BENCHMARK_MAIN();
