#include "gpt/training/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <memory>

#include "gpt/distributed/communicator.h"
#include "gpt/io/checkpoint.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/io/model_loader.h"
#include "gpt/io/peft_adapter.h"
#include "gpt/io/token_shard.h"
#include "gpt/util/rng.h"
#include "gpt/model/gpt.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/training/adamw.h"
#include "gpt/training/dataset.h"
#include "gpt/training/evaluate.h"
#include "gpt/training/lr_schedule.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/training/training_log.h"

namespace gpt {
namespace fs = std::filesystem;

void TrainOptions::validate() const {
  GPT_CHECK(!data.empty(), "no training data: pass --data FILE");
  GPT_CHECK(!out.empty(), "no output directory: pass --out DIR");
  auto positive = [](int64_t v, const std::string& flag) {
    GPT_CHECK(v > 0, "--" + flag + " must be positive, got " + std::to_string(v));
  };
  positive(n_layer, "n-layer");
  positive(n_head, "n-head");
  positive(n_embd, "n-embd");
  if (task == "sft") {
    GPT_CHECK(block_size >= 0, "--block-size must not be negative (0: the model's context)");
  } else {
    positive(block_size, "block-size");
  }
  positive(batch_size, "batch-size");
  positive(grad_accum, "grad-accum");
  positive(max_iters, "max-iters");
  positive(eval_interval, "eval-interval");
  GPT_CHECK(eval_iters >= 0, "--eval-iters must not be negative (0: the whole validation part)");
  GPT_CHECK(n_embd % n_head == 0, "--n-head (" + std::to_string(n_head) + ") must divide --n-embd (" +
                                  std::to_string(n_embd) + ")");
  GPT_CHECK(batch_size % grad_accum == 0, "--grad-accum (" + std::to_string(grad_accum) +
                                          ") must divide --batch-size (" + std::to_string(batch_size) + ")");
  GPT_CHECK(lr > 0 && std::isfinite(lr), "--lr must be positive");
  GPT_CHECK(min_lr >= 0 && min_lr <= lr, "--min-lr must be in [0, lr]");
  GPT_CHECK(warmup_iters >= 0, "--warmup-iters must not be negative");
  GPT_CHECK(lr_decay_iters >= 0, "--lr-decay-iters must not be negative");
  GPT_CHECK(weight_decay >= 0, "--weight-decay must not be negative");
  GPT_CHECK(beta1 >= 0 && beta1 < 1, "--beta1 must be in [0, 1)");
  GPT_CHECK(beta2 >= 0 && beta2 < 1, "--beta2 must be in [0, 1)");
  GPT_CHECK(grad_clip >= 0, "--grad-clip must not be negative (0 disables clipping)");
  GPT_CHECK(checkpoint_interval >= 0, "--checkpoint-interval must not be negative");
  GPT_CHECK(val_fraction > 0 && val_fraction < 1, "--val-fraction must be in (0, 1)");
  GPT_CHECK(threads >= 0, "--threads must not be negative");
  GPT_CHECK(dropout >= 0 && dropout < 1, "--dropout must be in [0, 1)");
  GPT_CHECK(lr_schedule == "cosine" || lr_schedule == "wsd", "--lr-schedule must be cosine or wsd, got '" + lr_schedule + "'");
  GPT_CHECK(cooldown_frac > 0 && cooldown_frac <= 1, "--cooldown-frac must be in (0, 1]");
  GPT_CHECK(time_budget >= 0 && std::isfinite(time_budget), "--time-budget must not be negative");
  GPT_CHECK(time_budget == 0 || lr_schedule == "wsd",
            "--time-budget needs --lr-schedule wsd (a cosine's length is fixed in advance)");
  GPT_CHECK(optimizer == "adamw" || optimizer == "muon", "--optimizer must be adamw or muon, got '" + optimizer + "'");
  if (optimizer == "muon") {
    GPT_CHECK(muon_lr > 0 && std::isfinite(muon_lr), "--muon-lr must be positive");
    GPT_CHECK(muon_momentum >= 0 && muon_momentum < 1, "--muon-momentum must be in [0, 1)");
    GPT_CHECK(muon_weight_decay >= 0, "--muon-weight-decay must not be negative");
    GPT_CHECK(lora_rank == 0, "Muon trains whole weight matrices, not LoRA adapters");
    GPT_CHECK(zero == 0, "Muon does not run with ZeRO-1 (--zero 1)");
  }
  GPT_CHECK(zero == 0 || zero == 1, "--zero must be 0 or 1");
  parse_position_encoding(position_encoding);
  parse_architecture(arch);
  GPT_CHECK(n_kv_head >= 0, "--n-kv-head must not be negative");
  GPT_CHECK(ffn_hidden >= 0, "--ffn-hidden must not be negative");
  GPT_CHECK(rope_theta > 1 && std::isfinite(rope_theta), "--rope-theta must be greater than 1");
  if (arch == "llama") {
    GPT_CHECK(n_kv_head == 0 || n_head % n_kv_head == 0, "--n-kv-head (" + std::to_string(n_kv_head) +
                                                            ") must divide --n-head (" + std::to_string(n_head) + ")");
  } else {
    GPT_CHECK(n_kv_head == 0 || n_kv_head == n_head, "--n-kv-head needs --arch llama");
    GPT_CHECK(ffn_hidden == 0, "--ffn-hidden needs --arch llama");
    GPT_CHECK(!qkv_bias, "--qkv-bias needs --arch llama");
  }
  GPT_CHECK(task == "pretrain" || task == "sft", "unknown training task '" + task + "'");
  if (task == "sft" && !chat_template.empty()) ChatTemplate::named(chat_template);
  GPT_CHECK(lora_rank >= 0, "--lora-rank must not be negative");
  if (lora_rank > 0) {
    GPT_CHECK(task == "sft", "LoRA is for fine-tuning (gpt sft)");
    LoraConfig::from_flags(lora_rank, lora_alpha, lora_dropout, lora_targets);
  }
}

nlohmann::json TrainOptions::to_json() const {
  return {{"data", data}, {"out", out}, {"tokenizer", tokenizer}, {"log", log},
          {"n-layer", n_layer}, {"n-head", n_head}, {"n-embd", n_embd}, {"block-size", block_size},
          {"position-encoding", position_encoding}, {"tie-weights", tie_weights}, {"arch", arch},
          {"n-kv-head", n_kv_head}, {"ffn-hidden", ffn_hidden}, {"rope-theta", rope_theta},
          {"qkv-bias", qkv_bias}, {"batch-size", batch_size}, {"grad-accum", grad_accum}, {"max-iters", max_iters},
          {"lr", lr}, {"min-lr", min_lr}, {"warmup-iters", warmup_iters}, {"lr-decay-iters", lr_decay_iters},
          {"weight-decay", weight_decay}, {"beta1", beta1}, {"beta2", beta2}, {"grad-clip", grad_clip},
          {"eval-interval", eval_interval}, {"eval-iters", eval_iters},
          {"checkpoint-interval", checkpoint_interval}, {"val-fraction", val_fraction}, {"seed", seed},
          {"threads", threads}, {"zero", zero}, {"init-from", init_from}, {"overlap-comm", overlap_comm}, {"dtype", dtype}, {"dropout", dropout},
          {"lr-schedule", lr_schedule}, {"cooldown-frac", cooldown_frac}, {"time-budget", time_budget},
          {"optimizer", optimizer}, {"muon-lr", muon_lr}, {"muon-momentum", muon_momentum},
          {"muon-weight-decay", muon_weight_decay},
          {"task", task}, {"chat-template", chat_template}, {"packing", packing}, {"lora-rank", lora_rank}, {"lora-alpha", lora_alpha},
          {"lora-dropout", lora_dropout}, {"lora-targets", lora_targets}};
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  TrainOptions o;
  try {
    o.data = j.value("data", o.data);
    o.out = j.value("out", o.out);
    o.tokenizer = j.value("tokenizer", o.tokenizer);
    o.log = j.value("log", o.log);
    o.n_layer = j.value("n-layer", o.n_layer);
    o.n_head = j.value("n-head", o.n_head);
    o.n_embd = j.value("n-embd", o.n_embd);
    o.block_size = j.value("block-size", o.block_size);
    o.position_encoding = j.value("position-encoding", o.position_encoding);
    o.tie_weights = j.value("tie-weights", o.tie_weights);
    o.arch = j.value("arch", o.arch);
    o.n_kv_head = j.value("n-kv-head", o.n_kv_head);
    o.ffn_hidden = j.value("ffn-hidden", o.ffn_hidden);
    o.rope_theta = j.value("rope-theta", o.rope_theta);
    o.qkv_bias = j.value("qkv-bias", o.qkv_bias);
    o.batch_size = j.value("batch-size", o.batch_size);
    o.grad_accum = j.value("grad-accum", o.grad_accum);
    o.max_iters = j.value("max-iters", o.max_iters);
    o.lr = j.value("lr", o.lr);
    o.min_lr = j.value("min-lr", o.min_lr);
    o.warmup_iters = j.value("warmup-iters", o.warmup_iters);
    o.lr_decay_iters = j.value("lr-decay-iters", o.lr_decay_iters);
    o.weight_decay = j.value("weight-decay", o.weight_decay);
    o.beta1 = j.value("beta1", o.beta1);
    o.beta2 = j.value("beta2", o.beta2);
    o.grad_clip = j.value("grad-clip", o.grad_clip);
    o.eval_interval = j.value("eval-interval", o.eval_interval);
    o.eval_iters = j.value("eval-iters", o.eval_iters);
    o.checkpoint_interval = j.value("checkpoint-interval", o.checkpoint_interval);
    o.val_fraction = j.value("val-fraction", o.val_fraction);
    o.seed = j.value("seed", o.seed);
    o.threads = j.value("threads", o.threads);
    o.zero = j.value("zero", o.zero);
    o.init_from = j.value("init-from", o.init_from);
    o.overlap_comm = j.value("overlap-comm", o.overlap_comm);
    o.dtype = j.value("dtype", o.dtype);
    o.dropout = j.value("dropout", o.dropout);
    o.lr_schedule = j.value("lr-schedule", o.lr_schedule);
    o.cooldown_frac = j.value("cooldown-frac", o.cooldown_frac);
    o.time_budget = j.value("time-budget", o.time_budget);
    o.optimizer = j.value("optimizer", o.optimizer);
    o.muon_lr = j.value("muon-lr", o.muon_lr);
    o.muon_momentum = j.value("muon-momentum", o.muon_momentum);
    o.muon_weight_decay = j.value("muon-weight-decay", o.muon_weight_decay);
    o.task = j.value("task", o.task);
    o.chat_template = j.value("chat-template", o.chat_template);
    o.packing = j.value("packing", o.packing);
    o.lora_rank = j.value("lora-rank", o.lora_rank);
    o.lora_alpha = j.value("lora-alpha", o.lora_alpha);
    o.lora_dropout = j.value("lora-dropout", o.lora_dropout);
    o.lora_targets = j.value("lora-targets", o.lora_targets);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("bad training options: ") + e.what());
  }
  return o;
}

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec, const std::string& text) {
  if (spec == "char") return make_char_tokenizer(text);
  if (spec == "byte") return make_byte_tokenizer();
  std::error_code ec;
  GPT_CHECK(fs::exists(spec, ec), "--tokenizer must be char, byte or a tokenizer file; '" + spec + "' does not exist");
  return load_tokenizer(spec);
}

}  // namespace

