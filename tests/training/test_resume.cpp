// Resuming from a checkpoint continues bit for bit: every later loss equals the
// uninterrupted run's exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <fstream>

#include <omp.h>

#include "gpt/io/checkpoint.h"
#include "gpt/kernels/matmul.h"
#include "gpt/training/evaluate.h"
#include "gpt/training/trainer.h"
#include "gpt/util/error.h"
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

// Dropout's masks are a hash of (seed, step, global row, position): a resumed run
// draws the masks the uninterrupted one drew (bit for bit), four micro-batches draw
// what one whole batch draws, and evaluation has none.
TEST(Resume, DropoutContinuesBitIdenticallyAndIgnoresTheMicroBatchSplit) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(4000, 1));
  TrainOptions full = tiny_options(dir, "full");
  full.dropout = 0.2;
  full.max_iters = 12;
  full.lr_decay_iters = 12;
  const TrainResult a = train(full);
  TrainOptions first = full;
  first.out = (dir / "part").string();
  first.max_iters = 7;
  train(first);
  TrainOptions all = full;
  all.out = first.out;
  const TrainResult rest = train(all, first.out);
  ASSERT_EQ(rest.history.size(), 5u);
  for (size_t i = 0; i < rest.history.size(); ++i) {
    EXPECT_EQ(std::memcmp(&a.history[7 + i].loss, &rest.history[i].loss, sizeof(float)), 0)
        << "step " << rest.history[i].step << ": " << a.history[7 + i].loss << " vs " << rest.history[i].loss;
  }
  EXPECT_EQ(read_binary_file(dir / "full" / "model.safetensors"), read_binary_file(dir / "part" / "model.safetensors"));
  // The same run without dropout trains differently; with grad_accum 1 instead of 2, the same.
  TrainOptions none = full, whole = full;
  none.out = (dir / "none").string();
  none.dropout = 0.0;
  whole.out = (dir / "whole").string();
  whole.grad_accum = 1;
  const TrainResult b = train(none), c = train(whole);
  EXPECT_NE(a.history[0].loss, b.history[0].loss);
  for (size_t i = 0; i < a.history.size(); ++i)
    EXPECT_NEAR(c.history[i].loss, a.history[i].loss, 1e-5 * a.history[i].loss) << "step " << i + 1;
}

// --optimizer muon: it learns, and a resumed run is bit-identical (Muon's momentum
// rides in the checkpoint's first-moment slots). With LoRA it is refused.
TEST(Resume, MuonContinuesBitIdentically) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(3000, 3));
  const auto options = [&](const std::string& out, int64_t iters) {
    TrainOptions o = tiny_options(dir, out);
    o.optimizer = "muon";
    o.max_iters = iters;
    o.lr_decay_iters = 12;
    return o;
  };
  const TrainResult full = train(options("full", 12));
  EXPECT_LT(full.history.back().loss, full.history.front().loss);
  train(options("part", 7));
  const TrainResult rest = train(options("part", 12), (dir / "part").string());
  ASSERT_EQ(rest.history.size(), 5u);
  for (size_t i = 0; i < rest.history.size(); ++i)
    EXPECT_EQ(std::memcmp(&full.history[7 + i].loss, &rest.history[i].loss, sizeof(float)), 0) << "step " << 8 + i;
  EXPECT_EQ(read_binary_file(dir / "full" / "model.safetensors"), read_binary_file(dir / "part" / "model.safetensors"));
  TrainOptions lora = options("lora", 1);
  lora.task = "sft";
  lora.lora_rank = 4;
  EXPECT_THROW(lora.validate(), Error);
}

