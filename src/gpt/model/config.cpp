#include "gpt/model/config.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "gpt/model/arch/architecture.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {

// Every architecture: its file in model/arch/, its value of Architecture, listed here.
template <>
const ArchitectureRules& rules_of<Architecture::kGpt2>();  // model/arch/gpt2.cpp
template <>
const ArchitectureRules& rules_of<Architecture::kLlama>();  // model/arch/llama.cpp

const std::vector<const ArchitectureRules*>& all_architectures() {
  static const std::vector<const ArchitectureRules*> all = {&rules_of<Architecture::kGpt2>(),
                                                            &rules_of<Architecture::kLlama>()};
  return all;
}

const ArchitectureRules& architecture_rules(Architecture arch) {
  for (const ArchitectureRules* r : all_architectures())
    if (r->arch == arch) return *r;
  throw Error("unknown architecture");
}

const ArchitectureRules* rules_for_model_type(const std::string& model_type) {
  for (const ArchitectureRules* r : all_architectures())
    for (const std::string& t : r->model_types)
      if (t == model_type) return r;
  return nullptr;
}

std::string to_string(Architecture arch) { return architecture_rules(arch).name; }

Architecture parse_architecture(const std::string& name) {
  std::string known;
  for (const ArchitectureRules* r : all_architectures()) {
    if (name == r->name) return r->arch;
    known += (known.empty() ? "" : " or ") + std::string(r->name);
  }
  throw Error("unknown architecture '" + name + "' (expected " + known + ")");
}

std::string to_string(PositionEncoding pe) {
  switch (pe) {
    case PositionEncoding::kLearned: return "learned";
    case PositionEncoding::kSinusoidal: return "sinusoidal";
    case PositionEncoding::kRotary: return "rotary";
  }
  return "?";
}

PositionEncoding parse_position_encoding(const std::string& name) {
  if (name == "learned") return PositionEncoding::kLearned;
  if (name == "sinusoidal") return PositionEncoding::kSinusoidal;
  if (name == "rotary") return PositionEncoding::kRotary;
  throw Error("unknown position encoding '" + name + "' (expected learned, sinusoidal or rotary)");
}

std::string to_string(RopeScaling::Type type) {
  switch (type) {
    case RopeScaling::Type::kNone: return "none";
    case RopeScaling::Type::kLinear: return "linear";
    case RopeScaling::Type::kYarn: return "yarn";
  }
  return "?";
}

RopeScaling::Type parse_rope_scaling(const std::string& name) {
  if (name == "none" || name == "default") return RopeScaling::Type::kNone;
  if (name == "linear") return RopeScaling::Type::kLinear;
  if (name == "yarn") return RopeScaling::Type::kYarn;
  throw Error("rope scaling '" + name + "' is not supported (gpt.cpp runs none, linear or yarn)");
}

int ModelConfig::mlp_hidden() const {
  if (!llama()) return 4 * n_embd;
  if (ffn_hidden > 0) return ffn_hidden;
  // SwiGLU's three matrices cost GPT-2's two at width 8C/3 (rounded up to 64).
  const int64_t f = (8LL * n_embd + 2) / 3;
  return static_cast<int>((f + 63) / 64 * 64);
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
  GPT_CHECK(position_encoding != PositionEncoding::kSinusoidal || n_embd % 2 == 0,
        "sinusoidal position encoding needs an even n-embd");
  GPT_CHECK(layer_norm_epsilon > 0, "layer_norm_epsilon must be positive");
  const ArchitectureRules& rules = architecture_rules(arch);
  rules.validate(*this);
  // Sinusoidal and rotary positions have no tensor that would bound the context:
  // tables of block_size rows are made from the config alone.
  GPT_CHECK(block_size <= (1 << 20), "block size " + std::to_string(block_size) + " exceeds 1,048,576 positions");
  GPT_CHECK(static_cast<int64_t>(mlp_hidden()) * 2 < (int64_t(1) << 31), "ffn-hidden too large");
  // Keep every tensor index within int64 and every dimension within int.
  const double params = rules.parameter_estimate(*this);
  GPT_CHECK(params < 4e10, "model too large: about " + std::to_string(params) + " parameters");
  // A full KV cache (keys and values of every layer and position) within the same bound.
  GPT_CHECK(2.0 * n_layer * double(block_size) * n_embd < 4e10,
            "context too large: a full KV cache would hold " +
                std::to_string(2.0 * n_layer * double(block_size) * n_embd) + " values");
}

nlohmann::json ModelConfig::to_json() const { return architecture_rules(arch).to_json(*this); }

int config_int(const nlohmann::json& j, const char* key, int fallback, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    GPT_CHECK(!required, std::string("config.json is missing \"") + key + "\"");
    return fallback;
  }
  GPT_CHECK(j[key].is_number_integer(), std::string("config.json: \"") + key + "\" must be an integer");
  const auto v = j[key].get<int64_t>();
  GPT_CHECK(v > 0 && v < (int64_t(1) << 31), std::string("config.json: \"") + key + "\" out of range");
  return static_cast<int>(v);
}

float config_number(const nlohmann::json& j, const char* key, float fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  GPT_CHECK(j[key].is_number(), std::string("config.json: ") + key + " must be a number");
  const double v = j[key].get<double>();
  GPT_CHECK(std::isfinite(v) && std::abs(v) < 1e30, std::string("config.json: ") + key + " out of range");
  return static_cast<float>(v);
}

bool config_bool(const nlohmann::json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  GPT_CHECK(j[key].is_boolean(), std::string("config.json: ") + key + " must be true or false");
  return j[key].get<bool>();
}

namespace {

ModelConfig parse_config(const nlohmann::json& j) {
  GPT_CHECK(j.is_object(), "config.json must hold a JSON object");
  // gpt.cpp's first checkpoints and some GPT-2 exports carry no model_type.
  std::string type = "gpt2";
  if (j.contains("model_type")) {
    GPT_CHECK(j["model_type"].is_string(), "config.json: model_type must be a string");
    type = j["model_type"].get<std::string>();
  }
  const ArchitectureRules* rules = rules_for_model_type(type);
  if (rules == nullptr) {
    std::string known;
    for (const ArchitectureRules* r : all_architectures())
      for (const std::string& t : r->model_types) known += (known.empty() ? "" : ", ") + t;
    throw Error("config.json: model_type '" + type + "' is not supported (gpt.cpp runs " + known + ")");
  }
  ModelConfig c;
  rules->from_json(j, c);
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
