// Inference with a KV cache. The prompt goes through the model in one batched
// pass (prefill); after that each new token costs one pass over a single
// position, reusing the keys and values cached for all earlier positions.
// Memory is allocated once, for the model's whole context: nothing per token.
//
// When the context is full the session slides: it keeps the most recent half of
// the tokens. A GPT-2 model processes them again in one batched pass (learned
// positions are absolute, so cached keys cannot simply be shifted); a RoPE
// model (llama) shifts them: the kept keys and values move to the front of the
// cache and each key is rotated back by the shift (a rotation to position p - d
// is the rotation to p followed by one by -d), as llama.cpp's context shift
// does, at a cost of one pass over the kept cache instead of a prompt's pass.
// (The kept keys keep what the dropped tokens contributed to them, so after a
// shift the session differs from one that read only the kept tokens, except
// in a one-block model.)
//
// The cache holds fp32 or float16 keys and values. Float16 halves the bytes each
// token reads from it (at a 1000-token context as many as a Q4_0 GPT-2's
// weights) at a relative rounding of 2^-11, as llama.cpp stores it by default;
// by default models with compact weights use it and fp32 models stay exact.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gpt/kernels/compute_context.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/model/gpt.h"
#include "gpt/model/inference_weights.h"
#include "gpt/util/zeroed_buffer.h"

namespace gpt {

enum class KvCacheType { kAuto, kF32, kF16 };
KvCacheType parse_kv_cache_type(const std::string& name);  // "auto", "f32" or "f16"
const char* kv_cache_type_name(KvCacheType type);
// kAuto: float16 when any matrix is stored in a compact type and this CPU reads
// a float16 cache in place (AVX-512), else fp32.
KvCacheType resolve_kv_cache_type(KvCacheType type, const InferenceWeights& weights);

// Copies the key and value heads of one q|k|v row (after its C query floats)
// into a cache whose head h starts at k + h * head_stride (v likewise): the
// session's contiguous cache and the engine's pages alike, fp32 or float16.
void store_key_value(const ModelConfig& c, const float* qkv_row, float* k, float* v, int64_t head_stride);
void store_key_value(const ModelConfig& c, const float* qkv_row, uint16_t* k, uint16_t* v, int64_t head_stride);

// The blocks are the architecture's (model/arch/); this session is their cache.
class InferenceSession final : private InferenceCache {
 public:
  // fp32, reading the model's parameters in place (they may change between calls;
  // the model must outlive the session).
  explicit InferenceSession(const GPT& model, KvCacheType kv = KvCacheType::kAuto,
                            ComputeOptions compute = current_compute_options());
  // Any weight types (a QuantizedModel's weights). They must outlive the session
  // unless weights.owner keeps them alive (open_model's do). `compute`: the
  // session's own thread count and precision for prompts (by default the
  // calling thread's at construction; 0 threads: likewise), installed for each
  // call and restored after it.
  explicit InferenceSession(const InferenceWeights& weights, KvCacheType kv = KvCacheType::kAuto,
                            ComputeOptions compute = current_compute_options());

  void reset();
  int64_t position() const { return pos_; }        // tokens in the cache
  int64_t capacity() const { return capacity_; }   // the model's block size
  int64_t vocab_size() const { return w_.config.vocab_size; }
  const InferenceWeights& weights() const { return w_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }  // tokens in the cache, in order

  // Runs `n` tokens; returns the logits (V) after the last one. If they do not fit
  // in the free context, the session slides first (see above). With
  // `all_logits`, logits() afterwards holds (n, V) for every new token (then n
  // must not exceed the context: gpt::Error).
  const float* append(const int32_t* tokens, int64_t n, bool all_logits = false);
  const float* logits() const { return logits_.data(); }
  int64_t slides() const { return slides_; }
  int64_t shifts() const { return shifts_; }  // of those slides, how many shifted a RoPE cache

  // Inspection (what the server's /v1/inspect and `gpt attention` show): the
  // attention weights of `layer` in the following append() calls, as (NH, n,
  // position after the call) for the n new tokens, zero past each token's own
  // position. -1 (the default) turns it off.
  void capture_attention(int layer) { capture_layer_ = layer; }
  const std::vector<float>& captured_attention() const { return captured_; }

  // Inspection of one position (`gpt explain`): while it is among the tokens of
  // the following append() calls, keeps for token `position` (absolute) the
  // residual stream after the embedding, the output of every attention and
  // feed-forward sublayer (before it is added to the stream), the stream after
  // the last block, and every layer's attention weights from it. -1: off.
  struct Trace {
    int64_t position = -1;
    std::vector<float> embedded;          // (C): token + position
    std::vector<float> attention_output;  // (L, C)
    std::vector<float> ffn_output;        // (L, C)
    std::vector<float> residual;          // (L, C): the stream after each block
    std::vector<float> attention;         // (L, NH, position + 1)
    bool complete = false;                // the position has been run
  };
  void trace_position(int64_t position);
  const Trace& trace() const { return trace_; }
  KvCacheType kv_cache_type() const { return kv_type_; }  // kF32 or kF16

 private:
  void run(const int32_t* tokens, int64_t n, bool all_logits);
  // InferenceCache: the new keys and values at positions pos_ ..., and inspection.
  void attend(int64_t layer, InferenceRows& rows) override;
  void attended(int64_t layer, const InferenceRows& rows) override;
  void activated(int64_t layer, const float* hidden, int64_t width) override;
  void block_done(int64_t layer, const InferenceRows& rows) override;
  void capture(int64_t layer_offset, int64_t p0, int64_t n);
  // softmax(q k^T / sqrt(hs)) of new row i over positions 0 .. p0 + i, one head.
  void attention_row(int64_t layer_offset, int64_t head, int64_t p0, int64_t i, float* row);

  InferenceWeights w_;
  const ArchitectureRules* arch_;
  int64_t capacity_, pos_ = 0, slides_ = 0, shifts_ = 0;
  // Moves positions d .. pos_-1 of every layer's cache to 0 .. pos_-d-1 and
  // rotates the keys back by d (RoPE models).
  void shift_cache(int64_t d);
  std::vector<float> shift_row_;  // a float16 key widened for its rotation
  std::vector<int32_t> tokens_;
  std::vector<int32_t> replay_;  // tokens kept when sliding
  KvCacheType kv_type_;
  // Reserved for the whole context, resident as far as used (zeroed_buffer.h).
  ZeroedBuffer<float> k_cache_, v_cache_;     // (L, NKV, capacity, hs), fp32 ...
  ZeroedBuffer<uint16_t> k_half_, v_half_;    // ... or float16
  // (capacity, C | qkv_dim | C | the architecture's MLP width) scratch
  ZeroedBuffer<float> x_, ln_, qkv_, atty_, fch_;
  std::vector<float> stats_;                      // the norm's statistics (2, capacity)
  std::vector<float> logits_;                     // (V) or (n, V)
  std::vector<int32_t> row_positions_;            // the pass's positions (capacity)
  InferenceTables tables_;                        // RoPE's angles or the sinusoid
  int64_t traced_row_ = -1;                       // the traced position's row in this pass
  ZeroedBuffer<float> attn_scratch_;
  int scratch_threads_;
  ComputeContext compute_;  // installed for every append()
  QuantScratch quant_scratch_;
  int capture_layer_ = -1;
  std::vector<float> captured_;
  Trace trace_;
};

}  // namespace gpt
