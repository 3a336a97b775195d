// LoRA (Hu et al., 2021): a frozen weight W gets a trainable low-rank update,
// y = x W + (alpha / r) * dropout(x) A^T B^T, with A (r, in) and B (out, r) as
// PEFT keeps them. B starts at zero, so a fresh adapter is exactly the base
// model. GPT calls forward()/backward() beside each adapted product; the base
// weights then get no gradient at all (the backward skips their products).
//
// New special tokens (chat markers) cannot be learned by adapters on the blocks,
// so their embedding rows train too, as PEFT's trainable tokens do: the adapter
// holds those rows whole ("trainable_tokens_delta" in PEFT's naming, though the
// values replace the rows rather than add to them).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gpt/kernels/dropout.h"
#include "gpt/model/config.h"
#include "gpt/model/parameters.h"

namespace gpt {

class GPT;

// LoRA dropout's mask depends on a DropoutKey (kernels/dropout.h): a seed per step
// and each row's place in the whole batch, never in this pass's buffer.

// The adapted products of a GPT-2 block, by their PEFT target names.
enum class LoraTarget { kAttnQkv = 0, kAttnProj = 1, kMlpFc = 2, kMlpProj = 3 };
inline constexpr int kLoraTargetCount = 4;
const char* lora_target_name(LoraTarget t);  // c_attn, attn.c_proj, c_fc, mlp.c_proj

struct LoraConfig {
  int rank = 8;
  float alpha = 16.0f;
  float dropout = 0.0f;  // on the adapter's input, training only
  std::array<bool, kLoraTargetCount> targets{true, true, true, true};
  // Rows of the token embedding that train with the adapter (ids trainable_tokens_begin .. vocab-1).
  int trainable_tokens_begin = -1;  // -1: none

  float scale() const { return alpha / static_cast<float>(rank); }
  // From the --lora-* flags, validated (gpt::Error names the bad flag).
  static LoraConfig from_flags(int rank, double alpha, double dropout, const std::string& targets_csv,
                               int trainable_tokens_begin = -1);
  // "c_attn,attn.c_proj,c_fc,mlp.c_proj" (also "all"); gpt::Error names an unknown one.
  static std::array<bool, kLoraTargetCount> parse_targets(const std::string& csv);
  std::string targets_csv() const;
  void validate() const;
};

class LoraAdapters {
 public:
  // Adapters for a model of this shape. Parameters start at zero (call init).
  LoraAdapters(const ModelConfig& model, const LoraConfig& config);

  const LoraConfig& config() const { return config_; }
  const ModelConfig& model_config() const { return model_; }
  // PEFT's tensor names and shapes, offsets into params/grads:
  // base_model.model.transformer.h.N.attn.c_attn.lora_A.weight (r, in), ...lora_B.weight (out, r),
  // base_model.model.transformer.wte.token_adapter.trainable_tokens_delta (new tokens, C).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  size_t total() const { return total_; }
  const TensorInfo* find(const std::string& name) const;
  std::vector<float> params, grads;

  // A new adapter for `model`, initialised (below): what a fine-tuning run attaches.
  static std::shared_ptr<LoraAdapters> fresh(const GPT& model, const LoraConfig& config, uint64_t seed);
  // A as PEFT draws it (uniform in +-1/sqrt(in), kaiming_uniform with a = sqrt(5)); B 0;
  // the trainable token rows start as the model has them.
  void init(uint64_t seed, const GPT& model);
  // Writes the trainable token rows into the model's embedding (after each optimizer step, and on merge).
  void apply_token_rows(GPT& model) const;

  bool adapts(int layer, LoraTarget t) const;
  size_t token_delta_offset() const { return token_delta_; }
  // y (N, out) += scale * dropout(x) A^T B^T. Training keeps dropout(x) A^T for the backward.
  // `key` chooses the dropout mask (the same key in the backward pass).
  void forward(int layer, LoraTarget t, const float* x, int64_t N, float* y, bool training, const DropoutKey& key);
  // Given dy (N, out): grads of A and B accumulate, dx (N, in) += the adapter's share.
  void backward(int layer, LoraTarget t, const float* x, const float* dy, int64_t N, float* dx,
                const DropoutKey& key);
  // W (in, out) += scale * A^T B^T for every adapted product, and the token rows:
  // the model no longer needs the adapter.
  void merge_into(GPT& model) const;

 private:
  struct Slot {
    size_t a = 0, b = 0;  // offsets of A and B in params/grads
    int64_t in = 0, out = 0;
    bool used = false;
  };
  Slot& slot(int layer, LoraTarget t) { return slots_[static_cast<size_t>(layer * kLoraTargetCount + static_cast<int>(t))]; }
  const Slot& slot(int layer, LoraTarget t) const {
    return slots_[static_cast<size_t>(layer * kLoraTargetCount + static_cast<int>(t))];
  }
  // dropout(x) into scratch (N, in), or x itself without dropout.
  const float* dropped_input(const float* x, int64_t N, int64_t in, const DropoutKey& key, int layer, LoraTarget t);

  ModelConfig model_;
  LoraConfig config_;
  std::vector<TensorInfo> tensors_;
  size_t total_ = 0;
  size_t token_delta_ = 0;  // offset of the token deltas (if any)
  std::vector<Slot> slots_;
  std::vector<float> hidden_;          // per slot (N, r): dropout(x) A^T of the last training forward
  int64_t hidden_rows_ = 0;
  std::vector<float> scratch_x_, scratch_h_;  // dropout(x); dh
};

}  // namespace gpt
