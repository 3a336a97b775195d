#include "gpt/finetune/preference_trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "gpt/finetune/chat_data.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/model_loader.h"
#include "gpt/io/peft_adapter.h"
#include "gpt/io/safetensors.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"

namespace gpt {
namespace fs = std::filesystem;

void PreferenceOptions::validate() const {
  GPT_CHECK(mode == "dpo" || mode == "reward", "unknown preference mode '" + mode + "'");
  GPT_CHECK(!data.empty(), "no preference data: pass --data FILE");
  GPT_CHECK(!init_from.empty(), mode == "dpo" ? "no policy: pass --policy MODEL" : "no model: pass --init-from MODEL");
  GPT_CHECK(!out.empty(), "no output directory: pass --out DIR");
  GPT_CHECK(block_size >= 0, "--block-size must not be negative (0: the model's context)");
  GPT_CHECK(batch_size > 0, "--batch-size must be positive");
  GPT_CHECK(max_iters > 0, "--max-iters must be positive");
  GPT_CHECK(eval_interval > 0, "--eval-interval must be positive");
  GPT_CHECK(warmup_iters >= 0, "--warmup-iters must not be negative");
  GPT_CHECK(lr > 0 && std::isfinite(lr), "--lr must be positive");
  GPT_CHECK(min_lr >= 0 && min_lr <= lr, "--min-lr must be in [0, lr]");
  GPT_CHECK(weight_decay >= 0, "--weight-decay must not be negative");
  GPT_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "--beta1 and --beta2 must be in [0, 1)");
  GPT_CHECK(grad_clip >= 0, "--grad-clip must not be negative");
  GPT_CHECK(val_fraction > 0 && val_fraction < 1, "--val-fraction must be in (0, 1)");
  GPT_CHECK(beta > 0 && std::isfinite(beta), "--beta must be positive");
  GPT_CHECK(threads >= 0, "--threads must not be negative");
  if (!chat_template.empty()) ChatTemplate::named(chat_template);
  GPT_CHECK(lora_rank >= 0, "--lora-rank must not be negative");
  GPT_CHECK(lora_rank == 0 || mode == "dpo", "LoRA is for the policy (gpt dpo); a reward model trains whole");
  if (lora_rank > 0) {
    LoraConfig::from_flags(lora_rank, lora_alpha, lora_dropout, lora_targets);
  }
}

nlohmann::json PreferenceOptions::to_json() const {
  return {{"mode", mode}, {"data", data}, {"init-from", init_from}, {"out", out}, {"chat-template", chat_template},
          {"block-size", block_size}, {"batch-size", batch_size}, {"max-iters", max_iters},
          {"warmup-iters", warmup_iters}, {"eval-interval", eval_interval}, {"lr", lr}, {"min-lr", min_lr},
          {"weight-decay", weight_decay}, {"beta1", beta1}, {"beta2", beta2}, {"grad-clip", grad_clip},
          {"val-fraction", val_fraction}, {"beta", beta}, {"seed", seed}, {"threads", threads}, {"dtype", dtype},
          {"lora-rank", lora_rank}, {"lora-alpha", lora_alpha}, {"lora-dropout", lora_dropout},
          {"lora-targets", lora_targets}};
}

