#include "gpt/generation/kv_cache.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/float16.h"
#include "gpt/util/error.h"

namespace gpt {

KvCacheType parse_kv_cache_type(const std::string& name) {
  if (name == "auto") return KvCacheType::kAuto;
  if (name == "f32") return KvCacheType::kF32;
  if (name == "f16") return KvCacheType::kF16;
  throw Error("unknown KV cache type '" + name + "' (expected auto, f32 or f16)");
}

const char* kv_cache_type_name(KvCacheType type) {
  switch (type) {
    case KvCacheType::kAuto: return "auto";
    case KvCacheType::kF32: return "f32";
    case KvCacheType::kF16: return "f16";
  }
  return "?";
}

KvCacheType resolve_kv_cache_type(KvCacheType type, const InferenceWeights& weights) {
  if (type != KvCacheType::kAuto) return type;
  bool compact = weights.lm_head.type() != GgmlType::kF32;
  for (const InferenceLayer& l : weights.layers) {
    for (const LinearWeights* m : {&l.c_attn, &l.attn_proj, &l.c_fc, &l.mlp_proj}) compact |= m->type() != GgmlType::kF32;
  }
  const ModelConfig& c = weights.config;
  // A float16 cache halves the bytes attention reads, but pays off only where
  // it is read in place; widened into scratch it decodes slower than fp32.
  return compact && attention_f16_reads_in_place(c.n_embd / c.n_head) ? KvCacheType::kF16 : KvCacheType::kF32;
}

void store_key_value(const ModelConfig& c, const float* qkv_row, float* k, float* v, int64_t head_stride) {
  const int64_t C = c.n_embd, KV = c.kv_dim(), hs = c.head_size();
  for (int64_t h = 0; h < c.kv_heads(); ++h) {
    std::memcpy(k + h * head_stride, qkv_row + C + h * hs, sizeof(float) * static_cast<size_t>(hs));
    std::memcpy(v + h * head_stride, qkv_row + C + KV + h * hs, sizeof(float) * static_cast<size_t>(hs));
  }
}

void store_key_value(const ModelConfig& c, const float* qkv_row, uint16_t* k, uint16_t* v, int64_t head_stride) {
  const int64_t C = c.n_embd, KV = c.kv_dim(), hs = c.head_size();
  for (int64_t h = 0; h < c.kv_heads(); ++h) {
    floats_to_halves(qkv_row + C + h * hs, k + h * head_stride, hs);
    floats_to_halves(qkv_row + C + KV + h * hs, v + h * head_stride, hs);
  }
}

InferenceSession::InferenceSession(const GPT& model, KvCacheType kv, ComputeOptions compute)
    : InferenceSession(InferenceWeights::view(model), kv, compute) {}

InferenceSession::InferenceSession(const InferenceWeights& weights, KvCacheType kv, ComputeOptions compute)
    : w_(weights),
      arch_(&architecture_rules(weights.config.arch)),
      capacity_(weights.config.block_size),
      kv_type_(resolve_kv_cache_type(kv, weights)),
      compute_({compute.precision, compute.threads > 0 ? compute.threads : omp_get_max_threads()}) {
  const ModelConfig& c = w_.config;
  const auto L = static_cast<size_t>(c.n_layer), C = static_cast<size_t>(c.n_embd),
             T = static_cast<size_t>(capacity_), KV = static_cast<size_t>(c.kv_dim());
  if (kv_type_ == KvCacheType::kF16) {
    k_half_ = ZeroedBuffer<uint16_t>(L * T * KV);
    v_half_ = ZeroedBuffer<uint16_t>(L * T * KV);
  } else {
    k_cache_ = ZeroedBuffer<float>(L * T * KV);
    v_cache_ = ZeroedBuffer<float>(L * T * KV);
  }
  x_ = ZeroedBuffer<float>(T * C);
  ln_ = ZeroedBuffer<float>(T * C);
  qkv_ = ZeroedBuffer<float>(T * static_cast<size_t>(c.qkv_dim()));
  atty_ = ZeroedBuffer<float>(T * C);
  fch_ = ZeroedBuffer<float>(T * static_cast<size_t>(arch_->mlp_width(c)));
  arch_->inference_tables(w_, capacity_, tables_);
  // Room for one head's kept keys when a float16 cache shifts: no allocation while decoding.
  if (c.position_encoding == PositionEncoding::kRotary && kv_type_ == KvCacheType::kF16)
    shift_row_.resize(static_cast<size_t>(capacity_) * static_cast<size_t>(c.head_size()));
  logits_.assign(static_cast<size_t>(c.vocab_size), 0.0f);
  tokens_.reserve(T);
  replay_.reserve(T);
  stats_.assign(2 * T, 0.0f);
  row_positions_.assign(T, 0);
  scratch_threads_ = compute_.threads();
  const int64_t per_thread =
      attention_cached_scratch_floats(capacity_, c.n_embd / c.n_head, kv_type_ == KvCacheType::kF16);
  attn_scratch_ = ZeroedBuffer<float>(static_cast<size_t>(scratch_threads_ * per_thread));
}

void InferenceSession::reset() {
  pos_ = 0;
  tokens_.clear();
}

const float* InferenceSession::append(const int32_t* tokens, int64_t n, bool all_logits) {
  const ComputeScope scope(compute_);
  if (n <= 0) throw Error("append needs at least one token");
  const int64_t V = w_.config.vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      throw Error("token id " + std::to_string(tokens[i]) + " outside the vocabulary of " + std::to_string(V));
    }
  }
  if (n > capacity_) {  // only the last `capacity_` tokens can matter ...
    // ... but logits for every token were asked for: they cannot all be given.
    GPT_CHECK(!all_logits, "logits for all " + std::to_string(n) + " tokens were asked for, but the context holds " +
                               std::to_string(capacity_));
    tokens += n - capacity_;
    n = capacity_;
  }
  if (pos_ + n > capacity_) {
    // Slide: keep the newest half of the context (less if the new tokens need the room).
    const int64_t keep = std::min(std::min(pos_, capacity_ / 2), capacity_ - n);
    ++slides_;
    if (w_.config.position_encoding == PositionEncoding::kRotary && keep > 0) {
      shift_cache(pos_ - keep);
    } else {
      replay_.assign(tokens_.end() - keep, tokens_.end());
      reset();
      if (keep > 0) run(replay_.data(), keep, false);
    }
  }
  run(tokens, n, all_logits);
  return all_logits ? logits_.data() + (n - 1) * V : logits_.data();
}