// --arch llama (grouped-query attention, dropout on, then Muon): training
// learns, a resumed run is bit-identical, and the checkpoint is a Hugging Face
// Llama directory.
TEST(Resume, LlamaContinuesBitIdentically) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(3000, 4));
  for (const std::string optimizer : {"adamw", "muon"}) {
    const auto options = [&](const std::string& out, int64_t iters) {
      TrainOptions o = tiny_options(dir, optimizer + out);
      o.arch = "llama";
      o.n_head = 4;
      o.n_kv_head = 2;
      o.optimizer = optimizer;
      o.dropout = optimizer == "adamw" ? 0.1 : 0.0;
      o.max_iters = iters;
      o.lr_decay_iters = 12;
      return o;
    };
    const TrainResult full = train(options("full", 12));
    EXPECT_LT(full.history.back().loss, full.history.front().loss) << optimizer;
    train(options("part", 7));
    const TrainResult rest = train(options("part", 12), (dir / (optimizer + "part")).string());
    ASSERT_EQ(rest.history.size(), 5u);
    for (size_t i = 0; i < rest.history.size(); ++i)
      EXPECT_EQ(std::memcmp(&full.history[7 + i].loss, &rest.history[i].loss, sizeof(float)), 0)
          << optimizer << " step " << 8 + i;
    EXPECT_EQ(read_binary_file(dir / (optimizer + "full") / "model.safetensors"),
              read_binary_file(dir / (optimizer + "part") / "model.safetensors"));
    const ModelConfig c = ModelConfig::load(dir / (optimizer + "full") / "config.json");
    EXPECT_TRUE(c.llama());
    EXPECT_EQ(c.kv_heads(), 2);
  }
}

// A budgeted run for the tests below: one minute of a test clock (~150 steps, no step
// depends on the machine's speed), the cooldown fixed near step 75 (cooldown_frac 0.5),
// max_iters an upper bound the budget ends long before.
TrainOptions budgeted(const testing::TempDir& dir, const std::string& out) {
  TrainOptions o = tiny_options(dir, out);
  o.n_layer = 1;
  o.batch_size = 2;
  o.grad_accum = 1;
  o.max_iters = 1000;
  o.lr_decay_iters = 0;
  o.warmup_iters = 2;
  o.eval_interval = 1000000;
  o.lr_schedule = "wsd";
  o.cooldown_frac = 0.5;
  o.time_budget = 1.0;
  return o;
}

// --time-budget: the stable phase ends when (1 - cooldown_frac) of the budget has
// passed and the cooldown is sized to end on time; the run stops before
// max_iters, after a straight descent to one step above min_lr. The clock is
// the test's: the stable phase and the cooldown have known lengths. A step count
// for the decay (a config's --lr-decay-iters, far fewer steps than the budget
// allows) does not end the schedule early: the clock does.
TEST(TimeBudget, EndsTheStablePhaseAndCoolsDownToTheEnd) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(3000, 4));
  for (const int64_t lr_decay_iters : {int64_t{0}, int64_t{20}}) {
    SCOPED_TRACE("lr_decay_iters " + std::to_string(lr_decay_iters));
    TrainOptions o = budgeted(dir, "run" + std::to_string(lr_decay_iters));
    o.lr_decay_iters = lr_decay_iters;
    Trainer t(o);
    double now = 0;
    t.set_clock([&now] { return now += 0.2; });
    // What a progress bar is told the last step is, after each step.
    struct Projections : TrainingObserver {
      std::vector<int64_t> last;
      void on_step(const Trainer& tr, const LogEntry&) override { last.push_back(tr.last_step()); }
    } seen;
    const TrainResult r = t.run(&seen);
    ASSERT_LT(r.steps, o.max_iters);
    ASSERT_GT(r.history.size(), 10u);
    ASSERT_GT(r.history.size(), 2u * static_cast<size_t>(std::max<int64_t>(lr_decay_iters, 5)));
    // It ends on time: the last step's wall-clock (this clock's) is the budget, within a step.
    EXPECT_NEAR(r.history.back().extra["elapsed"].get<double>(), 60.0, 0.5);
    const auto& h = r.history;
    // Stable, then strictly down to the last step, each step by the same amount.
    size_t first_down = static_cast<size_t>(o.warmup_iters);  // steps 0 .. warmup-1 warm up
    ASSERT_EQ(h[first_down].lr, static_cast<float>(o.lr));
    while (first_down + 1 < h.size() && h[first_down + 1].lr == static_cast<float>(o.lr)) ++first_down;
    ASSERT_GT(first_down, 4u);
    // Half the budget is stable: the cooldown starts in the run's second half.
    EXPECT_GT(first_down, h.size() * 4 / 10);
    ASSERT_LT(first_down + 2, h.size()) << "the cooldown has steps";
    const double drop = h[first_down].lr - h[first_down + 1].lr;
    for (size_t i = first_down + 1; i + 1 < h.size(); ++i) {
      EXPECT_GT(h[i].lr, h[i + 1].lr);
      EXPECT_NEAR(h[i].lr - h[i + 1].lr, drop, 1e-3 * drop + 1e-9) << "step " << h[i].step;  // + float32 rounding of lr
    }
    // The last step's rate is one step above the minimum (the schedule reaches min_lr at end_step).
    EXPECT_NEAR(h.back().lr - drop, o.min_lr, 1e-3 * drop + 1e-9);
    // Before the cooldown is fixed the end is projected from the pace (this clock's is
    // steady: within 10% of the real end once a few steps set the pace), not max_iters;
    // after, it is exact.
    ASSERT_EQ(seen.last.size(), h.size());
    for (size_t i = first_down / 4; i < first_down; ++i)
      EXPECT_NEAR(static_cast<double>(seen.last[i]), static_cast<double>(r.steps), 0.1 * static_cast<double>(r.steps))
          << "step " << i + 1;
    EXPECT_EQ(seen.last.back(), r.steps);
    // A budget needs WSD.
    TrainOptions cosine = o;
    cosine.lr_schedule = "cosine";
    EXPECT_THROW(cosine.validate(), Error);
  }
}


