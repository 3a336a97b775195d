// The quantized products (kernels/quantize.h's quantized_linear) by type and by
// number of input rows: 1 is a decoding step, 4 a small batch, 128 a prompt.
// GPT-2 124M's matrices (out x in) with their weights read from memory: every call
// takes the next of enough copies to spill the caches, as a model's 12 layers do.
// Best of R rounds; one line per (type, matrix, rows): weight GB/s and GMAC/s.
//   build/bench/bench_quantized_products [--types q2_k,q3_k,q4_k,q5_k,q6_k,q4_0,q8_0]
//       [--rows 1,4,128] [--rounds 5] [--threads 2]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpt/kernels/quantize.h"
#include "gpt/util/error.h"

namespace {
using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t out, in;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream list(s);
  for (std::string x; std::getline(list, x, ',');) v.push_back(x);
  return v;
}

int usage_error(const std::string& what) {
  std::fprintf(stderr, "error: bench_quantized_products: %s\n", what.c_str());
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  std::string types = "q2_k,q3_k,q4_k,q5_k,q6_k,q4_0,q8_0", rows_list = "1,4,128";
  int rounds = 5, threads = 2;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (k != "--types" && k != "--rows" && k != "--rounds" && k != "--threads") return usage_error("unknown option " + k);
    if (i + 1 >= argc) return usage_error(k + " needs a value");
    const std::string v = argv[i + 1];
    if (k == "--types") types = v;
    else if (k == "--rows") rows_list = v;
    else if (k == "--rounds") rounds = std::atoi(v.c_str());
    else threads = std::atoi(v.c_str());
  }
  if (rounds < 1 || threads < 1) return usage_error("--rounds and --threads take a positive number");
  std::vector<gpt::GgmlType> type_list;
  try {
    for (const std::string& t : split(types)) type_list.push_back(gpt::parse_ggml_type(t));
  } catch (const gpt::Error& e) {
    return usage_error(e.what());
  }
  std::vector<int64_t> row_counts;
  for (const std::string& x : split(rows_list)) {
    row_counts.push_back(std::atoll(x.c_str()));
    if (row_counts.back() < 1) return usage_error("--rows takes positive counts");
  }
  omp_set_num_threads(threads);
  std::printf("# kernels: %s, %d threads\n", gpt::quant_kernels_name(gpt::quant_kernels()), threads);
  std::printf("%-6s %-10s %5s %10s %10s %10s\n", "type", "matrix", "rows", "ms", "GB/s", "GMAC/s");
  const Shape shapes[] = {{"c_attn", 2304, 768}, {"attn_proj", 768, 768}, {"c_fc", 3072, 768},
                          {"mlp_proj", 768, 3072}, {"lm_head", 50257, 768}};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (gpt::GgmlType type : type_list) {
    for (const Shape& s : shapes) {
      std::vector<float> w(static_cast<size_t>(s.out * s.in));
      for (float& v : w) v = normal(rng);
      const gpt::QuantizedStorage first = gpt::QuantizedStorage::quantize(type, w.data(), s.out, s.in);
      // The rows as a file holds them, wrapped again for each copy (as loading does).
      const size_t rb = gpt::ggml_row_bytes(type, s.in);
      std::vector<uint8_t> file(rb * static_cast<size_t>(s.out));
      for (int64_t r = 0; r < s.out; ++r) first.matrix.block_row(r, file.data() + rb * static_cast<size_t>(r));
      const int64_t copies = std::max<int64_t>(2, (int64_t{384} << 20) / static_cast<int64_t>(file.size()));
      std::vector<gpt::QuantizedStorage> mats;
      for (int64_t c = 0; c < copies; ++c) mats.push_back(gpt::QuantizedStorage::wrap(type, file, s.out, s.in));
      int64_t next = 0;
      for (int64_t M : row_counts) {
        std::vector<float> x(static_cast<size_t>(M * s.in)), y(static_cast<size_t>(M * s.out));
        for (float& v : x) v = normal(rng) * 50;
        gpt::QuantScratch scratch;
        const int reps = static_cast<int>(std::max<int64_t>(copies, 200'000'000 / (s.out * s.in * std::max<int64_t>(M, 4))));
        double best = 1e30;
        for (int round = 0; round < rounds; ++round) {
          const auto t0 = Clock::now();
          for (int i = 0; i < reps; ++i)
            gpt::quantized_linear(y.data(), x.data(), mats[static_cast<size_t>(next++ % copies)].matrix, nullptr, M, scratch);
          best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / reps);
        }
        std::printf("%-6s %-10s %5lld %10.3f %10.1f %10.1f\n", gpt::ggml_type_name(type), s.name, static_cast<long long>(M),
                    best * 1e3, static_cast<double>(file.size()) / best * 1e-9,
                    static_cast<double>(M * s.out * s.in) / best * 1e-9);
      }
    }
  }
  return 0;
}
