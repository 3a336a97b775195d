// The assembled model: finite differences through the whole network, gradient
// accumulation, reuse of activation memory, no allocation in a training step.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "gpt/kernels/cross_entropy.h"
#include "gpt/model/gpt.h"
#include "gpt/util/rng.h"
#include "test_support.h"


namespace gpt {
namespace {

ModelConfig tiny_config() {
  return testing::model_config(11, 8, 2, 2, 8);
}

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(V));
  return t;
}

TEST(GPTModel, WholeModelGradientMatchesFiniteDifferences) {
  ModelConfig c = tiny_config();
  GPT model(c);
  model.init_weights(7);
  Rng rng(3);
  for (auto& p : model.params) p += static_cast<float>(rng.normal()) * 0.2f;  // away from the init's symmetries
  const int64_t B = 2, T = 6;
  const auto x = random_tokens(B * T, c.vocab_size, 1), y = random_tokens(B * T, c.vocab_size, 2);
  model.zero_grad();
  model.forward_backward(x.data(), y.data(), B, T);
  const std::vector<float> analytic = model.grads;
  int checked = 0, failures = 0;
  for (const TensorInfo& t : model.layout().tensors()) {
    for (size_t k = 0; k < std::min<size_t>(t.numel, 4); ++k) {  // a few entries of every tensor
      const size_t i = t.offset + (k * 7919) % t.numel;
      const float saved = model.params[i];
      const float h = 1e-2f;
      model.params[i] = saved + h;
      const double plus = model.forward(x.data(), y.data(), B, T);
      model.params[i] = saved - h;
      const double minus = model.forward(x.data(), y.data(), B, T);
      model.params[i] = saved;
      const double numeric = (plus - minus) / (2 * h);
      ++checked;
      if (std::abs(numeric - analytic[i]) > 1e-3 + 5e-2 * std::abs(analytic[i])) {
        ++failures;
        ADD_FAILURE() << t.name << "[" << (i - t.offset) << "]: numeric " << numeric << " analytic " << analytic[i];
      }
    }
  }
  EXPECT_GT(checked, 50);
  EXPECT_EQ(failures, 0);
}

TEST(GPTModel, MicroBatchesAccumulateToTheFullBatchGradient) {
  ModelConfig c = tiny_config();
  GPT full(c), micro(c);
  full.init_weights(5);
  micro.params = full.params;
  const int64_t B = 4, T = 8;
  const auto x = random_tokens(B * T, c.vocab_size, 3), y = random_tokens(B * T, c.vocab_size, 4);
  full.zero_grad();
  full.forward_backward(x.data(), y.data(), B, T);
  micro.zero_grad();
  for (int m = 0; m < 2; ++m) micro.forward_backward(x.data() + m * 2 * T, y.data() + m * 2 * T, 2, T, 0.5f);
  EXPECT_LT(testing::relative_max_error(micro.grads.data(), full.grads.data(), full.grads.size()), 1e-5);
}

TEST(GPTModel, SmallerShapesReuseActivationsAndGiveTheSameLogits) {
  ModelConfig c = tiny_config();
  GPT a(c), b(c);
  a.init_weights(9);
  b.params = a.params;
  const auto x = random_tokens(3 * 8, c.vocab_size, 6);
  a.forward(x.data(), nullptr, 3, 8);  // allocate for (3, 8) first
  a.forward(x.data(), nullptr, 1, 5);
  b.forward(x.data(), nullptr, 1, 5);
  for (int64_t i = 0; i < 5 * c.vocab_size; ++i) EXPECT_EQ(a.logits()[i], b.logits()[i]);
}

TEST(GPTModel, TrainingStepMakesNoHeapAllocation) {
  // (On ARM64 the products are OpenBLAS's: oneDNN's reference sgemm, used there
  // before, allocated on every call, 417 times in these three steps.)
  ModelConfig c = tiny_config();
  GPT model(c);
  model.init_weights(1);
  const auto x = random_tokens(4 * 8, c.vocab_size, 7), y = random_tokens(4 * 8, c.vocab_size, 8);
  model.forward_backward(x.data(), y.data(), 4, 8);  // first call allocates activations
  const long before = testing::heap_allocations();
  for (int step = 0; step < 3; ++step) {
    model.zero_grad();
    model.forward_backward(x.data(), y.data(), 4, 8);
  }
  EXPECT_EQ(testing::heap_allocations() - before, 0);
}

