// Resuming from a checkpoint continues bit for bit: every later loss equals the
// uninterrupted run's exactly.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "gpt/training/trainer.h"
#include "gpt/util/file_io.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

std::string synthetic_text(size_t words, uint64_t seed) {
  static const char* kWords[] = {"the", "king", "said", "unto", "them", "and", "lo", "a", "light", "was",
                                 "in", "darkness", "of", "heaven", "earth", "water", "spirit", "day"};
  Rng rng(seed);
  std::string s;
  for (size_t i = 0; i < words; ++i) {
    s += kWords[rng.next_u64() % (sizeof kWords / sizeof *kWords)];
    s += (i % 13 == 12) ? ".\n" : " ";
  }
  return s;
}

TrainOptions tiny_options(const testing::TempDir& dir, const std::string& out) {
  TrainOptions o;
  o.data = (dir / "data.txt").string();
  o.out = (dir / out).string();
  o.n_layer = 2;
  o.n_head = 2;
  o.n_embd = 16;
  o.block_size = 16;
  o.batch_size = 4;
  o.grad_accum = 2;
  o.max_iters = 30;
  o.lr_decay_iters = 30;
  o.warmup_iters = 5;
  o.eval_interval = 5;
  o.eval_iters = 2;
  o.quiet = true;
  return o;
}

TEST(Resume, ContinuesBitIdentically) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(4000, 1));

  const TrainResult full = train(tiny_options(dir, "full"));
  ASSERT_EQ(full.history.size(), 30u);

  TrainOptions first = tiny_options(dir, "part");
  first.max_iters = 17;  // the schedule still ends at lr_decay_iters = 30
  train(first);
  const TrainResult rest = train(tiny_options(dir, "part"), (dir / "part").string());
  ASSERT_EQ(rest.history.size(), 13u);
  for (size_t i = 0; i < rest.history.size(); ++i) {
    const LogEntry& a = full.history[17 + i];
    const LogEntry& b = rest.history[i];
    EXPECT_EQ(a.step, b.step);
    EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof(float)), 0) << "step " << a.step << ": " << a.loss << " vs " << b.loss;
    EXPECT_EQ(a.val_loss.has_value(), b.val_loss.has_value());
    if (a.val_loss && b.val_loss) {
      EXPECT_EQ(*a.val_loss, *b.val_loss) << "step " << a.step;
    }
  }
  // Same final weights, byte for byte.
  EXPECT_EQ(read_binary_file(dir / "full" / "model.safetensors"), read_binary_file(dir / "part" / "model.safetensors"));
  EXPECT_EQ(read_binary_file(dir / "full" / "optimizer.safetensors"),
            read_binary_file(dir / "part" / "optimizer.safetensors"));
  // The log of the resumed run holds every step once.
  std::ifstream log(dir / "part" / "train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line);) ++lines;
  EXPECT_EQ(lines, 30);
}

TEST(Training, GradientAccumulationMatchesTheFullBatch) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(3000, 2));
  TrainOptions a = tiny_options(dir, "a"), b = tiny_options(dir, "b");
  a.grad_accum = 1;
  b.grad_accum = 4;
  a.max_iters = b.max_iters = 5;
  const TrainResult ra = train(a), rb = train(b);
  for (size_t i = 0; i < ra.history.size(); ++i)
    EXPECT_NEAR(ra.history[i].loss, rb.history[i].loss, 1e-5 * ra.history[i].loss) << "step " << i + 1;
}

}  // namespace
}  // namespace gpt