namespace {

// Rows of a batch of pairs — chosen, rejected, chosen, ... — padded to the longest.
// shifted (the policy's log-probabilities): inputs ids[:-1], targets ids[1:] on the
// response; otherwise (a reward) every id is an input and the score is read at the last.
void fill_rows(PreferenceScratch& b, const std::vector<const EncodedPair*>& pairs, bool shifted) {
  GPT_CHECK(!pairs.empty(), "a batch needs at least one pair");
  b.lengths.clear();
  for (const EncodedPair* p : pairs)
    for (const ScoredSequence* s : {&p->chosen, &p->rejected})
      b.lengths.push_back(static_cast<int64_t>(s->ids.size()) - (shifted ? 1 : 0));
  b.T = *std::max_element(b.lengths.begin(), b.lengths.end());
  const auto rows = static_cast<int64_t>(b.lengths.size());
  b.x.assign(static_cast<size_t>(rows * b.T), 0);
  b.y.assign(b.x.size(), kIgnoreTarget);
  int64_t row = 0;
  for (const EncodedPair* p : pairs) {
    for (const ScoredSequence* s : {&p->chosen, &p->rejected}) {
      int32_t* x = b.x.data() + row * b.T;
      int32_t* y = b.y.data() + row * b.T;
      for (int64_t t = 0; t < b.lengths[static_cast<size_t>(row)]; ++t) {
        x[t] = s->ids[static_cast<size_t>(t)];
        if (shifted && s->response[static_cast<size_t>(t + 1)]) y[t] = s->ids[static_cast<size_t>(t + 1)];
      }
      ++row;
    }
  }
}

// Each side's score: the reward head on the hidden state at the last position, or
// (no head) the response's summed log-probability.
void score_rows(GPT& model, const float* head, PreferenceScratch& b, bool training) {
  const auto rows = static_cast<int64_t>(b.lengths.size());
  const int64_t T = b.T, C = model.config().n_embd;
  b.logprobs.resize(static_cast<size_t>(rows * T));
  model.forward_logprobs(b.x.data(), head == nullptr ? b.y.data() : nullptr, rows, T, b.logprobs.data(), training);
  b.chosen.assign(static_cast<size_t>(rows / 2), 0.0);
  b.rejected.assign(static_cast<size_t>(rows / 2), 0.0);
  const float* h = model.final_hidden();
  for (int64_t r = 0; r < rows; ++r) {
    double score = 0;
    if (head != nullptr) {
      const float* last = h + (r * T + b.lengths[static_cast<size_t>(r)] - 1) * C;
      for (int64_t i = 0; i < C; ++i) score += static_cast<double>(head[i]) * last[i];
    } else {
      for (int64_t t = 0; t < T; ++t) score += b.logprobs[static_cast<size_t>(r * T + t)];
    }
    (r % 2 == 0 ? b.chosen : b.rejected)[static_cast<size_t>(r / 2)] = score;
  }
}

// -log sigma(z), stably.
double softplus_neg(double z) { return std::log1p(std::exp(-std::abs(z))) + std::max(-z, 0.0); }
double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// z of each pair: the reward margin, or DPO's beta-scaled log-ratio difference.
double pair_z(const PreferenceScratch& b, size_t i, const double* ref_chosen, const double* ref_rejected, double beta) {
  const double z = b.chosen[i] - b.rejected[i];
  return ref_chosen == nullptr ? z : beta * (z - (ref_chosen[i] - ref_rejected[i]));
}

}  // namespace

void score_pairs(GPT& model, const float* head, const std::vector<const EncodedPair*>& pairs,
                 PreferenceScratch& scratch) {
  fill_rows(scratch, pairs, head == nullptr);
  score_rows(model, head, scratch, false);
}

PreferenceMetrics preference_forward_backward(GPT& model, const float* head, float* head_grad,
                                              const std::vector<const EncodedPair*>& pairs, const double* ref_chosen,
                                              const double* ref_rejected, double beta, PreferenceScratch& b) {
  const bool dpo = head == nullptr;
  GPT_CHECK(!dpo || (ref_chosen != nullptr && ref_rejected != nullptr), "DPO needs the reference's scores");
  fill_rows(b, pairs, dpo);
  score_rows(model, head, b, true);
  const auto rows = static_cast<int64_t>(b.lengths.size());
  const int64_t T = b.T, C = model.config().n_embd;
  if (dpo) {
    b.dlogprobs.assign(static_cast<size_t>(rows * T), 0.0f);
  } else {
    b.dhidden.assign(static_cast<size_t>(rows * T * C), 0.0f);
  }
  PreferenceMetrics m;
  const double n = static_cast<double>(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    const double z = pair_z(b, i, ref_chosen, ref_rejected, beta);
    m.loss += softplus_neg(z) / n;
    m.accuracy += (z > 0 ? 1.0 : 0.0) / n;
    m.margin += z / n;
    const double dz = -sigmoid(-z) / n;  // d(mean loss)/dz
    for (int side = 0; side < 2; ++side) {
      const int64_t r = 2 * static_cast<int64_t>(i) + side;
      const double dscore = (side == 0 ? dz : -dz) * (dpo ? beta : 1.0);
      if (dpo) {  // every response token's log-probability adds to the score
        for (int64_t t = 0; t < T; ++t)
          if (b.y[static_cast<size_t>(r * T + t)] != kIgnoreTarget) b.dlogprobs[static_cast<size_t>(r * T + t)] = static_cast<float>(dscore);
      } else {    // r = head . h(last)
        const int64_t at = r * T + b.lengths[static_cast<size_t>(r)] - 1;
        const float* h = model.final_hidden() + at * C;
        for (int64_t k = 0; k < C; ++k) {
          b.dhidden[static_cast<size_t>(at * C + k)] = static_cast<float>(dscore * head[k]);
          head_grad[k] += static_cast<float>(dscore * h[k]);
        }
      }
    }
  }
  m.pairs = static_cast<int64_t>(pairs.size());
  model.backward_logprobs(dpo ? b.dlogprobs.data() : nullptr, dpo ? nullptr : b.dhidden.data());
  return m;
}