TEST(GPTModel, LossIsTheSameWithAndWithoutTheBackwardAndFromTheKeptLogits) {
  ModelConfig c = tiny_config();
  GPT model(c);
  model.init_weights(11);
  const int64_t B = 3, T = 7;
  const auto x = random_tokens(B * T, c.vocab_size, 12), y = random_tokens(B * T, c.vocab_size, 13);
  model.forward(x.data(), nullptr, B, T);
  double expected = 0;
  for (int64_t r = 0; r < B * T; ++r) {
    const float* row = model.logits() + r * c.vocab_size;
    expected += log_sum_exp(row, c.vocab_size) - row[y[static_cast<size_t>(r)]];
  }
  expected /= static_cast<double>(B * T);
  const float loss = model.forward(x.data(), y.data(), B, T);
  EXPECT_NEAR(loss, expected, 1e-5);
  model.zero_grad();
  EXPECT_EQ(model.forward_backward(x.data(), y.data(), B, T), loss);
  std::vector<int32_t> bad = y;
  bad[4] = c.vocab_size;
  model.zero_grad();
  EXPECT_THROW(model.forward_backward(x.data(), bad.data(), B, T), std::exception);
  for (float g : model.grads) ASSERT_EQ(g, 0.0f);  // rejected before any gradient moved
  try {
    model.forward_backward(x.data(), nullptr, B, T);
    ADD_FAILURE() << "a training pass without targets must be rejected";
  } catch (const std::exception& e) {
    EXPECT_STREQ(e.what(), "a training pass needs targets");
  }
}

TEST(GPTModel, RejectsBadInputs) {
  ModelConfig c = tiny_config();
  GPT model(c);
  std::vector<int32_t> x(9, 0);
  EXPECT_THROW(model.forward(x.data(), nullptr, 1, 9), std::exception);  // longer than the block
  x[0] = c.vocab_size;
  EXPECT_THROW(model.forward(x.data(), nullptr, 1, 4), std::exception);  // token outside the vocabulary
  c.n_head = 3;
  EXPECT_THROW(GPT{c}, std::exception);  // 3 does not divide 8
  c.n_head = 0;
  EXPECT_THROW(GPT{c}, std::exception);
}

// forward_logprobs/backward_logprobs (what DPO, reward models and RL build on): for
// J = sum_r a_r * logprob_r + sum <g, final hidden>, the gradient matches finite
// differences of J, with ignored targets and a head's gradient on the hidden states.
TEST(GPTModel, LogprobObjectiveGradientMatchesFiniteDifferences) {
  ModelConfig c = tiny_config();
  GPT model(c);
  model.init_weights(7);
  Rng rng(3);
  for (auto& p : model.params) p += static_cast<float>(rng.normal()) * 0.2f;
  const int64_t B = 2, T = 6, BT = B * T, C = c.n_embd;
  const auto x = random_tokens(BT, c.vocab_size, 1);
  auto y = random_tokens(BT, c.vocab_size, 2);
  y[0] = y[7] = kIgnoreTarget;
  std::vector<float> a(BT), g(static_cast<size_t>(BT * C)), lp(BT);
  for (auto& v : a) v = static_cast<float>(rng.normal());
  a[3] = 0.0f;  // a row that does not matter
  for (auto& v : g) v = static_cast<float>(rng.normal()) * 0.5f;
  auto objective = [&]() {
    model.forward_logprobs(x.data(), y.data(), B, T, lp.data(), false);
    double J = 0;
    for (int64_t r = 0; r < BT; ++r) J += static_cast<double>(a[static_cast<size_t>(r)]) * lp[static_cast<size_t>(r)];
    const float* h = model.final_hidden();
    for (int64_t i = 0; i < BT * C; ++i) J += static_cast<double>(g[static_cast<size_t>(i)]) * h[i];
    return J;
  };
  objective();
  EXPECT_EQ(lp[0], 0.0f);
  EXPECT_LT(lp[1], 0.0f);
  model.zero_grad();
  model.backward_logprobs(a.data(), g.data());
  const std::vector<float> analytic = model.grads;
  int checked = 0, failures = 0;
  for (const TensorInfo& t : model.layout().tensors()) {
    for (size_t k = 0; k < std::min<size_t>(t.numel, 3); ++k) {
      const size_t i = t.offset + (k * 7919) % t.numel;
      const float saved = model.params[i];
      const float h = 1e-2f;
      model.params[i] = saved + h;
      const double plus = objective();
      model.params[i] = saved - h;
      const double minus = objective();
      model.params[i] = saved;
      const double numeric = (plus - minus) / (2 * h);
      ++checked;
      if (std::abs(numeric - analytic[i]) > 2e-3 + 5e-2 * std::abs(analytic[i])) {
        ++failures;
        ADD_FAILURE() << t.name << "[" << (i - t.offset) << "]: numeric " << numeric << " analytic " << analytic[i];
      }
    }
  }
  EXPECT_GT(checked, 40);
  EXPECT_EQ(failures, 0);
  // The log-probabilities are the cross-entropy's: -loss per row.
  const float mean = model.forward(x.data(), y.data(), B, T);
  model.forward_logprobs(x.data(), y.data(), B, T, lp.data(), false);
  double sum = 0;
  for (float v : lp) sum -= v;
  EXPECT_NEAR(sum / (BT - 2), mean, 1e-5);
}

}  // namespace
}  // namespace gpt