TrainingData load_training_data(const TrainOptions& opts, std::unique_ptr<Tokenizer> tokenizer, int threads) {
  std::error_code ec;
  GPT_CHECK(fs::exists(opts.data, ec), "file not found: " + opts.data);
  TrainingData d;
  if (is_token_shard(opts.data)) {
    // A token shard (gpt tokenize prepare) is mapped into memory as it is.
    auto shard = std::make_shared<const TokenShard>(opts.data);
    d.fingerprint = mix64(static_cast<uint64_t>(shard->size()) ^ mix64(static_cast<uint64_t>(shard->vocab_size())));
    if (!tokenizer) {
      GPT_CHECK(opts.tokenizer != "char" && opts.tokenizer != "byte",
                "a token shard needs --tokenizer PATH: the tokenizer that prepared it");
      tokenizer = make_tokenizer(opts.tokenizer, "");
    }
    GPT_CHECK(shard->vocab_size() == tokenizer->vocab_size(),
              opts.data + " was prepared with a vocabulary of " + std::to_string(shard->vocab_size()) +
                  " tokens, but the tokenizer has " + std::to_string(tokenizer->vocab_size()));
    d.dataset = std::make_unique<Dataset>(shard, opts.val_fraction, opts.block_size);
  } else {
    const std::string text = read_text_file(opts.data);
    GPT_CHECK(!text.empty(), "the data file is empty: " + opts.data);
    d.fingerprint = fnv1a(text);
    if (!tokenizer) tokenizer = make_tokenizer(opts.tokenizer, text);
    d.dataset = std::make_unique<Dataset>(tokenizer->encode_corpus(text, threads), opts.val_fraction, opts.block_size);
  }
  d.tokenizer = std::move(tokenizer);
  d.dataset->set_whole_validation(opts.eval_iters == 0);
  return d;
}

