// Pretraining, in pieces that other trainers (fine-tuning, preference tuning)
// reuse: TrainingData (text or token shard -> tokenizer + batches), the model's
// forward/backward, OptimizerStep (gradients over ranks, clipping, AdamW),
// evaluation, checkpoints and the training log. A TrainingObserver sees the run
// (the command line draws its progress line and loss curve from it); the library
// itself prints nothing and changes no process-wide setting.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpt/distributed/communicator.h"
#include "gpt/finetune/chat_data.h"
#include "gpt/model/gpt.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/training/dataset.h"
#include "gpt/training/lr_schedule.h"
#include "gpt/training/optimizer_step.h"
#include "gpt/training/training_log.h"

namespace gpt {

// Every option of `gpt train`; JSON keys are the command-line flag names
// ("n-layer", "batch-size", ...), so a --config file and trainer_state.json share them.
struct TrainOptions {
  std::string data;
  std::string out = "out";
  std::string tokenizer = "char";  // char | byte | path to a tokenizer file or checkpoint
  std::string log;                 // default: <out>/train_log.jsonl
  std::string init_from;           // start from this model (checkpoint, Hugging Face dir, GGUF)
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  int block_size = 64;
  std::string position_encoding = "learned";  // gpt2's; llama's are rotary
  bool tie_weights = true;
  std::string arch = "gpt2";  // gpt2 | llama
  int n_kv_head = 0;          // llama: key/value heads (0: n_head)
  int ffn_hidden = 0;         // llama: SwiGLU width (0: 8C/3 rounded up to 64)
  double rope_theta = 10000.0;
  bool qkv_bias = false;      // llama: Qwen2's q/k/v biases
  int64_t batch_size = 12;  // global batch of one optimizer step
  int64_t grad_accum = 1;   // micro-batches per step
  int64_t max_iters = 2000;
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_iters = 100;
  int64_t lr_decay_iters = 0;  // 0: max_iters
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double grad_clip = 1.0;
  int64_t eval_interval = 250;
  int64_t eval_iters = 20;  // 0: the whole validation part
  int64_t checkpoint_interval = 0;  // 0: only at the end
  double val_fraction = 0.1;
  uint64_t seed = 1337;
  int threads = 0;  // 0: OpenMP's default
  int zero = 0;     // 1: ZeRO-1, shard AdamW's state across MPI ranks
  // All-reduce each block's gradients (MPI_Iallreduce) while backward goes on,
  // instead of one ring all-reduce after it. Off by default: on one host the ring
  // is faster (bench/mpi_scaling.sh); with an RDMA network that progresses MPI
  // in the background, overlapping can win.
  bool overlap_comm = false;
  std::string dtype = "fp32";  // matrix products: fp32, or bf16 (float32 weights, optimizer, reductions)
  // Dropout in training passes (embeddings, attention weights, residual branches), as nanoGPT.
  double dropout = 0.0;
  // adamw, or muon: Muon for the blocks' weight matrices (training/muon.h), AdamW
  // (lr, betas, weight decay above) for embeddings, head, gains and biases.
  // Learning-rate schedule: cosine (nanoGPT's), or wsd (warmup, stable at --lr,
  // then a straight cooldown to --min-lr over the last cooldown_frac of the steps after warmup).
  std::string lr_schedule = "cosine";
  double cooldown_frac = 0.2;
  // wsd: minutes of wall-clock for the run (0: none). The stable phase ends when
  // (1 - cooldown_frac) of it has passed, and the cooldown is sized from the
  // measured time per step to end on time (evaluations counted); max_iters stays
  // an upper bound.
  double time_budget = 0.0;
  std::string optimizer = "adamw";
  double muon_lr = 0.02;  // Muon's peak rate; it follows the same schedule
  double muon_momentum = 0.95;
  double muon_weight_decay = 0.0;
  bool quiet = false;
  // Supervised fine-tuning (gpt sft): data is chats (JSON lines), the template's
  // markers are added to the tokenizer, and only the replies are learned.
  std::string task = "pretrain";  // pretrain | sft
  std::string chat_template;  // sft: empty = the model's own, else chatml
  // sft: several chats end to end in each row, attention kept inside each (the
  // same loss as one padded row per chat, fewer padding tokens to compute).
  bool packing = true;
  // LoRA (lora_rank > 0): the base model is frozen and adapters train instead.
  int lora_rank = 0;
  double lora_alpha = 16;
  double lora_dropout = 0;
  std::string lora_targets = "c_attn,attn.c_proj,c_fc,mlp.c_proj";

