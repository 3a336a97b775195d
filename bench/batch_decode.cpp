// Aggregate decoding throughput of the batched engine (generation/batch_engine.h)
// by number of concurrent sequences and weight type, on a model with random
// weights (default: GPT-2 124M's shape). Every sequence gets the same-length
// prompt (different tokens); all join at once, their prompts are read, then the
// decoding steps are timed. One JSON line per (type, sequences):
// aggregate tokens/s, per-sequence tokens/s, p50/p99 step time, KV bytes in use
// at the end of decoding and reserved; and, from 2 sequences on, how long one more
// sequence joining the busy batch waits for its first token, against the time
// its prompt takes alone in an empty engine.
//   build/bench/bench_batch_decode [--types f32,q8_0 --sequences 1,2,4,8,16,32 --prompt-tokens 128
//       --decode-tokens 64 --threads 2 --models a.gguf,b.gguf --kv-cache auto|f32|f16 --n-layer 12 --n-head 12 --n-embd 768 --vocab 50257 --block-size 1024]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gpt/generation/batch_engine.h"
#include "gpt/io/model_loader.h"
#include "gpt/model/gpt.h"
#include "gpt2_shape.h"
#include "gpt/model/inference_weights.h"

namespace {
using Clock = std::chrono::steady_clock;
std::vector<int> parse_ints(const std::string& list) {
  std::vector<int> v;
  std::stringstream s(list);
  for (std::string x; std::getline(s, x, ',');) v.push_back(std::atoi(x.c_str()));
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  gpt::ModelConfig c = bench::gpt2_124m_shape();
  int prompt = 128, decode = 64, threads = 0;
  gpt::KvCacheType kv = gpt::KvCacheType::kAuto;
  std::string types = "f32,q8_0", sequences = "1,2,4,8,16,32", models;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_batch_decode: %s needs a value\n", k.c_str());
      return 2;
    }
    const std::string v = argv[i + 1];
    if (k == "--n-layer") c.n_layer = std::atoi(v.c_str());
    else if (k == "--n-head") c.n_head = std::atoi(v.c_str());
    else if (k == "--n-embd") c.n_embd = std::atoi(v.c_str());
    else if (k == "--vocab") c.vocab_size = std::atoi(v.c_str());
    else if (k == "--block-size") c.block_size = std::atoi(v.c_str());
    else if (k == "--prompt-tokens") prompt = std::atoi(v.c_str());
    else if (k == "--decode-tokens") decode = std::atoi(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else if (k == "--kv-cache") kv = gpt::parse_kv_cache_type(v);
    else if (k == "--types") types = v;
    else if (k == "--sequences") sequences = v;
    else if (k == "--models") models = v;
    else {
      std::fprintf(stderr, "bench_batch_decode: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (threads > 0) omp_set_num_threads(threads);
  // One (weights, sequences) table: `label` names the weights in the output.
  auto run = [&](const std::string& label, const gpt::InferenceWeights& weights) {
    const gpt::ModelConfig& c = weights.config;
    for (int n : parse_ints(sequences)) {
      gpt::EngineOptions eo;
      eo.kv_cache = kv;
      eo.kv_bytes = static_cast<int64_t>(n) * (prompt + decode + 16) * 2 * c.n_layer * c.n_embd * 4;
      gpt::BatchedEngine engine(weights, eo);
      gpt::SequenceOptions o;
      o.sampling.greedy = true;
      o.max_new_tokens = decode;
      auto prompt_of = [&](int s) {
        std::vector<int32_t> ids(static_cast<size_t>(prompt));
        for (int i = 0; i < prompt; ++i) ids[static_cast<size_t>(i)] = ((i + 31 * s) * 7919) % c.vocab_size;
        return ids;
      };
      for (int s = 0; s < n; ++s) engine.add(prompt_of(s), o);
      // Read the prompts (and sample each sequence's first token): untimed.
      // (A step reads at most max_step_tokens prompt rows, so prompts can take
      // several; the ones read early decode meanwhile.)
      std::set<int64_t> started;
      while (static_cast<int>(started.size()) < n) {
        for (const gpt::BatchedEngine::Event& e : engine.step()) started.insert(e.id);
      }
      std::vector<double> steps;
      int64_t tokens = 0, kv_in_use = 0;
      const auto t0 = Clock::now();
      while (!engine.idle()) {
        kv_in_use = std::max(kv_in_use, engine.kv_bytes_in_use());
        const auto s0 = Clock::now();
        tokens += static_cast<int64_t>(engine.step().size());
        steps.push_back(std::chrono::duration<double>(Clock::now() - s0).count());
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      std::sort(steps.begin(), steps.end());
      const auto pct = [&](double p) { return steps[std::min(steps.size() - 1, static_cast<size_t>(p * static_cast<double>(steps.size())))]; };
      // Joining a busy batch: n - 1 sequences decoding, one more joins; the time
      // from its add() to its first token, against its prompt read alone.
      double join_ms = 0, alone_ms = 0;
      if (n > 1) {
        gpt::BatchedEngine busy(weights, eo), empty(weights, eo);
        for (int s = 1; s < n; ++s) busy.add(prompt_of(s), o);
        std::set<int64_t> begun;
        while (static_cast<int>(begun.size()) < n - 1) {
          for (const gpt::BatchedEngine::Event& e : busy.step()) begun.insert(e.id);
        }
        busy.step();  // steady decoding
        const auto j0 = Clock::now();
        const int64_t id = busy.add(prompt_of(0), o);
        for (bool got = false; !got;) {
          for (const gpt::BatchedEngine::Event& e : busy.step()) got = got || e.id == id;
        }
        join_ms = 1e3 * std::chrono::duration<double>(Clock::now() - j0).count();
        empty.add(prompt_of(n), o);  // (a prompt nothing has cached)
        const auto a0 = Clock::now();
        while (empty.step().empty()) {
        }
        alone_ms = 1e3 * std::chrono::duration<double>(Clock::now() - a0).count();
      }
      std::printf("{\"type\":\"%s\",\"sequences\":%d,\"decode_tokens\":%lld,\"aggregate_tokens_per_sec\":%.1f,"
                  "\"per_sequence_tokens_per_sec\":%.1f,\"step_ms_p50\":%.2f,\"step_ms_p99\":%.2f,"
                  "\"join_first_token_ms\":%.2f,\"prompt_alone_ms\":%.2f,"
                  "\"kv_bytes_in_use\":%lld,\"kv_bytes_reserved\":%lld,\"kv_cache\":\"%s\",\"threads\":%d}\n",
                  label.c_str(), n, static_cast<long long>(tokens), static_cast<double>(tokens) / seconds,
                  static_cast<double>(tokens) / seconds / n, 1e3 * pct(0.5), 1e3 * pct(0.99), join_ms, alone_ms,
                  static_cast<long long>(kv_in_use), static_cast<long long>(engine.kv_bytes_reserved()),
                  gpt::kv_cache_type_name(gpt::resolve_kv_cache_type(eo.kv_cache, weights)), omp_get_max_threads());
      std::fflush(stdout);
    }
  };
  if (!models.empty()) {  // files (GGUF, checkpoints), loaded as `gpt generate` loads them
    std::stringstream paths(models);
    for (std::string path; std::getline(paths, path, ',');) {
      gpt::ModelOpenOptions mo;
      mo.panels = true;
      const gpt::OpenedModel m = gpt::open_model(path, mo);
      run(std::string(gpt::ggml_type_name(m.type)) + " " + path, m.inference_weights());
    }
    return 0;
  }
  gpt::GPT model(c);
  model.init_weights(1);
  std::stringstream list(types);
  for (std::string type; std::getline(list, type, ',');) {
    std::unique_ptr<gpt::QuantizedModel> q;
    const gpt::InferenceWeights weights = bench::weights_of(type, model, 1, q);
    const bool row_major = type == "f32-rowmajor";
    const gpt::GgmlType t = gpt::parse_ggml_type(row_major ? "f32" : type);
    run(row_major ? "F32-rowmajor" : gpt::ggml_type_name(t), weights);
  }
  return 0;
}