Trainer::Trainer(const TrainOptions& options, const std::string& resume_dir, Communicator& comm)
    : opts_(options),
      comm_(comm),
      compute_({parse_matmul_precision(options.dtype), std::max(options.threads, 0)}),  // validate() reports < 0
      threads_(options.threads > 0 ? options.threads : omp_get_max_threads()),
      schedule_{} {
  opts_.validate();
  const ComputeScope scope(compute_);
  GPT_CHECK(opts_.batch_size % (comm_.size() * opts_.grad_accum) == 0,
            "--batch-size (" + std::to_string(opts_.batch_size) + ") must be divisible by the number of ranks (" +
                std::to_string(comm_.size()) + ") times --grad-accum (" + std::to_string(opts_.grad_accum) + ")");
  const bool resuming = !resume_dir.empty();
  const bool sft = opts_.task == "sft";
  const bool lora = opts_.lora_rank > 0;
  GPT_CHECK(!sft || !opts_.init_from.empty() || resuming, "fine-tuning needs a model to start from: pass --init-from MODEL");
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> declared_template;
  nlohmann::json resumed_state;
  if (lora) {
    // The adapter's directory must not replace the base model it is trained on.
    check_adapter_out(opts_.out, opts_.init_from);
  }
  if (resuming && !lora) {
    LoadedModel loaded = load_model(resume_dir);
    tokenizer = std::move(loaded.tokenizer);
    model_ = std::move(loaded.model);
    resumed_state = load_trainer_state(resume_dir);
    declared_template = ChatTemplate::of_model(resolve_checkpoint_dir(resume_dir));
  } else if (!opts_.init_from.empty()) {
    // (A LoRA run resumes from its base model, then its saved adapter, below.)
    if (resuming) resumed_state = load_trainer_state(resume_dir);
    // Fine-tuning: shape, weights and tokenizer all come from the imported model.
    OpenedModel imported = open_model(opts_.init_from, {.dequantize = true, .convert_to = std::nullopt, .panels = false, .adapter = {}});
    tokenizer = std::move(imported.tokenizer);
    declared_template = imported.chat_template;
    model_ = imported.fp32;
    const ModelConfig& ic = model_->config();
    opts_.n_layer = ic.n_layer;
    opts_.n_head = ic.n_head;
    opts_.n_embd = ic.n_embd;
    opts_.position_encoding = to_string(ic.position_encoding);
    opts_.tie_weights = ic.tie_word_embeddings;
    opts_.arch = to_string(ic.arch);
    opts_.n_kv_head = ic.llama() ? ic.kv_heads() : 0;
    opts_.ffn_hidden = ic.llama() ? ic.mlp_hidden() : 0;
    opts_.rope_theta = ic.rope_theta;
    opts_.qkv_bias = ic.attention_bias;
    opts_.tokenizer = opts_.init_from;
    if (opts_.block_size == 0) opts_.block_size = ic.block_size;  // fine-tuning's default: the model's context
    GPT_CHECK(opts_.block_size <= ic.block_size, "--block-size " + std::to_string(opts_.block_size) +
                                                     " exceeds the context of " + opts_.init_from + " (" +
                                                     std::to_string(ic.block_size) + ")");
  }
  if (model_ && opts_.block_size == 0) opts_.block_size = model_->config().block_size;
  int new_tokens_begin = -1;
  if (sft) {
    // The template the model declares (an SFT model fine-tuned again), unless one
    // is named; chatml for a model without one.
    // A model's own Jinja template is used as it is.
    if (opts_.chat_template.empty() && declared_template && declared_template->is_jinja()) {
      chat_template_ = *declared_template;
    } else {
      if (opts_.chat_template.empty()) opts_.chat_template = declared_template ? declared_template->name() : "chatml";
      chat_template_ = ChatTemplate::named(opts_.chat_template);
    }
    // The chat template's markers become special tokens with rows of their own.
    base_vocab_ = model_->config().vocab_size;
    new_tokens_begin = add_chat_tokens(model_, tokenizer, *chat_template_);
    std::error_code ec;
    GPT_CHECK(fs::exists(opts_.data, ec), "file not found: " + opts_.data);
    const std::string text = read_text_file(opts_.data);  // read once: parsed, and fingerprinted below
    const std::vector<Conversation> chats = parse_chat_jsonl(text, opts_.data);
    auto chat_data = std::make_unique<ChatDataset>(chats, *chat_template_, *tokenizer, opts_.val_fraction,
                                                   opts_.block_size, opts_.batch_size, opts_.seed);
    chat_stats_ = chat_data->stats();
    data_.fingerprint = fnv1a(text);
    data_.dataset = std::move(chat_data);
    data_.tokenizer = std::move(tokenizer);
  } else {
    data_ = load_training_data(opts_, std::move(tokenizer), threads_);
  }
  other_data_ = resuming && resumed_state.is_object() &&
                resumed_state.value("data_fnv1a", uint64_t(0)) != data_.fingerprint;
  if (!model_) {
    ModelConfig mc;
    mc.vocab_size = data_.tokenizer->vocab_size();
    mc.block_size = opts_.block_size;
    mc.n_layer = opts_.n_layer;
    mc.n_head = opts_.n_head;
    mc.n_embd = opts_.n_embd;
    mc.arch = parse_architecture(opts_.arch);
    mc.position_encoding = mc.llama() ? PositionEncoding::kRotary : parse_position_encoding(opts_.position_encoding);
    mc.tie_word_embeddings = opts_.tie_weights;
    mc.n_kv_head = opts_.n_kv_head;
    mc.ffn_hidden = opts_.ffn_hidden;
    mc.rope_theta = static_cast<float>(opts_.rope_theta);
    mc.attention_bias = opts_.qkv_bias;
    model_ = std::make_unique<GPT>(mc);
    model_->init_weights(opts_.seed);
  }
  GPT_CHECK(model_->config().block_size >= opts_.block_size, "--block-size exceeds the model's context");
  if (lora) {
    const LoraConfig lc = LoraConfig::from_flags(opts_.lora_rank, opts_.lora_alpha, opts_.lora_dropout, opts_.lora_targets, new_tokens_begin);
    auto adapter = LoraAdapters::fresh(*model_, lc, opts_.seed);
    if (resuming) {
      ModelConfig base = model_->config();
      base.vocab_size = base_vocab_;
      const LoadedAdapter saved = load_adapter(resolve_checkpoint_dir(resume_dir), base, model_.get());
      GPT_CHECK(saved.adapter->total() == adapter->total(), "the saved adapter does not match the run's LoRA options");
      adapter->params = saved.adapter->params;
      adapter->apply_token_rows(*model_);
    }
    model_->attach_lora(std::move(adapter));
  } else {
    model_->allocate_gradients();
  }
  model_->set_dropout(static_cast<float>(opts_.dropout));

  // Data parallel: every rank holds the whole model; with ZeRO-1 each rank's
  // AdamW keeps the moments of its slice of the parameter buffer only.
  OptimizerStepOptions so;
  so.adamw = {static_cast<float>(opts_.beta1), static_cast<float>(opts_.beta2), 1e-8f,
              static_cast<float>(opts_.weight_decay)};
  so.grad_clip = static_cast<float>(opts_.grad_clip);
  so.zero = opts_.zero == 1;
  so.overlap = opts_.overlap_comm;
  if (opts_.optimizer == "muon") {
    so.muon = MuonConfig{static_cast<float>(opts_.muon_lr), static_cast<float>(opts_.muon_momentum), true, 5,
                         static_cast<float>(opts_.muon_weight_decay)};
    so.peak_lr = static_cast<float>(opts_.lr);
  }
  optimizer_ = std::make_unique<OptimizerStep>(*model_, comm_, so);
  if (resuming) {
    const OptimizerState saved =
        lora ? load_optimizer_state(resume_dir, model_->lora()->tensors(), model_->lora()->total())
             : load_optimizer_state(resume_dir, model_->layout());
    optimizer_->adamw().load(saved.m.data(), saved.v.data(), saved.steps);
    start_step_ = resumed_state["step"].get<int64_t>();
    tokens_run_ = resumed_state.value("tokens_seen", start_step_ * opts_.batch_size * opts_.block_size);
  }
  step_ = start_step_;
  // The schedule ends at --lr-decay-iters, else --max-iters. A time budget ends it by
  // the clock instead: a step count meant for a step-based run (nanoGPT's config sets
  // 5,000) would end the cooldown, and leave the rest of the budget at min_lr, early.
  const bool decay_by_steps = opts_.lr_decay_iters > 0 && opts_.time_budget == 0;
  schedule_ = LrSchedule{static_cast<float>(opts_.lr), static_cast<float>(opts_.min_lr), opts_.warmup_iters,
                         decay_by_steps ? opts_.lr_decay_iters : opts_.max_iters};
  end_step_ = opts_.max_iters;
  if (opts_.lr_schedule == "wsd") {
    schedule_.wsd = true;
    const int64_t after_warmup = std::max<int64_t>(schedule_.decay_iters - opts_.warmup_iters, 0);
    schedule_.cooldown_start =
        schedule_.decay_iters - std::llround(opts_.cooldown_frac * static_cast<double>(after_warmup));
  }
  if (resuming && resumed_state.is_object()) {
    elapsed_before_ = resumed_state.value("elapsed_seconds", 0.0);
    // A time budget's cooldown already fixed goes on as it was planned.
    if (resumed_state.contains("cooldown_start")) {
      schedule_.cooldown_start = resumed_state["cooldown_start"].get<int64_t>();
      end_step_ = resumed_state["end_step"].get<int64_t>();
      schedule_.decay_iters = resumed_state.value("decay_iters", end_step_);
    }
  }

  // Rank 0 writes the log and the checkpoints.
  if (comm_.is_root()) {
    std::error_code ec;
    fs::create_directories(opts_.out, ec);
    GPT_CHECK(fs::is_directory(opts_.out, ec), "cannot create output directory " + opts_.out);
    const fs::path log_path = opts_.log.empty() ? fs::path(opts_.out) / "train_log.jsonl" : fs::path(opts_.log);
    log_ = std::make_unique<TrainingLog>(log_path, resuming ? std::optional<int64_t>(start_step_) : std::nullopt);
  }
  // Each rank takes rows [rank * B/N, (rank+1) * B/N) of every step's global batch,
  // in micro-batches of B / (N * grad_accum).
  B_rank_ = opts_.batch_size / comm_.size();
  B_ = B_rank_ / opts_.grad_accum;
  T_ = opts_.block_size;
  // Fine-tuning keeps every micro-batch of a step (their reply tokens are counted first).
  const int64_t kept = opts_.task == "sft" ? opts_.grad_accum : 1;
  x_.resize(static_cast<size_t>(kept * B_ * T_));
  y_.resize(static_cast<size_t>(kept * B_ * T_));
  if (opts_.task == "sft" && opts_.packing) {
    positions_.resize(x_.size());
    examples_.resize(x_.size());
  }
}

