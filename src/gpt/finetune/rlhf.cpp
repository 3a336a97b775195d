#include "gpt/finetune/rlhf.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <cmath>
#include <numeric>
#include <sstream>

#include "gpt/finetune/chat_data.h"
#include "gpt/generation/batch_engine.h"
#include "gpt/io/checkpoint.h"
#include "gpt/io/model_loader.h"
#include "gpt/io/peft_adapter.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "gpt/util/rng.h"
#include "gpt/util/utf8.h"

namespace gpt {
namespace fs = std::filesystem;

void RlhfOptions::validate() const {
  GPT_CHECK(algo == "ppo" || algo == "grpo", "--algo must be ppo or grpo, got '" + algo + "'");
  GPT_CHECK(!policy.empty(), "no policy: pass --policy MODEL");
  GPT_CHECK(!reward.empty(), "no reward model: pass --reward RM");
  GPT_CHECK(!prompts.empty(), "no prompts: pass --prompts FILE");
  GPT_CHECK(!out.empty(), "no output directory: pass --out DIR");
  auto positive = [](int64_t v, const std::string& flag) {
    GPT_CHECK(v > 0, "--" + flag + " must be positive, got " + std::to_string(v));
  };
  positive(max_iters, "max-iters");
  positive(batch_prompts, "batch-size");
  positive(group, "group");
  positive(max_new_tokens, "max-new-tokens");
  positive(ppo_epochs, "ppo-epochs");
  positive(minibatch, "minibatch");
  positive(eval_interval, "eval-interval");
  GPT_CHECK(algo == "ppo" || group >= 2, "--group must be at least 2 for grpo (advantages are relative to the group)");
  GPT_CHECK(lr > 0 && std::isfinite(lr), "--lr must be positive");
  GPT_CHECK(min_lr >= 0 && min_lr <= lr, "--min-lr must be in [0, lr]");
  GPT_CHECK(warmup_iters >= 0, "--warmup-iters must not be negative");
  GPT_CHECK(weight_decay >= 0 && grad_clip >= 0, "--weight-decay and --grad-clip must not be negative");
  GPT_CHECK(kl_coef >= 0 && std::isfinite(kl_coef), "--kl-coef must not be negative");
  GPT_CHECK(kl_target >= 0, "--kl-target must not be negative (0: a fixed --kl-coef)");
  GPT_CHECK(clip_range > 0 && clip_range < 1, "--clip-range must be in (0, 1)");
  GPT_CHECK(value_clip > 0, "--value-clip must be positive");
  GPT_CHECK(vf_coef >= 0, "--vf-coef must not be negative");
  GPT_CHECK(gamma > 0 && gamma <= 1 && lam >= 0 && lam <= 1, "--gamma must be in (0, 1] and --lam in [0, 1]");
  GPT_CHECK(val_fraction > 0 && val_fraction < 1, "--val-fraction must be in (0, 1)");
  GPT_CHECK(threads >= 0, "--threads must not be negative");
  GPT_CHECK(lora_rank >= 0, "--lora-rank must not be negative");
  // The ratio pi / pi_old must be 1 before an update: the old log-probabilities are
  // taken without dropout, so the updates run without it too (as TRL's PPO does).
  GPT_CHECK(lora_dropout == 0, "--lora-dropout is not used by gpt rlhf (the policy ratio needs the same network "
                               "for old and new log-probabilities)");
  if (lora_rank > 0) {
    LoraConfig::from_flags(lora_rank, lora_alpha, lora_dropout, lora_targets);
  }
}

nlohmann::json RlhfOptions::to_json() const {
  return {{"algo", algo}, {"policy", policy}, {"reward", reward}, {"prompts", prompts}, {"out", out},
          {"max-iters", max_iters}, {"batch-size", batch_prompts}, {"group", group}, {"max-new-tokens", max_new_tokens},
          {"ppo-epochs", ppo_epochs}, {"minibatch", minibatch}, {"lr", lr}, {"min-lr", min_lr},
          {"weight-decay", weight_decay}, {"grad-clip", grad_clip}, {"warmup-iters", warmup_iters},
          {"kl-coef", kl_coef}, {"kl-target", kl_target}, {"clip-range", clip_range}, {"value-clip", value_clip},
          {"vf-coef", vf_coef}, {"gamma", gamma}, {"lam", lam}, {"val-fraction", val_fraction},
          {"eval-interval", eval_interval}, {"seed", seed}, {"threads", threads}, {"dtype", dtype},
          {"lora-rank", lora_rank}, {"lora-alpha", lora_alpha}, {"lora-dropout", lora_dropout},
          {"lora-targets", lora_targets}};
}

std::vector<std::vector<ChatMessage>> read_prompt_jsonl(const fs::path& file, bool* plain) {
  std::vector<std::vector<ChatMessage>> out;
  bool all_plain = true;
  for_each_jsonl(file, [&](const nlohmann::json& j) {
    GPT_CHECK(j.is_object(), "a prompt must be a JSON object");
    std::vector<ChatMessage> messages;
    if (const auto p = j.find("prompt"); p != j.end() && p->is_string()) {
      const std::string s = p->get<std::string>();
      if (auto bad = find_invalid_utf8(s)) throw Error("\"prompt\" is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
      GPT_CHECK(!s.empty(), "\"prompt\" is empty");
      messages.push_back({"user", s});
    } else if (p != j.end()) {
      messages = conversation_from_json(*p);
      all_plain = false;
    } else {
      GPT_CHECK(j.contains("messages"), "a prompt needs \"prompt\" (text or messages) or \"messages\"");
      messages = conversation_from_json(j);
      all_plain = false;
    }
    GPT_CHECK(messages.back().role != "assistant", "a prompt must not end with the assistant's answer");
    out.push_back(std::move(messages));
  }, "prompts");
  if (plain != nullptr) *plain = all_plain;
  return out;
}

void gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma, double lam,
         std::vector<double>& advantages, std::vector<double>& returns) {
  const size_t n = rewards.size();
  GPT_CHECK(values.size() == n, "gae: as many values as rewards");
  advantages.assign(n, 0.0);
  returns.assign(n, 0.0);
  double next_adv = 0, next_value = 0;
  for (size_t k = n; k-- > 0;) {
    const double delta = rewards[k] + gamma * next_value - values[k];
    next_adv = delta + gamma * lam * next_adv;
    advantages[k] = next_adv;
    returns[k] = next_adv + values[k];
    next_value = values[k];
  }
}

PpoTerms ppo_objective(const std::vector<double>& new_logp, const std::vector<double>& old_logp,
                       const std::vector<double>& advantages, const std::vector<double>* values,
                       const std::vector<double>* old_values, const std::vector<double>* returns,
                       const std::vector<double>* ref_logp, double clip_range, double value_clip, double vf_coef,
                       double kl_coef, std::vector<double>& d_logp, std::vector<double>& d_value) {
  const size_t n = new_logp.size();
  GPT_CHECK(n > 0 && old_logp.size() == n && advantages.size() == n, "ppo_objective: one value of each per token");
  PpoTerms t;
  d_logp.assign(n, 0.0);
  d_value.assign(values != nullptr ? n : 0, 0.0);
  const double inv = 1.0 / static_cast<double>(n);
  for (size_t k = 0; k < n; ++k) {
    const double ratio = std::exp(new_logp[k] - old_logp[k]);
    const double a = advantages[k];
    const double unclipped = -a * ratio;
    const double clipped = -a * std::clamp(ratio, 1.0 - clip_range, 1.0 + clip_range);
    // The max picks the clipped term only where the clip is active: there it is flat.
    if (unclipped >= clipped) {
      t.policy_loss += unclipped * inv;
      d_logp[k] += -a * ratio * inv;
    } else {
      t.policy_loss += clipped * inv;
      t.clip_fraction += inv;
    }
    if (values != nullptr) {
      const double v = (*values)[k], v_old = (*old_values)[k], r = (*returns)[k];
      const double v_clip = v_old + std::clamp(v - v_old, -value_clip, value_clip);
      const double plain = (v - r) * (v - r), clip = (v_clip - r) * (v_clip - r);
      if (plain >= clip) {
        t.value_loss += 0.5 * plain * inv;
        d_value[k] = vf_coef * (v - r) * inv;
      } else {
        t.value_loss += 0.5 * clip * inv;
        d_value[k] = std::abs(v - v_old) < value_clip ? vf_coef * (v_clip - r) * inv : 0.0;
      }
    }
    if (ref_logp != nullptr) {
      const double d = (*ref_logp)[k] - new_logp[k];
      t.kl += (std::exp(d) - d - 1.0) * inv;
      d_logp[k] += kl_coef * (1.0 - std::exp(d)) * inv;
    }
  }
  t.loss = t.policy_loss + vf_coef * t.value_loss + kl_coef * t.kl;
  return t;
}

RlhfTrainer::RlhfTrainer(const RlhfOptions& options, Communicator& comm)
    : opts_(options), comm_(comm), compute_({parse_matmul_precision(options.dtype), std::max(options.threads, 0)}) {
  opts_.validate();
  const ComputeScope scope(compute_);
  const bool ppo = opts_.algo == "ppo";
  GPT_CHECK(opts_.batch_prompts % comm_.size() == 0, "--batch-size (" + std::to_string(opts_.batch_prompts) +
                                                        ") must be divisible by the number of ranks (" +
                                                        std::to_string(comm_.size()) + ")");
  if (opts_.lora_rank > 0) {
    check_adapter_out(opts_.out, opts_.policy);
  }
  std::error_code ec;
  GPT_CHECK(fs::exists(opts_.prompts, ec), "file not found: " + opts_.prompts);
  OpenedModel m = open_model(opts_.policy, {.dequantize = true, .convert_to = std::nullopt, .panels = false, .adapter = {}});
  policy_ = m.fp32;
  tokenizer_ = std::move(m.tokenizer);
  chat_template_ = m.chat_template;
  base_vocab_ = policy_->config().vocab_size;
  rm_ = load_reward_model(opts_.reward);
  // The reward model reads the policy's token ids: the same vocabulary, token for token.
  GPT_CHECK(same_tokens(*rm_.tokenizer, *tokenizer_), "the reward model's vocabulary (" + std::to_string(rm_.tokenizer->vocab_size()) +
                      " tokens) differs from the policy's (" + std::to_string(tokenizer_->vocab_size()) +
                      "): train the reward model from the policy (gpt reward train --init-from POLICY)");
  GPT_CHECK(rm_.body->config().vocab_size == policy_->config().vocab_size,
            "the reward model's vocabulary differs from the policy's");
  GPT_CHECK(rm_.body->config().block_size >= policy_->config().block_size,
            "the reward model's context (" + std::to_string(rm_.body->config().block_size) +
                " tokens) is shorter than the policy's (" + std::to_string(policy_->config().block_size) +
                "): it could not read every answer");
  GPT_CHECK((rm_.chat_template ? rm_.chat_template->name() : std::string()) ==
                (chat_template_ ? chat_template_->name() : std::string()),
            "the reward model reads conversations written as " +
                (rm_.chat_template ? rm_.chat_template->name() : std::string("plain text")) + ", the policy writes " +
                (chat_template_ ? chat_template_->name() : std::string("plain text")));
  // The answers' end: the template's end-of-turn marker, or the end-of-text token.
  stop_tokens_ = answer_stop_tokens(*tokenizer_, chat_template_ ? &*chat_template_ : nullptr);

  bool plain = true;
  const auto prompts = read_prompt_jsonl(opts_.prompts, &plain);
  GPT_CHECK(plain || chat_template_, "prompts as message lists need a policy with a chat template (gpt sft makes one)");
  std::vector<std::vector<int32_t>> encoded =
      encode_prompts(prompts, *tokenizer_, chat_template_ ? &*chat_template_ : nullptr, policy_->config().block_size, &dropped_);
  GPT_CHECK(encoded.size() >= 2, "RLHF needs at least 2 prompts that leave room for an answer in the context");
  std::vector<size_t> order(encoded.size());
  std::iota(order.begin(), order.end(), size_t{0});
  Rng rng(mix64(opts_.seed ^ 0x91e10da5ull));
  for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.next_u64() % (i + 1)]);
  const auto n_val = static_cast<size_t>(
      std::clamp<int64_t>(std::llround(static_cast<double>(encoded.size()) * opts_.val_fraction), 1,
                          static_cast<int64_t>(encoded.size()) - 1));
  for (size_t i = 0; i < order.size(); ++i) (i < n_val ? val_ : train_).push_back(std::move(encoded[order[i]]));

  // The reference: the starting policy, frozen.
  reference_ = std::make_shared<GPT>(policy_->config());
  reference_->params = policy_->params;
  if (opts_.lora_rank > 0) {
    const LoraConfig lc = LoraConfig::from_flags(opts_.lora_rank, opts_.lora_alpha, opts_.lora_dropout, opts_.lora_targets);
    auto adapter = LoraAdapters::fresh(*policy_, lc, opts_.seed);
    policy_->attach_lora(std::move(adapter));
  } else {
    policy_->allocate_gradients();
  }
  const int64_t C = policy_->config().n_embd;
  if (ppo) {
    value_head_.assign(static_cast<size_t>(C + 1), 0.0f);  // V = w . h + b, from zero
    value_grad_.assign(value_head_.size(), 0.0f);
    const std::vector<TensorInfo> table = {{"v_head.weight", {1, C}, 0, static_cast<size_t>(C), false},
                                           {"v_head.bias", {1}, static_cast<size_t>(C), 1, false}};
    value_opt_ = std::make_unique<AdamW>(table, static_cast<size_t>(C + 1), AdamWConfig{0.9f, 0.99f, 1e-8f, 0.0f});
  }
  OptimizerStepOptions so;
  so.adamw = {0.9f, 0.99f, 1e-8f, static_cast<float>(opts_.weight_decay)};
  so.grad_clip = static_cast<float>(opts_.grad_clip);
  optimizer_ = std::make_unique<OptimizerStep>(*policy_, comm_, so);
  schedule_ = LrSchedule{static_cast<float>(opts_.lr), static_cast<float>(opts_.min_lr), opts_.warmup_iters,
                         opts_.max_iters};
  kl_coef_ = opts_.kl_coef;
  if (comm_.is_root()) {
    fs::create_directories(opts_.out, ec);
    GPT_CHECK(fs::is_directory(opts_.out, ec), "cannot create output directory " + opts_.out);
    log_ = std::make_unique<TrainingLog>(opts_.log.empty() ? fs::path(opts_.out) / "train_log.jsonl" : fs::path(opts_.log),
                                         std::nullopt);
  }
}

