// LoRA adapters on disk in PEFT's layout, so the Hugging Face ecosystem reads
// what gpt.cpp trains (PeftModel.from_pretrained) and gpt.cpp reads PEFT's:
//   adapter_config.json        PEFT's LoraConfig (r, lora_alpha, lora_dropout,
//                              target_modules, fan_in_fan_out: GPT-2's Conv1D,
//                              trainable_token_indices for added special tokens)
//                              plus gpt_base_vocab_size and gpt_base_sample (64 weights of
//                              the base, so another base model is recognised)
//   adapter_model.safetensors  base_model.model.transformer.h.N.<module>.lora_A.weight (r, in),
//                              ...lora_B.weight (out, r), and
//                              base_model.model.transformer.wte.token_adapter.trainable_tokens_delta
// A fine-tuning run also keeps the tokenizer (with the added tokens) and
// tokenizer_config.json (the chat template) in the directory.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gpt/model/gpt.h"
#include "gpt/model/lora.h"
#include "gpt/tokenizer/tokenizer.h"

namespace gpt {

inline constexpr const char* kAdapterConfigFile = "adapter_config.json";
inline constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";

bool is_adapter_dir(const std::filesystem::path& dir);
// gpt::Error if saving an adapter at `out` would replace (or write inside) the base
// model it is trained on: a checkpoint save swaps the whole directory.
void check_adapter_out(const std::filesystem::path& out, const std::filesystem::path& base);

// adapter_config.json and adapter_model.safetensors into `dir` (each atomically).
void write_adapter_files(const std::filesystem::path& dir, const LoraAdapters& adapter, const std::string& base_model,
                         int base_vocab_size, const GPT* base = nullptr);

struct LoadedAdapter {
  std::shared_ptr<LoraAdapters> adapter;
  std::unique_ptr<Tokenizer> tokenizer;  // the directory's own, if it has one
  std::string base_model;                // base_model_name_or_path
  int base_vocab_size = 0;
};

// Reads an adapter made for a base model of shape `base`; gpt::Error (one line)
// if the directory is not an adapter, or was made for another shape or
// vocabulary, or (given the base's weights) for a base whose weights differ
// beyond what a conversion (f16, Q8_0, Q4_0, ...) would change.
LoadedAdapter load_adapter(const std::filesystem::path& dir, const ModelConfig& base, const GPT* base_model = nullptr);

// The base model with the adapter merged in (its vocabulary grown first where the
// adapter added tokens): an ordinary model that no longer needs the adapter.
std::shared_ptr<GPT> merge_adapter(const GPT& base, const LoadedAdapter& adapter);

}  // namespace gpt