LogEntry Trainer::step() {
  const ComputeScope scope(compute_);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t it = step_;
  const float lr = schedule_.at(it);
  GPT& model = *model_;
  model.zero_grad();
  float loss = 0.0f;
  int64_t tokens = 0;
  // Fine-tuning's batches first: its loss is the mean over every reply token of
  // the step, on every rank (the count all-reduced), so micro-batches and ranks
  // weigh by their tokens, and N ranks give what one rank with the whole batch gives.
  const bool by_tokens = opts_.task == "sft";
  const bool packing = by_tokens && opts_.packing;
  // Each micro-batch's shape: B_ rows of T_ (pretraining), B_ rows padded to the
  // longest chat, or fewer rows with the chats packed.
  // The packed layout is the model's until this step ends, however it ends.
  struct PackingScope {
    GPT& model;
    bool on;
    ~PackingScope() {
      if (on) model.set_packing({}, {});
    }
  } packing_scope{model, packing};
  std::vector<BatchSource::PackedShape> shapes(static_cast<size_t>(opts_.grad_accum), {B_, T_});
  double step_targets = 0;
  if (by_tokens) {
    for (int64_t micro = 0; micro < opts_.grad_accum; ++micro) {
      const size_t off = static_cast<size_t>(micro * B_ * T_);
      const int64_t first_row = comm_.rank() * B_rank_ + micro * B_;
      BatchSource::PackedShape& shape = shapes[static_cast<size_t>(micro)];
      if (packing) {
        shape = data_.dataset->train_batch_packed(opts_.seed, it, 0, B_, T_, x_.data() + off, y_.data() + off,
                                                  positions_.data() + off, examples_.data() + off, first_row);
      } else {
        shape.T = data_.dataset->train_batch(opts_.seed, it, 0, B_, T_, x_.data() + off, y_.data() + off, first_row);
      }
      for (int64_t i = 0; i < shape.rows * shape.T; ++i) step_targets += y_[off + static_cast<size_t>(i)] != kIgnoreTarget;
    }
    comm_.allreduce_sum(&step_targets, 1);
  }
  const float scale = 1.0f / static_cast<float>(opts_.grad_accum);
  for (int64_t micro = 0; micro < opts_.grad_accum; ++micro) {
    const int64_t first_row = comm_.rank() * B_rank_ + micro * B_;
    int32_t* x = x_.data();
    int32_t* y = y_.data();
    const BatchSource::PackedShape shape = shapes[static_cast<size_t>(micro)];
    float micro_scale = scale;
    if (by_tokens) {
      const size_t off = static_cast<size_t>(micro * B_ * T_);
      x += off;
      y += off;
      double targets = 0;
      for (int64_t i = 0; i < shape.rows * shape.T; ++i) targets += y[i] != kIgnoreTarget;
      // forward_backward takes the mean over this micro-batch's targets; this weighs it by
      // its share of the step's (times the ranks, which the gradient average divides out).
      micro_scale = static_cast<float>(targets * comm_.size() / step_targets);
      const auto n = static_cast<size_t>(shape.rows * shape.T);
      if (packing) {
        model.set_packing({positions_.data() + off, n}, {examples_.data() + off, n});
      }
    } else {
      data_.dataset->train_batch(opts_.seed, it, 0, B_, T_, x, y, first_row);
    }
    tokens += shape.rows * shape.T;
    // LoRA dropout's mask: a function of the step and each row's place in the step's batch, as the batch is.
    model.set_dropout_seed(mix64(opts_.seed ^ mix64(static_cast<uint64_t>(it) + 0x6a09e667f3bcc908ull)), first_row);
    // On the last micro-batch each block's gradients are final as soon as its
    // backward is done: with overlap their all-reduce starts then.
    const GPT::GradientsReady ready =
        micro + 1 == opts_.grad_accum ? optimizer_->gradients_ready(model) : GPT::GradientsReady();
    loss += micro_scale * model.forward_backward(x, y, shape.rows, shape.T, micro_scale, ready);
  }
  const auto t_comm = std::chrono::steady_clock::now();
  if (comm_.distributed()) {
    double loss_sum = loss;
    comm_.allreduce_sum(&loss_sum, 1);
    loss = static_cast<float>(loss_sum / comm_.size());
  }
  GPT_CHECK(std::isfinite(loss), "training diverged: loss is " + std::to_string(loss) + " at step " +
                                     std::to_string(it + 1) + " (try a lower --lr)");
  LogEntry entry;
  entry.step = it + 1;
  entry.loss = loss;
  entry.lr = lr;
  entry.grad_norm = optimizer_->apply(model, lr, it + 1);
  const auto t_end = std::chrono::steady_clock::now();
  if (comm_.distributed()) {  // time outside forward/backward: the collectives and the optimizer step
    compute_seconds_ += std::chrono::duration<double>(t_comm - t0).count();
    comm_seconds_ += std::chrono::duration<double>(t_end - t_comm).count();
  }
  const double dt = std::chrono::duration<double>(t_end - t0).count();
  entry.tokens_per_sec = static_cast<double>(tokens * comm_.size()) / dt;
  if (by_tokens) {
    // Fine-tuning: the positions computed include padding, so tokens/s alone
    // cannot compare packed and padded rows; the step's time can.
    entry.extra["step_seconds"] = std::round(dt * 1e4) / 1e4;
  }
  tokens_run_ += tokens * comm_.size();
  step_ = it + 1;
  return entry;
}

