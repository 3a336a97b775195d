// Muon (Keller Jordan et al., 2024) for the blocks' weight matrices: momentum
// whose update is orthogonalised — every singular value set near 1 by a
// Newton–Schulz iteration — before it is applied, so each step moves a matrix
// as far in every direction it moves at all. Embeddings, the head, LayerNorm
// gains and biases stay with AdamW (OptimizerStep splits the parameters).
#pragma once
#include <cstdint>
#include <vector>

#include "gpt/model/parameters.h"

namespace gpt {

struct MuonConfig {
  float lr = 0.02f;          // at the schedule's peak (it follows AdamW's schedule shape)
  float momentum = 0.95f;
  bool nesterov = true;
  int ns_steps = 5;
  float weight_decay = 0.0f;  // decoupled: W *= 1 - lr * wd
};

// Whether Muon trains this tensor: a matrix inside a block (gpt2: c_attn, attn.c_proj, c_fc, mlp.c_proj; llama: q, k, v, o, gate, up, down).
bool is_muon_tensor(const TensorInfo& t);

// X (rows, cols) <- approximately U V^T of X = U S V^T (every singular value
// brought into about [0.7, 1.2]) by `steps` quintic Newton–Schulz iterations
// X <- a X + (b A + c A^2) X, A = X X^T, (a, b, c) = (3.4445, -4.7750, 2.0315),
// from X / ||X||_F, on the wide orientation (a tall X is transposed first).
// scratch grows as needed.
void newton_schulz(float* X, int64_t rows, int64_t cols, int steps, std::vector<float>& scratch);

class Muon {
 public:
  Muon(std::vector<TensorInfo> matrices, MuonConfig config);
  // One step for every matrix, GPT-2's (in, out) layout: buf <- momentum buf +
  // (1 - momentum) g; u = (1 - momentum) g + momentum buf (Nesterov) or buf;
  // W *= 1 - lr wd; W -= lr * max(1, out / in)^0.5 * newton_schulz(u).
  // params, grads and momentum are full-size buffers (momentum: AdamW's first
  // moment, whose slots these tensors do not use, so checkpoints keep it).
  void step(float* params, const float* grads, float* momentum, float lr);

  const MuonConfig& config() const { return config_; }
  const std::vector<TensorInfo>& matrices() const { return matrices_; }

 private:
  std::vector<TensorInfo> matrices_;
  MuonConfig config_;
  std::vector<float> update_, scratch_;
};

}  // namespace gpt
