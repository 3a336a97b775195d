// Learning from preferences: pairs of responses to one prompt, one chosen over
// the other (finetune/preference_data.h).
//   reward: a reward model — the model's body and a scalar head on the final
//           hidden state of a sequence's last token (Hugging Face's
//           GPT2ForSequenceClassification, one label: score.weight (1, C)) —
//           trained with the Bradley–Terry loss -log sigma(r_chosen - r_rejected)
//           (InstructGPT; TRL's RewardTrainer).
//   dpo:    the policy itself (Rafailov et al., 2023): with log-ratios against a
//           frozen reference (the starting policy, its log-probabilities
//           computed once), -log sigma(beta * ((log pi(c) - log ref(c)) -
//           (log pi(r) - log ref(r)))), the log-probability of a response being
//           the sum over its tokens. Full or LoRA.
// Both log per step (JSON lines: loss, accuracy, margin) and evaluate held-out
// pairs; the library prints nothing.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpt/distributed/communicator.h"
#include "gpt/finetune/preference_data.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/model/gpt.h"
#include "gpt/training/adamw.h"
#include "gpt/training/lr_schedule.h"
#include "gpt/training/optimizer_step.h"
#include "gpt/training/training_log.h"

namespace gpt {

struct PreferenceOptions {
  std::string mode = "dpo";  // dpo | reward
  std::string data, init_from, out, log, chat_template;  // chat_template: empty = the model's own
  int64_t block_size = 0;  // 0: the model's context
  int64_t batch_size = 8;  // pairs per step (split across ranks)
  int64_t max_iters = 200, warmup_iters = 10, eval_interval = 50;
  double lr = 5e-5, min_lr = 5e-6, weight_decay = 0.0, beta1 = 0.9, beta2 = 0.99, grad_clip = 1.0;
  double val_fraction = 0.1;
  double beta = 0.1;  // DPO's temperature
  uint64_t seed = 1337;
  int threads = 0;
  std::string dtype = "fp32";
  int lora_rank = 0;  // dpo: > 0 trains a LoRA adapter
  double lora_alpha = 16, lora_dropout = 0;
  std::string lora_targets = "c_attn,attn.c_proj,c_fc,mlp.c_proj";

  void validate() const;
  nlohmann::json to_json() const;
};

struct PreferenceMetrics {
  double loss = 0;
  double accuracy = 0;  // share of pairs scored chosen > rejected
  double margin = 0;    // mean of r_chosen - r_rejected (dpo: of beta * the log-ratio difference)
  int64_t pairs = 0;
};

// A reward model on disk: a checkpoint directory whose model.safetensors also
// holds score.weight (1, C) and whose config.json names GPT2ForSequenceClassification.
struct RewardModel {
  std::shared_ptr<GPT> body;
  std::vector<float> head;  // (C)
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
};
RewardModel load_reward_model(const std::filesystem::path& dir);
// Held-out style scores of pairs from a file by a reward model (gpt reward score).
PreferenceMetrics score_preferences(RewardModel& rm, const std::vector<PreferenceText>& pairs, int64_t batch_pairs,
                                    int64_t* dropped = nullptr);

// Buffers a batch of pairs goes through: rows (chosen, rejected, chosen, ...)
// padded to the longest, and the gradients handed back to the model.
struct PreferenceScratch {
  std::vector<int32_t> x, y;
  std::vector<int64_t> lengths;
  int64_t T = 0;
  std::vector<float> logprobs, dlogprobs, dhidden;
  std::vector<double> chosen, rejected;
};

// One batch of pairs forward and backward: the mean loss over the pairs, its
// gradient accumulated into the model's (or its adapter's) gradients. With a
// reward head (C floats): Bradley–Terry on r = head . h(last token), the head's
// gradient accumulated into head_grad. Without: DPO against the reference's
// summed response log-probabilities ref_chosen[i], ref_rejected[i], with beta.
PreferenceMetrics preference_forward_backward(GPT& model, const float* head, float* head_grad,
                                              const std::vector<const EncodedPair*>& pairs, const double* ref_chosen,
                                              const double* ref_rejected, double beta, PreferenceScratch& scratch);
// The same scores without a backward pass (no dropout): each side's reward, or
// its summed response log-probability, into scratch.chosen / scratch.rejected.
void score_pairs(GPT& model, const float* head, const std::vector<const EncodedPair*>& pairs,
                 PreferenceScratch& scratch);

class PreferenceTrainer {
 public:
  explicit PreferenceTrainer(const PreferenceOptions& options, Communicator& comm = Communicator::world());

  // One optimizer step; its batch's metrics in `metrics` (this rank's pairs, averaged over ranks).
  LogEntry step(PreferenceMetrics* metrics = nullptr);
  PreferenceMetrics evaluate();
  void save();
  // Steps to max_iters, evaluating every eval_interval steps and at the end, then saves.
  using StepCallback = std::function<void(const LogEntry&)>;
  void run(const StepCallback& on_step = {});

  const PreferenceOptions& options() const { return opts_; }
  const GPT& model() const { return *model_; }
  int64_t steps_done() const { return step_; }
  int64_t train_pairs() const { return static_cast<int64_t>(data_.train.size()); }
  int64_t val_pairs() const { return static_cast<int64_t>(data_.val.size()); }
  int64_t dropped_pairs() const { return data_.dropped; }
  const Communicator& comm() const { return comm_; }
  std::filesystem::path log_path() const { return log_ ? log_->path() : std::filesystem::path(); }

 private:

  PreferenceOptions opts_;
  Communicator& comm_;
  ComputeContext compute_;
  std::shared_ptr<GPT> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  PreferenceSplit data_;
  std::vector<double> ref_chosen_, ref_rejected_;  // dpo: train pairs, then val pairs
  std::vector<float> head_, head_grad_;              // reward: (C)
  std::unique_ptr<AdamW> head_opt_;
  std::unique_ptr<OptimizerStep> optimizer_;
  LrSchedule schedule_;
  std::unique_ptr<TrainingLog> log_;
  int base_vocab_ = 0;
  int64_t step_ = 0, pairs_rank_ = 0;
  PreferenceScratch scratch_;
  std::vector<int64_t> order_;  // the current epoch's order of the training pairs
  int64_t order_epoch_ = -1;
};

}  // namespace gpt
