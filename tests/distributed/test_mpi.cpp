// Data-parallel training under mpirun (Open MPI on localhost): 2 ranks with half
// the batch each follow 1 rank with the whole batch step for step (losses within
// 1e-5 relative), with and without ZeRO-1; a 2-rank checkpoint resumes on 1 rank;
// a killed rank ends the job instead of leaving the others waiting.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "gpt/io/checkpoint.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

extern char** environ;

namespace gpt {
namespace {
namespace fs = std::filesystem;

constexpr double kLossTol = 1e-5;  // relative, per step

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

class Mpi : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_mpirun()) GTEST_SKIP() << "SKIPPED: mpirun not found (install openmpi-bin)";
    // Open MPI refuses to start as root without these (CI runs as root).
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    std::string text;
    while (text.size() < 60000) text += "And God said, Let there be light: and there was light. And God saw the light.\n";
    write_file_atomic(dir / "data.txt", text);
  }
  std::string mpirun(int ranks) const {
    return "mpirun --oversubscribe -np " + std::to_string(ranks) + " " + std::string(GPT_BINARY) + " ";
  }
  std::string common() const {
    return "train --data " + (dir / "data.txt").string() +
           " --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 8 --grad-accum 2 --max-iters 20"
           " --lr-decay-iters 20 --eval-interval 10 --eval-iters 4 --threads 1 --quiet";
  }
  static testing::CommandResult shell(const std::string& cmd) {
    // run_gpt prefixes the binary; here the whole command line is given.
    testing::TempDir tmp;
    testing::CommandResult r;
    const int status =
        std::system(("( " + cmd + " ) </dev/null >" + (tmp / "o").string() + " 2>" + (tmp / "e").string()).c_str());
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    r.out = read_text_file(tmp / "o");
    r.err = read_text_file(tmp / "e");
    return r;
  }
  static std::vector<nlohmann::json> log_of(const fs::path& path) {
    std::vector<nlohmann::json> v;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
    return v;
  }
  static void expect_same_losses(const fs::path& a, const fs::path& b, size_t steps) {
    const auto la = log_of(a), lb = log_of(b);
    ASSERT_EQ(la.size(), steps);
    ASSERT_EQ(lb.size(), steps);
    double worst = 0;
    for (size_t i = 0; i < steps; ++i) {
      for (const char* k : {"loss", "val_loss"}) {
        if (!la[i].contains(k)) continue;
        ASSERT_TRUE(lb[i].contains(k)) << "step " << i + 1;
        const double x = la[i][k], y = lb[i][k];
        worst = std::max(worst, std::abs(x - y) / std::abs(x));
        EXPECT_LT(std::abs(x - y) / std::abs(x), kLossTol) << k << " at step " << i + 1 << ": " << x << " vs " << y;
      }
    }
    std::printf("[ measured ] worst relative loss difference %.2e over %zu steps\n", worst, steps);
  }
  testing::TempDir dir;
};

