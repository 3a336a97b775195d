// gpt train: train a model on a text file (or continue a checkpoint with --resume).
#include <cstdio>
#include <memory>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "gpt/cli/commands.h"
#include "gpt/cli/training_flags.h"
#include "gpt/cli/loss_plot.h"
#include "gpt/distributed/communicator.h"
#include "gpt/io/checkpoint.h"
#include "gpt/training/trainer.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/progress.h"

namespace gpt::cli {
namespace {

// What `gpt train` shows of a run on rank 0: a summary of the setup, a live
// progress line, and the loss curve drawn beside the checkpoint at the end.
class ConsoleObserver : public TrainingObserver {
 public:
  explicit ConsoleObserver(bool quiet) : quiet_(quiet) {}

  void on_start(const Trainer& t) override {
    if (!t.comm().is_root()) return;
    if (t.resumed_with_other_data()) {
      std::fprintf(stderr, "gpt: warning: %s differs from the data the checkpoint was trained on\n",
                   t.options().data.c_str());
    }
    const TrainOptions& o = t.options();
    progress_ = std::make_unique<ProgressLine>(o.max_iters, t.first_step(), o.eval_interval);
    if (quiet_) return;
    if (const ChatDataStats* cs = t.chat_stats()) {
      std::fprintf(stderr, "gpt: %lld conversations (%lld train, %lld held out), %lld reply tokens to learn",
                   static_cast<long long>(cs->conversations), static_cast<long long>(cs->train),
                   static_cast<long long>(cs->val), static_cast<long long>(cs->reply_tokens));
      if (cs->truncated > 0) std::fprintf(stderr, ", %lld cut at the context", static_cast<long long>(cs->truncated));
      if (cs->dropped > 0) std::fprintf(stderr, ", %lld dropped (no reply within the context)", static_cast<long long>(cs->dropped));
      std::fprintf(stderr, "\n");
      if (const LoraAdapters* lora = t.model().lora()) {
        std::fprintf(stderr, "gpt: LoRA rank %d on %s: %.3fM trainable parameters (base frozen)\n", lora->config().rank,
                     lora->config().targets_csv().c_str(), static_cast<double>(lora->total()) / 1e6);
      }
    }
    const BatchSource& d = t.dataset();
    std::fprintf(stderr, "gpt: %lld tokens (%lld train, %lld val), vocab %d, %.2fM parameters, %d threads\n",
                 static_cast<long long>(d.train_size() + d.val_size()), static_cast<long long>(d.train_size()),
                 static_cast<long long>(d.val_size()), t.model().config().vocab_size,
                 static_cast<double>(t.model().num_parameters()) / 1e6, t.threads());
    if (o.time_budget > 0) {
      std::fprintf(stderr, "gpt: time budget %.1f min: the learning rate cools down over its last %.0f%%%s\n",
                   o.time_budget, 100 * o.cooldown_frac,
                   o.lr_decay_iters > 0 ? " (the clock, not --lr-decay-iters, ends the schedule)" : "");
    }
    if (t.comm().distributed()) {
      std::fprintf(stderr, "gpt: %d ranks, %lld sequences per rank per step%s\n", t.comm().size(),
                   static_cast<long long>(o.batch_size / t.comm().size()),
                   o.zero == 1 ? ", ZeRO-1 (optimizer state sharded)" : "");
    }
  }

  void on_step(const Trainer& t, const LogEntry& e) override {
    if (!t.comm().is_root()) return;
    if (progress_) progress_->set_total(t.last_step());  // a time budget may have moved the end
    rate_ema_ = rate_ema_ == 0 ? e.tokens_per_sec : 0.9 * rate_ema_ + 0.1 * e.tokens_per_sec;
    if (e.val_loss) last_val_ = e.val_loss;
    if (quiet_) return;
    char fields[160];
    std::snprintf(fields, sizeof fields, "loss %.4f | val %s | lr %.2e | %.0f tok/s", e.loss,
                  last_val_ ? std::to_string(*last_val_).substr(0, 6).c_str() : "-", e.lr, rate_ema_);
    progress_->update(e.step, fields, e.val_loss.has_value());
  }

