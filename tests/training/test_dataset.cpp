// Data: the train/validation split, batches that are shifted windows, and draws
// that depend only on (seed, step, row).
#include <gtest/gtest.h>

#include "gpt/kernels/cross_entropy.h"
#include "gpt/training/dataset.h"
#include "gpt/util/error.h"

namespace gpt {
namespace {

std::vector<int32_t> iota_tokens(int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = i;
  return t;
}

TEST(Dataset, SplitsNinetyTen) {
  Dataset d(iota_tokens(1000), 0.1, 8);
  EXPECT_EQ(d.train_size(), 900);
  EXPECT_EQ(d.val_size(), 100);
  EXPECT_EQ(d.token(900), 900);  // the first validation token
}

TEST(Dataset, TargetsAreInputsShiftedByOne) {
  Dataset d(iota_tokens(5000), 0.1, 16);
  std::vector<int32_t> x(4 * 16), y(4 * 16);
  d.train_batch(1, 0, 0, 4, 16, x.data(), y.data());
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 16; ++t) {
      EXPECT_EQ(y[b * 16 + t], x[b * 16 + t] + 1);
      if (t > 0) {
        EXPECT_EQ(x[b * 16 + t], x[b * 16 + t - 1] + 1);  // a contiguous window
      }
      EXPECT_LT(y[b * 16 + t], 4500);                              // from the training part only
    }
}

TEST(Dataset, BatchesDependOnlyOnSeedStepAndRow) {
  Dataset d(iota_tokens(100000), 0.1, 8);
  std::vector<int32_t> a(8 * 8), b(8 * 8), y(8 * 8), half(4 * 8);
  d.train_batch(7, 42, 0, 8, 8, a.data(), y.data());
  d.train_batch(7, 42, 0, 8, 8, b.data(), y.data());
  EXPECT_EQ(a, b);
  // The second micro-batch of 4 rows is rows 4..7 of the 8-row batch.
  d.train_batch(7, 42, 1, 4, 8, half.data(), y.data());
  EXPECT_TRUE(std::equal(half.begin(), half.end(), a.begin() + 4 * 8));
  d.train_batch(7, 43, 0, 8, 8, b.data(), y.data());
  EXPECT_NE(a, b);
  d.train_batch(8, 42, 0, 8, 8, b.data(), y.data());
  EXPECT_NE(a, b);
}

// --eval-iters 0: the whole validation part, every token after its first
// predicted exactly once, in order, the last window shorter and the rows past
// the end ignored; off, the drawn windows as before.
TEST(Dataset, WholeValidationPredictsEveryTokenOnce) {
  Dataset d(iota_tokens(1000), 0.1, 8);
  EXPECT_EQ(d.val_batches(4), 0);  // drawn windows unless asked
  d.set_whole_validation(true);
  // 100 validation tokens: 99 predictions in windows of 8 = 13 windows, 4 batches of 4.
  ASSERT_EQ(d.val_batches(4), 4);
  std::vector<int32_t> x(4 * 8), y(4 * 8), predicted;
  for (int64_t i = 0; i < d.val_batches(4); ++i) {
    ASSERT_EQ(d.val_batch(1, i, 4, 8, x.data(), y.data()), 8);
    for (size_t k = 0; k < y.size(); ++k) {
      if (y[k] == kIgnoreTarget) continue;
      EXPECT_EQ(y[k], x[k] + 1);  // the next token of the text
      predicted.push_back(y[k]);
    }
  }
  ASSERT_EQ(predicted.size(), 99u);
  for (size_t k = 0; k < predicted.size(); ++k) EXPECT_EQ(predicted[k], static_cast<int32_t>(901 + k));
}

TEST(Dataset, TooShortDataIsAClearError) {
  try {
    Dataset d(iota_tokens(50), 0.1, 8);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Dataset(std::vector<int32_t>{}, 0.1, 8), Error);
}

}  // namespace
}  // namespace gpt
