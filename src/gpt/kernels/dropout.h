// Dropout with masks from a counter-based hash: element i of a site is kept when
// hash(site seed, i) >= p * 2^32, and scaled by 1 / (1 - p). Nothing is stored:
// the backward pass (and a resumed run, and any thread count) draws the same
// mask again. The index names the element by its global row in the step's batch,
// its position and its feature, so a batch split into micro-batches, ranks or
// packed rows draws the masks one whole batch would.
#pragma once
#include <cstdint>

#include "gpt/util/rng.h"

namespace gpt {

// Which masks a pass draws: the step's seed and where its rows sit in the batch.
struct DropoutKey {
  uint64_t seed = 0;
  int64_t first_row = 0;   // global row of this pass's first sequence
  int64_t T = 1;           // positions per sequence in this pass
  int64_t row_stride = 1;  // positions per row in the index space (the context length)
  // Packed rows (GPT::set_packing): each token's example within the pass and its
  // place in it, so a packed example draws the mask it draws alone in a row.
  const int32_t* examples = nullptr;
  const int32_t* positions = nullptr;
};

// The threshold a hash must reach to keep an element: p * 2^32.
inline uint32_t dropout_threshold(float p) { return static_cast<uint32_t>(static_cast<double>(p) * 4294967296.0); }
inline bool dropout_keep(uint64_t site_seed, uint64_t index, uint32_t threshold) {
  return static_cast<uint32_t>(mix64(site_seed ^ mix64(index)) >> 32) >= threshold;
}
// Global row and position of token n (0 .. B*T-1) of a pass.
inline int64_t dropout_row(const DropoutKey& key, int64_t n) {
  return key.first_row + (key.examples != nullptr ? key.examples[n] : n / key.T);
}
inline int64_t dropout_position(const DropoutKey& key, int64_t n) {
  return key.positions != nullptr ? key.positions[n] : n % key.T;
}
// The index of feature k (of `width`) of token n.
inline uint64_t dropout_index(const DropoutKey& key, int64_t n, int64_t k, int64_t width) {
  return static_cast<uint64_t>((dropout_row(key, n) * key.row_stride + dropout_position(key, n)) * width + k);
}
// A site's own seed (a layer's residual branch, the embeddings, ...), apart from LoRA's.
inline uint64_t dropout_site_seed(uint64_t seed, uint64_t site) { return mix64(seed ^ (0xD20F000000000000ull | site)); }

// x (N,C) <- (x + bias) * mask / (1 - p); bias (C) may be null.
void dropout_forward(float* x, const float* bias, int64_t N, int64_t C, float p, uint64_t site_seed,
                     const DropoutKey& key);
// dx (N,C) = dy * mask / (1 - p) (dx may be dy).
void dropout_backward(float* dx, const float* dy, int64_t N, int64_t C, float p, uint64_t site_seed,
                      const DropoutKey& key);

// Dropout on attention weights (the softmax's output), inside the fused kernel:
// the weight of query t on key s in head h is kept by the hash of (global row,
// head, t's position, s's position).
struct AttentionDropout {
  float p = 0.0f;
  uint64_t site_seed = 0;
  DropoutKey key;
};

}  // namespace gpt