PreferenceTrainer::PreferenceTrainer(const PreferenceOptions& options, Communicator& comm)
    : opts_(options),
      comm_(comm),
      compute_({parse_matmul_precision(options.dtype), std::max(options.threads, 0)}),
      schedule_{} {
  opts_.validate();
  const ComputeScope scope(compute_);
  const bool dpo = opts_.mode == "dpo";
  GPT_CHECK(opts_.batch_size % comm_.size() == 0, "--batch-size (" + std::to_string(opts_.batch_size) +
                                                     ") must be divisible by the number of ranks (" +
                                                     std::to_string(comm_.size()) + ")");
  if (opts_.lora_rank > 0) {
    check_adapter_out(opts_.out, opts_.init_from);
  }
  std::error_code ec;
  GPT_CHECK(fs::exists(opts_.data, ec), "file not found: " + opts_.data);
  OpenedModel m = open_model(opts_.init_from, {.dequantize = true, .convert_to = std::nullopt, .panels = false, .adapter = {}});
  model_ = m.fp32;
  tokenizer_ = std::move(m.tokenizer);
  const ModelConfig& mc = model_->config();
  if (opts_.block_size == 0) opts_.block_size = mc.block_size;
  GPT_CHECK(opts_.block_size <= mc.block_size, "--block-size " + std::to_string(opts_.block_size) +
                                                  " exceeds the model's context (" + std::to_string(mc.block_size) + ")");
  base_vocab_ = mc.vocab_size;

  const std::vector<PreferenceText> pairs = read_preference_jsonl(opts_.data);
  const bool conversational = std::any_of(pairs.begin(), pairs.end(), [](const PreferenceText& p) { return !p.plain; });
  if (!opts_.chat_template.empty()) {
    chat_template_ = ChatTemplate::named(opts_.chat_template);
  } else if (m.chat_template) {
    chat_template_ = m.chat_template;
  } else if (conversational) {
    chat_template_ = ChatTemplate::named("chatml");
  }
  int new_tokens_begin = -1;
  if (chat_template_) {
    opts_.chat_template = chat_template_->name();
    new_tokens_begin = add_chat_tokens(model_, tokenizer_, *chat_template_);
  }
  data_ = split_preferences(pairs, *tokenizer_, chat_template_ ? &*chat_template_ : nullptr,
                            opts_.block_size + (dpo ? 1 : 0), opts_.val_fraction, opts_.seed);
  pairs_rank_ = opts_.batch_size / comm_.size();
  const int64_t C = model_->config().n_embd;

  if (dpo) {
    // The reference: the starting policy, scored once (no dropout).
    auto reference = [&](const std::vector<EncodedPair>& set) {
      for (size_t i = 0; i < set.size(); i += static_cast<size_t>(pairs_rank_)) {
        std::vector<const EncodedPair*> chunk;
        for (size_t k = i; k < std::min(set.size(), i + static_cast<size_t>(pairs_rank_)); ++k) chunk.push_back(&set[k]);
        score_pairs(*model_, nullptr, chunk, scratch_);
        ref_chosen_.insert(ref_chosen_.end(), scratch_.chosen.begin(), scratch_.chosen.end());
        ref_rejected_.insert(ref_rejected_.end(), scratch_.rejected.begin(), scratch_.rejected.end());
      }
    };
    reference(data_.train);
    reference(data_.val);
  } else {
    Rng rng(mix64(opts_.seed ^ 0x5c0e11ull));
    head_.resize(static_cast<size_t>(C));
    for (float& w : head_) w = static_cast<float>(rng.normal() * 0.02);  // as Hugging Face initialises score.weight
    head_grad_.assign(head_.size(), 0.0f);
    const std::vector<TensorInfo> table = {{"score.weight", {1, C}, 0, static_cast<size_t>(C), true}};
    head_opt_ = std::make_unique<AdamW>(table, static_cast<size_t>(C),
                                        AdamWConfig{static_cast<float>(opts_.beta1), static_cast<float>(opts_.beta2),
                                                    1e-8f, static_cast<float>(opts_.weight_decay)});
  }
  if (opts_.lora_rank > 0) {
    const LoraConfig lc = LoraConfig::from_flags(opts_.lora_rank, opts_.lora_alpha, opts_.lora_dropout, opts_.lora_targets, new_tokens_begin);
    auto adapter = LoraAdapters::fresh(*model_, lc, opts_.seed);
    model_->attach_lora(std::move(adapter));
  } else {
    model_->allocate_gradients();
  }
  OptimizerStepOptions so;
  so.adamw = {static_cast<float>(opts_.beta1), static_cast<float>(opts_.beta2), 1e-8f,
              static_cast<float>(opts_.weight_decay)};
  so.grad_clip = static_cast<float>(opts_.grad_clip);
  optimizer_ = std::make_unique<OptimizerStep>(*model_, comm_, so);
  schedule_ = LrSchedule{static_cast<float>(opts_.lr), static_cast<float>(opts_.min_lr), opts_.warmup_iters,
                         opts_.max_iters};
  if (comm_.is_root()) {
    fs::create_directories(opts_.out, ec);
    GPT_CHECK(fs::is_directory(opts_.out, ec), "cannot create output directory " + opts_.out);
    log_ = std::make_unique<TrainingLog>(opts_.log.empty() ? fs::path(opts_.out) / "train_log.jsonl" : fs::path(opts_.log),
                                         std::nullopt);
  }
}

