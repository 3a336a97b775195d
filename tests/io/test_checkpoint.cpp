// Checkpoints: what is saved loads back identically, foreign files survive a
// save, and mismatched or damaged checkpoints are refused with a clear reason.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "gpt/io/checkpoint.h"
#include "gpt/io/safetensors.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {
namespace fs = std::filesystem;

ModelConfig small_config() {
  return testing::model_config(5, 8, 2, 2, 8);
}

TEST(Checkpoint, SaveThenLoadGivesTheSameModelAndOptimizer) {
  testing::TempDir dir;
  GPT model(small_config());
  model.init_weights(3);
  auto tok = make_char_tokenizer("abcde");
  AdamW opt(model.layout(), {});
  model.grads.assign(model.grads.size(), 0.1f);
  opt.step(model.params.data(), model.grads.data(), 1e-3f);
  nlohmann::json state = {{"step", 1}, {"options", nlohmann::json::object()}};
  save_checkpoint(dir / "ckpt", {&model, tok.get(), opt.m().data(), opt.v().data(), opt.steps_taken(), &state});

  for (const char* f : {"config.json", "model.safetensors", "tokenizer.gpt.json", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(dir / "ckpt" / f)) << f;
  EXPECT_FALSE(fs::exists(dir / "ckpt.tmp"));

  LoadedModel loaded = load_model(dir / "ckpt");
  EXPECT_EQ(loaded.model->params, model.params);
  EXPECT_EQ(loaded.tokenizer->encode("cab"), tok->encode("cab"));
  AdamW opt2(loaded.model->layout(), {});
  const OptimizerState saved = load_optimizer_state(dir / "ckpt", loaded.model->layout());
  opt2.load(saved.m.data(), saved.v.data(), saved.steps);
  EXPECT_EQ(opt2.m(), opt.m());
  EXPECT_EQ(opt2.v(), opt.v());
  EXPECT_EQ(opt2.steps_taken(), 1);
  EXPECT_EQ(load_trainer_state(dir / "ckpt")["step"], 1);

  // Hugging Face names and Conv1D (in, out) layouts.
  const auto st = SafetensorsFile::load(dir / "ckpt" / "model.safetensors");
  EXPECT_EQ(st.entry("wte.weight").shape, (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(st.entry("h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{8, 24}));
  EXPECT_EQ(st.entry("h.0.mlp.c_proj.weight").shape, (std::vector<int64_t>{32, 8}));
  EXPECT_FALSE(st.contains("lm_head.weight"));  // tied
  const auto cfg = nlohmann::json::parse(read_text_file(dir / "ckpt" / "config.json"));
  EXPECT_EQ(cfg["model_type"], "gpt2");
  EXPECT_EQ(cfg["n_positions"], 8);
}

TEST(Checkpoint, SavingAgainReplacesTheCheckpointAndKeepsForeignFiles) {
  testing::TempDir dir;
  GPT model(small_config());
  model.init_weights(1);
  auto tok = make_byte_tokenizer();
  ModelConfig c = small_config();
  c.vocab_size = 256;
  GPT byte_model(c);
  byte_model.init_weights(1);
  save_checkpoint(dir / "ckpt", {&byte_model, tok.get(), nullptr, nullptr, 0, nullptr});
  append_line(dir / "ckpt" / "train_log.jsonl", "{\"step\":1}");
  byte_model.params[0] = 42.0f;
  save_checkpoint(dir / "ckpt/", {&byte_model, tok.get(), nullptr, nullptr, 0, nullptr});
  EXPECT_EQ(read_text_file(dir / "ckpt" / "train_log.jsonl"), "{\"step\":1}\n");
  EXPECT_EQ(load_model(dir / "ckpt").model->params[0], 42.0f);
  EXPECT_FALSE(fs::exists(dir / "ckpt.tmp"));
}

TEST(Checkpoint, RefusesMismatchedOrDamagedCheckpoints) {
  testing::TempDir dir;
  auto tok = make_byte_tokenizer();
  ModelConfig c = small_config();
  c.vocab_size = 256;
  GPT model(c);
  save_checkpoint(dir / "ckpt", {&model, tok.get(), nullptr, nullptr, 0, nullptr});

  auto error_of = [&]() -> std::string {
    try {
      load_model(dir / "ckpt");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of(), "");
  // config says 3 layers, weights hold 2
  auto cfg = nlohmann::json::parse(read_text_file(dir / "ckpt" / "config.json"));
  cfg["n_layer"] = 3;
  write_file_atomic(dir / "ckpt" / "config.json", cfg.dump());
  EXPECT_NE(error_of().find("missing tensor 'h.2.ln_1.weight'"), std::string::npos) << error_of();
  cfg["n_layer"] = 2;
  cfg["n_embd"] = 16;
  write_file_atomic(dir / "ckpt" / "config.json", cfg.dump());
  EXPECT_NE(error_of().find("has shape [256, 8] but the model expects [256, 16]"), std::string::npos) << error_of();
  cfg["n_embd"] = 8;
  cfg["n_head"] = 3;
  write_file_atomic(dir / "ckpt" / "config.json", cfg.dump());
  EXPECT_NE(error_of().find("must divide"), std::string::npos) << error_of();
  cfg["n_head"] = 2;
  write_file_atomic(dir / "ckpt" / "config.json", cfg.dump());
  // truncated weights
  auto bytes = read_binary_file(dir / "ckpt" / "model.safetensors");
  write_file_atomic(dir / "ckpt" / "model.safetensors",
                    std::string(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(bytes.size() / 2)));
  EXPECT_NE(error_of().find("truncated"), std::string::npos) << error_of();
  fs::remove(dir / "ckpt" / "model.safetensors");
  EXPECT_NE(error_of().find("has no model.safetensors"), std::string::npos) << error_of();
  EXPECT_THROW(load_model(dir / "nowhere"), Error);
}

}  // namespace
}  // namespace gpt
