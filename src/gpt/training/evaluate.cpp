#include "gpt/training/evaluate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gpt/generation/kv_cache.h"
#include "gpt/util/error.h"

namespace gpt {

LossSum total_loss_on_batches(GPT& model, const BatchSource& data, uint64_t seed, int64_t iters, int64_t B,
                              int64_t T, int rank, int ranks) {
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  LossSum sum;
  for (int64_t i = rank; i < iters; i += ranks) {
    const int64_t t = data.val_batch(seed, i, B, T, x.data(), y.data());
    double counted = 0;
    for (int64_t k = 0; k < B * t; ++k) counted += y[static_cast<size_t>(k)] != kIgnoreTarget;
    if (counted == 0) continue;
    sum.nats += static_cast<double>(model.forward(x.data(), y.data(), B, t)) * counted;
    sum.targets += counted;
  }
  return sum;
}

namespace {

TextEvaluation summarize(double nats, double bytes, int64_t n_pred) {
  TextEvaluation ev;
  ev.tokens = n_pred;
  ev.mean_loss = nats / static_cast<double>(n_pred);
  ev.perplexity = std::exp(ev.mean_loss);
  ev.bits_per_byte = nats / std::log(2.0) / bytes;
  return ev;
}

}  // namespace

TextEvaluation evaluate_text(GPT& model, const Tokenizer& tokenizer, const std::string& text, int64_t batch) {
  const std::vector<int32_t> tokens = tokenizer.encode(text);
  GPT_CHECK(tokens.size() >= 2, "the evaluation text needs at least 2 tokens, it has " + std::to_string(tokens.size()));
  const int64_t T = model.config().block_size;
  const auto n_pred = static_cast<int64_t>(tokens.size()) - 1;
  double nats = 0, bytes = 0;
  std::vector<int32_t> x, y;
  for (int64_t start = 0; start < n_pred;) {
    // Full windows go in batches; the last, shorter window runs alone.
    const int64_t full = std::min<int64_t>(batch, (n_pred - start) / T);
    const int64_t B = std::max<int64_t>(full, 1);
    const int64_t len = full > 0 ? T : n_pred - start;
    x.resize(static_cast<size_t>(B * len));
    y.resize(static_cast<size_t>(B * len));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t off = start + b * len;
      std::copy_n(tokens.begin() + off, len, x.begin() + b * len);
      std::copy_n(tokens.begin() + off + 1, len, y.begin() + b * len);
    }
    const float mean = model.forward(x.data(), y.data(), B, len);
    nats += static_cast<double>(mean) * static_cast<double>(B * len);
    for (int32_t id : y) bytes += static_cast<double>(tokenizer.token_bytes(id).size());
    start += B * len;
  }
  return summarize(nats, bytes, n_pred);
}

TextEvaluation evaluate_text(const InferenceWeights& weights, const Tokenizer& tokenizer, const std::string& text) {
  const std::vector<int32_t> tokens = tokenizer.encode(text);
  GPT_CHECK(tokens.size() >= 2, "the evaluation text needs at least 2 tokens, it has " + std::to_string(tokens.size()));
  const int64_t T = weights.config.block_size, V = weights.config.vocab_size;
  const auto n_pred = static_cast<int64_t>(tokens.size()) - 1;
  InferenceSession session(weights);
  double nats = 0, bytes = 0;
  for (int64_t start = 0; start < n_pred; start += T) {
    const int64_t len = std::min(T, n_pred - start);
    session.reset();
    session.append(tokens.data() + start, len, /*all_logits=*/true);
    for (int64_t i = 0; i < len; ++i) {
      const float* row = session.logits() + i * V;
      const float mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
      const int32_t target = tokens[static_cast<size_t>(start + i + 1)];
      nats += std::log(sum) + mx - row[target];
      bytes += static_cast<double>(tokenizer.token_bytes(target).size());
    }
  }
  return summarize(nats, bytes, n_pred);
}

}  // namespace gpt
