#include "gpt/explain/explain.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <nlohmann/json.hpp>

#include "gpt/generation/kv_cache.h"
#include "gpt/kernels/embedding.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

float norm(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(std::sqrt(s));
}

// softmax in place; returns the entropy in nats.
float softmax(std::vector<float>& v) {
  const float max = *std::max_element(v.begin(), v.end());
  double sum = 0;
  for (float& x : v) sum += x = std::exp(x - max);
  double h = 0;
  for (float& x : v) {
    x = static_cast<float>(x / sum);
    if (x > 0) h -= static_cast<double>(x) * std::log(static_cast<double>(x));
  }
  return static_cast<float>(h);
}

std::vector<TokenProbability> top_k(const std::vector<float>& p, int k) {
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  const auto m = std::min(order.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(m), order.end(),
                    [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  std::vector<TokenProbability> out;
  for (size_t i = 0; i < m; ++i) out.push_back({order[i], p[order[i]]});
  return out;
}

// The distribution the model would give from this stream: final norm, LM head, softmax.
std::vector<float> lens(const InferenceWeights& w, const float* stream, float* entropy) {
  const ModelConfig& c = w.config;
  std::vector<float> ln(static_cast<size_t>(c.n_embd));
  float stats[2];
  apply_norm(c, ln.data(), stats, stream, w.ln_f_weight, w.ln_f_bias, 1);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  QuantScratch scratch;
  linear_apply(w.lm_head, logits.data(), ln.data(), 1, scratch);
  *entropy = softmax(logits);
  return logits;
}

// What truncation keeps of a distribution (sorted, most likely first).
Explanation::SamplingEffect effect(std::string setting, std::vector<float> sorted) {
  Explanation::SamplingEffect e{std::move(setting), static_cast<int64_t>(sorted.size()), 0, 0};
  double sum = 0;
  for (float p : sorted) sum += p;
  double h = 0;
  for (float p : sorted) {
    const double q = p / sum;
    if (q > 0) h -= q * std::log(q);
  }
  e.top_prob = sorted.empty() ? 0.0f : static_cast<float>(sorted[0] / sum);
  e.entropy = static_cast<float>(h);
  return e;
}

}  // namespace

Explanation explain(const InferenceWeights& weights, const Tokenizer& tokenizer, std::string_view prompt,
                    int64_t position, int top) {
  const ModelConfig& c = weights.config;
  Explanation e;
  e.config = c;
  e.tokens = tokenizer.encode_prompt(prompt);
  const auto T = static_cast<int64_t>(e.tokens.size());
  GPT_CHECK(T > 0, "the prompt is empty");
  GPT_CHECK(T <= c.block_size, "the prompt is " + std::to_string(T) + " tokens but the model's context is " +
                                   std::to_string(c.block_size));
  if (position < 0) position = T - 1;
  GPT_CHECK(position < T, "--position " + std::to_string(position) + " is outside the prompt (tokens 0 .. " +
                              std::to_string(T - 1) + ")");
  e.position = position;
  for (int32_t id : e.tokens) e.pieces.push_back(tokenizer.token_bytes(id));

  // One pass over the tokens up to the position (later ones cannot change it).
  InferenceSession session(weights, KvCacheType::kF32);
  session.trace_position(position);
  const float* logits = session.append(e.tokens.data(), position + 1);
  const InferenceSession::Trace& t = session.trace();
  GPT_CHECK(t.complete, "internal: the traced position was not run");

  const int64_t C = c.n_embd, L = c.n_layer, NH = c.n_head, V = c.vocab_size;
  e.token_vector.resize(static_cast<size_t>(C));
  weights.embed(e.tokens[static_cast<size_t>(position)], e.token_vector.data());
  if (weights.wpe != nullptr) {
    e.position_vector.assign(weights.wpe + position * C, weights.wpe + (position + 1) * C);
  } else if (weights.config.position_encoding == PositionEncoding::kSinusoidal) {
    std::vector<float> table(static_cast<size_t>((position + 1) * C));
    sinusoidal_positions(table.data(), position + 1, C);
    e.position_vector.assign(table.end() - C, table.end());
  }
  // Nearest tokens to the token's embedding, by cosine.
  {
    std::vector<float> sim(static_cast<size_t>(V)), row(static_cast<size_t>(C));
    const float self = norm(e.token_vector.data(), C);
    for (int64_t v = 0; v < V; ++v) {
      weights.embed(static_cast<int32_t>(v), row.data());
      double dot = 0;
      for (int64_t j = 0; j < C; ++j) dot += static_cast<double>(row[j]) * e.token_vector[j];
      const float n = norm(row.data(), C);
      sim[static_cast<size_t>(v)] = n > 0 && self > 0 ? static_cast<float>(dot / (n * self)) : 0.0f;
    }
    e.nearest = top_k(sim, 8);
  }

  e.embedded = t.embedded;
  e.final_residual.assign(t.residual.end() - C, t.residual.end());
  const int64_t P = position + 1;
  for (int64_t l = 0; l < L; ++l) {
    Explanation::Block b;
    for (int64_t h = 0; h < NH; ++h) {
      const float* w = t.attention.data() + (l * NH + h) * P;
      b.heads.push_back({std::vector<float>(w, w + P)});
    }
    const float* attn = t.attention_output.data() + l * C;
    const float* ffn = t.ffn_output.data() + l * C;
    e.attention_outputs.emplace_back(attn, attn + C);
    e.ffn_outputs.emplace_back(ffn, ffn + C);
    b.attention_norm = norm(attn, C);
    b.ffn_norm = norm(ffn, C);
    b.residual_norm = norm(t.residual.data() + l * C, C);
    std::vector<float> p = lens(weights, t.residual.data() + l * C, &b.lens_entropy);
    b.lens = top_k(p, 5);
    if (l == L - 1) e.lens_last = std::move(p);
    e.blocks.push_back(std::move(b));
  }

  e.probabilities.assign(logits, logits + V);
  e.entropy = softmax(e.probabilities);
  e.top = top_k(e.probabilities, top);

  // What sampling settings would do to this distribution.
  std::vector<float> sorted = e.probabilities;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  e.sampling.push_back(effect("greedy", {sorted[0]}));
  for (float temperature : {0.7f, 1.3f}) {
    std::vector<float> q(static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v) q[static_cast<size_t>(v)] = std::log(std::max(e.probabilities[v], 1e-38f)) / temperature;
    softmax(q);
    std::sort(q.begin(), q.end(), std::greater<>());
    char name[32];
    std::snprintf(name, sizeof name, "temperature %.1f", temperature);
    e.sampling.push_back(effect(name, q));
  }
  e.sampling.push_back(effect("top-k 40", std::vector<float>(sorted.begin(), sorted.begin() + std::min<int64_t>(40, V))));
  {
    double mass = 0;
    size_t keep = 0;
    while (keep < sorted.size() && mass < 0.9) mass += sorted[keep++];
    e.sampling.push_back(effect("top-p 0.9", std::vector<float>(sorted.begin(), sorted.begin() + static_cast<ptrdiff_t>(keep))));
  }
  {
    size_t keep = 0;
    while (keep < sorted.size() && sorted[keep] >= 0.05f * sorted[0]) ++keep;
    e.sampling.push_back(effect("min-p 0.05", std::vector<float>(sorted.begin(), sorted.begin() + static_cast<ptrdiff_t>(keep))));
  }
  for (int32_t id : e.tokens) e.piece_of[id] = tokenizer.token_bytes(id);
  for (const auto* list : {&e.nearest, &e.top}) {
    for (const auto& t : *list) e.piece_of[t.token] = tokenizer.token_bytes(t.token);
  }
  for (const auto& b : e.blocks) {
    for (const auto& t : b.lens) e.piece_of[t.token] = tokenizer.token_bytes(t.token);
  }
  return e;
}

nlohmann::json explanation_json(const Explanation& e) {
  using nlohmann::json;
  auto tops = [](const std::vector<TokenProbability>& v, const Explanation& ex) {
    json a = json::array();
    for (const auto& t : v) a.push_back({{"id", t.token}, {"piece", ex.piece_of.at(t.token)}, {"prob", t.prob}});
    return a;
  };
  json tokens = json::array();
  for (size_t i = 0; i < e.tokens.size(); ++i) tokens.push_back({{"id", e.tokens[i]}, {"piece", e.pieces[i]}});
  json blocks = json::array();
  for (size_t l = 0; l < e.blocks.size(); ++l) {
    const auto& b = e.blocks[l];
    json heads = json::array();
    for (const auto& h : b.heads) heads.push_back(h.weights);
    blocks.push_back({{"attention", heads},
                      {"attention_norm", b.attention_norm},
                      {"ffn_norm", b.ffn_norm},
                      {"residual_norm", b.residual_norm},
                      {"logit_lens", tops(b.lens, e)},
                      {"logit_lens_entropy", b.lens_entropy}});
  }
  json sampling = json::array();
  for (const auto& s : e.sampling) {
    sampling.push_back({{"setting", s.setting}, {"kept", s.kept}, {"top_prob", s.top_prob}, {"entropy", s.entropy}});
  }
  return {{"model", {{"n_layer", e.config.n_layer}, {"n_head", e.config.n_head}, {"n_embd", e.config.n_embd},
                     {"vocab_size", e.config.vocab_size}, {"block_size", e.config.block_size}}},
          {"tokens", tokens},
          {"position", e.position},
          {"embedding", {{"token", e.token_vector}, {"position", e.position_vector},
                         {"token_norm", norm(e.token_vector.data(), static_cast<int64_t>(e.token_vector.size()))},
                         {"position_norm", norm(e.position_vector.data(), static_cast<int64_t>(e.position_vector.size()))},
                         {"nearest", tops(e.nearest, e)}}},  // ("prob": the cosine similarity)
          {"blocks", blocks},
          {"output", {{"top", tops(e.top, e)}, {"entropy", e.entropy}, {"sampling", sampling}}}};
}

}  // namespace gpt