namespace {
// One row of a batch that scores an answer: inputs ids[:-1], targets the answer's
// tokens only (answer token j is predicted at position prompt_len - 1 + j); the
// rest of the row stays as the caller filled it (0 and kIgnoreTarget).
void answer_row(const std::vector<int32_t>& ids, size_t prompt_len, int32_t* x, int32_t* y) {
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    x[t] = ids[t];
    if (t + 1 >= prompt_len) y[t] = ids[t + 1];
  }
}
}  // namespace

bool same_tokens(const Tokenizer& a, const Tokenizer& b) {
  bool same = a.vocab_size() == b.vocab_size();
  for (int32_t id = 0; same && id < a.vocab_size(); ++id) same = a.token_bytes(id) == b.token_bytes(id);
  return same;
}

std::vector<std::vector<int32_t>> encode_prompts(const std::vector<std::vector<ChatMessage>>& prompts,
                                                 const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                                                 int64_t block_size, int64_t* dropped) {
  std::vector<std::vector<int32_t>> encoded;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> ids;
    try {
      if (chat_template != nullptr) {
        ids = chat_template->encode(prompts[i], tokenizer);
      } else {
        if (const auto bos = tokenizer.bos_id()) ids.push_back(*bos);
        for (const ChatMessage& msg : prompts[i]) {
          const auto piece = tokenizer.encode(msg.content);
          ids.insert(ids.end(), piece.begin(), piece.end());
        }
      }
    } catch (const Error& e) {
      throw Error("prompt " + std::to_string(i + 1) + ": " + e.what());
    }
    if (static_cast<int64_t>(ids.size()) + 1 < block_size && !ids.empty()) {
      encoded.push_back(std::move(ids));
    } else if (dropped != nullptr) {
      ++*dropped;
    }
  }
  return encoded;
}

