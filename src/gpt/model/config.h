// The shape of a model: GPT-2 or the Llama family. Stored as the config.json
// Hugging Face writes for the architecture (GPT2LMHeadModel or
// LlamaForCausalLM), so a checkpoint directory reads like one from the hub.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace gpt {

enum class PositionEncoding { kLearned, kSinusoidal, kRotary };

// gpt2: learned (or sinusoidal) positions, LayerNorm, GELU MLP, biases.
// llama: rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention, no
// biases (Qwen2's q/k/v biases with attention_bias). model/arch/architecture.h
// says where each architecture's names, rules and blocks live.
enum class Architecture { kGpt2, kLlama };

// Running a RoPE model past the context it was trained on (Hugging Face's
// rope_scaling): linear divides every position by `factor` (position
// interpolation); yarn interpolates the slow frequencies only, keeps the fast
// ones, ramps between (beta_fast, beta_slow rotations over the original
// context) and scales attention by attention_factor (0: 0.1 ln(factor) + 1).
// Either way the context becomes original_context * factor.
struct RopeScaling {
  enum class Type { kNone, kLinear, kYarn } type = Type::kNone;
  float factor = 1.0f;
  int original_context = 0;  // the trained context (original_max_position_embeddings)
  float beta_fast = 32.0f, beta_slow = 1.0f, attention_factor = 0.0f;
};
std::string to_string(RopeScaling::Type type);
RopeScaling::Type parse_rope_scaling(const std::string& name);

struct ModelConfig {
  int vocab_size = 65;
  int block_size = 64;  // context length (n_positions)
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  PositionEncoding position_encoding = PositionEncoding::kLearned;
  bool tie_word_embeddings = true;
  float layer_norm_epsilon = 1e-5f;  // LayerNorm's, or RMSNorm's (rms_norm_eps) for llama
  Architecture arch = Architecture::kGpt2;
  // llama only:
  int n_kv_head = 0;         // key/value heads (num_key_value_heads); 0: n_head
  int ffn_hidden = 0;        // SwiGLU width (intermediate_size); 0: 8C/3 rounded up to 64
  float rope_theta = 10000.0f;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  RopeScaling rope_scaling;

  bool llama() const { return arch == Architecture::kLlama; }
  int head_size() const { return n_embd / n_head; }
  int kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int kv_dim() const { return kv_heads() * head_size(); }
  // Width of the fused q|k|v product's output: C + 2 * kv_dim.
  int qkv_dim() const { return n_embd + 2 * kv_dim(); }
  // The MLP's hidden width (GELU's input, or SwiGLU's output).
  int mlp_hidden() const;
  // Width of the MLP's first product: 4C (GPT-2), or gate|up side by side, 2F (llama).
  int mlp_in_dim() const { return llama() ? 2 * mlp_hidden() : mlp_hidden(); }
  // Throws gpt::Error with a one-line reason if any size is unusable.
  void validate() const;

  nlohmann::json to_json() const;
  static ModelConfig from_json(const nlohmann::json& j);
  static ModelConfig load(const std::filesystem::path& config_json);
};

std::string to_string(PositionEncoding pe);
PositionEncoding parse_position_encoding(const std::string& name);
std::string to_string(Architecture arch);
Architecture parse_architecture(const std::string& name);

}  // namespace gpt