  void on_finish(const Trainer& t, const TrainResult& r) override {
    if (!t.comm().is_root()) return;
    if (!quiet_) progress_->finish();
    // Draw the whole run (earlier steps of a resumed run included) next to the checkpoint.
    if (r.steps > t.first_step()) {
      const std::filesystem::path plot = std::filesystem::path(t.options().out) / "loss.svg";
      draw_training_log(t.log_path().string(), plot.string(), "Training loss: " + t.options().data);
      if (!quiet_) std::fprintf(stderr, "gpt: loss curve drawn in %s\n", plot.c_str());
    } else if (t.first_step() > 0 && !quiet_) {
      std::fprintf(stderr, "gpt: checkpoint is already at step %lld of --max-iters %lld; nothing to do\n",
                   static_cast<long long>(t.first_step()), static_cast<long long>(t.options().max_iters));
    }
  }

 private:
  bool quiet_;
  std::unique_ptr<ProgressLine> progress_;
  double rate_ema_ = 0;
  std::optional<float> last_val_;
};

// --config FILE: a JSON object whose keys are the flag names ({"n-layer": 4,
// "lr": 1e-3}; underscores work too). Flags on the command line win. (CLI11 reads
// config files for the top-level app only, so subcommands apply them here.)
void apply_json_config(CLI::App* app, const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error("--config " + path + " is not valid JSON: " + e.what());
  }
  GPT_CHECK(j.is_object(), "--config " + path + " must hold a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string name = it.key();
    std::replace(name.begin(), name.end(), '_', '-');
    CLI::Option* opt = app->get_option_no_throw("--" + name);
    GPT_CHECK(opt != nullptr && name != "config" && name != "resume",
          "--config " + path + ": unknown option \"" + it.key() + "\"");
    if (opt->count() > 0) continue;  // given on the command line
    const auto& v = it.value();
    std::string text;
    if (v.is_string()) text = v.get<std::string>();
    else if (v.is_boolean()) text = v.get<bool>() ? "true" : "false";
    else if (v.is_number()) text = v.dump();
    else throw Error("--config " + path + ": \"" + it.key() + "\" must be a string, number or boolean");
    try {
      opt->add_result(text);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw Error("--config " + path + ": \"" + it.key() + "\": " + e.what());
    }
  }
}

}  // namespace