// One pass of n new tokens through the architecture's blocks, this session's
// cache taking their keys and values at positions pos_ ... pos_ + n - 1.
void InferenceSession::run(const int32_t* tokens, int64_t n, bool all_logits) {
  const ModelConfig& c = w_.config;
  const int64_t C = c.n_embd, NH = c.n_head, V = c.vocab_size, p0 = pos_;
  for (int64_t i = 0; i < n; ++i) row_positions_[static_cast<size_t>(i)] = static_cast<int32_t>(p0 + i);
  InferenceRows rows{n,           row_positions_.data(), x_.data(), ln_.data(), stats_.data(), qkv_.data(),
                     atty_.data(), fch_.data(),          &tables_,  &quant_scratch_};
  arch_->embed(w_, tokens, rows);
  // The traced position, if among these tokens: its row.
  traced_row_ = trace_.position >= p0 && trace_.position < p0 + n ? trace_.position - p0 : -1;
  if (traced_row_ >= 0) {
    const int64_t L = c.n_layer;
    trace_.embedded.assign(x_.data() + traced_row_ * C, x_.data() + (traced_row_ + 1) * C);
    trace_.attention_output.assign(static_cast<size_t>(L * C), 0.0f);
    trace_.ffn_output.assign(static_cast<size_t>(L * C), 0.0f);
    trace_.residual.assign(static_cast<size_t>(L * C), 0.0f);
    trace_.attention.assign(static_cast<size_t>(L * NH * (trace_.position + 1)), 0.0f);
  }
  arch_->blocks(w_, rows, *this);
  if (traced_row_ >= 0) trace_.complete = true;
  // Final norm and LM head: for every new row when asked, else only the last.
  const int64_t first = all_logits ? 0 : n - 1, count = n - first;
  arch_->norm(c, ln_.data(), stats_.data(), x_.data() + first * C, w_.ln_f_weight, w_.ln_f_bias, count);
  if (logits_.size() < static_cast<size_t>(count * V)) logits_.resize(static_cast<size_t>(count * V));
  linear_apply(w_.lm_head, logits_.data(), ln_.data(), count, quant_scratch_);
  tokens_.insert(tokens_.end(), tokens, tokens + n);
  pos_ += n;
}

