// What differs between architectures, each written once in model/arch/<name>.cpp:
// its config.json keys, its validation, and its tensor table (Hugging Face's
// names and layouts, each tensor tagged with the view of ModelWeights it is).
// The same file holds its blocks: the training pass (GPT's forward and backward,
// which keeps every activation the backward reads) and the inference pass, which
// both InferenceSession (one sequence, one contiguous cache) and BatchedEngine
// (many sequences, paged caches) run, each handing it their cache as an
// InferenceCache. Adding an architecture is a new file here, its rules in
// all_architectures(), and a test.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gpt/kernels/rope.h"
#include "gpt/model/config.h"
#include "gpt/model/gpt.h"
#include "gpt/model/parameters.h"

namespace gpt {

struct InferenceWeights;
struct QuantScratch;

// What an architecture computes once before inference: RoPE's angles, or the
// sinusoid added to the embeddings of a gpt2 model without a learned table.
struct InferenceTables {
  RopeTable rope;
  std::vector<float> sinusoid;  // (positions, C)
};

// One inference pass: n new tokens, each at its own position (of one sequence
// or of many), through every block. The owner's buffers, all n rows.
struct InferenceRows {
  int64_t n = 0;
  const int32_t* positions = nullptr;  // (n)
  float* x = nullptr;      // (n, C): embeddings in, the last block's output out
  float* ln = nullptr;     // (n, C) a norm's output
  float* stats = nullptr;  // (2n) the norm's statistics
  float* qkv = nullptr;    // (n, qkv_dim): q|k|v, rotated where the architecture rotates
  float* atty = nullptr;   // (n, C) attention's output
  float* mlp = nullptr;    // (n, rules.mlp_width) the MLP's hidden rows
  const InferenceTables* tables = nullptr;
  QuantScratch* scratch = nullptr;
};

// Where the keys and values live: the one step of a block that differs between
// the owners of a pass, plus what inspection (gpt attention, explain) watches.
class InferenceCache {
 public:
  // Takes layer l's new keys and values from rows.qkv (each row's k and v after
  // its q, in rotated form where the architecture rotates) into the cache, then
  // writes attention's output over the cached positions to rows.atty.
  virtual void attend(int64_t layer, InferenceRows& rows) = 0;
  // After attention (rows.atty filled, before the output projection), after the
  // MLP's activation (its hidden rows, `width` floats apart), after the block.
  virtual void attended(int64_t /*layer*/, const InferenceRows& /*rows*/) {}
  virtual void activated(int64_t /*layer*/, const float* /*hidden*/, int64_t /*width*/) {}
  virtual void block_done(int64_t /*layer*/, const InferenceRows& /*rows*/) {}

 protected:
  ~InferenceCache() = default;
};

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

  // Training: GPT's pass through the blocks, embedding to final norm, and back.
  void (GPT::*train_forward)(const int32_t* tokens);
  void (GPT::*train_backward)(const GPT::GradientsReady& ready);

  // Inference. The tables for `positions` positions.
  void (*inference_tables)(const InferenceWeights& w, int64_t positions, InferenceTables& out);
  // Floats per row of InferenceRows::mlp.
  int64_t (*mlp_width)(const ModelConfig&);
  // Each token's embedding into rows.x (with its position's, where added).
  void (*embed)(const InferenceWeights& w, const int32_t* tokens, InferenceRows& rows);
  // Every block over rows.x, in place.
  void (*blocks)(const InferenceWeights& w, InferenceRows& rows, InferenceCache& cache);
  // The blocks' norm (and the final one): out = norm(x) over `rows` rows of width C.
  void (*norm)(const ModelConfig& c, float* out, float* stats, const float* x, const float* weight,
               const float* bias, int64_t rows);
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
