#include "gpt/model/config.h"

#include <nlohmann/json.hpp>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {

std::string to_string(PositionEncoding pe) {
  return pe == PositionEncoding::kLearned ? "learned" : "sinusoidal";
}

PositionEncoding parse_position_encoding(const std::string& name) {
  if (name == "learned") return PositionEncoding::kLearned;
  if (name == "sinusoidal") return PositionEncoding::kSinusoidal;
  throw Error("unknown position encoding '" + name + "' (expected learned or sinusoidal)");
}

void ModelConfig::validate() const {
  auto positive = [](int v, const char* name) {
    GPT_CHECK(v > 0, std::string(name) + " must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab size");
  positive(block_size, "block size");
  positive(n_layer, "n-layer");
  positive(n_head, "n-head");
  positive(n_embd, "n-embd");
  GPT_CHECK(n_embd % n_head == 0, "n-head (" + std::to_string(n_head) + ") must divide n-embd (" +
                                  std::to_string(n_embd) + ")");
  GPT_CHECK(position_encoding == PositionEncoding::kLearned || n_embd % 2 == 0,
        "sinusoidal position encoding needs an even n-embd");
  GPT_CHECK(layer_norm_epsilon > 0, "layer_norm_epsilon must be positive");
  // Sinusoidal positions have no tensor that would bound the context: a table of
  // block_size x n_embd is made from the config alone.
  GPT_CHECK(block_size <= (1 << 20), "block size " + std::to_string(block_size) + " exceeds 1,048,576 positions");
  // Keep every tensor index within int64 and every dimension within int.
  const double params = 12.0 * n_layer * n_embd * double(n_embd) +
                        double(vocab_size + block_size) * n_embd;
  GPT_CHECK(params < 4e10, "model too large: about " + std::to_string(params) + " parameters");
  // A full KV cache (keys and values of every layer and position) within the same bound.
  GPT_CHECK(2.0 * n_layer * double(block_size) * n_embd < 4e10,
            "context too large: a full KV cache would hold " +
                std::to_string(2.0 * n_layer * double(block_size) * n_embd) + " values");
}

nlohmann::json ModelConfig::to_json() const {
  return {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"vocab_size", vocab_size},
      {"n_positions", block_size},
      {"n_ctx", block_size},
      {"n_embd", n_embd},
      {"n_layer", n_layer},
      {"n_head", n_head},
      {"n_inner", nullptr},
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", layer_norm_epsilon},
      {"tie_word_embeddings", tie_word_embeddings},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"position_encoding", to_string(position_encoding)},
  };
}

namespace {

ModelConfig parse_config(const nlohmann::json& j) {
  GPT_CHECK(j.is_object(), "config.json must hold a JSON object");
  ModelConfig c;
  auto get_int = [&](const char* key, int fallback, bool required) {
    if (!j.contains(key) || j[key].is_null()) {
      GPT_CHECK(!required, std::string("config.json is missing \"") + key + "\"");
      return fallback;
    }
    GPT_CHECK(j[key].is_number_integer(), std::string("config.json: \"") + key + "\" must be an integer");
    const auto v = j[key].get<int64_t>();
    GPT_CHECK(v > 0 && v < (int64_t(1) << 31), std::string("config.json: \"") + key + "\" out of range");
    return static_cast<int>(v);
  };
  c.vocab_size = get_int("vocab_size", 0, true);
  c.block_size = get_int("n_positions", 0, true);
  c.n_embd = get_int("n_embd", 0, true);
  c.n_layer = get_int("n_layer", 0, true);
  c.n_head = get_int("n_head", 0, true);
  if (j.contains("n_inner") && !j["n_inner"].is_null()) {
    GPT_CHECK(j["n_inner"].is_number_integer() && j["n_inner"].get<int64_t>() == 4LL * c.n_embd,
          "config.json: only n_inner = 4 * n_embd is supported");
  }
  if (j.contains("activation_function")) {
    GPT_CHECK(j["activation_function"].is_string(), "config.json: activation_function must be a string");
    const auto act = j["activation_function"].get<std::string>();
    GPT_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh",
          "config.json: unsupported activation_function '" + act + "' (gpt.cpp uses tanh GELU)");
  }
  if (j.contains("layer_norm_epsilon")) {
    GPT_CHECK(j["layer_norm_epsilon"].is_number(), "config.json: layer_norm_epsilon must be a number");
    c.layer_norm_epsilon = j["layer_norm_epsilon"].get<float>();
  }
  if (j.contains("tie_word_embeddings")) {
    GPT_CHECK(j["tie_word_embeddings"].is_boolean(), "config.json: tie_word_embeddings must be true or false");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (j.contains("position_encoding")) {
    GPT_CHECK(j["position_encoding"].is_string(), "config.json: position_encoding must be a string");
    c.position_encoding = parse_position_encoding(j["position_encoding"].get<std::string>());
  }
  c.validate();
  return c;
}

}  // namespace

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  try {
    return parse_config(j);
  } catch (const nlohmann::json::exception& e) {  // a value of an unexpected type
    throw Error(std::string("config.json: ") + e.what());
  }
}

ModelConfig ModelConfig::load(const std::filesystem::path& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + " is not valid JSON: " + e.what());
  }
  try {
    return from_json(j);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": " + e.what());
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

}  // namespace gpt
