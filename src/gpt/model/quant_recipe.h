// What `--quantize NAME` means for each matrix of a model. A weight type
// (f16, q8_0, q4_0, q4_1, q5_0, q5_1) applies to every matrix; a K-quant name is
// one of llama.cpp's mixes (llama-quantize's file types), which give some
// matrices more bits than others by their role and layer:
//   q2_k    Q2_K; qkv, attention output and feed-forward down Q3_K
//   q3_k_s  Q3_K
//   q3_k_m (= q3_k)  Q3_K; qkv Q5_K in layers 0-1, Q4_K after; attention output Q4_K;
//           feed-forward down Q5_K in the first 1/16 of the layers, Q4_K after
//   q3_k_l  Q3_K; qkv, attention output and feed-forward down Q5_K
//   q4_k_s  Q4_K; qkv Q5_K in layers 0-3; feed-forward down Q5_K in the first 1/8
//   q4_k_m (= q4_k)  Q4_K; qkv and feed-forward down Q6_K in the layers that get
//           more bits (the first and last eighths, and every third between)
//   q5_k_s  Q5_K                         q5_k_m (= q5_k)  Q5_K; those qkv and feed-forward down Q6_K
//   q6_k    Q6_K
// (llama.cpp treats GPT-2's fused qkv matrix by its rules for attn_v.)
// and in every mix the output matrix (the LM head) is Q6_K. A matrix whose rows
// are not a whole number of the type's blocks falls back as llama.cpp does
// (Q2_K, Q3_K -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0; then F16).
// (llama.cpp's own q4_0 .. q5_1 also store the LM head as Q6_K; here they stay pure.)
#pragma once
#include <cstdint>
#include <string>

#include "gpt/kernels/quantize.h"

namespace gpt {

// kAttentionQkv: GPT-2's fused q|k|v, which llama.cpp treats as attn_v; separate
// matrices (Llama's GGUF): kAttentionQK for attn_q and attn_k, kAttentionV for attn_v.
enum class TensorRole {
  kTokenEmbedding, kOutput, kAttentionQkv, kAttentionQK, kAttentionV, kAttentionOutput, kFfnUp, kFfnDown
};

class QuantRecipe {
 public:
  // Every matrix of `type` (implicit: where a type is expected, a recipe is too).
  QuantRecipe(GgmlType type = GgmlType::kF32) : base_(type) {}  // NOLINT(google-explicit-constructor)
  // "q8_0", "q4_k_m", "Q5_K_S", ... (any case); gpt::Error naming the choices otherwise.
  static QuantRecipe parse(const std::string& name);

  GgmlType base() const { return base_; }   // the type of most matrices
  std::string name() const;                 // "q4_k_m", "q8_0", ...
  uint32_t file_type() const;               // llama.cpp's llama_ftype (general.file_type)
  // The type of one matrix with `cols` weights per row.
  GgmlType type_for(TensorRole role, int64_t layer, int64_t n_layer, int64_t cols) const;

 private:
  enum class Mix { kPure, kQ2_K, kQ3_K_S, kQ3_K_M, kQ3_K_L, kQ4_K_S, kQ4_K_M, kQ5_K_S, kQ5_K_M, kQ6_K };
  QuantRecipe(GgmlType type, Mix mix) : base_(type), mix_(mix) {}
  GgmlType base_;
  Mix mix_ = Mix::kPure;
};

}  // namespace gpt
