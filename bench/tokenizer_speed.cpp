// GPT-2 BPE encoding speed (single thread and parallel) and BPE training time.
// Prints one JSON line.
//   build/bench/bench_tokenizer_speed --gpt2 ../shared/data/gpt2 --text FILE [--train-vocab 32000]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include <algorithm>

#include "gpt/tokenizer/bpe.h"
#include "gpt/tokenizer/bpe_trainer.h"
#include "gpt/util/file_io.h"

int main(int argc, char** argv) {
  std::string gpt2 = "../shared/data/gpt2", text_path;
  int train_vocab = 32000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--gpt2") gpt2 = argv[i + 1];
    else if (k == "--text") text_path = argv[i + 1];
    else if (k == "--train-vocab") train_vocab = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (text_path.empty()) {
    std::fprintf(stderr, "usage: bench_tokenizer_speed --gpt2 DIR --text FILE [--train-vocab N]\n");
    return 2;
  }
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); };
  const auto tok = gpt::BpeTokenizer::load_gpt2(std::string(gpt2) + "/encoder.json", std::string(gpt2) + "/vocab.bpe");
  const std::string text = gpt::read_text_file(text_path);
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::string json = "{\"bytes\":" + std::to_string(text.size());
  size_t tokens = 0;
  uint32_t ids_fnv = 0x811c9dc5u;  // FNV-1a over the ids, as tiktoken_speed.mjs
  for (int32_t id : tok->encode(text, false, 1)) ids_fnv = (ids_fnv ^ static_cast<uint32_t>(id)) * 0x01000193u;
  std::vector<int> thread_counts = {1, 2};
  if (omp_get_num_procs() > 2) thread_counts.push_back(omp_get_num_procs());
  tok->encode(text.substr(0, 1 << 20), false, 1);  // warm up: page faults, allocator
  for (int threads : thread_counts) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {  // best of 3: the machine is shared
      auto t0 = clock::now();
      tokens = tok->encode(text, false, threads).size();
      best = std::min(best, secs(t0));
    }
    json += ",\"encode_mb_per_s_" + std::to_string(threads) + "t\":" + std::to_string(mb / best);
  }
  json += ",\"tokens\":" + std::to_string(tokens) + ",\"ids_fnv\":" + std::to_string(ids_fnv);
  auto t0 = clock::now();
  gpt::PieceCounts counts;
  counts.add(text);
  gpt::BpeTrainOptions opts;
  opts.vocab_size = train_vocab;
  const auto trained = gpt::train_bpe(counts, opts);
  json += ",\"train_vocab\":" + std::to_string(trained->vocab_size()) + ",\"train_seconds\":" + std::to_string(secs(t0));
  std::printf("%s}\n", json.c_str());
  return 0;
}