std::vector<int32_t> answer_stop_tokens(const Tokenizer& tokenizer, const ChatTemplate* chat_template) {
  std::vector<int32_t> stop;
  if (chat_template != nullptr) {
    if (auto id = tokenizer.special_token_id(chat_template->end_of_turn())) stop.push_back(*id);
  }
  if (auto id = tokenizer.special_token_id("<|endoftext|>")) stop.push_back(*id);
  return stop;
}

std::vector<std::vector<int32_t>> sample_answers(const GPT& policy, const std::vector<const std::vector<int32_t>*>& prompts,
                                                 int64_t max_new_tokens, const std::vector<int32_t>& stop_tokens,
                                                 bool greedy, uint64_t seed, int64_t context, int64_t first_index) {
  // The engine reads inference weights: the policy itself, or a copy with its adapter merged.
  std::shared_ptr<const GPT> weights(std::shared_ptr<const GPT>(), &policy);
  if (policy.lora() != nullptr) {
    auto merged = std::make_shared<GPT>(policy.config());
    merged->params = policy.params;
    policy.lora()->merge_into(*merged);
    weights = merged;
  }
  const ModelConfig& c = policy.config();
  const int64_t limit = context > 0 ? std::min<int64_t>(context, c.block_size) : c.block_size;
  EngineOptions eo;
  eo.kv_cache = KvCacheType::kF32;
  // Room for every answer at once: its prompt and its longest answer, in pages.
  int64_t positions = 0;
  for (const auto* p : prompts) positions += std::min<int64_t>(limit, static_cast<int64_t>(p->size()) + max_new_tokens) + eo.page_size;
  eo.kv_bytes = positions * 2 * c.n_layer * c.n_embd * static_cast<int64_t>(sizeof(float));
  eo.preempt_when_full = true;
  eo.compute = current_compute_options();
  BatchedEngine engine(InferenceWeights::view(weights), eo);
  std::map<int64_t, size_t> slot;
  std::vector<std::vector<int32_t>> answers(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    SequenceOptions so;
    so.sampling.greedy = greedy;  // otherwise the policy's own distribution: temperature 1, nothing cut
    so.seed = mix64(seed ^ mix64(static_cast<uint64_t>(first_index) + i + 1));
    so.max_new_tokens = std::min<int64_t>(max_new_tokens, limit - static_cast<int64_t>(prompts[i]->size()));
    so.stop_tokens = stop_tokens;
    slot[engine.add(*prompts[i], so)] = i;
  }
  while (!engine.idle()) {
    for (const BatchedEngine::Event& e : engine.step()) answers[slot.at(e.id)].push_back(e.token);
  }
  return answers;
}

