// Causal ("masked") multi-head self-attention: each position attends to itself and
// the positions before it, softmax(q k^T / sqrt(hs)) v, head by head.
#pragma once
#include <cstdint>

#include "gpt/kernels/dropout.h"

namespace gpt {

// qkv (B,T,3C) holds q, k, v side by side (the fused c_attn output); head h uses
// channels [h*hs, (h+1)*hs) of each. Grouped-query attention (NKV key/value heads,
// NKV dividing NH; 0: NH): rows of C + 2 NKV hs, q's NH heads then k's and v's
// NKV, query head h reading key/value head h / (NH / NKV). out (B,T,C). The
// T x T weights are never stored: lse (B,NH,T) keeps each row's log-sum-exp of
// the scaled scores, from which backward (and drawing) recompute them block by
// block.
// positions (B,T), if given, packs several examples into a row: each token's
// place in its own example (0 where one starts, +1 along it; a row starts at 0),
// and a token attends only to its own example's tokens up to itself. A query
// block reads keys from its first query's example on, so packed short examples
// cost less than one causal row of length T.
// dropout, if given, drops attention weights (after the softmax; lse stays the
// softmax's) by masks drawn from a hash, never stored (kernels/dropout.h).
void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                       const int32_t* positions = nullptr, const AttentionDropout* dropout = nullptr,
                       int64_t NKV = 0);

// dqkv (B,T,3C) = gradient (overwritten), given the forward's out and lse (and the
// forward's dropout, whose masks it draws again).
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                        int64_t B, int64_t T, int64_t C, int64_t NH, const int32_t* positions = nullptr,
                        const AttentionDropout* dropout = nullptr, int64_t NKV = 0);

// The softmax weights of batch row b, att (NH,T,T) (0 above the diagonal and
// outside a packed token's example), from the forward's qkv and lse: for
// drawing attention maps.
void attention_probabilities(float* att, const float* qkv, const float* lse, int64_t b, int64_t T, int64_t C,
                             int64_t NH, const int32_t* positions = nullptr, int64_t NKV = 0);

// Inference with a KV cache: n new tokens at positions p0 .. p0+n-1 attend to the
// cached keys/values of positions 0 .. their own. q (n, q_stride) holds the new
// queries (head h at channels [h*hs, (h+1)*hs)); k_cache and v_cache are
// (NH, capacity, hs) and already hold positions 0 .. p0+n-1. out (n, C).
// Grouped-query attention: NKV cached heads (0: NH), query head h reading h / (NH / NKV).
// A prompt's queries go by blocks through GEMMs, one query (decoding) through a
// kernel that reads the cache in place. scratch: scratch_threads *
// attention_cached_scratch_floats(capacity, hs, false) floats.
void attention_forward_cached(float* out, const float* q, int64_t q_stride, const float* k_cache,
                              const float* v_cache, int64_t capacity, int64_t p0, int64_t n, int64_t C,
                              int64_t NH, float* scratch, int scratch_threads, int64_t NKV = 0);

// The same with the cache stored as IEEE float16 (half the bytes read per token);
// a prompt's blocks (and, without AVX-512, every query) widen the keys and values
// they see into their thread's scratch: scratch_threads *
// attention_cached_scratch_floats(capacity, hs, true) floats.
void attention_forward_cached_f16(float* out, const float* q, int64_t q_stride, const uint16_t* k_cache,
                                  const uint16_t* v_cache, int64_t capacity, int64_t p0, int64_t n, int64_t C,
                                  int64_t NH, float* scratch, int scratch_threads, int64_t NKV = 0);
int64_t attention_cached_scratch_floats(int64_t capacity, int64_t hs, bool float16_cache);
// Whether a float16 cache of head width hs is read in place by a vector kernel
// (else each query's keys and values are widened first, slower than fp32).
bool attention_f16_reads_in_place(int64_t hs);

}  // namespace gpt
