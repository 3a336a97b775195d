// The model: parameters, gradients and activations, and a training step's
// forward and backward pass. What every architecture shares (the LM head and
// loss, LoRA, packing, dropout's keys) is here and in gpt.cpp; the pass through
// the blocks is written out layer by layer in the architecture's file
// (model/arch/gpt2.cpp, model/arch/llama.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "gpt/kernels/cross_entropy.h"
#include "gpt/kernels/dropout.h"
#include "gpt/kernels/rope.h"
#include "gpt/model/config.h"
#include "gpt/model/lora.h"
#include "gpt/model/parameters.h"

namespace gpt {

struct ArchitectureRules;
// Each architecture's rules (model/arch/<name>.cpp), listed in config.cpp.
template <Architecture A>
const ArchitectureRules& rules_of();

// Everything the forward pass keeps for the backward pass, for one (B, T) shape.
// Allocated once; a pass of no more tokens reuses the same memory.
struct Activations {
  int64_t B = 0, T = 0;  // capacity: B * T tokens
  std::vector<float> encoded;    // (B,T,C) embeddings = input of layer 0
  std::vector<float> ln;         // (B,T,C) one LayerNorm output at a time; the backward
                                 // remakes each from its input, mean and rstd
  std::vector<float> proj;       // (B,T,C) a sublayer's product before its residual add
  std::vector<float> ln1_mean;   // (L,B,T) (LayerNorm only)
  std::vector<float> ln1_rstd;   // (L,B,T)
  std::vector<float> qkv;        // (L,B,T,qkv_dim) q|k|v (llama: q and k rotated)
  std::vector<float> atty;       // (L,B,T,C) attention output before c_proj
  std::vector<float> att_lse;    // (L,B,NH,T) log-sum-exp of each attention row
  std::vector<float> residual2;  // (L,B,T,C) after the attention residual
  std::vector<float> ln2_mean;   // (L,B,T)
  std::vector<float> ln2_rstd;   // (L,B,T)
  std::vector<float> fch_gelu;   // (L,B,T,H) MLP hidden after GELU (SwiGLU for llama)
  std::vector<float> gelu_derivative;  // (L,B,T,4C) GELU's derivative at the MLP hidden,
                                       // made with it (its input is not kept); llama:
                                       // (L,B,T,2F) the gate|up product SwiGLU reads
  std::vector<float> residual3;  // (L,B,T,C) block output
  std::vector<float> lnf;        // (B,T,C)
  std::vector<float> lnf_mean;   // (B,T)
  std::vector<float> lnf_rstd;   // (B,T)
  std::vector<float> logits;     // (B,T,V), only for a forward pass without targets
  LmHeadScratch head;            // one chunk of logits for the fused LM head + loss
  std::vector<float> lse;        // (B,T) log-sum-exp of each logits row
  std::vector<float> losses;     // (B,T)
  // Backward scratch, reused by every layer.
  std::vector<float> d_residual;  // (B,T,C) gradient flowing down the residual stream
  std::vector<float> d_ln;        // (B,T,C)
  std::vector<float> d_atty;      // (B,T,C)
  std::vector<float> d_qkv;       // (B,T,qkv_dim)
  std::vector<float> d_fch;       // (B,T,mlp_in_dim)
  std::vector<float> d_hidden;    // (B,T,F) llama: d(SwiGLU output)
};

class GPT {
 public:
  explicit GPT(const ModelConfig& config);
  // Its weight views point into its own buffers: moved, never copied (copy
  // params explicitly: `b.params = a.params`).
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;
  GPT(GPT&&) noexcept = default;
  GPT& operator=(GPT&&) noexcept = default;

  const ModelConfig& config() const { return config_; }
  const ParameterLayout& layout() const { return layout_; }
  size_t num_parameters() const { return layout_.total(); }

  // GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, residual output
  // projections scaled by 1/sqrt(2 * n_layer), zero biases, unit LayerNorm weights.
  void init_weights(uint64_t seed);

