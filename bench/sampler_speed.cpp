// Choosing one token from GPT-2-sized logits (50,257), per sampling setting, on
// one thread: the time a decoding step spends after the model (a compact GPT-2
// decodes in ~1.6 ms, so this is not noise). Logits are normal with a spread
// that sets how many tokens a nucleus holds: 1 (flat: top-p 0.9 keeps ~26,000),
// 3 (~560) and 4 (~60).
//   build/bench/bench_sampler_speed [--benchmark_filter=top_p]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "gpt/generation/sampler.h"

namespace {

void run(benchmark::State& state, gpt::SamplingOptions options) {
  const int64_t V = 50257;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, static_cast<float>(state.range(0)));
  std::vector<float> logits(static_cast<size_t>(V));
  for (auto& l : logits) l = normal(rng);
  std::vector<int32_t> history(64);
  for (size_t i = 0; i < history.size(); ++i) history[i] = static_cast<int32_t>(i * 797 % V);
  gpt::Sampler sampler(options, 1);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.sample(logits.data(), V, history));
}

gpt::SamplingOptions with(bool greedy, int top_k, float top_p, float min_p, float repeat_penalty = 1.0f) {
  gpt::SamplingOptions o;
  o.greedy = greedy;
  o.temperature = 0.8f;
  o.top_k = top_k;
  o.top_p = top_p;
  o.min_p = min_p;
  o.repeat_penalty = repeat_penalty;
  return o;
}

void BM_greedy(benchmark::State& s) { run(s, with(true, 0, 1.0f, 0.0f)); }
void BM_temperature(benchmark::State& s) { run(s, with(false, 0, 1.0f, 0.0f)); }
void BM_top_k_40(benchmark::State& s) { run(s, with(false, 40, 1.0f, 0.0f)); }
void BM_top_k_40_repeat_penalty(benchmark::State& s) { run(s, with(false, 40, 1.0f, 0.0f, 1.1f)); }
void BM_top_p_0_9(benchmark::State& s) { run(s, with(false, 0, 0.9f, 0.0f)); }
void BM_min_p_0_05(benchmark::State& s) { run(s, with(false, 0, 1.0f, 0.05f)); }

}  // namespace

BENCHMARK(BM_greedy)->Arg(3)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_temperature)->Arg(3)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_top_k_40)->Arg(3)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_top_k_40_repeat_penalty)->Arg(3)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_top_p_0_9)->Arg(1)->Arg(3)->Arg(4)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_min_p_0_05)->Arg(1)->Arg(3)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