// Stopped during the cooldown and resumed, a budgeted run goes on down the cooldown
// it had fixed (the checkpoint carries it) and ends where the uninterrupted run does.
TEST(TimeBudget, AResumedRunKeepsItsCooldown) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(3000, 4));
  TrainOptions o = budgeted(dir, "whole");
  double now = 0;
  Trainer whole(o);
  whole.set_clock([&now] { return now += 0.2; });
  const TrainResult full = whole.run();
  const auto& h = full.history;
  size_t first_down = 2;
  while (first_down + 1 < h.size() && h[first_down + 1].lr == static_cast<float>(o.lr)) ++first_down;
  ASSERT_LT(first_down + 40, h.size());
  const int64_t stop_at = (h[first_down].step + 20) / 10 * 10;  // a checkpoint 10-20 steps into the cooldown

  struct StopAfter : TrainingObserver {
    int64_t step = 0;
    void on_step(const Trainer&, const LogEntry& e) override {
      if (e.step > step) throw std::runtime_error("interrupted");
    }
  } stop;
  stop.step = stop_at;
  TrainOptions p = budgeted(dir, "part");
  p.checkpoint_interval = 10;
  now = 0;
  Trainer first(p);
  first.set_clock([&now] { return now += 0.2; });
  EXPECT_THROW(first.run(&stop), std::runtime_error);
  now = 0;
  Trainer rest(p, p.out);
  rest.set_clock([&now] { return now += 0.2; });
  ASSERT_EQ(rest.first_step(), stop_at);
  const TrainResult resumed = rest.run();
  ASSERT_EQ(resumed.steps, full.steps);
  ASSERT_EQ(resumed.history.size(), static_cast<size_t>(full.steps - stop_at));
  for (size_t i = 0; i < resumed.history.size(); ++i)
    EXPECT_EQ(resumed.history[i].lr, h[static_cast<size_t>(stop_at) + i].lr) << "step " << resumed.history[i].step;
}

// Steps that slow down after the cooldown is fixed (a machine that got busy) do not
// carry the run past its budget: it stops on time, a little above min_lr.
TEST(TimeBudget, ARunThatSlowsDownStillEndsOnTime) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(3000, 4));
  TrainOptions o = budgeted(dir, "slow");
  double now = 0;
  Trainer t(o);
  t.set_clock([&now] { return now += now < 40 ? 0.2 : 0.6; });  // 3x slower from 40 s on
  const TrainResult r = t.run();
  const auto& h = r.history;
  ASSERT_GT(h.size(), 10u);
  const double last = h.back().extra["elapsed"].get<double>();
  EXPECT_LE(last, 60.0 + 2.0) << "one slow step (1.2 s) and the final evaluation past the budget at most";
  EXPECT_GT(last, 58.0);
  EXPECT_GT(h.back().lr, o.min_lr);  // stopped before the planned end
  EXPECT_LT(h.back().lr, o.lr);      // in the cooldown
}

