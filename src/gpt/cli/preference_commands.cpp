// gpt reward (train a reward model on preference pairs; score pairs with one),
// gpt dpo (Direct Preference Optimization of a policy: finetune/preference_trainer.h)
// gpt rlhf (PPO or GRPO against a reward model: finetune/rlhf.h) and gpt kl (how
// far a tuned policy moved from its reference).
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "gpt/cli/commands.h"
#include "gpt/cli/loss_plot.h"
#include "gpt/finetune/preference_trainer.h"
#include "gpt/finetune/rlhf.h"
#include "gpt/io/model_loader.h"
#include "gpt/kernels/compute_context.h"
#include "gpt/util/error.h"
#include "gpt/util/progress.h"

namespace gpt::cli {
namespace {

void add_preference_flags(CLI::App* app, PreferenceOptions& o) {
  app->add_option("--data", o.data,
                  "Preference pairs: JSON lines {\"prompt\", \"chosen\", \"rejected\"} (strings or message lists)")
      ->required();
  app->add_option("--out", o.out, "Output directory")->required();
  app->add_option("--log", o.log, "JSON-lines log (default: OUT/train_log.jsonl)");
  app->add_option("--chat-template", o.chat_template, "chatml or llama3 (default: the model's own; chatml for message lists)");
  app->add_option("--block-size", o.block_size, "Context in tokens (0: the model's; longer pairs are cut)")->capture_default_str();
  app->add_option("--batch-size", o.batch_size, "Pairs per optimizer step")->capture_default_str();
  app->add_option("--max-iters", o.max_iters, "Optimizer steps")->capture_default_str();
  app->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  app->add_option("--min-lr", o.min_lr, "Learning rate at the end of the cosine decay")->capture_default_str();
  app->add_option("--warmup-iters", o.warmup_iters, "Linear warmup steps")->capture_default_str();
  app->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  app->add_option("--grad-clip", o.grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  app->add_option("--eval-interval", o.eval_interval, "Steps between held-out evaluations")->capture_default_str();
  app->add_option("--val-fraction", o.val_fraction, "Share of the pairs held out")->capture_default_str();
  app->add_option("--seed", o.seed, "Seed for the split, the order and the head")->capture_default_str();
  app->add_option("--threads", o.threads, "Threads (0: all cores)")->capture_default_str();
  app->add_option("--dtype", o.dtype, "Matrix products: fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
}

int run_preference(const PreferenceOptions& o, bool quiet, const std::string& what) {
  PreferenceTrainer t(o);
  const bool root = t.comm().is_root();
  if (root && !quiet) {
    std::fprintf(stderr, "gpt: %lld preference pairs (%lld train, %lld held out)%s, %s\n",
                 static_cast<long long>(t.train_pairs() + t.val_pairs()), static_cast<long long>(t.train_pairs()),
                 static_cast<long long>(t.val_pairs()),
                 t.dropped_pairs() > 0 ? (", " + std::to_string(t.dropped_pairs()) + " dropped (a response past the context)").c_str() : "",
                 what.c_str());
  }
  ProgressLine progress(o.max_iters, 0, std::max<int64_t>(1, o.eval_interval));
  std::optional<double> val_acc;
  LogEntry last;
  t.run([&](const LogEntry& e) {
    last = e;
    if (e.extra.contains("val_accuracy")) val_acc = e.extra["val_accuracy"].get<double>();
    if (!root || quiet) return;
    char fields[200];
    std::snprintf(fields, sizeof fields, "loss %.4f | acc %.2f | margin %+.3f | val acc %s | lr %.2e", e.loss,
                  e.extra["accuracy"].get<double>(), e.extra["margin"].get<double>(),
                  val_acc ? std::to_string(*val_acc).substr(0, 4).c_str() : "-", e.lr);
    progress.update(e.step, fields, e.val_loss.has_value());
  });
  if (!root) return 0;
  if (!quiet) progress.finish();
  const std::filesystem::path plot = std::filesystem::path(o.out) / "loss.svg";
  draw_training_log(t.log_path().string(), plot.string(), what + ": " + o.data);
  draw_log_metric(t.log_path().string(), "accuracy", (std::filesystem::path(o.out) / "accuracy.svg").string(),
                  what + ": pairs ranked right");
  nlohmann::json summary = {{"steps", t.steps_done()}, {"loss", last.loss}, {"out", o.out}};
  if (last.val_loss) summary["val_loss"] = *last.val_loss;
  for (const char* k : {"val_accuracy", "val_margin"})
    if (last.extra.contains(k)) summary[k] = last.extra[k];
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

}  // namespace

Command add_reward_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("reward", "Train a reward model on preference pairs, or score pairs with one");
  app->require_subcommand(1);
  app->footer("\nExamples:\n  gpt reward train --init-from out/chat --data prefs.jsonl --out out/rm\n"
              "  gpt reward score --model out/rm --data heldout.jsonl");
  auto o = std::make_shared<PreferenceOptions>();
  o->mode = "reward";
  o->lr = 1e-4;
  o->min_lr = 1e-5;
  auto quiet = std::make_shared<bool>(false);
  CLI::App* train = app->add_subcommand("train", "Bradley-Terry loss on a scalar head over the last token's hidden state");
  train->add_option("--init-from", o->init_from, "The model to start from (an SFT model, checkpoint, Hugging Face dir or GGUF)")
      ->required();
  add_preference_flags(train, *o);
  train->add_flag("--quiet", *quiet, "No progress display");

  struct Score {
    std::string model, data;
    int64_t batch = 8;
    int threads = 0;
  };
  auto s = std::make_shared<Score>();
  CLI::App* score = app->add_subcommand("score", "Pairwise accuracy and mean margin of a reward model on pairs (a JSON line)");
  score->add_option("--model", s->model, "A reward model (gpt reward train's output)")->required();
  score->add_option("--data", s->data, "Preference pairs (JSON lines)")->required();
  score->add_option("--batch-size", s->batch, "Pairs per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  score->add_option("--threads", s->threads, "Threads (0: all cores)")->check(CLI::NonNegativeNumber);

  auto run = [app, train, o, quiet, s]() -> int {
    if (app->got_subcommand(train)) return run_preference(*o, *quiet, "reward model");
    ComputeContext compute({MatmulPrecision::kFloat32, s->threads});
    const ComputeScope scope(compute);
    RewardModel rm = load_reward_model(s->model);
    int64_t dropped = 0;
    const PreferenceMetrics m = score_preferences(rm, read_preference_jsonl(s->data), s->batch, &dropped);
    nlohmann::json out = {{"pairs", m.pairs}, {"accuracy", m.accuracy}, {"mean_margin", m.margin}, {"loss", m.loss}};
    if (dropped > 0) out["dropped"] = dropped;
    std::printf("%s\n", out.dump().c_str());
    return 0;
  };
  return {app, run};
}

Command add_dpo_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("dpo", "Direct Preference Optimization: tune a policy on preference pairs");
  app->footer("\nThe reference is the starting policy: its log-probabilities of every pair are computed once.\n"
              "\nExamples:\n  gpt dpo --policy out/chat --data prefs.jsonl --out out/dpo --beta 0.1\n"
              "  gpt dpo --policy out/chat --data prefs.jsonl --out out/dpo-adapter --lora-rank 8 --lr 1e-4");
  auto o = std::make_shared<PreferenceOptions>();
  o->mode = "dpo";
  auto quiet = std::make_shared<bool>(false);
  app->add_option("--policy", o->init_from, "The policy to tune (an SFT model, checkpoint, Hugging Face dir or GGUF)")
      ->required();
  add_preference_flags(app, *o);
  app->add_option("--beta", o->beta, "How far from the reference the policy may move (DPO's temperature)")->capture_default_str();
  app->add_option("--lora-rank", o->lora_rank, "LoRA: train rank-R adapters, the policy frozen (0: all weights)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--lora-alpha", o->lora_alpha, "LoRA: the update is scaled by alpha / rank")->capture_default_str();
  app->add_option("--lora-dropout", o->lora_dropout, "LoRA: dropout on the adapters' input")->capture_default_str();
  app->add_option("--lora-targets", o->lora_targets, "LoRA: c_attn, attn.c_proj, c_fc, mlp.c_proj, all")->capture_default_str();
  app->add_flag("--quiet", *quiet, "No progress display");
  auto run = [o, quiet]() -> int { return run_preference(*o, *quiet, "DPO"); };
  return {app, run};
}

Command add_rlhf_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("rlhf", "Reinforcement learning from a reward model: PPO or GRPO");
  app->footer("\nEach iteration samples answers from the policy (batched decoding), scores them with the reward\n"
              "model, and updates the policy; a KL term keeps it near where it started.\n"
              "\nExamples:\n  gpt rlhf --policy out/chat --reward out/rm --prompts prompts.jsonl --out out/ppo\n"
              "  gpt rlhf --algo grpo --group 8 --policy out/chat --reward out/rm --prompts prompts.jsonl --out out/grpo");
  auto o = std::make_shared<RlhfOptions>();
  auto quiet = std::make_shared<bool>(false);
  app->add_option("--algo", o->algo, "ppo (value head, GAE) or grpo (group-relative, no value head)")
      ->check(CLI::IsMember({"ppo", "grpo"}))->capture_default_str();
  app->add_option("--policy", o->policy, "The policy to tune (an SFT model)")->required();
  app->add_option("--reward", o->reward, "The reward model (gpt reward train's output; the policy's vocabulary)")->required();
  app->add_option("--prompts", o->prompts, "Prompts: JSON lines {\"prompt\": text or messages}")->required();
  app->add_option("--out", o->out, "Output directory")->required();
  app->add_option("--log", o->log, "JSON-lines log (default: OUT/train_log.jsonl)");
  app->add_option("--max-iters", o->max_iters, "Iterations (rollouts + updates)")->capture_default_str();
  app->add_option("--batch-size", o->batch_prompts, "Prompts per iteration")->capture_default_str();
  app->add_option("--group", o->group, "GRPO: answers per prompt")->capture_default_str();
  app->add_option("--max-new-tokens", o->max_new_tokens, "Longest answer")->capture_default_str();
  app->add_option("--ppo-epochs", o->ppo_epochs, "Passes over each iteration's answers")->capture_default_str();
  app->add_option("--minibatch", o->minibatch, "Answers per optimizer step (on each rank under mpirun)")->capture_default_str();
  app->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  app->add_option("--min-lr", o->min_lr, "Learning rate at the end of the cosine decay")->capture_default_str();
  app->add_option("--warmup-iters", o->warmup_iters, "Linear warmup iterations")->capture_default_str();
  app->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app->add_option("--grad-clip", o->grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  app->add_option("--kl-coef", o->kl_coef, "PPO: per-token KL penalty in the reward; GRPO: the KL term's weight")->capture_default_str();
  app->add_option("--kl-target", o->kl_target, "PPO: adapt --kl-coef toward this KL per answer (0: fixed)")->capture_default_str();
  app->add_option("--clip-range", o->clip_range, "Clip of the probability ratio")->capture_default_str();
  app->add_option("--value-clip", o->value_clip, "PPO: clip of the value change")->capture_default_str();
  app->add_option("--vf-coef", o->vf_coef, "PPO: weight of the value loss")->capture_default_str();
  app->add_option("--gamma", o->gamma, "PPO: discount")->capture_default_str();
  app->add_option("--lam", o->lam, "PPO: GAE lambda")->capture_default_str();
  app->add_option("--val-fraction", o->val_fraction, "Share of the prompts held out (answered greedily, scored)")->capture_default_str();
  app->add_option("--eval-interval", o->eval_interval, "Iterations between held-out scores")->capture_default_str();
  app->add_option("--seed", o->seed, "Seed for sampling, the split and the order")->capture_default_str();
  app->add_option("--threads", o->threads, "Threads (0: all cores)")->capture_default_str();
  app->add_option("--dtype", o->dtype, "Matrix products: fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  app->add_option("--lora-rank", o->lora_rank, "LoRA: train rank-R adapters, the policy frozen (0: all weights)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--lora-alpha", o->lora_alpha, "LoRA: the update is scaled by alpha / rank")->capture_default_str();
  app->add_option("--lora-targets", o->lora_targets, "LoRA: c_attn, attn.c_proj, c_fc, mlp.c_proj, all")->capture_default_str();
  app->add_flag("--quiet", *quiet, "No progress display");
  auto run = [o, quiet]() -> int {
    RlhfTrainer t(*o);
    const bool root = t.comm().is_root();
    if (root && !*quiet) {
      std::fprintf(stderr, "gpt: %s, %lld prompts (%lld held out)%s, %lld answers per iteration\n",
                   o->algo == "ppo" ? "PPO" : "GRPO", static_cast<long long>(t.train_prompts() + t.val_prompts()),
                   static_cast<long long>(t.val_prompts()),
                   t.dropped_prompts() > 0
                       ? (", " + std::to_string(t.dropped_prompts()) + " dropped (no room for an answer)").c_str()
                       : "",
                   static_cast<long long>(o->batch_prompts * (o->algo == "ppo" ? 1 : o->group)));
    }
    ProgressLine progress(o->max_iters, 0, std::max<int64_t>(1, o->eval_interval));
    std::optional<double> val;
    LogEntry last;
    t.run([&](const LogEntry& e) {
      last = e;
      if (e.extra.contains("val_reward")) val = e.extra["val_reward"].get<double>();
      if (!root || *quiet) return;
      char fields[220];
      std::snprintf(fields, sizeof fields, "reward %+.3f | kl %.3f | clip %.2f | len %.1f | val reward %s",
                    e.extra["reward"].get<double>(), e.extra["kl"].get<double>(), e.extra["clip_fraction"].get<double>(),
                    e.extra["response_length"].get<double>(), val ? std::to_string(*val).substr(0, 6).c_str() : "-");
      progress.update(e.step, fields, e.extra.contains("val_reward"));
    });
    if (!root) return 0;
    if (!*quiet) progress.finish();
    // The curves RLHF is judged by, beside the loss: reward (held-out val_reward), KL to the reference.
    const std::string what = o->algo == "ppo" ? "PPO" : "GRPO";
    draw_training_log(t.log_path().string(), (std::filesystem::path(o->out) / "loss.svg").string(), what + " loss: " + o->prompts);
    draw_log_metric(t.log_path().string(), "reward", (std::filesystem::path(o->out) / "reward.svg").string(),
                    what + " reward (held out: greedy answers)");
    draw_log_metric(t.log_path().string(), "kl", (std::filesystem::path(o->out) / "kl.svg").string(),
                    what + ": KL to the reference per answer");
    nlohmann::json summary = {{"iterations", t.steps_done()}, {"out", o->out}};
    for (const char* k : {"reward", "kl", "val_reward"})
      if (last.extra.contains(k)) summary[k] = last.extra[k];
    std::printf("%s\n", summary.dump().c_str());
    return 0;
  };
  return {app, run};
}

Command add_kl_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("kl", "How far a tuned policy moved from its reference: KL per answer");
  app->footer("\nSamples answers from the policy (temperature 1) and prints, as one JSON line, the mean over\n"
              "answers of sum(log p_policy - log p_reference) over each answer's tokens: KL(policy || reference)\n"
              "of whole answers, in nats, with its standard error.\n"
              "\nExample:\n  gpt kl --model out/dpo --reference out/sft --prompts heldout.jsonl --samples 4");
  struct Flags {
    std::string model, reference, prompts, adapter;
    int64_t samples = 4, max_new_tokens = 32, batch = 16;
    uint64_t seed = 1;
    int threads = 0;
  };
  auto f = std::make_shared<Flags>();
  app->add_option("--model", f->model, "The tuned policy (checkpoint, Hugging Face dir or GGUF)")->required();
  app->add_option("--adapter", f->adapter, "A LoRA adapter merged into --model when it loads");
  app->add_option("--reference", f->reference, "Where it started (the SFT model)")->required();
  app->add_option("--prompts", f->prompts, "Prompts: JSON lines {\"prompt\": text or messages}")->required();
  app->add_option("--samples", f->samples, "Answers per prompt")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-new-tokens", f->max_new_tokens, "Longest answer")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--batch-size", f->batch, "Answers per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--seed", f->seed, "Seed for sampling")->capture_default_str();
  app->add_option("--threads", f->threads, "Threads (0: all cores)")->capture_default_str();
  auto run = [f]() -> int {
    ComputeContext compute({MatmulPrecision::kFloat32, std::max(f->threads, 0)});
    const ComputeScope scope(compute);
    ModelOpenOptions options{.dequantize = true, .convert_to = std::nullopt, .panels = false, .adapter = f->adapter};
    OpenedModel policy = open_model(f->model, options);
    options.adapter.clear();
    OpenedModel reference = open_model(f->reference, options);
    GPT_CHECK(same_tokens(*policy.tokenizer, *reference.tokenizer),
              "the reference's vocabulary differs from the policy's: compare a policy with the model it was tuned from");
    const std::string policy_template = policy.chat_template ? policy.chat_template->name() : "plain text";
    const std::string reference_template = reference.chat_template ? reference.chat_template->name() : "plain text";
    GPT_CHECK(policy_template == reference_template, "the policy writes conversations as " + policy_template +
                                                         ", the reference as " + reference_template);
    bool plain = true;
    const auto messages = read_prompt_jsonl(f->prompts, &plain);
    const ChatTemplate* tmpl = policy.chat_template ? &*policy.chat_template : nullptr;
    GPT_CHECK(plain || tmpl != nullptr, "prompts as message lists need a policy with a chat template (gpt sft makes one)");
    int64_t dropped = 0;
    const auto prompts = encode_prompts(messages, *policy.tokenizer, tmpl,
                                        std::min(policy.fp32->config().block_size, reference.fp32->config().block_size),
                                        &dropped);
    GPT_CHECK(!prompts.empty(), "no prompt leaves room for an answer in the context");
    const KlEstimate e = estimate_kl(*policy.fp32, *reference.fp32, prompts, f->samples, f->max_new_tokens,
                                     answer_stop_tokens(*policy.tokenizer, tmpl), f->seed, f->batch);
    const auto round4 = [](double v) { return std::round(v * 1e4) / 1e4; };
    nlohmann::json out = {{"prompts", e.prompts}, {"answers", e.answers}, {"kl", round4(e.kl)},
                          {"kl_std_error", round4(e.std_error)}, {"mean_answer_tokens", round4(e.mean_length)}};
    if (dropped > 0) out["dropped_prompts"] = dropped;
    std::printf("%s\n", out.dump().c_str());
    return 0;
  };
  return {app, run};
}

}  // namespace gpt::cli
