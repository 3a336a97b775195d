// A checkpoint is a directory:
//   config.json            Hugging Face GPT-2 style model config
//   model.safetensors      parameters, Hugging Face GPT-2 tensor names and layouts
//   tokenizer.gpt.json     the tokenizer
//   optimizer.safetensors  AdamW moments ("m.<name>", "v.<name>")   [training only]
//   trainer_state.json     step, options, loss history, data fingerprint [training only]
//   tokenizer_config.json  the chat template, Hugging Face's way       [chat models]
// A LoRA fine-tuning run keeps its adapter instead of config.json and
// model.safetensors: adapter_config.json + adapter_model.safetensors (PEFT's
// files, io/peft_adapter.h); its optimizer state is the adapter's.
// Saving builds the whole directory next to the target and swaps it in with one
// atomic rename, so a crash at any moment leaves either the old checkpoint or the
// new one, never a mixture. Files in the directory that are not part of the
// checkpoint (a training log, a plot) are carried over.
#pragma once
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "gpt/io/safetensors.h"
#include "gpt/model/gpt.h"
#include "gpt/model/lora.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/training/adamw.h"

namespace gpt {

struct CheckpointContents {
  const GPT* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  // AdamW moments, full-size buffers in the parameter layout (optional).
  const float* adam_m = nullptr;
  const float* adam_v = nullptr;
  int64_t adam_steps = 0;
  const nlohmann::json* trainer_state = nullptr;  // optional
  const ChatTemplate* chat_template = nullptr;     // optional: written to tokenizer_config.json
  // Optional: save this adapter (and moments in its layout) instead of the model.
  const LoraAdapters* adapter = nullptr;
  std::string adapter_base{};   // base_model_name_or_path
  int adapter_base_vocab = 0;   // the base model's vocabulary before added tokens
  const GPT* adapter_base_model = nullptr;  // sampled, so the adapter recognises its base
  // Optional: more tensors for model.safetensors (a reward model's head), and keys
  // that replace config.json's (its architecture).
  std::vector<TensorToWrite> extra_tensors{};
  nlohmann::json config_extra = nlohmann::json::object();
};

// The directory to read a checkpoint from (dir, or dir.old after an interrupted save).
std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& dir);

void save_checkpoint(const std::filesystem::path& dir, const CheckpointContents& contents);

struct LoadedModel {
  std::unique_ptr<GPT> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Loads config.json, model.safetensors and the tokenizer; every failure is a gpt::Error.
LoadedModel load_model(const std::filesystem::path& dir);
// Parameters from a safetensors file into a model whose layout is already fixed.
void load_parameters(const std::filesystem::path& safetensors_file, GPT& model);
struct OptimizerState {
  std::vector<float> m, v;  // full-size, in the parameter layout
  int64_t steps = 0;
};
OptimizerState load_optimizer_state(const std::filesystem::path& dir, const ParameterLayout& layout);
// The same for any table of tensors (a LoRA adapter's).
OptimizerState load_optimizer_state(const std::filesystem::path& dir, const std::vector<TensorInfo>& tensors,
                                    size_t total);
nlohmann::json load_trainer_state(const std::filesystem::path& dir);

}  // namespace gpt
