// The shape of a GPT model. Stored as a Hugging Face GPT-2 style config.json so a
// checkpoint directory reads like one from the hub.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace gpt {

enum class PositionEncoding { kLearned, kSinusoidal };

struct ModelConfig {
  int vocab_size = 65;
  int block_size = 64;  // context length (n_positions)
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  PositionEncoding position_encoding = PositionEncoding::kLearned;
  bool tie_word_embeddings = true;
  float layer_norm_epsilon = 1e-5f;

  int head_size() const { return n_embd / n_head; }
  // Throws gpt::Error with a one-line reason if any size is unusable.
  void validate() const;

  nlohmann::json to_json() const;
  static ModelConfig from_json(const nlohmann::json& j);
  static ModelConfig load(const std::filesystem::path& config_json);
};

std::string to_string(PositionEncoding pe);
PositionEncoding parse_position_encoding(const std::string& name);

}  // namespace gpt