void add_training_flags(CLI::App* app, TrainOptions& o, std::string& resume, std::string& config) {
  app->add_option("--data", o.data, o.task == "sft" ? "Conversations: JSON lines {\"messages\": [{\"role\", \"content\"}, ...]}"
                                                    : "Training text (UTF-8 for --tokenizer char)");
  app->add_option("--out", o.out, "Checkpoint directory")->capture_default_str();
  app->add_option("--resume", resume, "Continue training from this checkpoint directory");
  app->add_option("--log", o.log, "JSON-lines training log (default: OUT/train_log.jsonl)");
  app->add_option("--block-size", o.block_size,
                  o.task == "sft" ? "Context length in tokens (0: the model's; longer chats are cut)"
                                  : "Context length in tokens")->capture_default_str();
  app->add_option("--batch-size", o.batch_size, "Sequences per optimizer step (global batch)")->capture_default_str();
  app->add_option("--grad-accum", o.grad_accum, "Micro-batches per step (must divide --batch-size)")->capture_default_str();
  app->add_option("--max-iters", o.max_iters, "Optimizer steps")->capture_default_str();
  app->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  app->add_option("--min-lr", o.min_lr, "Learning rate at the end of the cosine decay")->capture_default_str();
  app->add_option("--warmup-iters", o.warmup_iters, "Linear warmup steps")->capture_default_str();
  app->add_option("--lr-decay-iters", o.lr_decay_iters,
                  "Step where the cosine (or WSD's cooldown) reaches --min-lr (0: --max-iters; under a "
                  "--time-budget the clock ends it)")
      ->capture_default_str();
  app->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  app->add_option("--beta1", o.beta1, "AdamW beta1")->capture_default_str();
  app->add_option("--beta2", o.beta2, "AdamW beta2")->capture_default_str();
  app->add_option("--grad-clip", o.grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  app->add_option("--eval-interval", o.eval_interval, "Steps between validation evaluations")->capture_default_str();
  if (o.task != "sft") {
    app->add_option("--eval-iters", o.eval_iters, "Batches per validation evaluation (0: the whole validation part, every token predicted once)")->capture_default_str();
  }
  app->add_option("--checkpoint-interval", o.checkpoint_interval, "Steps between checkpoints (0: only at the end)")->capture_default_str();
  app->add_option("--val-fraction", o.val_fraction,
                  o.task == "sft" ? "Share of the conversations held out for validation"
                                  : "Share of the text held out for validation")->capture_default_str();
  app->add_option("--seed", o.seed, "Seed for initialisation and batches")->capture_default_str();
  app->add_option("--threads", o.threads, "Threads (0: all cores)")->capture_default_str();
  app->add_option("--zero", o.zero, "1: ZeRO-1, shard the AdamW state across MPI ranks")->capture_default_str();
  app->add_option("--overlap-comm", o.overlap_comm,
                  "Under MPI: all-reduce each block's gradients during backward (MPI_Iallreduce) instead of one ring "
                  "all-reduce after it (true/false)")->capture_default_str();
  app->add_option("--dtype", o.dtype,
                  "Matrix products: fp32, or bf16 (bfloat16 inputs, float32 accumulation; weights, optimizer "
                  "and reductions stay float32)")->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  app->add_option("--dropout", o.dropout,
                  "Dropout in training (embeddings, attention weights, residual branches; never when evaluating "
                  "or generating)")->capture_default_str();
  app->add_option("--lr-schedule", o.lr_schedule,
                  "cosine (nanoGPT's), or wsd: warmup, stable at --lr, then a straight cooldown to --min-lr")
      ->check(CLI::IsMember({"cosine", "wsd"}))->capture_default_str();
  app->add_option("--cooldown-frac", o.cooldown_frac, "wsd: the share of the steps after warmup spent cooling down")
      ->capture_default_str();
  app->add_option("--time-budget", o.time_budget,
                  "wsd: minutes of wall-clock for the run; the cooldown starts so that it ends on time "
                  "(--max-iters stays an upper bound; 0: none)")->capture_default_str();
  app->add_option("--optimizer", o.optimizer,
                  "adamw, or muon: Muon (orthogonalised momentum) for the blocks' weight matrices, AdamW for the "
                  "rest")->check(CLI::IsMember({"adamw", "muon"}))->capture_default_str();
  app->add_option("--muon-lr", o.muon_lr, "Muon's peak learning rate (it follows --lr's schedule)")->capture_default_str();
  app->add_option("--muon-momentum", o.muon_momentum, "Muon's momentum (Nesterov)")->capture_default_str();
  app->add_option("--muon-weight-decay", o.muon_weight_decay, "Muon's decoupled weight decay")->capture_default_str();
  app->add_flag("--quiet", o.quiet, "No progress display");
  app->add_option("--config", config, "JSON file with any of these options (flag names as keys)");
}

int run_training(CLI::App* app, const TrainOptions& o, const std::string& resume, const std::string& config,
                 const std::vector<std::string>& shape_flags) {
  if (!config.empty()) apply_json_config(app, config);
  TrainOptions opts = o;
  if (!o.init_from.empty()) {
    GPT_CHECK(resume.empty(), "--init-from and --resume exclude each other (--resume continues a run)");
    for (const std::string& flag : shape_flags) {
      const CLI::Option* opt = app->get_option_no_throw(flag);
      GPT_CHECK(opt == nullptr || opt->count() == 0,
                flag + " conflicts with --init-from: the model and its tokenizer come from " + o.init_from);
    }
  }
  if (!resume.empty()) {
    // Start from the checkpoint's own options; flags given now override them.
    const nlohmann::json state = load_trainer_state(resume);
    nlohmann::json merged = state["options"];
    // Fine-tuning checkpoints from before packing trained on padded rows: resumed so.
    if (o.task == "sft" && !merged.contains("packing")) merged["packing"] = false;
    GPT_CHECK(merged.value("task", std::string("pretrain")) == o.task,
              resume + " is a " + (o.task == "sft" ? std::string("pretraining") : std::string("fine-tuning")) +
                  " checkpoint: resume it with gpt " + (o.task == "sft" ? "train" : "sft"));
    const nlohmann::json given = o.to_json();
    for (auto it = given.begin(); it != given.end(); ++it) {
      const CLI::Option* flag = app->get_option_no_throw("--" + it.key());
      if (flag == nullptr || flag->count() == 0) continue;
      // What shapes the model, the adapter, or (fine-tuning) which chats are held out.
      for (const char* shape_key : {"n-layer", "n-head", "n-embd", "block-size", "position-encoding",
                                    "tie-weights", "arch", "n-kv-head", "ffn-hidden", "rope-theta", "tokenizer", "chat-template", "lora-rank", "lora-targets",
                                    "lora-alpha", "init-from"}) {
        GPT_CHECK(it.key() != shape_key || merged.value(it.key(), nlohmann::json()) == it.value(),
              "--" + it.key() + " " + it.value().dump() + " conflicts with the checkpoint's " +
                  merged.value(it.key(), nlohmann::json()).dump());
      }
      if (o.task == "sft") {
        for (const char* split_key : {"seed", "val-fraction", "data"}) {
          GPT_CHECK(it.key() != split_key || merged.value(it.key(), nlohmann::json()) == it.value(),
                    "--" + it.key() + " cannot change when resuming fine-tuning (it decides which chats are held out)");
        }
      }
      merged[it.key()] = it.value();
    }
    if (app->get_option("--out")->count() == 0) merged["out"] = resume;
    if (app->get_option("--log")->count() == 0 && merged.value("log", std::string()).empty()) merged["log"] = "";
    opts = TrainOptions::from_json(merged);
    opts.quiet = o.quiet;
  }
  ConsoleObserver console(opts.quiet);
  const TrainResult r = train(opts, resume, &console);
  if (!Communicator::world().is_root()) return 0;  // rank 0 reports
  nlohmann::json summary = {{"steps", r.steps},
                            {"loss", r.final_loss},
                            {"seconds", std::round(r.seconds * 100) / 100},
                            {"tokens_per_sec", std::round(r.tokens_per_sec)},
                            {"checkpoint", opts.out}};
  if (r.final_val_loss) summary["val_loss"] = *r.final_val_loss;
  if (Communicator::world().distributed()) {
    summary["ranks"] = Communicator::world().size();
    summary["comm_fraction"] = std::round(1000 * r.comm_seconds / std::max(1e-9, r.comm_seconds + r.compute_seconds)) / 1000;
  }
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

Command add_train_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("train", "Train a GPT model on a text file");
  app->footer("\nExamples:\n  gpt train --data input.txt --out out/mymodel --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --max-iters 2000\n  gpt train --resume out/mymodel\n  gpt train --init-from path/to/gpt2 --data mytext.txt --out out/finetuned --lr 1e-4 --dtype bf16");
  auto o = std::make_shared<TrainOptions>();
  auto resume = std::make_shared<std::string>();
  auto config = std::make_shared<std::string>();
  add_training_flags(app, *o, *resume, *config);
  app->add_option("--init-from", o->init_from,
                  "Fine-tune: start from this model (checkpoint, Hugging Face GPT-2 or Llama dir, or GGUF file)");
  app->add_option("--tokenizer", o->tokenizer, "char, byte, or a tokenizer file / checkpoint")->capture_default_str();
  app->add_option("--n-layer", o->n_layer, "Transformer blocks")->capture_default_str();
  app->add_option("--n-head", o->n_head, "Attention heads per block")->capture_default_str();
  app->add_option("--n-embd", o->n_embd, "Embedding width")->capture_default_str();
  app->add_option("--position-encoding", o->position_encoding, "learned or sinusoidal")
      ->check(CLI::IsMember({"learned", "sinusoidal"}))->capture_default_str();
  app->add_option("--tie-weights", o->tie_weights, "Share the token embedding with the LM head")->capture_default_str();
  app->add_option("--arch", o->arch,
                  "gpt2 (learned positions, LayerNorm, GELU) or llama (RoPE, RMSNorm, SwiGLU, grouped-query attention)")
      ->check(CLI::IsMember({"gpt2", "llama"}))->capture_default_str();
  app->add_option("--n-kv-head", o->n_kv_head, "llama: key/value heads, dividing --n-head (0: --n-head)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--ffn-hidden", o->ffn_hidden, "llama: SwiGLU width (0: 8/3 n-embd rounded up to 64)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--rope-theta", o->rope_theta, "llama: RoPE base")->capture_default_str();
  app->add_flag("--qkv-bias", o->qkv_bias, "llama: biases on the q, k and v projections (Qwen2's; config.json model_type qwen2)");
  auto run = [app, o, resume, config]() -> int {
    return run_training(app, *o, *resume, *config,
                        {"--n-layer", "--n-head", "--n-embd", "--position-encoding", "--tie-weights", "--tokenizer",
                         "--arch", "--n-kv-head", "--ffn-hidden", "--rope-theta", "--qkv-bias"});
  };
  return {app, run};
}

}  // namespace gpt::cli
