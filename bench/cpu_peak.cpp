// The arithmetic peak of this CPU per instruction kind, measured: what a matrix
// product could reach at best in fp32, in bf16 through AVX512_BF16 (VDPBF16PS)
// and in fp16 through AVX512-FP16, on one thread and on all threads at once.
// It answers "how much can bf16 gain here?" before any kernel is tuned: where
// VDPBF16PS retires no more FLOPs than fp32 FMAs, only AMX tiles (oneDNN's bf16
// path on CPUs that have them) can make bf16 products faster than fp32 ones.
//
//     build/bench/bench_cpu_peak [--threads N] [--seconds S]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace {

// Twelve independent accumulators: enough to cover the FMA latency (4 cycles)
// on both FMA ports, so the loop runs at the instruction's throughput.
#define GPT_REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
constexpr int kChains = 12;

enum class Kind { kFp32Avx2, kFp32Avx512, kBf16Dot, kFp16Avx512 };
constexpr Kind kKinds[] = {Kind::kFp32Avx2, Kind::kFp32Avx512, Kind::kBf16Dot, Kind::kFp16Avx512};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kFp32Avx2: return "fp32 FMA (AVX2, ymm)";
    case Kind::kFp32Avx512: return "fp32 FMA (AVX-512, zmm)";
    case Kind::kBf16Dot: return "bf16 dot (AVX512_BF16 VDPBF16PS)";
    case Kind::kFp16Avx512: return "fp16 FMA (AVX512-FP16, fp16 sums)";
  }
  return "?";
}

bool is_fp32(Kind k) { return k == Kind::kFp32Avx2 || k == Kind::kFp32Avx512; }

// FLOPs one instruction does: multiply and add count as two.
double flops_per_instruction(Kind k) {
  switch (k) {
    case Kind::kFp32Avx2: return 2 * 8;
    case Kind::kFp32Avx512: return 2 * 16;
    case Kind::kBf16Dot: return 2 * 32;
    case Kind::kFp16Avx512: return 2 * 32;
  }
  return 0;
}

