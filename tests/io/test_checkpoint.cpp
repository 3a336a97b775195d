// Checkpoints: what is saved loads back identically, foreign files survive a
// save, and mismatched or damaged checkpoints are refused with a clear reason.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "gpt/io/checkpoint.h"
#include "gpt/model/gpt.h"
#include "gpt/tokenizer/tokenizer.h"
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
  model.allocate_gradients();
  model.grads.assign(model.grads.size(), 0.1f);
  opt.step(model.params.data(), model.grads.data(), 1e-3f);
  nlohmann::json state = {{"step", 1}, {"options", nlohmann::json::object()}};
  save_checkpoint(dir / "ckpt", {&model, tok.get(), opt.m().data(), opt.v().data(), opt.steps_taken(), &state});

  for (const char* f : {"config.json", "model.safetensors", "tokenizer.gpt.json", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(dir / "ckpt" / f)) << f;
  for (const auto& e : fs::directory_iterator(dir.path()))  // no staging directory left behind
    EXPECT_EQ(e.path().filename().string().find("ckpt.tmp"), std::string::npos) << e.path();

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
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find("ckpt.tmp"), std::string::npos) << e.path();
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

TEST(Checkpoint, AConfigThatDisagreesWithTheWeightsIsAnErrorBeforeAnyLargeAllocation) {
  // A 1 KB model.safetensors beside a config.json claiming a one-layer GPT-2 4096
  // wide (~420M parameters, 1.7 GB): the header is checked against the config
  // before the model is allocated, so the error comes at once and costs nothing.
  testing::TempDir dir;
  GPT small(small_config());
  small.init_weights(1);
  const auto tok = make_byte_tokenizer();
  ModelConfig c = small_config();
  c.vocab_size = 256;
  GPT byte_model(c);
  byte_model.init_weights(1);
  save_checkpoint(dir / "m", {&byte_model, tok.get()});
  ModelConfig huge = c;
  huge.n_layer = 1;
  huge.n_embd = 4096;
  huge.n_head = 32;
  huge.vocab_size = 50257;
  huge.block_size = 1024;
  write_file_atomic(dir / "m" / "config.json", huge.to_json().dump(2));
  try {
    load_model(dir / "m");
    FAIL() << "a config that disagrees with the weights loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("disagree"), std::string::npos) << e.what();
  }
  const testing::MeasuredRun r = testing::run_gpt_measured("generate --model " + (dir / "m").string() +
                                                           " --prompt hi --max-tokens 1");
  EXPECT_EQ(r.exit_code, 1);
  if (!testing::kUnderAddressSanitizer) {
    EXPECT_LT(r.peak_rss_bytes, 200L << 20) << "peak resident memory of the failed load";
    EXPECT_LT(r.seconds, 10.0);
  }
}

TEST(Checkpoint, GradientsAreAllocatedOnlyForTraining) {
  GPT model(small_config());
  EXPECT_TRUE(model.grads.empty());  // inference holds the weights only
  model.zero_grad();
  EXPECT_EQ(model.grads.size(), model.num_parameters());
}

TEST(Checkpoint, SavingWhereAFileStandsIsAnErrorAndKeepsTheFile) {
  testing::TempDir dir;
  GPT model(small_config());
  model.init_weights(1);
  const auto tok = make_char_tokenizer("abcde");
  write_file_atomic(dir / "notes.txt", "keep me");
  EXPECT_THROW(save_checkpoint(dir / "notes.txt", {&model, tok.get()}), Error);
  EXPECT_EQ(read_text_file(dir / "notes.txt"), "keep me");
  write_file_atomic(dir / "file", "x");  // a parent that is a file: one-line error, not std::filesystem_error
  EXPECT_THROW(save_checkpoint(dir / "file" / "ckpt", {&model, tok.get()}), Error);
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace gpt