LogEntry PreferenceTrainer::step(PreferenceMetrics* metrics) {
  const ComputeScope scope(compute_);
  const auto t0 = std::chrono::steady_clock::now();
  const bool dpo = opts_.mode == "dpo";
  const int64_t it = step_;
  const float lr = schedule_.at(it);
  // This rank's pairs of the step: every training pair once per epoch, each epoch in its own shuffled order.
  const auto n = static_cast<int64_t>(data_.train.size());
  std::vector<const EncodedPair*> pairs;
  std::vector<size_t> index;
  for (int64_t i = 0; i < pairs_rank_; ++i) {
    const int64_t g = it * opts_.batch_size + comm_.rank() * pairs_rank_ + i;
    const int64_t epoch = g / n;
    // The position's pair in the epoch's permutation, drawn by a seeded Fisher-Yates (kept per epoch).
    if (epoch != order_epoch_) {
      order_.resize(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) order_[static_cast<size_t>(k)] = k;
      Rng rng(mix64(opts_.seed ^ mix64(static_cast<uint64_t>(epoch) + 0x243f6a8885a308d3ull)));
      for (int64_t k = n - 1; k > 0; --k)
        std::swap(order_[static_cast<size_t>(k)], order_[static_cast<size_t>(rng.next_u64() % static_cast<uint64_t>(k + 1))]);
      order_epoch_ = epoch;
    }
    index.push_back(static_cast<size_t>(order_[static_cast<size_t>(g % n)]));
    pairs.push_back(&data_.train[index.back()]);
  }
  model_->zero_grad();
  model_->set_dropout_seed(mix64(opts_.seed ^ mix64(static_cast<uint64_t>(it) + 0x6a09e667f3bcc908ull)),
                           2 * (comm_.rank() * pairs_rank_));
  std::vector<double> ref_c, ref_r;
  if (dpo) {
    for (size_t i : index) {
      ref_c.push_back(ref_chosen_[i]);
      ref_r.push_back(ref_rejected_[i]);
    }
  } else {
    std::fill(head_grad_.begin(), head_grad_.end(), 0.0f);
  }
  PreferenceMetrics m = preference_forward_backward(*model_, dpo ? nullptr : head_.data(), head_grad_.data(), pairs,
                                                    dpo ? ref_c.data() : nullptr, dpo ? ref_r.data() : nullptr,
                                                    opts_.beta, scratch_);
  const int64_t tokens = static_cast<int64_t>(scratch_.x.size());
  m.loss *= static_cast<double>(pairs_rank_);  // sums over this rank's pairs, for the mean over all ranks'
  m.accuracy *= static_cast<double>(pairs_rank_);
  m.margin *= static_cast<double>(pairs_rank_);
  double sums[3] = {m.loss, m.accuracy, m.margin};
  comm_.allreduce_sum(sums, 3);
  const double all = static_cast<double>(opts_.batch_size);
  m = {sums[0] / all, sums[1] / all, sums[2] / all, opts_.batch_size};
  GPT_CHECK(std::isfinite(m.loss), "training diverged: loss is " + std::to_string(m.loss) + " at step " +
                                       std::to_string(it + 1) + " (try a lower --lr)");
  LogEntry e;
  e.step = it + 1;
  e.loss = static_cast<float>(m.loss);
  e.lr = lr;
  e.grad_norm = optimizer_->apply(*model_, lr, it + 1);
  if (!dpo) {
    comm_.allreduce_mean(head_grad_.data(), head_grad_.size());
    // The head is clipped on its own (its gradient is a few hundred numbers beside the body's millions).
    clip_grad_norm(head_grad_.data(), head_grad_.size(), static_cast<float>(opts_.grad_clip));
    head_opt_->step(head_.data(), head_grad_.data(), lr);
  }
  e.extra = {{"accuracy", m.accuracy}, {"margin", m.margin}};
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  e.tokens_per_sec = static_cast<double>(tokens * comm_.size()) / dt;
  step_ = it + 1;
  if (metrics != nullptr) *metrics = m;
  return e;
}

