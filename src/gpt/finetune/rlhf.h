// Reinforcement learning from a reward model (InstructGPT's third stage).
// Each iteration: rollouts — a batch of prompts, each answered by sampling from
// the policy on the batched decoding engine (generation/batch_engine.h); each
// answer scored by the reward model at its end; then updates:
//   ppo:  per-token reward -kl_coef * (log pi_old - log pi_ref) plus the score at
//         the last token; a value head on the policy's final hidden states; GAE
//         advantages (whitened); several epochs over minibatches of the clipped
//         policy objective and the clipped value loss (Schulman et al., 2017;
//         Ziegler et al., 2019). kl_coef fixed, or adapted toward kl_target.
//   grpo: G answers per prompt, each answer's advantage its score's standing in
//         its group, (r - mean) / (std + 1e-4) (the population std), on every token; no value head; the
//         KL to the reference in the loss (the k3 estimator), as DeepSeekMath does.
// The reference is the starting policy, frozen. Full or LoRA. Nothing printed.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpt/distributed/communicator.h"
#include "gpt/finetune/preference_trainer.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/model/gpt.h"
#include "gpt/training/adamw.h"
#include "gpt/training/lr_schedule.h"
#include "gpt/training/optimizer_step.h"
#include "gpt/training/training_log.h"

namespace gpt {

struct RlhfOptions {
  std::string algo = "ppo";  // ppo | grpo
  std::string policy, reward, prompts, out, log;
  int64_t max_iters = 50;
  int64_t batch_prompts = 8;    // prompts per iteration
  int64_t group = 4;            // grpo: answers per prompt
  int64_t max_new_tokens = 32;  // per answer
  int64_t ppo_epochs = 4;       // passes over each iteration's rollouts
  int64_t minibatch = 8;        // answers per optimizer step (on each rank under mpirun)
  double lr = 1e-5, min_lr = 1e-6, weight_decay = 0.0, grad_clip = 1.0;
  int64_t warmup_iters = 0;
  double kl_coef = 0.05;   // ppo: per-token penalty; grpo: weight of the KL term in the loss
  double kl_target = 0.0;  // ppo: > 0 adapts kl_coef toward this KL per answer (Ziegler et al.)
  double clip_range = 0.2, value_clip = 0.2, vf_coef = 0.1, gamma = 1.0, lam = 0.95;
  double val_fraction = 0.1;  // held-out prompts, answered greedily and scored every eval_interval
  int64_t eval_interval = 10;
  uint64_t seed = 1337;
  int threads = 0;
  std::string dtype = "fp32";
  int lora_rank = 0;
  double lora_alpha = 16, lora_dropout = 0;  // dropout must stay 0: old and new log-probabilities use one network
  std::string lora_targets = "c_attn,attn.c_proj,c_fc,mlp.c_proj";

  void validate() const;
  nlohmann::json to_json() const;
};

// Prompts: JSON lines {"prompt": "text"} or {"prompt": [messages]} (TRL's
// prompt-only format), or {"messages": [...]} without a final assistant turn.
// gpt::Error naming the line.
std::vector<std::vector<ChatMessage>> read_prompt_jsonl(const std::filesystem::path& file, bool* plain = nullptr);

// Whether two tokenizers give every id the same bytes (models that read each other's token ids).
bool same_tokens(const Tokenizer& a, const Tokenizer& b);
// Prompts as token ids: through the chat template when there is one, else the
// messages' text one after another. Prompts with no room for an answer in the
// context are left out (counted in *dropped).
std::vector<std::vector<int32_t>> encode_prompts(const std::vector<std::vector<ChatMessage>>& prompts,
                                                 const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                                                 int64_t block_size, int64_t* dropped = nullptr);
// Where an answer ends: the template's end-of-turn marker and <|endoftext|>, those the tokenizer has.
std::vector<int32_t> answer_stop_tokens(const Tokenizer& tokenizer, const ChatTemplate* chat_template);
// One answer per prompt from `policy` (its LoRA adapter merged into a copy) on
// the batched decoding engine: sampled at temperature 1 with nothing cut (the
// policy's own distribution), or greedy; at most max_new_tokens each and never
// past `context` tokens with its prompt (0: the policy's context), ending at a
// stop token (kept). Answer i is seeded by (seed, first_index + i).
std::vector<std::vector<int32_t>> sample_answers(const GPT& policy, const std::vector<const std::vector<int32_t>*>& prompts,
                                                 int64_t max_new_tokens, const std::vector<int32_t>& stop_tokens,
                                                 bool greedy, uint64_t seed, int64_t context = 0,
                                                 int64_t first_index = 0);

// How far a tuned policy has moved from its reference: answers sampled from the
// policy on the prompts, and per answer the sum over its tokens of
// log pi(token) - log pi_ref(token) — a Monte Carlo estimate of KL(pi || pi_ref)
// over whole answers, the quantity RLHF's penalty bounds (an answer cut at
// max_new_tokens or the shorter context counts the tokens it has). Both models
// must share one tokenizer (checked by the caller). Answers are drawn and scored
// `batch` at a time, so memory does not grow with the number of prompts.
struct KlEstimate {
  int64_t prompts = 0, answers = 0;
  // Per answer, in nats; the standard error is over the prompts' own means (the
  // answers to one prompt are not independent of each other; one prompt: over its answers).
  double kl = 0, std_error = 0;
  double mean_length = 0;        // tokens per answer
};
KlEstimate estimate_kl(GPT& policy, GPT& reference, const std::vector<std::vector<int32_t>>& prompts,
                       int64_t samples_per_prompt, int64_t max_new_tokens, const std::vector<int32_t>& stop_tokens,
                       uint64_t seed, int64_t batch = 16);

// Generalized advantage estimation over one answer's tokens: rewards r_t, values
// V_t (V after the last token is 0) -> advantages A_t and returns A_t + V_t.
void gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma, double lam,
         std::vector<double>& advantages, std::vector<double>& returns);