KlEstimate estimate_kl(GPT& policy, GPT& reference, const std::vector<std::vector<int32_t>>& prompts,
                       int64_t samples_per_prompt, int64_t max_new_tokens, const std::vector<int32_t>& stop_tokens,
                       uint64_t seed, int64_t batch) {
  GPT_CHECK(samples_per_prompt > 0 && max_new_tokens > 0 && batch > 0, "estimate_kl needs positive counts");
  GPT_CHECK(policy.config().vocab_size == reference.config().vocab_size,
            "the reference's vocabulary (" + std::to_string(reference.config().vocab_size) +
                " tokens) differs from the policy's (" + std::to_string(policy.config().vocab_size) + ")");
  // Answers fit both models' contexts.
  const int64_t block = std::min(policy.config().block_size, reference.config().block_size);
  std::vector<const std::vector<int32_t>*> asked;
  for (const auto& p : prompts)
    for (int64_t k = 0; k < samples_per_prompt; ++k) asked.push_back(&p);
  std::vector<double> kl(asked.size(), 0.0), length(asked.size(), 0.0);
  std::vector<int32_t> x, y;
  std::vector<float> lp_policy, lp_reference;
  for (size_t i = 0; i < asked.size(); i += static_cast<size_t>(batch)) {
    const size_t n = std::min(static_cast<size_t>(batch), asked.size() - i);
    const std::vector<const std::vector<int32_t>*> chunk(asked.begin() + static_cast<std::ptrdiff_t>(i),
                                                         asked.begin() + static_cast<std::ptrdiff_t>(i + n));
    const auto answers = sample_answers(policy, chunk, max_new_tokens, stop_tokens, false, seed, block,
                                        static_cast<int64_t>(i));
    // Each answer's log-probability under both models.
    int64_t T = 1;
    for (size_t k = 0; k < n; ++k)
      T = std::max<int64_t>(T, static_cast<int64_t>(chunk[k]->size() + answers[k].size()) - 1);
    x.assign(n * static_cast<size_t>(T), 0);
    y.assign(x.size(), kIgnoreTarget);
    for (size_t k = 0; k < n; ++k) {
      std::vector<int32_t> ids = *chunk[k];
      const size_t prompt_len = ids.size();
      ids.insert(ids.end(), answers[k].begin(), answers[k].end());
      length[i + k] = static_cast<double>(answers[k].size());
      answer_row(ids, prompt_len, x.data() + k * static_cast<size_t>(T), y.data() + k * static_cast<size_t>(T));
    }
    lp_policy.resize(x.size());
    lp_reference.resize(x.size());
    policy.forward_logprobs(x.data(), y.data(), static_cast<int64_t>(n), T, lp_policy.data(), false);
    reference.forward_logprobs(x.data(), y.data(), static_cast<int64_t>(n), T, lp_reference.data(), false);
    for (size_t k = 0; k < n; ++k)
      for (size_t t = 0; t < static_cast<size_t>(T); ++t)
        kl[i + k] += static_cast<double>(lp_policy[k * static_cast<size_t>(T) + t]) - lp_reference[k * static_cast<size_t>(T) + t];
  }
  KlEstimate e;
  e.prompts = static_cast<int64_t>(prompts.size());
  e.answers = static_cast<int64_t>(asked.size());
  if (asked.empty()) return e;
  const auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
  };
  e.kl = mean(kl);
  e.mean_length = mean(length);
  // The standard error of the mean over prompts of each prompt's mean KL (two passes).
  std::vector<double> per_prompt(prompts.size(), 0.0);
  for (size_t i = 0; i < kl.size(); ++i) per_prompt[i / static_cast<size_t>(samples_per_prompt)] += kl[i];
  for (double& v : per_prompt) v /= static_cast<double>(samples_per_prompt);
  // One prompt: its answers are independent draws, their own spread.
  const std::vector<double>& units = per_prompt.size() > 1 ? per_prompt : kl;
  if (units.size() > 1) {
    double ss = 0;
    for (double v : units) ss += (v - e.kl) * (v - e.kl);
    const auto n = static_cast<double>(units.size());
    e.std_error = std::sqrt(ss / (n - 1) / n);
  }
  return e;
}

