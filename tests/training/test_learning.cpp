// Learning quality: nanoGPT's CPU configuration on Tiny Shakespeare (characters,
// 90/10 split, 4 layers, 4 heads, width 128, block 64, batch 12, 2000 steps,
// lr 1e-3 warmup 100 cosine to 1e-4, betas 0.9/0.99, clip 1.0) must reach a
// validation loss of at most 1.90 (nanoGPT reports about 1.88). About a
// minute on 2 cores; measured 2026-11-28: val loss 1.8952 in 49 s.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "gpt/kernels/matmul.h"
#include "gpt/training/trainer.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {

TEST(Learning, TinyShakespeareCharReachesNanoGptValidationLoss) {
  const auto data = testing::shared_data("tinyshakespeare.txt");
  if (!std::filesystem::exists(data)) GTEST_SKIP() << "SKIPPED: " << data << " not found (needs ../shared/data)";
  testing::TempDir dir;
  TrainOptions o;
  o.data = data.string();
  o.out = (dir / "out").string();
  o.n_layer = 4;
  o.n_head = 4;
  o.n_embd = 128;
  o.block_size = 64;
  o.batch_size = 12;
  o.max_iters = 2000;
  o.lr = 1e-3;
  o.min_lr = 1e-4;
  o.warmup_iters = 100;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.grad_clip = 1.0;
  o.weight_decay = 0.1;
  o.eval_interval = 2000;
  o.eval_iters = 200;
  o.threads = 2;  // fixed, so the result is the same on any machine with this CPU
  o.quiet = true;
  const TrainResult r = train(o);
  ASSERT_TRUE(r.final_val_loss.has_value());
  std::printf("[ measured ] val loss %.4f, train loss %.4f, %.1f s, %.0f tokens/s\n", *r.final_val_loss,
              r.final_loss, r.seconds, r.tokens_per_sec);
  EXPECT_LE(*r.final_val_loss, 1.90f);
}

// --dtype bf16 trains like fp32: the baby config (4 x 128, block 64, batch 12)
// for 300 steps, validation loss within 2% of fp32's (the 2000-step comparison
// on Tiny Shakespeare is in docs/benchmarks.md: 0.x%). On text generated here when the
// shared data is missing.
TEST(Learning, Bf16TracksFp32OnTheBabyConfig) {
  testing::TempDir dir;
  std::string data = testing::shared_data("tinyshakespeare.txt").string();
  if (!std::filesystem::exists(data)) {
    std::string text;
    const char* words[] = {"the", "king", "said", "unto", "them", "and", "lo", "there", "was", "light", "upon", "earth"};
    uint64_t x = 7;
    for (int i = 0; i < 60000; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      text += std::string(words[(x >> 33) % 12]) + ((x >> 40) % 9 == 0 ? ".\n" : " ");
    }
    data = (dir / "data.txt").string();
    write_file_atomic(data, text);
  }
  auto run = [&](const std::string& dtype) {
    TrainOptions o;
    o.data = data;
    o.out = (dir / dtype).string();
    o.max_iters = 300;
    o.eval_interval = 300;
    o.eval_iters = 50;
    o.threads = 2;
    o.quiet = true;
    o.dtype = dtype;
    return train(o);
  };
  const TrainResult fp32 = run("fp32");
  const TrainResult bf16 = run("bf16");
  const float rel = std::fabs(*bf16.final_val_loss / *fp32.final_val_loss - 1.0f);
  std::printf("[ measured ] val loss fp32 %.4f, bf16 %.4f (%.2f%%); tokens/s %.0f vs %.0f\n", *fp32.final_val_loss,
              *bf16.final_val_loss, 100 * rel, fp32.tokens_per_sec, bf16.tokens_per_sec);
  EXPECT_LT(rel, 0.02f);
  EXPECT_NE(*bf16.final_val_loss, *fp32.final_val_loss);  // bf16 really ran
}

}  // namespace
}  // namespace gpt