float Trainer::evaluate() {
  const ComputeScope scope(compute_);
  // Ranks split the validation batches and add up their losses. Batches of the
  // single-process micro-batch size, so the measure does not depend on the number of ranks.
  const int64_t B = opts_.batch_size / opts_.grad_accum;
  // Fine-tuning's held-out chats are evaluated whole, once each.
  const int64_t whole = data_.dataset->val_batches(B);
  const int64_t iters = whole > 0 ? whole : opts_.eval_iters;
  const LossSum sum = total_loss_on_batches(*model_, *data_.dataset, opts_.seed, iters, B, T_, comm_.rank(), comm_.size());
  double both[2] = {sum.nats, sum.targets};
  comm_.allreduce_sum(both, 2);
  return static_cast<float>(both[0] / std::max(both[1], 1.0));
}

void Trainer::save_checkpoint() {
  const OptimizerStep::Moments moments = optimizer_->full_moments();
  if (comm_.is_root()) {
    nlohmann::json state = {{"step", step_}, {"options", opts_.to_json()}, {"data_fnv1a", data_.fingerprint},
                            {"tokens_seen", tokens_run_}, {"ranks", comm_.size()},
                            {"elapsed_seconds", elapsed_before_ + elapsed_this_run_}};
    if (opts_.time_budget > 0 && step_ >= schedule_.cooldown_start) {  // the cooldown as it was fixed
      state["cooldown_start"] = schedule_.cooldown_start;
      state["decay_iters"] = schedule_.decay_iters;
      state["end_step"] = end_step_;
    }
    if (opts_.task == "sft") state["base_vocab_size"] = base_vocab_;
    CheckpointContents c;
    c.model = model_.get();
    c.tokenizer = data_.tokenizer.get();
    c.adam_m = moments.m;
    c.adam_v = moments.v;
    c.adam_steps = optimizer_->adamw().steps_taken();
    c.trainer_state = &state;
    if (chat_template_) c.chat_template = &*chat_template_;
    if (model_->lora() != nullptr) {
      c.adapter = model_->lora();
      c.adapter_base = opts_.init_from;
      c.adapter_base_vocab = base_vocab_;
      c.adapter_base_model = model_.get();
    }
    gpt::save_checkpoint(opts_.out, c);
  }
  comm_.barrier();
}