  // Runs tokens (B,T) through the model; T <= block_size. Without targets it keeps
  // the logits (B,T,V) for logits() and returns 0; with targets it returns the mean
  // cross-entropy loss, computed a chunk of rows at a time (the logits are not kept).
  // Targets equal to kIgnoreTarget (-1) do not count: the mean is over the others
  // (fine-tuning learns the replies, not the prompts).
  float forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T);
  // A training pass: the forward pass with targets, then the backward, accumulating
  // d(loss * loss_scale)/dparams into grads. Returns the mean loss. The LM head's
  // backward runs fused with the loss, chunk by chunk. `ready(begin, end)`, if given,
  // is called each time the gradients of a range of the parameter buffer are final
  // for this pass (the final norm and an untied LM head, then each block from the
  // last to the first, then the embeddings), so their all-reduce can start while
  // the rest of the backward pass runs.
  using GradientsReady = std::function<void(size_t begin, size_t end)>;
  float forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                         float loss_scale = 1.0f, const GradientsReady& ready = GradientsReady());
  void zero_grad();

  // For objectives other than the mean cross-entropy (a reward model, DPO, RL):
  // a training forward pass that keeps what the backward needs and writes each
  // row's log-probability of its target into logprobs (B*T; 0 where the target is
  // kIgnoreTarget; targets may be null: hidden states only), then a backward pass
  // from d(objective)/d(logprobs) per row and, optionally, a gradient on the
  // final hidden states (B,T,C) from a head that reads them (a reward or value
  // head). Gradients accumulate as forward_backward's do.
  // training = false: no dropout (a reference model's log-probabilities); only a
  // training pass may be followed by backward_logprobs when a LoRA adapter is attached.
  void forward_logprobs(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, float* logprobs,
                        bool training = true);
  // (B,T,C) final-LayerNorm outputs of the last forward pass: what a head reads.
  const float* final_hidden() const { return acts_.lnf.data(); }
  void backward_logprobs(const float* dlogprobs, const float* dhidden = nullptr,
                         const GradientsReady& ready = GradientsReady());

  // LoRA: adapters beside the blocks' products (lora.h). While attached, the base
  // weights are frozen: forward_backward gives them no gradient (the gradient
  // buffer is never allocated) and the gradients go to the adapter's `grads`.
  // forward() runs them without dropout; null detaches.
  void attach_lora(std::shared_ptr<LoraAdapters> lora);
  LoraAdapters* lora() { return lora_.get(); }
  const LoraAdapters* lora() const { return lora_.get(); }
  // Chooses the LoRA dropout mask of the next forward_backward: a seed (the
  // trainer's, per step, so a resumed run draws the same masks) and the global
  // row of this pass's first sequence (so the masks do not depend on how a batch
  // is split into micro-batches or ranks).
  void set_dropout_seed(uint64_t seed, int64_t first_row = 0) {
    dropout_seed_ = seed;
    dropout_first_row_ = first_row;
  }

  // Dropout for training passes (forward_backward, forward_logprobs with
  // training): on the embeddings, the attention weights and each residual
  // branch, with probability p, as nanoGPT applies it; never in forward() or
  // generation. Its masks follow set_dropout_seed (a hash, never stored: the
  // same for any thread count, micro-batch split, or a resumed run).
  void set_dropout(float p);
  float dropout() const { return dropout_; }

  // Packed rows (fine-tuning): several examples end to end in each row of the
  // next passes' (B,T) batches. positions (B*T) numbers each example's tokens
  // from 0 (0 where one starts, +1 along it): its position embedding, and a
  // token attends only to its own example's tokens. examples (B*T): each token's
  // example, numbered as the rows of the unpacked batch would be (LoRA dropout
  // keys on it, so a packed example draws the masks it draws alone). The layout
  // is copied; it must match the next forward's B*T (checked). Empty spans:
  // back to one sequence per row.
  void set_packing(std::span<const int32_t> positions, std::span<const int32_t> examples);
  bool packed() const { return !packed_positions_.empty(); }

  const float* logits() const { return acts_.logits.data(); }  // (B,T,V) of the last forward without targets
  // (NH,T,T) softmax weights of batch row 0 in `layer` of the last forward,
  // recomputed (training never stores them).
  const float* attention_weights(int layer);
  int64_t last_B() const { return B_; }
  int64_t last_T() const { return T_; }

  std::vector<float> params;  // layout_.total() floats
  // Same layout; empty until training needs it (allocate_gradients, zero_grad or
  // forward_backward), so a model loaded for inference costs its weights only.
  std::vector<float> grads;
  void allocate_gradients();

  // Named read-only views into params (what inference, export and quantization
  // read), and writable ones into params and grads (what training updates).
  // (The views are kept; they are bound again only if params was reallocated, which
  // nothing in the library does.)
  const ConstModelWeights& weights() const;
  const ModelWeights& mutable_weights();
  const ModelWeights& gradients();

 private:
  void ensure_activations(int64_t B, int64_t T);
  float* lora_token_grads();  // the adapter's trainable-token rows' gradient
  // Where the LM head's weight gradient goes: the model's, the adapter's trainable
  // token rows (from first_row), or nowhere (null: a frozen head).
  float* head_gradient(int64_t& first_row);
  // A block product's LoRA update, if an adapter is attached (training: kept for the backward).
  void lora_forward(int layer, LoraTarget t, const float* x, int64_t N, float* y) {
    if (lora_) lora_->forward(layer, t, x, N, y, training_pass_, dropout_key());
  }
  DropoutKey dropout_key() const {
    return {dropout_seed_, dropout_first_row_, T_, config_.block_size, packed() ? packed_examples_.data() : nullptr,
            packing_positions()};
  }
  const int32_t* packing_positions() const { return packed() ? packed_positions_.data() : nullptr; }
  // Dropout sites: 0 the embeddings; for layer l, 1 + 3l its attention weights,
  // 2 + 3l its attention branch, 3 + 3l its MLP branch.
  uint64_t dropout_site(int64_t site) const { return dropout_site_seed(dropout_seed_, static_cast<uint64_t>(site)); }
  AttentionDropout attention_dropout(int layer) const { return {dropout_, dropout_site(1 + 3 * layer), dropout_key()}; }
  // Embedding, blocks and final norm (into acts_.lnf) for tokens (B,T).
  void forward_to_final_norm(const int32_t* tokens, int64_t B, int64_t T);
  // From d(lnf) in acts_.d_ln down to the embeddings.
  void backward_from_final_norm(const GradientsReady& ready);
  // The two above past their checks, for (B_, T_): each architecture's, in its
  // file, reached through its rules (train_forward, train_backward).
  template <Architecture A>
  void forward_blocks(const int32_t* tokens);
  template <Architecture A>
  void backward_blocks(const GradientsReady& ready);
  template <Architecture A>
  friend const ArchitectureRules& rules_of();

  ModelConfig config_;
  ParameterLayout layout_;
  std::vector<float> sinusoid_table_;  // (block_size, C), sinusoidal encoding only
  RopeTable rope_;                     // (block_size, hs/2), rotary positions only
  Activations acts_;
  std::vector<int32_t> tokens_;  // (B,T) of the last forward, for the embedding backward
  std::vector<int32_t> packed_positions_, packed_examples_;  // set_packing's layout (empty: none)
  // Each set_packing call is a new layout: a backward pass (or drawing) must see
  // the layout its forward pass used.
  uint64_t packing_version_ = 0, forward_packing_version_ = 0;
  void check_packing_unchanged() const;
  std::vector<int32_t> targets_;       // (B,T) of the last forward_logprobs (none: empty)
  std::vector<int32_t> weighted_targets_;  // the targets whose dlogprobs are not 0
  std::vector<float> row_dloss_;
  int64_t B_ = 0, T_ = 0;
  std::vector<float> attention_view_;  // attention_weights() output
  std::shared_ptr<LoraAdapters> lora_;
  uint64_t dropout_seed_ = 0;
  int64_t dropout_first_row_ = 0;
  bool training_pass_ = false;
  float dropout_ = 0.0f;
  bool dropped_out_ = false;  // the last forward pass applied dropout (its backward draws the masks again)
  bool last_forward_trained_ = false;  // the last forward_logprobs kept LoRA's training activations
  ModelWeights frozen_views_{};  // all null: what a frozen base's backward writes to
  mutable ConstModelWeights weight_views_{};
  ModelWeights mutable_views_{}, grad_views_{};
};

// A copy of `model` with a larger vocabulary (special tokens added for chat):
// rows of the token embedding (and of an untied LM head) past the old vocabulary
// start as the mean of the old rows, so the new tokens begin as an average
// token rather than noise. Everything else is copied as it is.
GPT with_vocabulary(const GPT& model, int vocab_size);
// The model's parameters under another config whose tensors are the same (a
// RoPE model run past its trained context: a longer context, scaled rotations).
GPT with_config(const GPT& model, const ModelConfig& config);
// Rows [begin, end) of the token embedding (and of an untied head) set to the
// mean of rows [0, begin): new tokens placed in rows a model already has (a
// vocabulary padded past its tokenizer's, as nanoGPT pads GPT-2's to 50304).
void reset_token_rows(GPT& model, int begin, int end);

}  // namespace gpt