std::vector<std::vector<int32_t>> RlhfTrainer::sample(const std::vector<const std::vector<int32_t>*>& prompts,
                                                      bool greedy, uint64_t seed) {
  return sample_answers(*policy_, prompts, opts_.max_new_tokens, stop_tokens_, greedy, seed);
}

void RlhfTrainer::score(std::vector<Rollout>& rollouts) {
  // The reward model over whole sequences, its score read at the last token.
  const int64_t C = rm_.body->config().n_embd;
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(opts_.minibatch, 1));
  for (size_t i = 0; i < rollouts.size(); i += chunk) {
    const size_t n = std::min(chunk, rollouts.size() - i);
    int64_t T = 0;
    for (size_t k = 0; k < n; ++k) T = std::max<int64_t>(T, static_cast<int64_t>(rollouts[i + k].ids.size()));
    scratch_.x.assign(static_cast<size_t>(n) * static_cast<size_t>(T), 0);
    for (size_t k = 0; k < n; ++k)
      std::copy(rollouts[i + k].ids.begin(), rollouts[i + k].ids.end(), scratch_.x.begin() + static_cast<std::ptrdiff_t>(k * static_cast<size_t>(T)));
    scratch_.logprobs.resize(scratch_.x.size());
    rm_.body->forward_logprobs(scratch_.x.data(), nullptr, static_cast<int64_t>(n), T, scratch_.logprobs.data(), false);
    const float* h = rm_.body->final_hidden();
    for (size_t k = 0; k < n; ++k) {
      const float* last = h + (static_cast<int64_t>(k) * T + static_cast<int64_t>(rollouts[i + k].ids.size()) - 1) * C;
      double s = 0;
      for (int64_t j = 0; j < C; ++j) s += static_cast<double>(rm_.head[static_cast<size_t>(j)]) * last[j];
      rollouts[i + k].score = s;
    }
  }
}

