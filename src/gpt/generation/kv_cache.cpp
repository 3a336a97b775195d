#include "gpt/generation/kv_cache.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/embedding.h"  // sinusoidal_positions
#include "gpt/kernels/gelu.h"
#include "gpt/kernels/layernorm.h"
#include "gpt/util/error.h"

namespace gpt {

InferenceSession::InferenceSession(GPT& model) : InferenceSession(InferenceWeights::view(model)) {}

InferenceSession::InferenceSession(const InferenceWeights& weights) : w_(weights), capacity_(weights.config.block_size) {
  const ModelConfig& c = w_.config;
  const auto L = static_cast<size_t>(c.n_layer), C = static_cast<size_t>(c.n_embd),
             T = static_cast<size_t>(capacity_);
  k_cache_.assign(L * T * C, 0.0f);
  v_cache_.assign(L * T * C, 0.0f);
  x_.assign(T * C, 0.0f);
  ln_.assign(T * C, 0.0f);
  qkv_.assign(T * 3 * C, 0.0f);
  atty_.assign(T * C, 0.0f);
  fch_.assign(T * 4 * C, 0.0f);
  logits_.assign(static_cast<size_t>(c.vocab_size), 0.0f);
  tokens_.reserve(T);
  replay_.reserve(T);
  stats_.assign(2 * T, 0.0f);
  if (c.position_encoding == PositionEncoding::kSinusoidal) {
    positions_.resize(T * C);
    sinusoidal_positions(positions_.data(), capacity_, c.n_embd);
  }
  scratch_threads_ = omp_get_max_threads();
  attn_scratch_.assign(static_cast<size_t>(scratch_threads_) * T, 0.0f);
}

void InferenceSession::reset() {
  pos_ = 0;
  tokens_.clear();
}

const float* InferenceSession::append(const int32_t* tokens, int64_t n, bool all_logits) {
  if (n <= 0) throw Error("append needs at least one token");
  const int64_t V = w_.config.vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      throw Error("token id " + std::to_string(tokens[i]) + " outside the vocabulary of " + std::to_string(V));
    }
  }
  if (n > capacity_) {  // only the last `capacity_` tokens can matter
    tokens += n - capacity_;
    n = capacity_;
  }
  if (pos_ + n > capacity_) {
    // Slide: keep the newest half of the context (less if the new tokens need the room).
    const int64_t keep = std::min(std::min(pos_, capacity_ / 2), capacity_ - n);
    replay_.assign(tokens_.end() - keep, tokens_.end());
    reset();
    ++slides_;
    if (keep > 0) run(replay_.data(), keep, false);
  }
  run(tokens, n, all_logits);
  return all_logits ? logits_.data() + (n - 1) * V : logits_.data();
}

void InferenceSession::run(const int32_t* tokens, int64_t n, bool all_logits) {
  const ModelConfig& c = w_.config;
  const int64_t C = c.n_embd, NH = c.n_head, hs = C / NH, V = c.vocab_size, T = capacity_;
  const int64_t p0 = pos_;
  const InferenceWeights& w = w_;

  const float* pos_table = w.wpe != nullptr ? w.wpe : positions_.data();
  for (int64_t i = 0; i < n; ++i) {
    float* row = x_.data() + i * C;
    w.embed(tokens[i], row);
    const float* p = pos_table + (p0 + i) * C;
    for (int64_t j = 0; j < C; ++j) row[j] += p[j];
  }
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const InferenceLayer& L = w.layers[static_cast<size_t>(l)];
    float* K = k_cache_.data() + l * T * C;  // (NH, T, hs)
    float* Vc = v_cache_.data() + l * T * C;
    layernorm_forward(ln_.data(), stats_.data(), stats_.data() + n, x_.data(), L.ln_1_weight, L.ln_1_bias, n, C,
                      c.layer_norm_epsilon);
    linear_apply(L.c_attn, qkv_.data(), ln_.data(), n, quant_scratch_);
    for (int64_t i = 0; i < n; ++i) {  // store the new keys and values
      const float* row = qkv_.data() + i * 3 * C;
      for (int64_t h = 0; h < NH; ++h) {
        std::memcpy(K + (h * T + p0 + i) * hs, row + C + h * hs, sizeof(float) * static_cast<size_t>(hs));
        std::memcpy(Vc + (h * T + p0 + i) * hs, row + 2 * C + h * hs, sizeof(float) * static_cast<size_t>(hs));
      }
    }
    attention_forward_cached(atty_.data(), qkv_.data(), 3 * C, K, Vc, T, p0, n, C, NH, attn_scratch_.data(),
                             scratch_threads_);
    linear_apply(L.attn_proj, x_.data(), atty_.data(), n, quant_scratch_, x_.data());
    layernorm_forward(ln_.data(), stats_.data(), stats_.data() + n, x_.data(), L.ln_2_weight, L.ln_2_bias, n, C,
                      c.layer_norm_epsilon);
    linear_apply(L.c_fc, fch_.data(), ln_.data(), n, quant_scratch_);
    gelu_forward(fch_.data(), fch_.data(), n * 4 * C);
    linear_apply(L.mlp_proj, x_.data(), fch_.data(), n, quant_scratch_, x_.data());
  }
  // Final norm and LM head: for every new row when asked, else only the last.
  const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
  layernorm_forward(ln_.data(), stats_.data(), stats_.data() + rows, x_.data() + first * C, w.ln_f_weight,
                    w.ln_f_bias, rows, C, c.layer_norm_epsilon);
  if (logits_.size() < static_cast<size_t>(rows * V)) logits_.resize(static_cast<size_t>(rows * V));
  linear_apply(w.lm_head, logits_.data(), ln_.data(), rows, quant_scratch_);
  tokens_.insert(tokens_.end(), tokens, tokens + n);
  pos_ += n;
}

}  // namespace gpt