// The per-token PPO objective on one minibatch (what the tests compare with
// PyTorch): clipped surrogate -min(A r, A clip(r, 1-e, 1+e)), r = exp(new - old),
// plus vf_coef * 0.5 * max((V - R)^2, (clip(V, V_old +- ev) - R)^2) when values are
// given, plus kl_coef * (exp(ref - new) - (ref - new) - 1) when ref is given;
// each a mean over the tokens. Writes d(loss)/d(new) and d(loss)/d(V) per token.
struct PpoTerms {
  double loss = 0, policy_loss = 0, value_loss = 0, kl = 0, clip_fraction = 0;
};
PpoTerms ppo_objective(const std::vector<double>& new_logp, const std::vector<double>& old_logp,
                       const std::vector<double>& advantages, const std::vector<double>* values,
                       const std::vector<double>* old_values, const std::vector<double>* returns,
                       const std::vector<double>* ref_logp, double clip_range, double value_clip, double vf_coef,
                       double kl_coef, std::vector<double>& d_logp, std::vector<double>& d_value);

class RlhfTrainer {
 public:
  explicit RlhfTrainer(const RlhfOptions& options, Communicator& comm = Communicator::world());
  // One iteration: rollouts, scores, updates. The entry's extra holds reward,
  // kl, entropy (estimated from the sampled tokens), clip_fraction, value_loss
  // (ppo), response_length, kl_coef.
  LogEntry iterate();
  // Held-out prompts answered greedily: the reward model's mean score.
  double evaluate();
  void save();
  using StepCallback = std::function<void(const LogEntry&)>;
  void run(const StepCallback& on_step = {});

  const RlhfOptions& options() const { return opts_; }
  int64_t steps_done() const { return step_; }
  int64_t train_prompts() const { return static_cast<int64_t>(train_.size()); }
  int64_t val_prompts() const { return static_cast<int64_t>(val_.size()); }
  int64_t dropped_prompts() const { return dropped_; }  // no room for an answer in the context
  const Communicator& comm() const { return comm_; }
  std::filesystem::path log_path() const { return log_ ? log_->path() : std::filesystem::path(); }

 private:
  struct Rollout {
    std::vector<int32_t> ids;  // prompt + answer
    int64_t prompt_len = 0;
    double score = 0;
    std::vector<double> old_logp, ref_logp, values, advantages, returns;  // per answer token
  };
  std::vector<std::vector<int32_t>> sample(const std::vector<const std::vector<int32_t>*>& prompts, bool greedy,
                                           uint64_t seed);
  void score(std::vector<Rollout>& rollouts);
  // Per answer token, log-probabilities (and values when a value head is given) by `model`.
  void token_stats(GPT& model, std::vector<Rollout>& rollouts, size_t first, size_t count, bool training,
                   std::vector<std::vector<double>>& logp, std::vector<std::vector<double>>* values);

  RlhfOptions opts_;
  Communicator& comm_;
  ComputeContext compute_;
  std::shared_ptr<GPT> policy_, reference_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  RewardModel rm_;
  std::vector<std::vector<int32_t>> train_, val_;  // encoded prompts
  std::vector<int32_t> stop_tokens_;
  std::vector<float> value_head_, value_grad_;  // ppo: (C + 1): weights, bias
  std::unique_ptr<AdamW> value_opt_;
  std::unique_ptr<OptimizerStep> optimizer_;
  LrSchedule schedule_;
  std::unique_ptr<TrainingLog> log_;
  double kl_coef_ = 0;
  int base_vocab_ = 0;
  int64_t step_ = 0, opt_steps_ = 0, dropped_ = 0;
  PreferenceScratch scratch_;
};

}  // namespace gpt