#if defined(__x86_64__)
// Each loop returns a value built from every accumulator, so none is dead code;
// every accumulator and input passes through an empty asm, so the compiler can
// neither fold them nor merge the twelve identical-looking chains into one. A
// loop defines Vec, zero, its inputs and GPT_PEAK_STEP(acc) / GPT_PEAK_LANE0(acc)
// (one step of a chain; lane 0 as a float), then expands GPT_CHAINS_BODY. (Macros,
// not a template: each loop must be compiled for its own instruction set.)
#define GPT_DECL(i)   \
  Vec a##i = zero;    \
  __asm__ volatile("" : "+v"(a##i));
#define GPT_STEP(i) a##i = GPT_PEAK_STEP(a##i);
#define GPT_SUM(i) s += GPT_PEAK_LANE0(a##i);
#define GPT_CHAINS_BODY                      \
  GPT_REP12(GPT_DECL)                        \
  for (long it = 0; it < iters; ++it) {      \
    GPT_REP12(GPT_STEP)                      \
  }                                          \
  float s = 0;                               \
  GPT_REP12(GPT_SUM)                         \
  return s;

#define GPT_PEAK_STEP(acc) _mm256_fmadd_ps(x, y, acc)
#define GPT_PEAK_LANE0(acc) _mm256_cvtss_f32(acc)
__attribute__((target("avx2,fma"))) float loop_fp32_avx2(long iters) {
  using Vec = __m256;
  const Vec zero = _mm256_setzero_ps();
  Vec x = _mm256_set1_ps(1e-9f), y = _mm256_set1_ps(1.0f);
  __asm__ volatile("" : "+v"(x), "+v"(y));
  GPT_CHAINS_BODY
}
#undef GPT_PEAK_STEP

#define GPT_PEAK_STEP(acc) _mm512_fmadd_ps(x, y, acc)
#undef GPT_PEAK_LANE0
#define GPT_PEAK_LANE0(acc) _mm512_cvtss_f32(acc)
__attribute__((target("avx512f"))) float loop_fp32_avx512(long iters) {
  using Vec = __m512;
  const Vec zero = _mm512_setzero_ps();
  Vec x = _mm512_set1_ps(1e-9f), y = _mm512_set1_ps(1.0f);
  __asm__ volatile("" : "+v"(x), "+v"(y));
  GPT_CHAINS_BODY
}
#undef GPT_PEAK_STEP

#define GPT_PEAK_STEP(acc) _mm512_dpbf16_ps(acc, x, y)
__attribute__((target("avx512f,avx512bf16"))) float loop_bf16_dot(long iters) {
  using Vec = __m512;
  const Vec zero = _mm512_setzero_ps();
  __m512i xi = _mm512_set1_epi16(0x3000), yi = _mm512_set1_epi16(0x3F80);  // bf16 bits of 2^-31 and 1
  __asm__ volatile("" : "+v"(xi), "+v"(yi));
  const auto x = reinterpret_cast<__m512bh&>(xi);
  const auto y = reinterpret_cast<__m512bh&>(yi);
  GPT_CHAINS_BODY
}
#undef GPT_PEAK_STEP
#undef GPT_PEAK_LANE0

#define GPT_PEAK_STEP(acc) _mm512_fmadd_ph(x, y, acc)
#define GPT_PEAK_LANE0(acc) static_cast<float>(_mm512_cvtsh_h(acc))
__attribute__((target("avx512f,avx512fp16"))) float loop_fp16(long iters) {
  using Vec = __m512h;
  const Vec zero = _mm512_setzero_ph();
  Vec x = _mm512_set1_ph(static_cast<_Float16>(1e-4f)), y = _mm512_set1_ph(static_cast<_Float16>(1.0f));
  __asm__ volatile("" : "+v"(x), "+v"(y));
  GPT_CHAINS_BODY
}
#undef GPT_PEAK_STEP
#undef GPT_PEAK_LANE0

bool supported(Kind k) {
  __builtin_cpu_init();
  switch (k) {
    case Kind::kFp32Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Kind::kFp32Avx512: return __builtin_cpu_supports("avx512f");
    case Kind::kBf16Dot: return __builtin_cpu_supports("avx512bf16");
    case Kind::kFp16Avx512: return __builtin_cpu_supports("avx512fp16");
  }
  return false;
}

float run_loop(Kind k, long iters) {
  switch (k) {
    case Kind::kFp32Avx2: return loop_fp32_avx2(iters);
    case Kind::kFp32Avx512: return loop_fp32_avx512(iters);
    case Kind::kBf16Dot: return loop_bf16_dot(iters);
    case Kind::kFp16Avx512: return loop_fp16(iters);
  }
  return 0;
}

// AMX: CPUID leaf 7 EDX bits 22 (AMX-BF16), 24 (AMX-TILE), 25 (AMX-INT8).
std::string amx_flags() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return "unknown";
  std::string s;
  if (d & (1u << 24)) s += " amx-tile";
  if (d & (1u << 22)) s += " amx-bf16";
  if (d & (1u << 25)) s += " amx-int8";
  return s.empty() ? "none" : s.substr(1);
}
#else
bool supported(Kind) { return false; }
float run_loop(Kind, long) { return 0; }
std::string amx_flags() { return "not x86"; }
#endif

// GFLOP/s with `threads` threads each running the loop at once (each thread's
// own rate, summed), best of three rounds of about `seconds` each.
double measure(Kind k, int threads, double seconds) {
  long iters = 1 << 16;  // calibrated on one thread to take about `seconds`
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile float sink = run_loop(k, iters);
    (void)sink;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > seconds / 4) {
      iters = static_cast<long>(static_cast<double>(iters) * seconds / dt);
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const auto t0 = std::chrono::steady_clock::now();
      volatile float sink = run_loop(k, iters);
      (void)sink;
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      total += kChains * flops_per_instruction(k) * static_cast<double>(iters) / dt / 1e9;
    }
    best = std::max(best, total);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  double seconds = 0.5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" || a == "--seconds") {
      if (i + 1 == argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        return 2;
      }
      char* end = nullptr;
      const double v = std::strtod(argv[++i], &end);
      if (*end != '\0' || !(v > 0) || v > 1e6) {
        std::fprintf(stderr, "error: %s needs a positive number, got '%s'\n", a.c_str(), argv[i]);
        return 2;
      }
      if (a == "--threads") {
        threads = static_cast<int>(v);
      } else {
        seconds = v;
      }
    } else {
      std::fprintf(stderr, "error: unknown argument '%s' (usage: bench_cpu_peak [--threads N] [--seconds S])\n",
                   argv[i]);
      return 2;
    }
  }
  double one[4] = {}, all[4] = {}, fp32 = 0;  // fp32: the best fp32 rate, what the others are compared with
  for (int i = 0; i < 4; ++i) {
    if (!supported(kKinds[i])) continue;
    one[i] = measure(kKinds[i], 1, seconds);
    all[i] = measure(kKinds[i], threads, seconds);
    if (is_fp32(kKinds[i])) fp32 = std::max(fp32, all[i]);
  }
  std::printf("instruction throughput, %d threads (about %.1f s per round, best of 3); AMX: %s\n", threads, seconds,
              amx_flags().c_str());
  std::printf("%-36s %16s %16s %14s\n", "", "1 thread", "all threads", "vs best fp32");
  for (int i = 0; i < 4; ++i) {
    if (all[i] == 0) {
      std::printf("%-36s %14s\n", kind_name(kKinds[i]), "not supported");
      continue;
    }
    std::printf("%-36s %8.0f GFLOP/s %8.0f GFLOP/s %13.2fx\n", kind_name(kKinds[i]), one[i], all[i],
                fp32 > 0 ? all[i] / fp32 : 0.0);
  }
  return 0;
}