void RlhfTrainer::token_stats(GPT& model, std::vector<Rollout>& rollouts, size_t first, size_t count, bool training,
                              std::vector<std::vector<double>>& logp, std::vector<std::vector<double>>* values) {
  // Rows: inputs ids[:-1], targets the answer's tokens; answer token j sits at position prompt_len - 1 + j.
  int64_t T = 0;
  for (size_t k = 0; k < count; ++k) T = std::max<int64_t>(T, static_cast<int64_t>(rollouts[first + k].ids.size()) - 1);
  const auto rows = static_cast<int64_t>(count);
  scratch_.x.assign(static_cast<size_t>(rows * T), 0);
  scratch_.y.assign(scratch_.x.size(), kIgnoreTarget);
  for (size_t k = 0; k < count; ++k) {
    const Rollout& r = rollouts[first + k];
    answer_row(r.ids, static_cast<size_t>(r.prompt_len), scratch_.x.data() + k * static_cast<size_t>(T),
               scratch_.y.data() + k * static_cast<size_t>(T));
  }
  scratch_.T = T;
  scratch_.logprobs.resize(scratch_.x.size());
  model.forward_logprobs(scratch_.x.data(), scratch_.y.data(), rows, T, scratch_.logprobs.data(), training);
  const int64_t C = model.config().n_embd;
  const float* h = model.final_hidden();
  logp.assign(count, {});
  if (values != nullptr) values->assign(count, {});
  for (size_t k = 0; k < count; ++k) {
    const Rollout& r = rollouts[first + k];
    for (int64_t t = r.prompt_len - 1; t + 1 < static_cast<int64_t>(r.ids.size()); ++t) {
      logp[k].push_back(scratch_.logprobs[k * static_cast<size_t>(T) + static_cast<size_t>(t)]);
      if (values != nullptr) {
        const float* ht = h + (static_cast<int64_t>(k) * T + t) * C;
        double v = value_head_[static_cast<size_t>(C)];
        for (int64_t j = 0; j < C; ++j) v += static_cast<double>(value_head_[static_cast<size_t>(j)]) * ht[j];
        (*values)[k].push_back(v);
      }
    }
  }
}

