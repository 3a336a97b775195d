// Prefill and decode speed of gpt.cpp's KV-cache inference on a model with random
// weights (default: GPT-2 124M's shape). Prints one JSON line.
//   build/bench/bench_generate_speed [--n-layer 12 --n-head 12 --n-embd 768 --vocab 50257
//                                     --block-size 1024 --prompt-tokens 128 --decode-tokens 64 --threads 2]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gpt/generation/kv_cache.h"
#include "gpt/model/gpt.h"

int main(int argc, char** argv) {
  gpt::ModelConfig c;
  c.vocab_size = 50257;
  c.block_size = 1024;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  int prompt = 128, decode = 64, threads = 0;
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
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (threads > 0) omp_set_num_threads(threads);
  gpt::GPT model(c);
  model.init_weights(1);
  gpt::InferenceSession session(model);
  std::vector<int32_t> ids(static_cast<size_t>(prompt));
  for (int i = 0; i < prompt; ++i) ids[static_cast<size_t>(i)] = (i * 7919) % c.vocab_size;
  using clock = std::chrono::steady_clock;
  session.append(ids.data(), 8);  // warm up (oneDNN JIT, page faults)
  session.reset();
  auto t0 = clock::now();
  session.append(ids.data(), prompt);
  const double prefill = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  for (int i = 0; i < decode; ++i) {
    const int32_t next = (i * 104729) % c.vocab_size;
    session.append(&next, 1);
  }
  const double dec = std::chrono::duration<double>(clock::now() - t0).count();
  const double weight_bytes = 4.0 * static_cast<double>(model.num_parameters());
  std::printf("{\"prefill_tokens\":%d,\"prefill_tokens_per_sec\":%.1f,\"decode_tokens\":%d,\"decode_tokens_per_sec\":%.2f,"
              "\"weight_bytes\":%.0f,\"threads\":%d}\n",
              prompt, prompt / prefill, decode, decode / dec, weight_bytes, omp_get_max_threads());
  return 0;
}