void InferenceSession::attend(int64_t l, InferenceRows& rows) {
  const ModelConfig& c = w_.config;
  const int64_t C = c.n_embd, NH = c.n_head, hs = c.head_size(), T = capacity_, NKV = c.kv_heads(),
                KV = c.kv_dim(), QKV = c.qkv_dim(), p0 = pos_, n = rows.n;
  // Per key/value head, (T, hs) rows at positions p0 ...
  const int64_t layer = l * T * KV;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = layer + (p0 + i) * hs;
    if (kv_type_ == KvCacheType::kF16) {
      store_key_value(c, rows.qkv + i * QKV, k_half_.data() + at, v_half_.data() + at, T * hs);
    } else {
      store_key_value(c, rows.qkv + i * QKV, k_cache_.data() + at, v_cache_.data() + at, T * hs);
    }
  }
  if (kv_type_ == KvCacheType::kF16) {
    attention_forward_cached_f16(rows.atty, rows.qkv, QKV, k_half_.data() + layer, v_half_.data() + layer, T, p0, n,
                                 C, NH, attn_scratch_.data(), scratch_threads_, NKV);
  } else {
    attention_forward_cached(rows.atty, rows.qkv, QKV, k_cache_.data() + layer, v_cache_.data() + layer, T, p0, n,
                             C, NH, attn_scratch_.data(), scratch_threads_, NKV);
  }
}

void InferenceSession::attended(int64_t l, const InferenceRows& rows) {
  const ModelConfig& c = w_.config;
  const int64_t layer = l * capacity_ * c.kv_dim(), p0 = pos_;
  if (l == capture_layer_) capture(layer, p0, rows.n);
  if (traced_row_ < 0) return;
  // The sublayer's own output for the traced row (the pass adds it into the stream in place).
  const int64_t C = c.n_embd, NH = c.n_head, P = trace_.position + 1;
  for (int64_t h = 0; h < NH; ++h) attention_row(layer, h, p0, traced_row_, trace_.attention.data() + (l * NH + h) * P);
  linear_apply(w_.layers[static_cast<size_t>(l)].attn_proj, trace_.attention_output.data() + l * C,
               rows.atty + traced_row_ * C, 1, quant_scratch_);
}

void InferenceSession::activated(int64_t l, const float* hidden, int64_t width) {
  if (traced_row_ < 0) return;
  linear_apply(w_.layers[static_cast<size_t>(l)].mlp_proj, trace_.ffn_output.data() + l * w_.config.n_embd,
               hidden + traced_row_ * width, 1, quant_scratch_);
}

void InferenceSession::block_done(int64_t l, const InferenceRows& rows) {
  if (traced_row_ < 0) return;
  const int64_t C = w_.config.n_embd;
  std::copy(rows.x + traced_row_ * C, rows.x + (traced_row_ + 1) * C, trace_.residual.data() + l * C);
}

