// gpt sft: supervised fine-tuning on conversations (chat format), full or LoRA.
#include <memory>
#include <string>

#include "gpt/cli/commands.h"
#include "gpt/cli/training_flags.h"
#include "gpt/tokenizer/chat_template.h"
#include "gpt/util/error.h"

namespace gpt::cli {

Command add_sft_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("sft", "Fine-tune a model on conversations to answer as an assistant");
  app->footer(
      "\nData: JSON lines, one conversation each: {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, "
      "{\"role\": \"assistant\", \"content\": \"...\"}]}\n"
      "Only the assistant's replies are learned. The chat template's markers become new tokens.\n"
      "\nExamples:\n  gpt sft --init-from out/mymodel --data chats.jsonl --out out/assistant\n"
      "  gpt sft --init-from gpt2 --data chats.jsonl --out out/adapter --lora-rank 8 --lora-alpha 16\n"
      "  gpt chat --model out/assistant --message \"What is a transformer?\"\n"
      "  gpt chat --model gpt2 --adapter out/adapter");
  auto o = std::make_shared<TrainOptions>();
  o->task = "sft";
  o->block_size = 0;  // the model's context
  o->batch_size = 8;
  o->max_iters = 300;
  o->lr = 1e-4;
  o->min_lr = 1e-5;
  o->warmup_iters = 20;
  o->weight_decay = 0.0;
  o->eval_interval = 50;
  o->out = "out/sft";
  auto resume = std::make_shared<std::string>();
  auto config = std::make_shared<std::string>();
  add_training_flags(app, *o, *resume, *config);
  app->add_option("--init-from", o->init_from,
                  "The model to fine-tune (checkpoint, Hugging Face GPT-2 or Llama dir, or GGUF file)");
  std::string names;
  for (const auto& n : ChatTemplate::names()) names += (names.empty() ? "" : ", ") + n;
  app->add_option("--chat-template", o->chat_template,
                  "How conversations are written: " + names + " (default: the model's own, else chatml)");
  app->add_option("--packing", o->packing,
                  "Chats end to end in rows of the context's length, attention kept inside each (on), or one "
                  "padded row per chat (off): the same loss either way")
      ->capture_default_str();
  app->add_option("--lora-rank", o->lora_rank, "LoRA: train rank-R adapters, the model frozen (0: full fine-tuning)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--lora-alpha", o->lora_alpha, "LoRA: the update is scaled by alpha / rank")->capture_default_str();
  app->add_option("--lora-dropout", o->lora_dropout, "LoRA: dropout on the adapters' input")->capture_default_str();
  app->add_option("--lora-targets", o->lora_targets,
                  "LoRA: which products get adapters (c_attn, attn.c_proj, c_fc, mlp.c_proj, all)")
      ->capture_default_str();
  auto run = [app, o, resume, config]() -> int {
    GPT_CHECK(!o->init_from.empty() || !resume->empty(), "gpt sft needs --init-from MODEL (or --resume DIR)");
    return run_training(app, *o, *resume, *config, {});
  };
  return {app, run};
}

}  // namespace gpt::cli
