// Softmax cross-entropy over the vocabulary, fused: the forward keeps only the
// log-sum-exp of each row, and the backward turns the logits into their gradient
// in place, so no (B,T,V) probability tensor is ever stored.
#pragma once
#include <cstdint>

namespace gpt {

// logits (N,V), targets (N) -> losses (N) = lse - logit[target], lse (N) kept for backward.
// Returns the mean loss. Throws if a target is outside [0, V).
float cross_entropy_forward(float* losses, float* lse, const float* logits,
                            const int32_t* targets, int64_t N, int64_t V);

// logits (N,V) is overwritten with dloss/dlogits = (softmax - onehot(target)) * dloss.
void cross_entropy_backward_inplace(float* logits, const float* lse, const int32_t* targets,
                                    int64_t N, int64_t V, float dloss);

// Numerically stable log(sum(exp(row))).
float log_sum_exp(const float* row, int64_t V);

}  // namespace gpt
