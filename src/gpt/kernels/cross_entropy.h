// Softmax cross-entropy over the vocabulary, fused: the forward keeps only the
// log-sum-exp of each row, and the backward turns the logits into their gradient
// in place, so no (B,T,V) probability tensor is ever stored.
#pragma once
#include <cstdint>
#include <vector>

namespace gpt {

// logits (N,V), targets (N) -> losses (N) = lse - logit[target], lse (N) kept for backward.
// Returns the mean loss. Throws if a target is outside [0, V).
float cross_entropy_forward(float* losses, float* lse, const float* logits,
                            const int32_t* targets, int64_t N, int64_t V);

// logits (N,V) is overwritten with dloss/dlogits = (softmax - onehot(target)) * dloss, where
// dloss is row_dloss[r] for row r when given (objectives that weigh each token), else dloss_all.
void cross_entropy_backward_inplace(float* logits, const float* lse, const int32_t* targets,
                                    int64_t N, int64_t V, float dloss_all, const float* row_dloss = nullptr);

// A target that does not count (fine-tuning's prompt tokens, padding): no loss,
// no gradient, and the mean is over the other rows. (PyTorch's ignore_index.)
inline constexpr int32_t kIgnoreTarget = -1;

// Memory the fused LM head keeps between calls: one chunk of logits and, for bf16
// products, the head's weight converted once per call instead of once per chunk;
// with ignored targets, the rows that count, gathered.
struct LmHeadScratch {
  std::vector<float> logits;
  std::vector<uint16_t> weight_bf16;
  std::vector<int64_t> kept_rows;
  std::vector<float> x_kept, dx_kept, losses_kept;
  std::vector<int32_t> targets_kept;
};

// The LM head and the cross-entropy fused, a chunk of rows at a time, so the
// (N,V) logits never exist whole (GPT-2: 206 MB at 4x256 tokens; one chunk is
// about 50 MB). For x (N,C) and the head W (V,C): logits = x @ W^T, losses and
// lse as cross_entropy_forward. With dx non-null it runs the backward in the
// same pass for d(loss_r) = dloss per row: dx (N,C) = dlogits @ W (overwritten),
// dW (V,C) += dlogits^T @ x.
// Targets equal to kIgnoreTarget are skipped (loss 0, dx 0) and only the other
// rows go through the head; dW may be null (a frozen head: dx only), or hold only
// the rows from dW_first_row on (LoRA's trainable tokens: (V - first, C)).
// row_dloss (N), when given, is each row's d(objective)/d(loss_r) in place of
// dloss (preference tuning and RL weigh every token differently).
// Throws before touching anything if a target is outside [0, V) and not ignored,
// or if every target is ignored. Returns the mean loss over the rows that count. chunk_rows = 0 chooses lm_head_chunk_rows (tests set it small).
float lm_head_cross_entropy(float* losses, float* lse, const float* x, const float* W, const int32_t* targets,
                            int64_t N, int64_t C, int64_t V, LmHeadScratch& scratch, float* dx = nullptr,
                            float* dW = nullptr, float dloss = 0.0f, int64_t chunk_rows = 0,
                            int64_t dW_first_row = 0, const float* row_dloss = nullptr);
// Rows per chunk: whole chunks of at most ~64 MB of logits, at least 256 rows
// (each chunk re-reads dW), spread evenly over N.
int64_t lm_head_chunk_rows(int64_t N, int64_t V);

// Numerically stable log(sum(exp(row))).
float log_sum_exp(const float* row, int64_t V);

}  // namespace gpt
