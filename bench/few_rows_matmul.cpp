// The products of a batched decoding step, by number of input rows: the
// few-rows kernels (kernels/matmul_rows.cpp: W in panels, or the LM head as it
// is, read once) against oneDNN's sgemm (which packs W's panels itself on every
// call) and, for one row, the decode kernels gemv_in_out / gemv_out_in. GPT-2
// 124M's five fp32 matrices, each read from memory: every call takes the next
// of enough copies to spill the caches, as a model's 12 layers do. Interleaved,
// best of R rounds; one line per (rows, matrix): GFLOP/s, weight GB/s, ratios.
//   build/bench/bench_few_rows_matmul [--rows 1,2,4,8,16,32,64,128 --rounds 5 --threads 2]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpt/kernels/matmul.h"

namespace {
using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t in, out;
  bool out_major;  // W (out, in), as the tied LM head
};

double seconds_of(const std::function<void()>& f, int reps) {
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(Clock::now() - t0).count() / reps;
}
}  // namespace

int main(int argc, char** argv) {
  std::string rows_list = "1,2,4,8,16,32,64,128";
  int rounds = 5, threads = 2;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_few_rows_matmul: %s needs a value\n", k.c_str());
      return 2;
    }
    const std::string v = argv[i + 1];
    if (k == "--rows") rows_list = v;
    else if (k == "--rounds") rounds = std::atoi(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "bench_few_rows_matmul: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (!gpt::few_rows_kernels()) {
    std::fprintf(stderr, "bench_few_rows_matmul: this CPU has no AVX-512; the kernels do not run here\n");
    return 1;
  }
  omp_set_num_threads(threads);
  const Shape shapes[] = {{"c_attn", 768, 2304, false},
                          {"attn_proj", 768, 768, false},
                          {"c_fc", 768, 3072, false},
                          {"mlp_proj", 3072, 768, false},
                          {"lm_head", 768, 50257, true}};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<int64_t> row_counts;
  std::stringstream list(rows_list);
  for (std::string x; std::getline(list, x, ',');) row_counts.push_back(std::atoll(x.c_str()));
  std::printf("%5s %-10s %12s %12s %12s %10s %10s %9s %9s\n", "rows", "matrix", "rows GFLOP/s", "dnnl GFLOP/s",
              "gemv GFLOP/s", "rows GB/s", "dnnl GB/s", "vs dnnl", "vs gemv");
  for (const Shape& s : shapes) {
    const int64_t elements = s.in * s.out;
    const int64_t copies = std::max<int64_t>(2, (int64_t{512} << 20) / (4 * elements));
    std::vector<float> W(static_cast<size_t>(copies * elements)), P, bias(static_cast<size_t>(s.out));
    for (int64_t i = 0; i < elements; ++i) W[static_cast<size_t>(i)] = normal(rng);
    for (int64_t c = 1; c < copies; ++c) std::copy(W.begin(), W.begin() + elements, W.begin() + c * elements);
    for (float& b : bias) b = normal(rng);
    if (!s.out_major) {  // the panels, as many copies
      P.resize(W.size());
      for (int64_t c = 0; c < copies; ++c) gpt::pack_panels(W.data(), s.in, s.out, P.data() + c * elements);
    }
    int64_t next = 0;
    auto pick = [&](std::vector<float>& v) { return v.data() + (next++ % copies) * elements; };
    for (int64_t M : row_counts) {
      std::vector<float> x(static_cast<size_t>(M * s.in)), y(static_cast<size_t>(M * s.out));
      for (float& v : x) v = normal(rng);
      auto rows = [&] {
        if (s.out_major) gpt::gemm_rows_out_in(y.data(), x.data(), M, pick(W), s.in, s.out);
        else gpt::gemm_rows_panels(y.data(), x.data(), M, pick(P), bias.data(), s.in, s.out);
      };
      auto dnnl = [&] {
        if (s.out_major) gpt::gemm_f32(false, true, M, s.out, s.in, 1.0f, x.data(), s.in, pick(W), s.in, 0.0f, y.data(), s.out);
        else gpt::linear_forward(y.data(), x.data(), pick(W), bias.data(), M, s.in, s.out);
      };
      auto gemv = [&] {
        if (s.out_major) gpt::gemv_out_in(y.data(), x.data(), pick(W), s.in, s.out);
        else gpt::gemv_in_out(y.data(), x.data(), pick(W), bias.data(), s.in, s.out);
      };
      const int reps = static_cast<int>(std::max<int64_t>(copies, 100'000'000 / (elements * std::max<int64_t>(M, 4))));
      double best_rows = 1e9, best_dnnl = 1e9, best_gemv = 1e9;
      for (int r = 0; r < rounds; ++r) {
        best_rows = std::min(best_rows, seconds_of(rows, reps));
        best_dnnl = std::min(best_dnnl, seconds_of(dnnl, reps));
        if (M == 1) best_gemv = std::min(best_gemv, seconds_of(gemv, reps));
      }
      const double flop = 2.0 * static_cast<double>(M * elements), bytes = 4.0 * static_cast<double>(elements);
      char gemv_flops[32] = "-", vs_gemv[32] = "-";
      if (M == 1) {
        std::snprintf(gemv_flops, sizeof gemv_flops, "%.1f", flop / best_gemv * 1e-9);
        std::snprintf(vs_gemv, sizeof vs_gemv, "%.2fx", best_gemv / best_rows);
      }
      std::printf("%5lld %-10s %12.1f %12.1f %12s %10.1f %10.1f %8.2fx %9s\n", static_cast<long long>(M), s.name,
                  flop / best_rows * 1e-9, flop / best_dnnl * 1e-9, gemv_flops, bytes / best_rows * 1e-9,
                  bytes / best_dnnl * 1e-9, best_dnnl / best_rows, vs_gemv);
    }
  }
  return 0;
}