void InferenceSession::shift_cache(int64_t d) {
  const ModelConfig& c = w_.config;
  const int64_t T = capacity_, hs = c.head_size(), keep = pos_ - d, NKV = c.kv_heads();
  const bool f16 = kv_type_ == KvCacheType::kF16;
  // The table's rotations carry yarn's attention factor m: rotating back by d
  // through it multiplies by m once more, which this undoes.
  const float inv = 1.0f / tables_.rope.mscale;
  const auto unscale = [&](float* x, size_t n) {
    if (inv != 1.0f)
      for (size_t i = 0; i < n; ++i) x[i] *= inv;
  };
  for (int64_t l = 0; l < c.n_layer; ++l) {
    for (int64_t h = 0; h < NKV; ++h) {
      const int64_t head = (l * NKV + h) * T * hs;  // (L, NKV, T, hs)
      const size_t from = static_cast<size_t>(head + d * hs), to = static_cast<size_t>(head), n = static_cast<size_t>(keep * hs);
      if (f16) {
        std::memmove(v_half_.data() + to, v_half_.data() + from, n * sizeof(uint16_t));
        halves_to_floats(k_half_.data() + from, shift_row_.data(), static_cast<int64_t>(n));
        // Every kept key from p to p - d: the rotation by -d (rope_backward at position d).
        rope_backward(shift_row_.data(), keep, hs, 1, hs, tables_.rope, nullptr, 1, d);
        unscale(shift_row_.data(), n);
        floats_to_halves(shift_row_.data(), k_half_.data() + to, static_cast<int64_t>(n));
      } else {
        std::memmove(v_cache_.data() + to, v_cache_.data() + from, n * sizeof(float));
        std::memmove(k_cache_.data() + to, k_cache_.data() + from, n * sizeof(float));
        rope_backward(k_cache_.data() + to, keep, hs, 1, hs, tables_.rope, nullptr, 1, d);
        unscale(k_cache_.data() + to, n);
      }
    }
  }
  tokens_.erase(tokens_.begin(), tokens_.begin() + d);
  pos_ = keep;
  ++shifts_;
}

// softmax(q k^T / sqrt(hs)) over the cached keys, recomputed plainly (only for
// inspection: the attention kernels never form it).
void InferenceSession::attention_row(int64_t layer_offset, int64_t h, int64_t p0, int64_t i, float* row) {
  const ModelConfig& c = w_.config;
  const int64_t C = c.n_embd, hs = C / c.n_head, T = capacity_, kvh = h / (c.n_head / c.kv_heads());
  std::vector<float> key(static_cast<size_t>(hs));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const float* q = qkv_.data() + i * c.qkv_dim() + h * hs;
  float max = -INFINITY;
  for (int64_t j = 0; j <= p0 + i; ++j) {
    const int64_t at = layer_offset + (kvh * T + j) * hs;
    const float* k = key.data();
    if (kv_type_ == KvCacheType::kF16) {
      halves_to_floats(k_half_.data() + at, key.data(), hs);
    } else {
      k = k_cache_.data() + at;
    }
    float dot = 0;
    for (int64_t d = 0; d < hs; ++d) dot += q[d] * k[d];
    row[j] = dot * scale;
    max = std::max(max, row[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j <= p0 + i; ++j) sum += row[j] = std::exp(row[j] - max);
  for (int64_t j = 0; j <= p0 + i; ++j) row[j] /= sum;
}

void InferenceSession::capture(int64_t layer_offset, int64_t p0, int64_t n) {
  const int64_t NH = w_.config.n_head, P = p0 + n;
  captured_.assign(static_cast<size_t>(NH * n * P), 0.0f);
  for (int64_t h = 0; h < NH; ++h) {
    for (int64_t i = 0; i < n; ++i) attention_row(layer_offset, h, p0, i, captured_.data() + (h * n + i) * P);
  }
}

void InferenceSession::trace_position(int64_t position) {
  trace_ = Trace{};
  trace_.position = position;
}

}  // namespace gpt
