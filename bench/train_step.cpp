// One optimizer step (forward, backward, AdamW) of gpt.cpp for the benchmark
// configs, reported as tokens/s, with fp32 and with bf16 matrix products.
// Threads: OMP_NUM_THREADS.
//   build/bench/bench_train_step --benchmark_filter=baby
#include <benchmark/benchmark.h>

#include "gpt/kernels/matmul.h"
#include "gpt/model/gpt.h"
#include "gpt/training/adamw.h"
#include "gpt/util/rng.h"

namespace {

void train_step(benchmark::State& state, gpt::ModelConfig config, int64_t B,
                gpt::MatmulPrecision precision = gpt::MatmulPrecision::kFloat32) {
  gpt::ComputeContext compute({precision});
  const gpt::ComputeScope scope(compute);
  gpt::GPT model(config);
  model.init_weights(1);
  gpt::AdamW opt(model.layout(), {});
  const int64_t T = config.block_size;
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(x.size());
  gpt::Rng rng(2);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(config.vocab_size));
    y[i] = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(config.vocab_size));
  }
  auto step = [&]() {
    model.zero_grad();
    benchmark::DoNotOptimize(model.forward_backward(x.data(), y.data(), B, T));
    gpt::clip_grad_norm(model.grads.data(), model.grads.size(), 1.0f);
    opt.step(model.params.data(), model.grads.data(), 1e-4f);
  };
  step();  // warm-up, untimed: first-touch page faults, oneDNN's JIT kernels
  for (auto _ : state) {
    model.zero_grad();
    benchmark::DoNotOptimize(model.forward_backward(x.data(), y.data(), B, T));
    gpt::clip_grad_norm(model.grads.data(), model.grads.size(), 1.0f);
    opt.step(model.params.data(), model.grads.data(), 1e-4f);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * T), benchmark::Counter::kIsIterationInvariantRate);
}

gpt::ModelConfig config(int V, int T, int L, int NH, int C, bool llama = false) {
  gpt::ModelConfig c;
  if (llama) {  // Llama of the same FLOPs: SwiGLU at 8C/3, tied head, full-width K/V heads
    c.arch = gpt::Architecture::kLlama;
    c.position_encoding = gpt::PositionEncoding::kRotary;
  }
  c.vocab_size = V;
  c.block_size = T;
  c.n_layer = L;
  c.n_head = NH;
  c.n_embd = C;
  return c;
}

void BM_baby(benchmark::State& s) { train_step(s, config(65, 64, 4, 4, 128), 12); }
void BM_shakespeare_char(benchmark::State& s) { train_step(s, config(65, 256, 6, 6, 384), 16); }
void BM_shakespeare_char_b64(benchmark::State& s) { train_step(s, config(65, 256, 6, 6, 384), 64); }
void BM_gpt2_124M_b4_t256(benchmark::State& s) { train_step(s, config(50257, 256, 12, 12, 768), 4); }
void BM_gpt2_124M_b1_t1024(benchmark::State& s) { train_step(s, config(50257, 1024, 12, 12, 768), 1); }
void BM_llama_124M_b4_t256(benchmark::State& s) { train_step(s, config(50257, 256, 12, 12, 768, true), 4); }
void BM_llama_shakespeare_char_b64(benchmark::State& s) { train_step(s, config(65, 256, 6, 6, 384, true), 64); }
constexpr auto kBf16 = gpt::MatmulPrecision::kBFloat16;
void BM_llama_124M_b4_t256_bf16(benchmark::State& s) {
  train_step(s, config(50257, 256, 12, 12, 768, true), 4, kBf16);
}
void BM_llama_shakespeare_char_b64_bf16(benchmark::State& s) {
  train_step(s, config(65, 256, 6, 6, 384, true), 64, kBf16);
}
void BM_baby_bf16(benchmark::State& s) { train_step(s, config(65, 64, 4, 4, 128), 12, kBf16); }
void BM_shakespeare_char_bf16(benchmark::State& s) { train_step(s, config(65, 256, 6, 6, 384), 16, kBf16); }
void BM_shakespeare_char_b64_bf16(benchmark::State& s) { train_step(s, config(65, 256, 6, 6, 384), 64, kBf16); }
void BM_gpt2_124M_b4_t256_bf16(benchmark::State& s) { train_step(s, config(50257, 256, 12, 12, 768), 4, kBf16); }
void BM_gpt2_124M_b1_t1024_bf16(benchmark::State& s) { train_step(s, config(50257, 1024, 12, 12, 768), 1, kBf16); }

// The machine's achievable FP32 rate, for model FLOPs utilisation: oneDNN sgemm.
void BM_peak_sgemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  std::vector<float> A(static_cast<size_t>(M * K), 0.5f), B(static_cast<size_t>(K * N), 0.25f), C(static_cast<size_t>(M * N));
  gpt::gemm_f32(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);  // warm-up
  for (auto _ : state) gpt::gemm_f32(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_peak_sgemm)->Args({2048, 2048, 2048})->Args({4096, 3072, 768})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_baby)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_shakespeare_char)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_shakespeare_char_b64)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_gpt2_124M_b4_t256)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_gpt2_124M_b1_t1024)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_baby_bf16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_shakespeare_char_bf16)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_shakespeare_char_b64_bf16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_gpt2_124M_b4_t256_bf16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_gpt2_124M_b1_t1024_bf16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_llama_124M_b4_t256)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_llama_shakespeare_char_b64)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_llama_124M_b4_t256_bf16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_llama_shakespeare_char_b64_bf16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_MAIN();
