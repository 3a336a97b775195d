// Prefill and decode speed of gpt.cpp's KV-cache inference for each weight type,
// on a model with random weights (default: GPT-2 124M's shape), side by side with
// the machine's measured memory bandwidth: decode reads every weight once per
// token, so bandwidth / (weight bytes per token) bounds its speed when the
// weights do not fit in cache. Prints one JSON line per type.
//   build/bench/bench_generate_speed [--types f32,f16,bf16,q8_0,q4_0,q4_k_m,... --n-layer 12 --n-head 12
//       --n-embd 768 --vocab 50257 --block-size 1024 --prompt-tokens 128 --decode-tokens 64 --threads 2
//       --kv-cache auto|f32|f16] [--models A.gguf,B.gguf: these files instead, as `gpt generate` opens them]
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gpt/generation/kv_cache.h"
#include "gpt/kernels/dispatch.h"
#include "gpt/model/gpt.h"
#include "gpt2_shape.h"
#include "gpt/model/inference_weights.h"
#include "gpt/io/model_loader.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Read bandwidth: all threads sum a 512 MiB buffer (far larger than any cache),
// best of 3, with the widest loads the CPU has: AVX-512 with four accumulators
// where present (on an Intel Xeon VM this read 25-28 GB/s where a plain 64-bit
// integer loop, vectorised by the compiler for SSE2, read 16-22: a bound taken
// from the slower loop would flatter every fraction of it), else that loop.
// Measured right before and right after each type's decode, and the higher figure
// taken (the stricter bound): this machine's bandwidth drifts with its
// neighbours' load.
#if defined(__x86_64__)
GPT_AVX512_WARNINGS_OFF
__attribute__((target("avx512f"))) float sum_avx512(const float* p, size_t n) {
  float total = 0;
#pragma omp parallel reduction(+ : total)
  {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#pragma omp for schedule(static)
    for (size_t i = 0; i < n; i += 64) {
      a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
      a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
      a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
      a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
    }
    total += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
  return total;
}
GPT_AVX512_WARNINGS_ON
#endif

double measure_read_gb_per_s() {
  static std::vector<float> buf((size_t(1) << 29) / sizeof(float), 1.0f);  // n is a multiple of 64
  const size_t n = buf.size();
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    uint64_t total = 0;
    const auto* words = reinterpret_cast<const uint64_t*>(buf.data());
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t i = 0; i < n / 2; ++i) total += words[i];
    double t = seconds_since(t0);
    if (total == 0) std::printf("unreachable\n");
    best = std::max(best, static_cast<double>(n * sizeof(float)) / t / 1e9);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
      t0 = Clock::now();
      const float sum = sum_avx512(buf.data(), n);
      t = seconds_since(t0);
      if (sum == 0) std::printf("unreachable\n");
      best = std::max(best, static_cast<double>(n * sizeof(float)) / t / 1e9);
    }
#endif
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  gpt::ModelConfig c = bench::gpt2_124m_shape();
  int prompt = 128, decode = 64, threads = 0;
  std::string types = "f32,f16,bf16,q8_0,q4_0";
  std::string models;
  gpt::KvCacheType kv = gpt::KvCacheType::kAuto;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (k == "--n-layer") c.n_layer = v;
    else if (k == "--n-head") c.n_head = v;
    else if (k == "--n-embd") c.n_embd = v;
    else if (k == "--vocab") c.vocab_size = v;
    else if (k == "--block-size") c.block_size = v;
    else if (k == "--prompt-tokens") prompt = v;
    else if (k == "--decode-tokens") decode = v;
    else if (k == "--threads") threads = v;
    else if (k == "--types") types = argv[i + 1];
    else if (k == "--models") models = argv[i + 1];
    else if (k == "--kv-cache") kv = gpt::parse_kv_cache_type(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (threads > 0) omp_set_num_threads(threads);
  gpt::GPT model(c);
  model.init_weights(1);
  std::vector<int32_t> ids(static_cast<size_t>(prompt));
  for (int i = 0; i < prompt; ++i) ids[static_cast<size_t>(i)] = (i * 7919) % c.vocab_size;

  std::stringstream list(models.empty() ? types : models);
  for (std::string type; std::getline(list, type, ',');) {
    std::unique_ptr<gpt::QuantizedModel> q;
    gpt::OpenedModel opened;
    gpt::InferenceWeights weights;
    std::string label;
    if (!models.empty()) {
      opened = gpt::open_model(type, {.dequantize = false, .convert_to = std::nullopt, .panels = true, .adapter = {}});
      weights = opened.inference_weights();
      label = type;
      for (auto& id : ids) id %= weights.config.vocab_size;
    } else {
      weights = bench::weights_of(type, model, 1, q);
      label = type == "f32-rowmajor" ? "F32-rowmajor" : gpt::QuantRecipe::parse(type).name();
    }
    gpt::InferenceSession session(weights, kv);
    // Warm up with the whole prompt: oneDNN's JIT kernels, and the first touch of
    // the cache and scratch rows it uses (a session's memory is resident only
    // as far as used, so its first prompt pays those page faults once).
    session.append(ids.data(), prompt);
    session.reset();
    auto t0 = Clock::now();
    session.append(ids.data(), prompt);
    const double prefill = seconds_since(t0);
    const double gbps_before = measure_read_gb_per_s();
    t0 = Clock::now();
    for (int i = 0; i < decode; ++i) {
      const int32_t next = (i * 104729) % weights.config.vocab_size;
      session.append(&next, 1);
    }
    const double dec = seconds_since(t0);
    const double gbps = std::max(gbps_before, measure_read_gb_per_s());
    const double bytes = static_cast<double>(weights.bytes_per_token());
    const double bound = gbps * 1e9 / bytes;
    std::printf("{\"type\":\"%s\",\"prefill_tokens\":%d,\"prefill_tokens_per_sec\":%.1f,\"decode_tokens\":%d,"
                "\"decode_tokens_per_sec\":%.2f,\"weight_bytes_per_token\":%.0f,\"read_gb_per_s\":%.1f,"
                "\"bandwidth_bound_tokens_per_sec\":%.1f,\"fraction_of_bound\":%.2f,\"kv_cache\":\"%s\",\"threads\":%d}\n",
                label.c_str(), prompt, prompt / prefill, decode, decode / dec, bytes, gbps, bound,
                decode / dec / bound, gpt::kv_cache_type_name(session.kv_cache_type()), omp_get_max_threads());
    std::fflush(stdout);
  }
  return 0;
}
