#include "gpt/training/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "gpt/distributed/communicator.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/model_loader.h"
#include "gpt/kernels/matmul.h"
#include "gpt/io/token_shard.h"
#include "gpt/tokenizer/bpe.h"
#include "gpt/util/rng.h"
#include "gpt/model/gpt.h"
#include "gpt/tokenizer/tokenizer.h"
#include "gpt/training/adamw.h"
#include "gpt/training/dataset.h"
#include "gpt/training/evaluate.h"
#include "gpt/training/lr_schedule.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/progress.h"
#include "gpt/viz/svg.h"

namespace gpt {
namespace fs = std::filesystem;

void TrainOptions::validate() const {
  check(!data.empty(), "no training data: pass --data FILE");
  check(!out.empty(), "no output directory: pass --out DIR");
  auto positive = [](int64_t v, const std::string& flag) {
    check(v > 0, "--" + flag + " must be positive, got " + std::to_string(v));
  };
  positive(n_layer, "n-layer");
  positive(n_head, "n-head");
  positive(n_embd, "n-embd");
  positive(block_size, "block-size");
  positive(batch_size, "batch-size");
  positive(grad_accum, "grad-accum");
  positive(max_iters, "max-iters");
  positive(eval_interval, "eval-interval");
  positive(eval_iters, "eval-iters");
  check(n_embd % n_head == 0, "--n-head (" + std::to_string(n_head) + ") must divide --n-embd (" +
                                  std::to_string(n_embd) + ")");
  check(batch_size % grad_accum == 0, "--grad-accum (" + std::to_string(grad_accum) +
                                          ") must divide --batch-size (" + std::to_string(batch_size) + ")");
  check(lr > 0 && std::isfinite(lr), "--lr must be positive");
  check(min_lr >= 0 && min_lr <= lr, "--min-lr must be in [0, lr]");
  check(warmup_iters >= 0, "--warmup-iters must not be negative");
  check(lr_decay_iters >= 0, "--lr-decay-iters must not be negative");
  check(weight_decay >= 0, "--weight-decay must not be negative");
  check(beta1 >= 0 && beta1 < 1, "--beta1 must be in [0, 1)");
  check(beta2 >= 0 && beta2 < 1, "--beta2 must be in [0, 1)");
  check(grad_clip >= 0, "--grad-clip must not be negative (0 disables clipping)");
  check(checkpoint_interval >= 0, "--checkpoint-interval must not be negative");
  check(val_fraction > 0 && val_fraction < 1, "--val-fraction must be in (0, 1)");
  check(threads >= 0, "--threads must not be negative");
  check(zero == 0 || zero == 1, "--zero must be 0 or 1");
  parse_position_encoding(position_encoding);
}

nlohmann::json TrainOptions::to_json() const {
  return {{"data", data}, {"out", out}, {"tokenizer", tokenizer}, {"log", log},
          {"n-layer", n_layer}, {"n-head", n_head}, {"n-embd", n_embd}, {"block-size", block_size},
          {"position-encoding", position_encoding}, {"tie-weights", tie_weights},
          {"batch-size", batch_size}, {"grad-accum", grad_accum}, {"max-iters", max_iters},
          {"lr", lr}, {"min-lr", min_lr}, {"warmup-iters", warmup_iters}, {"lr-decay-iters", lr_decay_iters},
          {"weight-decay", weight_decay}, {"beta1", beta1}, {"beta2", beta2}, {"grad-clip", grad_clip},
          {"eval-interval", eval_interval}, {"eval-iters", eval_iters},
          {"checkpoint-interval", checkpoint_interval}, {"val-fraction", val_fraction}, {"seed", seed},
          {"threads", threads}, {"zero", zero}, {"init-from", init_from}, {"overlap-comm", overlap_comm}, {"dtype", dtype}};
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
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("bad training options: ") + e.what());
  }
  return o;
}

nlohmann::json LogEntry::to_json() const {
  nlohmann::json j = {{"step", step}, {"loss", loss}};
  if (val_loss) j["val_loss"] = *val_loss;
  j["lr"] = lr;
  j["grad_norm"] = grad_norm;
  j["tokens_per_sec"] = std::round(tokens_per_sec * 10) / 10;
  return j;
}