  void validate() const;
  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

struct TrainResult {
  int64_t steps = 0;  // optimizer steps completed, counting those before a resume
  float final_loss = 0;
  std::optional<float> final_val_loss;
  double seconds = 0;
  double tokens_per_sec = 0;
  // Under MPI: time in forward/backward, and after it (gradient collectives,
  // optimizer step, parameter all-gather), summed over steps.
  double compute_seconds = 0, comm_seconds = 0;
  std::vector<LogEntry> history;  // this run's steps only
};

// The corpus of a run: a text file, tokenized (and the tokenizer made, unless one
// is given), or a token shard mapped as it is.
struct TrainingData {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<BatchSource> dataset;
  uint64_t fingerprint = 0;  // of the data, kept in the checkpoint to warn on a resume with other data
};
// `tokenizer` null: made from opts.tokenizer (char, byte or a file).
TrainingData load_training_data(const TrainOptions& opts, std::unique_ptr<Tokenizer> tokenizer, int threads);

// What a caller sees of a run. Called on every rank (most callers act on rank 0).
class TrainingObserver {
 public:
  virtual ~TrainingObserver() = default;
  virtual void on_start(const class Trainer&) {}
  virtual void on_step(const class Trainer&, const LogEntry&) {}
  virtual void on_checkpoint(const class Trainer&, int64_t /*step*/) {}
  virtual void on_finish(const class Trainer&, const TrainResult&) {}
};

class Trainer {
 public:
  // Sets up a run from scratch or from opts.init_from, or continues the checkpoint
  // in `resume_dir` (then opts must be the checkpoint's options with any overrides
  // already applied).
  explicit Trainer(const TrainOptions& opts, const std::string& resume_dir = "",
                   Communicator& comm = Communicator::world());

  // One optimizer step: every micro-batch's forward/backward, then OptimizerStep.
  // The entry has no validation loss; see evaluate().
  LogEntry step();
  // Mean loss per target over opts.eval_iters validation batches, or over the
  // whole validation part when eval_iters is 0 (ranks split the batches).
  float evaluate();
  // Writes the checkpoint (rank 0; every rank must call it: ZeRO gathers moments).
  void save_checkpoint();
  // Steps until opts.max_iters: evaluating every eval_interval steps, logging each
  // step, checkpointing every checkpoint_interval steps and at the end.
  TrainResult run(TrainingObserver* observer = nullptr);

  const TrainOptions& options() const { return opts_; }
  int64_t steps_done() const { return step_; }
  // The step the run ends at: max_iters, or where a time budget ends it — before its
  // cooldown is fixed, projected at the pace so far (what a progress bar's ETA needs).
  int64_t last_step() const { return projected_end_ > 0 ? std::min(projected_end_, end_step_) : end_step_; }
  // The clock run() measures elapsed time with (seconds; default: std::chrono::steady_clock),
  // so a test can drive a time budget without depending on how fast the machine is.
  void set_clock(std::function<double()> clock) { clock_ = std::move(clock); }
  int64_t first_step() const { return start_step_; }  // of this run (> 0 when resumed)
  const GPT& model() const { return *model_; }
  GPT& model() { return *model_; }
  const Tokenizer& tokenizer() const { return *data_.tokenizer; }
  const BatchSource& dataset() const { return *data_.dataset; }
  // Fine-tuning: the chats read (null for pretraining).
  const ChatDataStats* chat_stats() const { return chat_stats_ ? &*chat_stats_ : nullptr; }
  const std::optional<ChatTemplate>& chat_template() const { return chat_template_; }
  const Communicator& comm() const { return comm_; }
  int threads() const { return threads_; }
  // Rank 0's training log (empty path on other ranks).
  std::filesystem::path log_path() const { return log_ ? log_->path() : std::filesystem::path(); }
  // A resumed run whose data differs from what the checkpoint was trained on.
  bool resumed_with_other_data() const { return other_data_; }

 private:
  TrainOptions opts_;
  Communicator& comm_;
  ComputeContext compute_;
  int threads_;
  TrainingData data_;
  std::shared_ptr<GPT> model_;
  std::unique_ptr<OptimizerStep> optimizer_;
  LrSchedule schedule_;
  int64_t end_step_ = 0;          // the last step + 1: max_iters, or where a time budget ends the run
  int64_t projected_end_ = 0;     // a time budget's end at the pace so far, until its cooldown is fixed
  double elapsed_before_ = 0;     // wall-clock seconds of the run's earlier segments (resumed)
  double elapsed_this_run_ = 0;   // and of this one, up to the last step
  double eval_seconds_ = 0;       // the last evaluation's (a time budget keeps room for the final one)
  std::function<double()> clock_;  // seconds, monotonic
  // A time budget, after each step: projects the end, fixes the cooldown's start
  // and length once (1 - cooldown_frac) of the budget has passed, and ends a run
  // that has slowed down since on time.
  void follow_time_budget(double elapsed_total, int64_t steps_this_run);
  std::unique_ptr<TrainingLog> log_;  // rank 0
  int64_t start_step_ = 0, step_ = 0;
  bool other_data_ = false;
  double compute_seconds_ = 0, comm_seconds_ = 0;  // under MPI: forward/backward, and what follows it
  int64_t B_ = 0, B_rank_ = 0, T_ = 0;  // micro-batch rows, this rank's rows of a step, context
  std::vector<int32_t> x_, y_;
  std::vector<int32_t> positions_, examples_;  // packed fine-tuning rows' layout (GPT::set_packing)
  std::optional<ChatTemplate> chat_template_;
  std::optional<ChatDataStats> chat_stats_;
  int base_vocab_ = 0;
  int64_t tokens_run_ = 0;  // tokens of every step so far (rows are as long as their batch's longest chat)
};

// Trainer(opts, resume_dir).run(observer).
TrainResult train(const TrainOptions& opts, const std::string& resume_dir = "", TrainingObserver* observer = nullptr);

}  // namespace gpt