LogEntry RlhfTrainer::iterate() {
  const ComputeScope scope(compute_);
  const auto t0 = std::chrono::steady_clock::now();
  const bool ppo = opts_.algo == "ppo";
  const int64_t it = step_;
  const float lr = schedule_.at(it);
  const int64_t per_rank = opts_.batch_prompts / comm_.size();
  const int64_t answers_per_prompt = ppo ? 1 : opts_.group;
  // This rank's prompts: every training prompt once per epoch, in a seeded shuffled order.
  std::vector<const std::vector<int32_t>*> prompts;
  const auto n = static_cast<int64_t>(train_.size());
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (int64_t i = 0; i < per_rank; ++i) {
    const int64_t g = it * opts_.batch_prompts + comm_.rank() * per_rank + i;
    const int64_t epoch = g / n, pos = g % n;
    if (epoch != order_epoch) {
      order.resize(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), int64_t{0});
      Rng rng(mix64(opts_.seed ^ mix64(static_cast<uint64_t>(epoch) + 0x452821e638d01377ull)));
      for (int64_t k = n - 1; k > 0; --k)
        std::swap(order[static_cast<size_t>(k)], order[static_cast<size_t>(rng.next_u64() % static_cast<uint64_t>(k + 1))]);
      order_epoch = epoch;
    }
    for (int64_t a = 0; a < answers_per_prompt; ++a) prompts.push_back(&train_[static_cast<size_t>(order[static_cast<size_t>(pos)])]);
  }
  // Rollouts.
  const auto answers = sample(prompts, false, mix64(opts_.seed ^ mix64(static_cast<uint64_t>(it) * 7919 + static_cast<uint64_t>(comm_.rank()))));
  std::vector<Rollout> rollouts(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Rollout& r = rollouts[i];
    r.ids = *prompts[i];
    r.prompt_len = static_cast<int64_t>(r.ids.size());
    r.ids.insert(r.ids.end(), answers[i].begin(), answers[i].end());
  }
  score(rollouts);
  // Old and reference log-probabilities (and old values), no dropout.
  std::vector<std::vector<double>> lp, vals;
  const size_t chunk = static_cast<size_t>(opts_.minibatch);
  for (size_t i = 0; i < rollouts.size(); i += chunk) {
    const size_t c = std::min(chunk, rollouts.size() - i);
    token_stats(*policy_, rollouts, i, c, false, lp, ppo ? &vals : nullptr);
    for (size_t k = 0; k < c; ++k) {
      rollouts[i + k].old_logp = lp[k];
      if (ppo) rollouts[i + k].values = vals[k];
    }
    token_stats(*reference_, rollouts, i, c, false, lp, nullptr);
    for (size_t k = 0; k < c; ++k) rollouts[i + k].ref_logp = lp[k];
  }
  // Advantages.
  double reward_sum = 0, kl_sum = 0, logp_sum = 0, length_sum = 0;
  int64_t tokens = 0;
  for (const Rollout& r : rollouts) {
    reward_sum += r.score;
    for (size_t k = 0; k < r.old_logp.size(); ++k) kl_sum += r.old_logp[k] - r.ref_logp[k], logp_sum += r.old_logp[k];
    length_sum += static_cast<double>(r.old_logp.size());
    tokens += static_cast<int64_t>(r.ids.size());
  }
  if (ppo) {
    std::vector<double> all;
    for (Rollout& r : rollouts) {
      std::vector<double> rewards(r.old_logp.size());
      for (size_t k = 0; k < rewards.size(); ++k) rewards[k] = -kl_coef_ * (r.old_logp[k] - r.ref_logp[k]);
      rewards.back() += r.score;
      gae(rewards, r.values, opts_.gamma, opts_.lam, r.advantages, r.returns);
      all.insert(all.end(), r.advantages.begin(), r.advantages.end());
    }
    // Whitened over the whole batch: every rank's answers (sums in double, all-reduced).
    double sums[3] = {0, 0, static_cast<double>(all.size())};
    for (double a : all) sums[0] += a, sums[1] += a * a;
    comm_.allreduce_sum(sums, 3);
    const double mean = sums[0] / sums[2];
    const double sd = std::sqrt(std::max(sums[1] / sums[2] - mean * mean, 0.0)) + 1e-8;
    for (Rollout& r : rollouts)
      for (double& a : r.advantages) a = (a - mean) / sd;  // whitened over the batch
  } else {
    for (size_t g = 0; g < rollouts.size(); g += static_cast<size_t>(opts_.group)) {
      double mean = 0, var = 0;
      const auto G = static_cast<double>(opts_.group);
      for (size_t k = g; k < g + static_cast<size_t>(opts_.group); ++k) mean += rollouts[k].score / G;
      for (size_t k = g; k < g + static_cast<size_t>(opts_.group); ++k) var += (rollouts[k].score - mean) * (rollouts[k].score - mean) / G;
      const double sd = std::sqrt(var) + 1e-4;
      for (size_t k = g; k < g + static_cast<size_t>(opts_.group); ++k)
        rollouts[k].advantages.assign(rollouts[k].old_logp.size(), (rollouts[k].score - mean) / sd);
    }
  }
  // Updates: epochs over shuffled minibatches of answers.
  PpoTerms sum;
  int64_t updates = 0;
  float grad_norm = 0;
  Rng shuffle(mix64(opts_.seed ^ mix64(static_cast<uint64_t>(it) + 0x13198a2e03707344ull)));
  std::vector<size_t> batch_order(rollouts.size());
  std::iota(batch_order.begin(), batch_order.end(), size_t{0});
  const int64_t C = policy_->config().n_embd;
  for (int64_t epoch = 0; epoch < opts_.ppo_epochs; ++epoch) {
    for (size_t i = batch_order.size() - 1; i > 0; --i) std::swap(batch_order[i], batch_order[shuffle.next_u64() % (i + 1)]);
    for (size_t i = 0; i < batch_order.size(); i += chunk) {
      const size_t c = std::min(chunk, batch_order.size() - i);
      std::vector<Rollout> batch;
      for (size_t k = 0; k < c; ++k) batch.push_back(rollouts[batch_order[i + k]]);
      policy_->zero_grad();
      policy_->set_dropout_seed(mix64(opts_.seed ^ mix64(static_cast<uint64_t>(opt_steps_) + 0x6a09e667ull)),
                                static_cast<int64_t>(comm_.rank()) * static_cast<int64_t>(rollouts.size()) + static_cast<int64_t>(i));
      token_stats(*policy_, batch, 0, c, true, lp, ppo ? &vals : nullptr);
      std::vector<double> new_lp, old_lp, adv, v, v_old, ret, ref;
      for (size_t k = 0; k < c; ++k) {
        const Rollout& r = batch[k];
        new_lp.insert(new_lp.end(), lp[k].begin(), lp[k].end());
        old_lp.insert(old_lp.end(), r.old_logp.begin(), r.old_logp.end());
        adv.insert(adv.end(), r.advantages.begin(), r.advantages.end());
        ref.insert(ref.end(), r.ref_logp.begin(), r.ref_logp.end());
        if (ppo) {
          v.insert(v.end(), vals[k].begin(), vals[k].end());
          v_old.insert(v_old.end(), r.values.begin(), r.values.end());
          ret.insert(ret.end(), r.returns.begin(), r.returns.end());
        }
      }
      std::vector<double> d_lp, d_v;
      const PpoTerms t = ppo_objective(new_lp, old_lp, adv, ppo ? &v : nullptr, ppo ? &v_old : nullptr,
                                       ppo ? &ret : nullptr, ppo ? nullptr : &ref, opts_.clip_range, opts_.value_clip,
                                       opts_.vf_coef, ppo ? 0.0 : kl_coef_, d_lp, d_v);
      // Back to the rows: d(loss)/d(log-probability) per answer token, and the value head's
      // gradient on the final hidden states.
      const int64_t T = scratch_.T;
      scratch_.dlogprobs.assign(static_cast<size_t>(static_cast<int64_t>(c) * T), 0.0f);
      if (ppo) scratch_.dhidden.assign(static_cast<size_t>(static_cast<int64_t>(c) * T * C), 0.0f);
      std::fill(value_grad_.begin(), value_grad_.end(), 0.0f);
      const float* h = policy_->final_hidden();
      size_t at = 0;
      for (size_t k = 0; k < c; ++k) {
        const Rollout& r = batch[k];
        for (int64_t pos = r.prompt_len - 1; pos + 1 < static_cast<int64_t>(r.ids.size()); ++pos, ++at) {
          const size_t cell = k * static_cast<size_t>(T) + static_cast<size_t>(pos);
          scratch_.dlogprobs[cell] = static_cast<float>(d_lp[at]);
          if (ppo) {
            const float* ht = h + static_cast<int64_t>(cell) * C;
            for (int64_t j = 0; j < C; ++j) {
              scratch_.dhidden[cell * static_cast<size_t>(C) + static_cast<size_t>(j)] =
                  static_cast<float>(d_v[at] * value_head_[static_cast<size_t>(j)]);
              value_grad_[static_cast<size_t>(j)] += static_cast<float>(d_v[at] * ht[j]);
            }
            value_grad_[static_cast<size_t>(C)] += static_cast<float>(d_v[at]);
          }
        }
      }
      policy_->backward_logprobs(scratch_.dlogprobs.data(), ppo ? scratch_.dhidden.data() : nullptr);
      grad_norm = optimizer_->apply(*policy_, lr, opt_steps_ + 1);
      if (ppo) {
        comm_.allreduce_mean(value_grad_.data(), value_grad_.size());
        clip_grad_norm(value_grad_.data(), value_grad_.size(), static_cast<float>(opts_.grad_clip));
        value_opt_->step(value_head_.data(), value_grad_.data(), lr);
      }
      ++opt_steps_;
      ++updates;
      sum.loss += t.loss, sum.policy_loss += t.policy_loss, sum.value_loss += t.value_loss, sum.kl += t.kl;
      sum.clip_fraction += t.clip_fraction;
    }
  }
  // Metrics over every rank's rollouts.
  double m[8] = {reward_sum, kl_sum, logp_sum, length_sum, static_cast<double>(rollouts.size()),
                 sum.loss / updates, sum.clip_fraction / updates, sum.value_loss / updates};
  comm_.allreduce_sum(m, 8);
  const double answers_all = m[4];
  const double kl = m[1] / answers_all;
  if (ppo && opts_.kl_target > 0) {
    // Ziegler et al.'s proportional controller, one step per iteration.
    const double e = std::clamp(kl / opts_.kl_target - 1.0, -0.2, 0.2);
    kl_coef_ *= 1.0 + 0.1 * e;
  }
  const double ranks = comm_.size();
  LogEntry e;
  e.step = it + 1;
  e.loss = static_cast<float>(m[5] / ranks);
  e.lr = lr;
  e.grad_norm = grad_norm;
  e.extra = {{"reward", m[0] / answers_all},
             {"kl", kl},
             {"entropy", -m[2] / std::max(1.0, m[3])},
             {"clip_fraction", m[6] / ranks},
             {"response_length", m[3] / answers_all},
             {"kl_coef", kl_coef_}};
  if (ppo) e.extra["value_loss"] = m[7] / ranks;
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  e.tokens_per_sec = static_cast<double>(tokens) * ranks / dt;
  step_ = it + 1;
  return e;
}