PreferenceMetrics PreferenceTrainer::evaluate() {
  const ComputeScope scope(compute_);
  const bool dpo = opts_.mode == "dpo";
  PreferenceMetrics total;
  // Ranks take turns with the held-out batches and add up.
  const size_t batch = static_cast<size_t>(pairs_rank_);
  for (size_t i = static_cast<size_t>(comm_.rank()) * batch; i < data_.val.size();
       i += static_cast<size_t>(comm_.size()) * batch) {
    std::vector<const EncodedPair*> chunk;
    for (size_t k = i; k < std::min(data_.val.size(), i + batch); ++k) chunk.push_back(&data_.val[k]);
    score_pairs(*model_, dpo ? nullptr : head_.data(), chunk, scratch_);
    const size_t ref = data_.train.size() + i;
    for (size_t k = 0; k < chunk.size(); ++k) {
      const double z = pair_z(scratch_, k, dpo ? ref_chosen_.data() + ref : nullptr,
                              dpo ? ref_rejected_.data() + ref : nullptr, opts_.beta);
      total.loss += softplus_neg(z);
      total.accuracy += z > 0 ? 1.0 : 0.0;
      total.margin += z;
    }
  }
  double sums[3] = {total.loss, total.accuracy, total.margin};
  comm_.allreduce_sum(sums, 3);
  const double n = static_cast<double>(data_.val.size());
  return {sums[0] / n, sums[1] / n, sums[2] / n, static_cast<int64_t>(data_.val.size())};
}

