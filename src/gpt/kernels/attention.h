// Causal ("masked") multi-head self-attention: each position attends to itself and
// the positions before it, softmax(q k^T / sqrt(hs)) v, head by head.
#pragma once
#include <cstdint>

namespace gpt {

// qkv (B,T,3C) holds q, k, v side by side (the fused c_attn output); head h uses
// channels [h*hs, (h+1)*hs) of each. out (B,T,C); att (B,NH,T,T) keeps the softmax
// weights for backward and for drawing (entries above the diagonal are 0).
void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T,
                       int64_t C, int64_t NH);

// dqkv (B,T,3C) = gradient (overwritten). scratch must hold scratch_threads * T floats;
// at most scratch_threads threads are used.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int64_t B, int64_t T, int64_t C, int64_t NH, float* scratch,
                        int scratch_threads);

// Inference with a KV cache: n new tokens at positions p0 .. p0+n-1 attend to the
// cached keys/values of positions 0 .. their own. q (n, q_stride) holds the new
// queries (head h at channels [h*hs, (h+1)*hs)); k_cache and v_cache are
// (NH, capacity, hs) and already hold positions 0 .. p0+n-1. out (n, C).
void attention_forward_cached(float* out, const float* q, int64_t q_stride, const float* k_cache,
                              const float* v_cache, int64_t capacity, int64_t p0, int64_t n, int64_t C,
                              int64_t NH, float* scratch, int scratch_threads);

}  // namespace gpt