double RlhfTrainer::evaluate() {
  const ComputeScope scope(compute_);
  std::vector<const std::vector<int32_t>*> prompts;
  for (size_t i = static_cast<size_t>(comm_.rank()); i < val_.size(); i += static_cast<size_t>(comm_.size()))
    prompts.push_back(&val_[i]);
  double total = 0;
  if (!prompts.empty()) {
    const auto answers = sample(prompts, true, opts_.seed);
    std::vector<Rollout> rollouts(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      rollouts[i].ids = *prompts[i];
      rollouts[i].ids.insert(rollouts[i].ids.end(), answers[i].begin(), answers[i].end());
    }
    score(rollouts);
    for (const Rollout& r : rollouts) total += r.score;
  }
  comm_.allreduce_sum(&total, 1);
  return total / static_cast<double>(val_.size());
}

void RlhfTrainer::save() {
  if (comm_.is_root()) {
    const nlohmann::json state = {{"step", step_}, {"options", opts_.to_json()}, {"task", "rlhf"}, {"kl_coef", kl_coef_}};
    CheckpointContents c;
    c.model = policy_.get();
    c.tokenizer = tokenizer_.get();
    c.trainer_state = &state;
    if (chat_template_) c.chat_template = &*chat_template_;
    if (policy_->lora() != nullptr) {
      c.adapter = policy_->lora();
      c.adapter_base = opts_.policy;
      c.adapter_base_vocab = base_vocab_;
      c.adapter_base_model = policy_.get();
    }
    save_checkpoint(opts_.out, c);
  }
  comm_.barrier();
}

void RlhfTrainer::run(const StepCallback& on_step) {
  while (step_ < opts_.max_iters) {
    LogEntry e = iterate();
    if (step_ % opts_.eval_interval == 0 || step_ == opts_.max_iters) e.extra["val_reward"] = evaluate();
    if (log_) log_->append(e);
    if (on_step) on_step(e);
  }
  save();
}

}  // namespace gpt
