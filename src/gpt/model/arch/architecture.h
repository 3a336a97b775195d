// What differs between architectures, each written once in model/arch/<name>.cpp:
// its config.json keys, its validation, and its tensor table (Hugging Face's
// names and layouts, each tensor tagged with the view of ModelWeights it is).
// The same file holds its block: the training pass (GPT's forward and backward
// through the blocks) and the inference pass (InferenceSession's). Adding an
// architecture is a new file here, its rules in architecture_rules(), and a test.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpt/model/config.h"
#include "gpt/model/parameters.h"

namespace gpt {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  WeightRole role = WeightRole::kPart;
  int layer = -1;
  bool out_major = false;
};

struct ArchitectureRules {
  Architecture arch;
  const char* name;  // --arch, and what to_string(Architecture) says
  // The model_type values of config.json it reads (the first is the one it writes).
  std::vector<std::string> model_types;
  nlohmann::json (*to_json)(const ModelConfig&);
  // Fills the config from config.json (every key but model_type); validated after.
  void (*from_json)(const nlohmann::json&, ModelConfig&);
  // Checks beyond the common ones (ModelConfig::validate): one-line gpt::Error.
  void (*validate)(const ModelConfig&);
  std::vector<TensorSpec> (*tensors)(const ModelConfig&);
  // How many tensors tensors() lists, and about how many parameters, without
  // building the table (a claimed config is checked before anything its size is made).
  int64_t (*tensor_count)(const ModelConfig&);
  double (*parameter_estimate)(const ModelConfig&);
  // The name of block l's first tensor (to say which block a file lacks).
  std::string (*first_tensor_of_layer)(int l);
};

const ArchitectureRules& architecture_rules(Architecture arch);
// The rules whose model_types hold model_type, or null.
const ArchitectureRules* rules_for_model_type(const std::string& model_type);
const std::vector<const ArchitectureRules*>& all_architectures();

// Reading config.json: an integer key within (0, 2^31) (fallback when absent and
// not required), a number, a boolean.
int config_int(const nlohmann::json& j, const char* key, int fallback, bool required);
float config_number(const nlohmann::json& j, const char* key, float fallback);
bool config_bool(const nlohmann::json& j, const char* key, bool fallback);

}  // namespace gpt