TrainResult Trainer::run(TrainingObserver* observer) {
  TrainingObserver none;
  TrainingObserver& obs = observer != nullptr ? *observer : none;
  TrainResult result;
  result.steps = step_;
  obs.on_start(*this);
  const auto t_start = std::chrono::steady_clock::now();
  if (!clock_) {
    clock_ = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
  }
  const double clock0 = clock_();
  const double compute0 = compute_seconds_, comm0 = comm_seconds_;
  const int64_t tokens0 = tokens_run_;
  const int64_t first = step_;
  while (step_ < end_step_) {
    LogEntry entry = step();
    elapsed_this_run_ = clock_() - clock0;
    if (opts_.time_budget > 0) follow_time_budget(elapsed_before_ + elapsed_this_run_, step_ - first);
    if (step_ % opts_.eval_interval == 0 || step_ == end_step_) {
      const double e0 = clock_();
      entry.val_loss = evaluate();
      eval_seconds_ = clock_() - e0;
      result.final_val_loss = entry.val_loss;
    }
    // Wall-clock since the run began (earlier segments of a resumed run included),
    // evaluations counted: what time-to-quality is measured in.
    elapsed_this_run_ = clock_() - clock0;
    entry.extra["elapsed"] = std::round((elapsed_before_ + elapsed_this_run_) * 100) / 100;
    if (log_) log_->append(entry);
    result.history.push_back(entry);
    result.final_loss = entry.loss;
    result.steps = step_;
    obs.on_step(*this, entry);
    if ((opts_.checkpoint_interval > 0 && step_ % opts_.checkpoint_interval == 0) || step_ == end_step_) {
      save_checkpoint();
      obs.on_checkpoint(*this, step_);
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  result.compute_seconds = compute_seconds_ - compute0;
  result.comm_seconds = comm_seconds_ - comm0;
  result.tokens_per_sec = result.seconds > 0 ? static_cast<double>(tokens_run_ - tokens0) / result.seconds : 0;
  obs.on_finish(*this, result);
  return result;
}

void Trainer::follow_time_budget(double elapsed_total, int64_t steps_this_run) {
  if (steps_this_run <= 0) return;
  // Every rank decides from the same numbers: the ranks' mean clock.
  double t[3] = {elapsed_total, elapsed_this_run_, eval_seconds_};
  comm_.allreduce_sum(t, 3);
  const double total = t[0] / comm_.size(), per_step = t[1] / comm_.size() / static_cast<double>(steps_this_run);
  const double eval = t[2] / comm_.size();
  // The rest of the budget, less one evaluation for the one at the end.
  const double left = opts_.time_budget * 60.0 - total - eval;
  if (step_ >= schedule_.cooldown_start) {
    // Cooling down, the end fixed: if the steps have slowed since (a busy machine),
    // the run still stops on time, a little above min_lr.
    projected_end_ = 0;
    if (left <= 0 && step_ < end_step_) end_step_ = step_;
    return;
  }
  // At this run's pace (evaluations included), the steps that fit in what is left:
  // once the stable phase is over, the cooldown.
  const auto remaining = static_cast<int64_t>(std::floor(std::max(left, 0.0) / per_step));
  const int64_t end = std::min(opts_.max_iters, step_ + std::max<int64_t>(remaining, 1));
  if (total < (1.0 - opts_.cooldown_frac) * opts_.time_budget * 60.0) {
    projected_end_ = end;
    return;
  }
  projected_end_ = 0;
  schedule_.cooldown_start = step_;
  schedule_.decay_iters = end_step_ = end;
}

TrainResult train(const TrainOptions& opts, const std::string& resume_dir, TrainingObserver* observer) {
  Trainer trainer(opts, resume_dir);
  return trainer.run(observer);
}

}  // namespace gpt