std::vector<LogEntry> read_training_log(const std::string& path) {
  std::error_code ec;
  check(fs::exists(path, ec), "file not found: " + path);
  std::ifstream in(path);
  std::vector<LogEntry> log;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      if (in.peek() == EOF) break;  // a line torn by a killed run
      throw Error(path + ":" + std::to_string(line_no) + ": not a JSON object");
    }
    check(j.is_object() && j.contains("step") && j["step"].is_number(),
          path + ":" + std::to_string(line_no) + ": not a training log entry (no \"step\")");
    LogEntry e;
    e.step = j["step"].get<int64_t>();
    if (j.contains("loss") && j["loss"].is_number()) e.loss = j["loss"].get<float>();
    if (j.contains("val_loss") && j["val_loss"].is_number()) e.val_loss = j["val_loss"].get<float>();
    e.lr = j.value("lr", 0.0f);
    e.grad_norm = j.value("grad_norm", 0.0f);
    e.tokens_per_sec = j.value("tokens_per_sec", 0.0);
    log.push_back(e);
  }
  return log;
}

std::string training_log_svg(const std::vector<LogEntry>& log, const std::string& title) {
  std::vector<LossPoint> points;
  points.reserve(log.size());
  for (const auto& e : log) points.push_back({e.step, static_cast<double>(e.loss),
                                              e.val_loss ? std::optional<double>(*e.val_loss) : std::nullopt});
  return loss_curve_svg(points, title);
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
  check(fs::exists(spec, ec), "--tokenizer must be char, byte or a tokenizer file; '" + spec + "' does not exist");
  return load_tokenizer(spec);
}

// Keeps the log lines of steps <= last_step (a resumed run rewrites what follows).
void truncate_log(const fs::path& log, int64_t last_step) {
  std::error_code ec;
  if (!fs::exists(log, ec)) return;
  std::ifstream in(log);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= last_step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a torn last line from a killed run: drop it
    }
  }
  write_file_atomic(log, kept);
}

}  // namespace