// --eval-iters 0 evaluates the whole validation part: the mean over every
// validation token, the loss `gpt eval` gives on the same text.
TEST(Trainer, WholeValidationIsTheLossOfTheHeldOutText) {
  testing::TempDir dir;
  const std::string text = synthetic_text(3000, 5);
  write_file_atomic(dir / "data.txt", text);
  TrainOptions o = tiny_options(dir, "whole");
  o.eval_iters = 0;
  o.max_iters = 3;
  Trainer t(o);
  const TrainResult r = t.run();
  ASSERT_TRUE(r.final_val_loss.has_value());
  const auto n_train = static_cast<size_t>(std::floor(static_cast<double>(text.size()) * (1.0 - o.val_fraction)));
  GPT& model = t.model();
  const TextEvaluation ev = evaluate_text(model, t.tokenizer(), text.substr(n_train));
  EXPECT_NEAR(*r.final_val_loss, ev.mean_loss, 1e-5 * ev.mean_loss);
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

// The trainer's pieces, driven by hand, give the run that Trainer::run gives: what
// a fine-tuning or preference trainer building on them relies on.
TEST(Trainer, StepsEvaluationAndCheckpointsByHandMatchRun) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(4000, 1));
  struct Recorder : TrainingObserver {
    std::vector<LogEntry> steps;
    int starts = 0, checkpoints = 0, finishes = 0;
    void on_start(const Trainer&) override { ++starts; }
    void on_step(const Trainer&, const LogEntry& e) override { steps.push_back(e); }
    void on_checkpoint(const Trainer&, int64_t) override { ++checkpoints; }
    void on_finish(const Trainer&, const TrainResult&) override { ++finishes; }
  } recorder;
  TrainOptions o = tiny_options(dir, "run");
  o.checkpoint_interval = 10;
  const TrainResult whole = train(o, "", &recorder);
  EXPECT_EQ(recorder.starts, 1);
  EXPECT_EQ(recorder.finishes, 1);
  EXPECT_EQ(recorder.checkpoints, 3);
  ASSERT_EQ(recorder.steps.size(), 30u);

  Trainer trainer(tiny_options(dir, "by-hand"));
  for (int64_t s = 1; s <= 30; ++s) {
    const LogEntry e = trainer.step();
    EXPECT_EQ(e.step, s);
    EXPECT_EQ(e.loss, recorder.steps[static_cast<size_t>(s - 1)].loss) << "step " << s;
    EXPECT_EQ(e.grad_norm, recorder.steps[static_cast<size_t>(s - 1)].grad_norm) << "step " << s;
    if (s % 5 == 0) {
      EXPECT_EQ(trainer.evaluate(), *recorder.steps[static_cast<size_t>(s - 1)].val_loss) << "step " << s;
    }
  }
  trainer.save_checkpoint();
  EXPECT_EQ(load_model(dir / "by-hand").model->params, load_model(dir / "run").model->params);
  EXPECT_EQ(whole.final_loss, recorder.steps.back().loss);
}

TEST(Trainer, LeavesTheCallersThreadsAndPrecisionAlone) {
  // train() runs on its own thread count and precision inside a scope: the
  // calling thread's OpenMP setting and float32 products are as they were.
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(2000, 3));
  const testing::ThreadCountGuard guard;
  omp_set_num_threads(2);
  TrainOptions o = tiny_options(dir, "bf16");
  o.max_iters = 2;
  o.threads = 1;
  o.dtype = "bf16";
  train(o);
  EXPECT_EQ(omp_get_max_threads(), 2);
  const float a[2] = {1.0f + 1.0f / 512, 1.0f}, b[2] = {1.0f, 1.0f};  // bf16 would round a[0] to 1
  float c = 0;
  gemm(false, false, 1, 1, 2, 1.0f, a, 2, b, 1, 0.0f, &c, 1);
  EXPECT_EQ(c, 2.0f + 1.0f / 512);
}

TEST(Trainer, DivergenceStopsWithAnErrorNamingTheStep) {
  testing::TempDir dir;
  write_file_atomic(dir / "data.txt", synthetic_text(2000, 4));
  TrainOptions o = tiny_options(dir, "nan");
  o.lr = 1e30;  // the first update throws the weights to infinity
  o.warmup_iters = 0;
  o.grad_clip = 0;
  try {
    train(o);
    FAIL() << "training with lr 1e30 did not stop";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("training diverged"), std::string::npos) << what;
    EXPECT_NE(what.find("at step 2"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace gpt
