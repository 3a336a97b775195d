// Prefill and decode speed of gpt.cpp's KV-cache inference for each weight type,
// on a model with random weights (default: GPT-2 124M's shape), side by side with
// the machine's measured memory bandwidth: decode reads every weight once per
// token, so bandwidth / (weight bytes per token) bounds its speed when the
// weights do not fit in cache (fraction_of_bound); it reads the cached keys and
// values too, so fraction_of_bound_with_kv counts those bytes as well (at 128
// positions they add 4-9% to a K-quant GPT-2's weights, and attention takes
// about a tenth of a decoding step). Prints one JSON line per type.
//   build/bench/bench_generate_speed [--types f32,f16,bf16,q8_0,q4_0,q4_k_m,... --n-layer 12 --n-head 12
//       --n-embd 768 --vocab 50257 --block-size 1024 --prompt-tokens 128 --decode-tokens 64 --threads 2
//       --kv-cache auto|f32|f16 --repeats 3] [--models A.gguf,B.gguf: these files instead, as `gpt generate` opens them]
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
#include "gpt/util/error.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Read bandwidth: all threads sum a 512 MiB buffer (far larger than any cache),
// best of 3, with the widest loads the CPU has: AVX-512 with four accumulators
// where present (on an Intel Xeon VM this read 25-28 GB/s where a plain 64-bit
// integer loop, vectorised by the compiler for SSE2, read 16-22: a bound taken
// from the slower loop would flatter every fraction of it), else that loop.
// Measured right before and right after each decode round (see main).
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
  int prompt = 128, decode = 64, threads = 0, repeats = 3;
  std::string types = "f32,f16,bf16,q8_0,q4_0";
  std::string models;
  gpt::KvCacheType kv = gpt::KvCacheType::kAuto;
  const auto usage_error = [](const std::string& what) {
    std::fprintf(stderr, "error: bench_generate_speed: %s\n", what.c_str());
    return 2;
  };
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    int* number = k == "--n-layer" ? &c.n_layer : k == "--n-head" ? &c.n_head : k == "--n-embd" ? &c.n_embd
                : k == "--vocab" ? &c.vocab_size : k == "--block-size" ? &c.block_size : k == "--prompt-tokens" ? &prompt
                : k == "--decode-tokens" ? &decode : k == "--threads" ? &threads : k == "--repeats" ? &repeats : nullptr;
    if (number == nullptr && k != "--types" && k != "--models" && k != "--kv-cache") return usage_error("unknown option " + k);
    if (i + 1 >= argc) return usage_error(k + " needs a value");
    const std::string value = argv[i + 1];
    if (number != nullptr) {
      char* end = nullptr;
      const long v = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || v < 1 || v > (1L << 30)) return usage_error(k + " takes a positive number");
      *number = static_cast<int>(v);
    } else if (k == "--types") {
      types = value;
    } else if (k == "--models") {
      models = value;
    } else {
      try {
        kv = gpt::parse_kv_cache_type(value);
      } catch (const gpt::Error& e) {
        return usage_error(e.what());
      }
    }
  }
  if (threads > 0) omp_set_num_threads(threads);
  gpt::GPT model(c);
  if (models.empty()) model.init_weights(1);  // files bring their own weights
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
    // --repeats rounds, each: the prompt again from an empty cache, then the
    // decode, with the bandwidth measured right before and right after it (the
    // higher taken: the stricter bound). This machine's bandwidth drifts with its
    // neighbours' load (mostly 30-35 GB/s, for moments 50-59), so each round's
    // speed is set against its own bound. Reported: the best prefill and decode
    // speeds (compare with llama-bench's best sample), the median round's fraction
    // of its bound, and the median round's bandwidth with the bound it gives.
    const double bytes = static_cast<double>(weights.bytes_per_token());
    // A decoding step also reads every cached key and value of every layer: at
    // position p, 2 (p + 1) kv_dim elements per layer. Averaged over the steps.
    const double element = session.kv_cache_type() == gpt::KvCacheType::kF16 ? 2.0 : 4.0;
    const double mean_seen = prompt + (decode + 1) / 2.0;
    const double kv_bytes = 2.0 * mean_seen * static_cast<double>(weights.config.kv_dim()) *
                            static_cast<double>(weights.config.n_layer) * element;
    double prefill = 1e30, dec = 1e30;
    std::vector<double> fractions, fractions_kv, round_gbps;
    for (int round = 0; round < repeats; ++round) {
      session.reset();
      auto t0 = Clock::now();
      session.append(ids.data(), prompt);
      prefill = std::min(prefill, seconds_since(t0));
      const double gbps_before = measure_read_gb_per_s();
      t0 = Clock::now();
      for (int i = 0; i < decode; ++i) {
        const int32_t next = (i * 104729) % weights.config.vocab_size;
        session.append(&next, 1);
      }
      const double round_dec = seconds_since(t0);
      dec = std::min(dec, round_dec);
      const double gbps = std::max(gbps_before, measure_read_gb_per_s()), tps = decode / round_dec;
      round_gbps.push_back(gbps);
      fractions.push_back(tps / (gbps * 1e9 / bytes));
      fractions_kv.push_back(tps / (gbps * 1e9 / (bytes + kv_bytes)));
    }
    const auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      const size_t m = v.size() / 2;
      return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
    };
    const double gbps = median(round_gbps), bound = gbps * 1e9 / bytes;
    std::printf("{\"type\":\"%s\",\"prefill_tokens\":%d,\"prefill_tokens_per_sec\":%.1f,\"decode_tokens\":%d,"
                "\"decode_tokens_per_sec\":%.2f,\"weight_bytes_per_token\":%.0f,\"kv_bytes_per_token\":%.0f,"
                "\"read_gb_per_s\":%.1f,\"bandwidth_bound_tokens_per_sec\":%.1f,\"fraction_of_bound\":%.2f,"
                "\"fraction_of_bound_with_kv\":%.2f,\"kv_cache\":\"%s\",\"threads\":%d,\"repeats\":%d}\n",
                label.c_str(), prompt, prompt / prefill, decode, decode / dec, bytes, kv_bytes, gbps, bound,
                median(fractions), median(fractions_kv), gpt::kv_cache_type_name(session.kv_cache_type()),
                omp_get_max_threads(), repeats);
    std::fflush(stdout);
  }
  return 0;
}