void PreferenceTrainer::save() {
  if (comm_.is_root()) {
    const nlohmann::json state = {{"step", step_}, {"options", opts_.to_json()}, {"task", opts_.mode}};
    CheckpointContents c;
    c.model = model_.get();
    c.tokenizer = tokenizer_.get();
    c.trainer_state = &state;
    if (chat_template_) c.chat_template = &*chat_template_;
    const int64_t C = model_->config().n_embd;
    if (opts_.mode == "reward") {
      c.extra_tensors = {{"score.weight", {1, C}, head_.data()}};
      c.config_extra = {{"architectures", {"GPT2ForSequenceClassification"}}, {"num_labels", 1}};
    }
    if (model_->lora() != nullptr) {
      c.adapter = model_->lora();
      c.adapter_base = opts_.init_from;
      c.adapter_base_vocab = base_vocab_;
      c.adapter_base_model = model_.get();
    }
    save_checkpoint(opts_.out, c);
  }
  comm_.barrier();
}

void PreferenceTrainer::run(const StepCallback& on_step) {
  while (step_ < opts_.max_iters) {
    LogEntry e = step();
    if (step_ % opts_.eval_interval == 0 || step_ == opts_.max_iters) {
      const PreferenceMetrics v = evaluate();
      e.val_loss = static_cast<float>(v.loss);
      e.extra["val_accuracy"] = v.accuracy;
      e.extra["val_margin"] = v.margin;
    }
    if (log_) log_->append(e);
    if (on_step) on_step(e);
  }
  save();
}

RewardModel load_reward_model(const fs::path& dir_in) {
  const fs::path dir = resolve_checkpoint_dir(dir_in);
  LoadedModel l = load_model(dir);
  RewardModel rm;
  rm.body = std::move(l.model);
  rm.tokenizer = std::move(l.tokenizer);
  const ModelWeightFiles st = ModelWeightFiles::open(dir);
  const int64_t C = rm.body->config().n_embd;
  GPT_CHECK(st.contains("score.weight"), dir.string() + " is not a reward model (its weights have no score.weight; "
                                                        "gpt reward train makes one)");
  rm.head.resize(static_cast<size_t>(C));
  st.read_f32("score.weight", {1, C}, rm.head.data());
  rm.chat_template = ChatTemplate::of_model(dir);
  return rm;
}

PreferenceMetrics score_preferences(RewardModel& rm, const std::vector<PreferenceText>& pairs, int64_t batch_pairs,
                                    int64_t* dropped) {
  GPT_CHECK(batch_pairs > 0, "the batch must hold at least one pair");
  const bool conversational = std::any_of(pairs.begin(), pairs.end(), [](const PreferenceText& p) { return !p.plain; });
  GPT_CHECK(rm.chat_template || !conversational, "conversational pairs need a reward model with a chat template");
  const ChatTemplate* tmpl = rm.chat_template ? &*rm.chat_template : nullptr;
  std::vector<EncodedPair> encoded;
  int64_t cut = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    std::optional<EncodedPair> e;
    try {
      e = encode_preference(pairs[i], *rm.tokenizer, tmpl, rm.body->config().block_size);
    } catch (const Error& err) {
      throw Error("pair " + std::to_string(i + 1) + ": " + err.what());
    }
    if (e) encoded.push_back(std::move(*e));
    else ++cut;
  }
  if (dropped != nullptr) *dropped = cut;
  GPT_CHECK(!encoded.empty(), "no pair fits the reward model's context");
  PreferenceMetrics total;
  PreferenceScratch b;
  for (size_t i = 0; i < encoded.size(); i += static_cast<size_t>(batch_pairs)) {
    std::vector<const EncodedPair*> chunk;
    for (size_t k = i; k < std::min(encoded.size(), i + static_cast<size_t>(batch_pairs)); ++k) chunk.push_back(&encoded[k]);
    score_pairs(*rm.body, rm.head.data(), chunk, b);
    for (size_t k = 0; k < chunk.size(); ++k) {
      const double z = b.chosen[k] - b.rejected[k];
      total.loss += softplus_neg(z);
      total.accuracy += z > 0 ? 1.0 : 0.0;
      total.margin += z;
    }
  }
  const double n = static_cast<double>(encoded.size());
  return {total.loss / n, total.accuracy / n, total.margin / n, static_cast<int64_t>(encoded.size())};
}

}  // namespace gpt