TrainResult train(const TrainOptions& options, const std::string& resume_dir) {
  TrainOptions opts = options;
  opts.validate();
  Communicator& comm = Communicator::world();
  check(opts.batch_size % (comm.size() * opts.grad_accum) == 0,
        "--batch-size (" + std::to_string(opts.batch_size) + ") must be divisible by the number of ranks (" +
            std::to_string(comm.size()) + ") times --grad-accum (" + std::to_string(opts.grad_accum) + ")");
  if (opts.threads > 0) omp_set_num_threads(opts.threads);
  set_matmul_precision(parse_matmul_precision(opts.dtype));
  const bool resuming = !resume_dir.empty();

  // Data and tokenizer: a text file is tokenized here; a token shard (gpt tokenize
  // prepare) is mapped into memory as it is.
  std::error_code fs_ec;
  check(fs::exists(opts.data, fs_ec), "file not found: " + opts.data);
  const bool from_shard = is_token_shard(opts.data);
  std::shared_ptr<const TokenShard> shard;
  std::string text;
  uint64_t data_hash = 0;
  if (from_shard) {
    shard = std::make_shared<const TokenShard>(opts.data);
    data_hash = mix64(static_cast<uint64_t>(shard->size()) ^ mix64(static_cast<uint64_t>(shard->vocab_size())));
  } else {
    text = read_text_file(opts.data);
    check(!text.empty(), "the data file is empty: " + opts.data);
    data_hash = fnv1a(text);
  }
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<GPT> model;
  nlohmann::json resumed_state;
  if (resuming) {
    LoadedModel loaded = load_model(resume_dir);
    tokenizer = std::move(loaded.tokenizer);
    model = std::move(loaded.model);
    resumed_state = load_trainer_state(resume_dir);
    if (resumed_state.value("data_fnv1a", uint64_t(0)) != data_hash) {
      std::fprintf(stderr, "gpt: warning: %s differs from the data the checkpoint was trained on\n",
                   opts.data.c_str());
    }
  } else if (!opts.init_from.empty()) {
    // Fine-tuning: shape, weights and tokenizer all come from the imported model.
    OpenedModel imported = open_model(opts.init_from, {.dequantize = true, .convert_to = std::nullopt});
    tokenizer = std::move(imported.tokenizer);
    model = std::move(imported.fp32);
    const ModelConfig& ic = model->config();
    opts.n_layer = ic.n_layer;
    opts.n_head = ic.n_head;
    opts.n_embd = ic.n_embd;
    opts.position_encoding = to_string(ic.position_encoding);
    opts.tie_weights = ic.tie_word_embeddings;
    opts.tokenizer = opts.init_from;
    check(opts.block_size <= ic.block_size, "--block-size " + std::to_string(opts.block_size) +
                                                " exceeds the context of " + opts.init_from + " (" +
                                                std::to_string(ic.block_size) + ")");
  } else {
    check(!from_shard || (opts.tokenizer != "char" && opts.tokenizer != "byte"),
          "a token shard needs --tokenizer PATH: the tokenizer that prepared it");
    tokenizer = make_tokenizer(opts.tokenizer, text);
  }
  std::unique_ptr<Dataset> dataset_ptr;
  if (from_shard) {
    check(shard->vocab_size() == tokenizer->vocab_size(),
          opts.data + " was prepared with a vocabulary of " + std::to_string(shard->vocab_size()) +
              " tokens, but the tokenizer has " + std::to_string(tokenizer->vocab_size()));
    dataset_ptr = std::make_unique<Dataset>(shard, opts.val_fraction, opts.block_size);
  } else {
    const int threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
    const auto* bpe = dynamic_cast<const BpeTokenizer*>(tokenizer.get());
    dataset_ptr = std::make_unique<Dataset>(bpe ? bpe->encode(text, false, threads) : tokenizer->encode(text),
                                            opts.val_fraction, opts.block_size);
  }
  const Dataset& dataset = *dataset_ptr;

  // Model and optimizer.
  if (!model) {
    ModelConfig mc;
    mc.vocab_size = tokenizer->vocab_size();
    mc.block_size = opts.block_size;
    mc.n_layer = opts.n_layer;
    mc.n_head = opts.n_head;
    mc.n_embd = opts.n_embd;
    mc.position_encoding = parse_position_encoding(opts.position_encoding);
    mc.tie_word_embeddings = opts.tie_weights;
    model = std::make_unique<GPT>(mc);
    model->init_weights(opts.seed);
  }
  const ModelConfig& mc = model->config();
  check(mc.block_size >= opts.block_size, "--block-size exceeds the model's context");
  // Data parallel: every rank holds the whole model; with ZeRO-1 each rank's
  // AdamW keeps the moments of its slice of the parameter buffer only.
  const size_t n_params = model->num_parameters();
  const bool zero = opts.zero == 1 && comm.distributed();
  const bool overlap = comm.distributed() && !zero && opts.overlap_comm;
  AdamW optimizer(model->layout(),
                  {static_cast<float>(opts.beta1), static_cast<float>(opts.beta2), 1e-8f, static_cast<float>(opts.weight_decay)},
                  zero ? comm.slice_begin(n_params, comm.rank()) : 0, zero ? comm.slice_end(n_params, comm.rank()) : n_params);
  int64_t start_step = 0;
  if (resuming) {
    const OptimizerState saved = load_optimizer_state(resume_dir, model->layout());
    optimizer.load(saved.m.data(), saved.v.data(), saved.steps);
    start_step = resumed_state["step"].get<int64_t>();
  }
  const LrSchedule schedule{static_cast<float>(opts.lr), static_cast<float>(opts.min_lr), opts.warmup_iters,
                            opts.lr_decay_iters > 0 ? opts.lr_decay_iters : opts.max_iters};

  // Rank 0 logs, draws and writes checkpoints.
  const bool root = comm.is_root();
  const bool quiet = opts.quiet || !root;
  const fs::path out_dir = opts.out;
  const fs::path log_path = opts.log.empty() ? out_dir / "train_log.jsonl" : fs::path(opts.log);
  std::error_code ec;
  if (root) {
    fs::create_directories(out_dir, ec);
    check(fs::is_directory(out_dir, ec), "cannot create output directory " + out_dir.string());
    if (log_path.has_parent_path()) fs::create_directories(log_path.parent_path(), ec);
    if (resuming) truncate_log(log_path, start_step);
    else fs::remove(log_path, ec);
  }

  // Each rank takes rows [rank * B/N, (rank+1) * B/N) of every step's global batch,
  // in micro-batches of B / (N * grad_accum).
  const int64_t B_rank = opts.batch_size / comm.size(), B = B_rank / opts.grad_accum, T = opts.block_size;
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  std::vector<float> full_m, full_v;  // ZeRO-1: moments gathered on rank 0 for a checkpoint

  auto save = [&](int64_t step) {
    const float* m = optimizer.m().data();
    const float* v = optimizer.v().data();
    if (zero) {  // every rank sends its slice of the moments; rank 0 assembles and writes
      if (root) {
        full_m.resize(n_params);
        full_v.resize(n_params);
      }
      comm.gather_slices_to_root(optimizer.m().data(), full_m.data(), n_params);
      comm.gather_slices_to_root(optimizer.v().data(), full_v.data(), n_params);
      m = full_m.data();
      v = full_v.data();
    }
    if (root) {
      nlohmann::json state = {{"step", step}, {"options", opts.to_json()}, {"data_fnv1a", data_hash},
                              {"tokens_seen", step * opts.batch_size * T}, {"ranks", comm.size()}};
      save_checkpoint(out_dir, {model.get(), tokenizer.get(), m, v, optimizer.steps_taken(), &state});
    }
    comm.barrier();
  };

  if (!quiet) {
    std::fprintf(stderr, "gpt: %s tokens (%zu train, %zu val), vocab %d, %.2fM parameters, %d threads\n",
                 std::to_string(dataset.train_size() + dataset.val_size()).c_str(),
                 static_cast<size_t>(dataset.train_size()), static_cast<size_t>(dataset.val_size()), mc.vocab_size, static_cast<double>(model->num_parameters()) / 1e6,
                 omp_get_max_threads());
    if (comm.distributed()) {
      std::fprintf(stderr, "gpt: %d ranks, %lld sequences per rank per step%s\n", comm.size(),
                   static_cast<long long>(B_rank), zero ? ", ZeRO-1 (optimizer state sharded)" : "");
    }
  }

  TrainResult result;
  result.steps = start_step;
  ProgressLine progress(opts.max_iters, start_step, opts.eval_interval);
  const auto t_start = std::chrono::steady_clock::now();
  double rate_ema = 0;
  std::optional<float> last_val;
  for (int64_t it = start_step; it < opts.max_iters; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    const float lr = schedule.at(it);
    model->zero_grad();
    float loss = 0.0f;
    for (int64_t micro = 0; micro < opts.grad_accum; ++micro) {
      dataset.train_batch(opts.seed, it, 0, B, T, x.data(), y.data(), comm.rank() * B_rank + micro * B);
      const float scale = 1.0f / static_cast<float>(opts.grad_accum);
      // On the last micro-batch each block's gradients are final as soon as its
      // backward is done: their all-reduce starts then, overlapping the rest.
      if (overlap && micro + 1 == opts.grad_accum) {
        loss += scale * model->forward_backward(x.data(), y.data(), B, T, scale, [&](size_t begin, size_t end) {
          comm.bucket_allreduce_start(model->grads.data() + begin, end - begin);
          comm.bucket_progress();
        });
      } else {
        loss += scale * model->forward_backward(x.data(), y.data(), B, T, scale);
      }
    }
    float norm = 0.0f;
    const auto t_comm = std::chrono::steady_clock::now();
    double compute_seconds = std::chrono::duration<double>(t_comm - t0).count();
    if (comm.distributed()) {
      double loss_sum = loss;
      comm.allreduce_sum(&loss_sum, 1);
      loss = static_cast<float>(loss_sum / comm.size());
    }
    check(std::isfinite(loss), "training diverged: loss is " + std::to_string(loss) + " at step " +
                                   std::to_string(it + 1) + " (try a lower --lr)");
    if (!zero) {
      if (overlap) {
        comm.bucket_allreduce_finish_mean();
      } else {
        comm.allreduce_mean(model->grads.data(), n_params);  // no-op on one rank
      }
      norm = clip_grad_norm(model->grads.data(), n_params, static_cast<float>(opts.grad_clip));
      optimizer.step(model->params.data(), model->grads.data(), lr);
    } else {
      // ZeRO-1: reduce-scatter the gradients, clip by the global norm, update my
      // slice, all-gather the parameters.
      comm.reduce_scatter_mean(model->grads.data(), n_params);
      float* slice = model->grads.data() + optimizer.begin();
      const size_t slice_n = optimizer.end() - optimizer.begin();
      double sumsq = global_norm(slice, slice_n);
      sumsq *= sumsq;
      comm.allreduce_sum(&sumsq, 1);
      norm = static_cast<float>(std::sqrt(sumsq));
      const float coef = static_cast<float>(opts.grad_clip) / (norm + 1e-6f);
      if (opts.grad_clip > 0 && coef < 1.0f)
        for (size_t i = 0; i < slice_n; ++i) slice[i] *= coef;
      optimizer.step(model->params.data(), model->grads.data(), lr);
      comm.allgather(model->params.data(), n_params);
    }
    if (comm.distributed()) {
      // Time outside forward/backward: the collectives (and the optimizer step).
      result.comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_comm).count();
      result.compute_seconds += compute_seconds;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    const int64_t step = it + 1;
    LogEntry entry;
    entry.step = step;
    entry.loss = loss;
    entry.lr = lr;
    entry.grad_norm = norm;
    entry.tokens_per_sec = static_cast<double>(opts.batch_size * T) / dt;
    rate_ema = rate_ema == 0 ? entry.tokens_per_sec : 0.9 * rate_ema + 0.1 * entry.tokens_per_sec;
    const bool eval_now = step % opts.eval_interval == 0 || step == opts.max_iters;
    if (eval_now) {
      // Ranks split the validation batches and add up their losses.
      // Batches of the single-process micro-batch size, so the measure does not
      // depend on the number of ranks.
      double val_sum = total_loss_on_batches(*model, dataset, opts.seed, opts.eval_iters,
                                             opts.batch_size / opts.grad_accum, T, comm.rank(), comm.size());
      comm.allreduce_sum(&val_sum, 1);
      entry.val_loss = static_cast<float>(val_sum / static_cast<double>(opts.eval_iters));
      last_val = entry.val_loss;
    }
    if (root) append_line(log_path, entry.to_json().dump());
    result.history.push_back(entry);
    result.final_loss = loss;
    result.steps = step;
    if (!quiet) {
      char fields[160];
      std::snprintf(fields, sizeof fields, "loss %.4f | val %s | lr %.2e | %.0f tok/s", loss,
                    last_val ? std::to_string(*last_val).substr(0, 6).c_str() : "-", lr, rate_ema);
      progress.update(step, fields, eval_now);
    }
    if ((opts.checkpoint_interval > 0 && step % opts.checkpoint_interval == 0) || step == opts.max_iters) save(step);
  }
  if (!quiet) progress.finish();
  // Draw the whole run (earlier steps of a resumed run included) next to the checkpoint.
  if (root && result.steps > start_step) {
    const fs::path plot = out_dir / "loss.svg";
    write_file_atomic(plot, training_log_svg(read_training_log(log_path.string()), "Training loss: " + opts.data));
    if (!quiet) std::fprintf(stderr, "gpt: loss curve drawn in %s\n", plot.c_str());
  }
  if (result.steps == start_step && start_step > 0 && !quiet) {
    std::fprintf(stderr, "gpt: checkpoint is already at step %lld of --max-iters %lld; nothing to do\n",
                 static_cast<long long>(start_step), static_cast<long long>(opts.max_iters));
  }
  result.final_val_loss = last_val;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const int64_t steps_run = result.steps - start_step;
  result.tokens_per_sec = result.seconds > 0 ? static_cast<double>(steps_run * opts.batch_size * T) / result.seconds : 0;
  return result;
}

}  // namespace gpt
