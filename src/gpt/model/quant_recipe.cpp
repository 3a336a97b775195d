#include "gpt/model/quant_recipe.h"

#include <cctype>

#include "gpt/util/error.h"

namespace gpt {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// llama.cpp's choice of the layers whose feed-forward down matrix gets more bits.
bool more_bits(int64_t layer, int64_t n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

// A type whose block does not divide the row: llama.cpp's fallback, then F16.
GgmlType fit(GgmlType t, int64_t cols) {
  if (cols % ggml_block_size(t) == 0) return t;
  switch (t) {
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K: t = GgmlType::kQ4_0; break;
    case GgmlType::kQ4_K: t = GgmlType::kQ5_0; break;
    case GgmlType::kQ5_K: t = GgmlType::kQ5_1; break;
    case GgmlType::kQ6_K: t = GgmlType::kQ8_0; break;
    default: break;
  }
  return cols % ggml_block_size(t) == 0 ? t : GgmlType::kF16;
}

}  // namespace

QuantRecipe QuantRecipe::parse(const std::string& name) {
  const std::string s = lower(name);
  struct Known {
    const char* name;
    GgmlType type;
    Mix mix;
  };
  static const Known known[] = {
      {"q2_k", GgmlType::kQ2_K, Mix::kQ2_K},     {"q3_k_s", GgmlType::kQ3_K, Mix::kQ3_K_S},
      {"q3_k_m", GgmlType::kQ3_K, Mix::kQ3_K_M}, {"q3_k", GgmlType::kQ3_K, Mix::kQ3_K_M},
      {"q3_k_l", GgmlType::kQ3_K, Mix::kQ3_K_L}, {"q4_k_s", GgmlType::kQ4_K, Mix::kQ4_K_S},
      {"q4_k_m", GgmlType::kQ4_K, Mix::kQ4_K_M}, {"q4_k", GgmlType::kQ4_K, Mix::kQ4_K_M},
      {"q5_k_s", GgmlType::kQ5_K, Mix::kQ5_K_S}, {"q5_k_m", GgmlType::kQ5_K, Mix::kQ5_K_M},
      {"q5_k", GgmlType::kQ5_K, Mix::kQ5_K_M},   {"q6_k", GgmlType::kQ6_K, Mix::kQ6_K},
  };
  for (const Known& k : known)
    if (s == k.name) return QuantRecipe(k.type, k.mix);
  for (const char* pure : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"})
    if (s == pure) return QuantRecipe(parse_ggml_type(s));
  throw Error("unknown quantization '" + name +
              "' (expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, "
              "q4_k_m, q5_k_s, q5_k_m or q6_k)");
}

std::string QuantRecipe::name() const {
  switch (mix_) {
    case Mix::kPure: return lower(ggml_type_name(base_));
    case Mix::kQ2_K: return "q2_k";
    case Mix::kQ3_K_S: return "q3_k_s";
    case Mix::kQ3_K_M: return "q3_k_m";
    case Mix::kQ3_K_L: return "q3_k_l";
    case Mix::kQ4_K_S: return "q4_k_s";
    case Mix::kQ4_K_M: return "q4_k_m";
    case Mix::kQ5_K_S: return "q5_k_s";
    case Mix::kQ5_K_M: return "q5_k_m";
    case Mix::kQ6_K: return "q6_k";
  }
  return "?";
}

uint32_t QuantRecipe::file_type() const {
  switch (mix_) {
    case Mix::kQ2_K: return 10;
    case Mix::kQ3_K_S: return 11;
    case Mix::kQ3_K_M: return 12;
    case Mix::kQ3_K_L: return 13;
    case Mix::kQ4_K_S: return 14;
    case Mix::kQ4_K_M: return 15;
    case Mix::kQ5_K_S: return 16;
    case Mix::kQ5_K_M: return 17;
    case Mix::kQ6_K: return 18;
    case Mix::kPure: break;
  }
  switch (base_) {  // pure types; a pure K type takes its mix's "small" file type
    case GgmlType::kQ2_K: return 10;
    case GgmlType::kQ3_K: return 11;
    case GgmlType::kQ4_K: return 14;
    case GgmlType::kQ5_K: return 16;
    case GgmlType::kQ6_K: return 18;
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ4_1: return 3;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kQ5_0: return 8;
    case GgmlType::kQ5_1: return 9;
    case GgmlType::kBF16: return 32;
    default: return 0;
  }
}

GgmlType QuantRecipe::type_for(TensorRole role, int64_t layer, int64_t n_layer, int64_t cols) const {
  using T = GgmlType;
  if (mix_ == Mix::kPure) return base_ == T::kF32 ? T::kF32 : fit(base_, cols);
  T t = base_;
  switch (role) {
    case TensorRole::kOutput:
      // The LM head: Q6_K, or Q8_0 where rows are not whole super-blocks.
      return cols % ggml_block_size(T::kQ6_K) == 0 ? T::kQ6_K : fit(T::kQ8_0, cols);
    case TensorRole::kAttentionQkv:  // llama.cpp treats a fused qkv as it treats attn_v
    case TensorRole::kAttentionV:
      if (mix_ == Mix::kQ2_K) t = T::kQ3_K;
      if (mix_ == Mix::kQ3_K_M) t = layer < 2 ? T::kQ5_K : T::kQ4_K;
      if (mix_ == Mix::kQ3_K_L) t = T::kQ5_K;
      if ((mix_ == Mix::kQ4_K_M || mix_ == Mix::kQ5_K_M) && more_bits(layer, n_layer)) t = T::kQ6_K;
      if (mix_ == Mix::kQ4_K_S && layer < 4) t = T::kQ5_K;
      break;
    case TensorRole::kAttentionOutput:
      if (mix_ == Mix::kQ2_K) t = T::kQ3_K;
      if (mix_ == Mix::kQ3_K_M) t = T::kQ4_K;
      if (mix_ == Mix::kQ3_K_L) t = T::kQ5_K;
      break;
    case TensorRole::kFfnDown:
      if (mix_ == Mix::kQ2_K) t = T::kQ3_K;
      if (mix_ == Mix::kQ3_K_M) t = layer < n_layer / 16 ? T::kQ5_K : T::kQ4_K;
      if (mix_ == Mix::kQ3_K_L) t = T::kQ5_K;
      if ((mix_ == Mix::kQ4_K_M || mix_ == Mix::kQ5_K_M) && more_bits(layer, n_layer)) t = T::kQ6_K;
      if (mix_ == Mix::kQ4_K_S && layer < n_layer / 8) t = T::kQ5_K;
      break;
    case TensorRole::kTokenEmbedding:
    case TensorRole::kAttentionQK:
    case TensorRole::kFfnUp: break;
  }
  return fit(t, cols);
}

}  // namespace gpt