TEST_F(Mpi, TwoRanksMatchOneRankStepForStep) {
  ASSERT_EQ(testing::run_gpt(common() + " --out " + (dir / "one").string()).exit_code, 0);
  auto r = shell(mpirun(2) + common() + " --out " + (dir / "two").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir / "one" / "train_log.jsonl", dir / "two" / "train_log.jsonl", 20);
  // Gradients all-reduced block by block while backward runs, or in one ring
  // all-reduce afterwards (the default): the same sums, the same weights bit for bit.
  r = shell(mpirun(2) + common() + " --overlap-comm true --out " + (dir / "overlap").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(load_model(dir / "overlap").model->params, load_model(dir / "two").model->params);
  // Without gradient accumulation the only micro-batch overlaps.
  ASSERT_EQ(testing::run_gpt(common() + " --grad-accum 1 --out " + (dir / "one1").string()).exit_code, 0);
  r = shell(mpirun(2) + common() + " --grad-accum 1 --overlap-comm true --out " + (dir / "two1").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir / "one1" / "train_log.jsonl", dir / "two1" / "train_log.jsonl", 20);
  // Three ranks: uneven ring chunks, sums in another order (batch 6 splits 2 + 2 + 2).
  ASSERT_EQ(testing::run_gpt(common() + " --grad-accum 1 --batch-size 6 --out " + (dir / "one6").string()).exit_code, 0);
  r = shell(mpirun(3) + common() + " --grad-accum 1 --batch-size 6 --out " + (dir / "three").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir / "one6" / "train_log.jsonl", dir / "three" / "train_log.jsonl", 20);
  r = shell(mpirun(3) + common() + " --grad-accum 1 --batch-size 6 --zero 1 --out " + (dir / "three-zero").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir / "one6" / "train_log.jsonl", dir / "three-zero" / "train_log.jsonl", 20);
  r = shell(mpirun(2) + common() + " --zero 1 --out " + (dir / "zero").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir / "one" / "train_log.jsonl", dir / "zero" / "train_log.jsonl", 20);
  // ZeRO clips against the same norm as the plain path (one sum-of-squares helper,
  // slices summed in double): two ranks with and without it end bit-identical.
  EXPECT_EQ(load_model(dir / "zero").model->params, load_model(dir / "two").model->params);
  // The checkpoint holds the whole optimizer state, gathered from the shards.
  const auto a = load_optimizer_state(dir / "one", load_model(dir / "one").model->layout());
  const auto z = load_optimizer_state(dir / "zero", load_model(dir / "zero").model->layout());
  ASSERT_EQ(a.m.size(), z.m.size());
  EXPECT_LT(testing::relative_max_error(z.m.data(), a.m.data(), a.m.size()), 1e-3);
  EXPECT_EQ(a.steps, z.steps);
}

// Fine-tuning under mpirun: the loss is the mean over every reply token of the
// step (counts all-reduced), so 2 ranks follow 1 rank step for step although each
// rank's half of the batch holds a different number of reply tokens; full and
// LoRA (ZeRO-1 over the adapter's state).
TEST_F(Mpi, FineTuningOnTwoRanksMatchesOneRank) {
  std::string chats;
  for (int i = 0; i < 48; ++i) {
    const std::string reply(static_cast<size_t>(1 + i % 5), static_cast<char>('a' + i % 7));  // replies of unequal length
    chats += nlohmann::json{{"messages", {{{"role", "user"}, {"content", "light " + std::to_string(i)}},
                                           {{"role", "assistant"}, {"content", reply}}}}}.dump() + "\n";
  }
  write_file_atomic(dir / "chats.jsonl", chats);
  ASSERT_EQ(testing::run_gpt("train --data " + (dir / "data.txt").string() + " --tokenizer byte --n-layer 2 --n-head 2"
                             " --n-embd 32 --block-size 32 --batch-size 4 --max-iters 3 --threads 1 --quiet --out " +
                             (dir / "base").string()).exit_code, 0);
  const std::string sft = "sft --init-from " + (dir / "base").string() + " --data " + (dir / "chats.jsonl").string() +
                          " --batch-size 8 --grad-accum 2 --max-iters 10 --eval-interval 5 --lr 3e-3 --threads 1 --quiet";
  for (const std::string lora : {"", " --lora-rank 4 --lora-dropout 0.1"}) {
    SCOPED_TRACE(lora.empty() ? "full" : "LoRA");
    const std::string tag = lora.empty() ? "full" : "lora";
    ASSERT_EQ(testing::run_gpt(sft + lora + " --out " + (dir / ("one-" + tag)).string()).exit_code, 0);
    auto r = shell(mpirun(2) + sft + lora + " --out " + (dir / ("two-" + tag)).string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_losses(dir / ("one-" + tag) / "train_log.jsonl", dir / ("two-" + tag) / "train_log.jsonl", 10);
    r = shell(mpirun(2) + sft + lora + " --zero 1 --out " + (dir / ("zero-" + tag)).string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_losses(dir / ("one-" + tag) / "train_log.jsonl", dir / ("zero-" + tag) / "train_log.jsonl", 10);
  }
}

TEST_F(Mpi, ATwoRankCheckpointResumesOnOneRank) {
  ASSERT_EQ(testing::run_gpt(common() + " --out " + (dir / "one").string()).exit_code, 0);
  auto r = shell(mpirun(2) + common() + " --zero 1 --max-iters 10 --out " + (dir / "two").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::run_gpt("train --resume " + (dir / "two").string() + " --max-iters 20 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_losses(dir / "one" / "train_log.jsonl", dir / "two" / "train_log.jsonl", 20);
}

TEST_F(Mpi, BadBatchSplitStopsEveryRank) {
  const auto r = shell("timeout 60 " + mpirun(3) + common() + " --out " + (dir / "x").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "ranks hung";
  EXPECT_NE(r.err.find("must be divisible by the number of ranks (3)"), std::string::npos) << r.err;
}

TEST_F(Mpi, OutOfMemoryOnOneRankEndsEveryRank) {
  // Rank 1 may not map more than 600 MB, and the model (~100M parameters, its
  // gradients and AdamW moments) needs more: its allocation fails. The job must
  // end with that error at once, not leave rank 0 waiting in a collective.
  const std::string train = "train --data " + (dir / "data.txt").string() +
                            " --n-layer 8 --n-head 8 --n-embd 1024 --block-size 32 --batch-size 2 --max-iters 2"
                            " --threads 1 --quiet --out " + (dir / "oom").string();
  const std::string cmd = "timeout 120 mpirun --oversubscribe -np 2 sh -c 'if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; "
                          "then ulimit -v 600000; fi; exec " + std::string(GPT_BINARY) + " " + train + "'";
  const auto r = shell(cmd);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "ranks hung after one ran out of memory";
  EXPECT_NE(r.err.find("rank 1: out of memory"), std::string::npos) << r.err;
}

TEST_F(Mpi, KillingOneRankEndsTheJobAndKeepsTheCheckpoint) {
  const std::string out = (dir / "k").string();
  const std::string cmd = "exec " + mpirun(2) + common() + " --max-iters 1000000 --lr-decay-iters 1000000"
                          " --eval-interval 100000 --checkpoint-interval 20 --out " + out + " >/dev/null 2>&1";
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  pid_t launcher = -1;
  ASSERT_EQ(posix_spawn(&launcher, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  // Wait for a checkpoint, then kill one rank (a gpt process whose parent is mpirun's daemon).
  for (int i = 0; i < 600 && !fs::exists(fs::path(out) / "trainer_state.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(fs::path(out) / "trainer_state.json"));
  const auto pids = shell("pgrep -f -- '--out " + out + "' | while read p; do [ \"$(readlink /proc/$p/exe)\" = \"" +
                          std::string(fs::canonical(GPT_BINARY)) + "\" ] && echo $p; done");
  std::istringstream list(pids.out);
  pid_t victim = 0;
  list >> victim;
  ASSERT_GT(victim, 0) << "no rank found: " << pids.out << pids.err;
  ::kill(victim, SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(launcher, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (done == 0) {
    ::kill(launcher, SIGKILL);
    ::waitpid(launcher, &status, 0);
    FAIL() << "the surviving rank was still running 60 s after the other died";
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "mpirun reported success";
  std::printf("[ measured ] job ended %.1f s after one rank was killed\n", seconds);
  EXPECT_NO_THROW(load_model(out));
}

}  // namespace
}  // namespace gpt
