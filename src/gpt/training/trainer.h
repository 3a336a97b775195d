// The training loop: data -> micro-batches -> forward/backward -> clip -> AdamW,
// with evaluation, logging, progress display and checkpoints.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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
  std::string position_encoding = "learned";
  bool tie_weights = true;
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
  int64_t eval_iters = 20;
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
  bool quiet = false;

  void validate() const;
  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

struct LogEntry {
  int64_t step = 0;
  float loss = 0;
  std::optional<float> val_loss;
  float lr = 0;
  float grad_norm = 0;
  double tokens_per_sec = 0;
  nlohmann::json to_json() const;
};

// Reads a JSON-lines training log (a torn last line is skipped); throws gpt::Error
// for a missing file or a line that is not a log entry.
std::vector<LogEntry> read_training_log(const std::string& path);
// Draws a training log as an SVG loss curve.
std::string training_log_svg(const std::vector<LogEntry>& log, const std::string& title);

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

// Trains from scratch, or continues the checkpoint in `resume_dir` (then opts must
// be the checkpoint's options with any overrides already applied).
TrainResult train(const TrainOptions& opts, const std::string& resume_dir = "");

}  // namespace gpt
