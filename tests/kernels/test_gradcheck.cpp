// Finite-difference gradient checks, one per layer: the backward pass of each
// kernel must agree with central differences of its forward pass.
// Objective: L = sum(out * R) for a fixed random R, so dL/dout = R.
// Central differences in float32 with step h = 1e-2: truncation error O(h^2) and
// rounding error ~1e-5; tolerance |num - ana| <= 2e-3 + 1e-2 |ana|.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "gpt/kernels/attention.h"
#include "gpt/kernels/cross_entropy.h"
#include "gpt/kernels/embedding.h"
#include "gpt/kernels/gelu.h"
#include "gpt/kernels/layernorm.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/rmsnorm.h"
#include "gpt/kernels/rope.h"
#include "gpt/kernels/swiglu.h"
#include "gpt/util/rng.h"

namespace gpt {
namespace {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal()) * scale;
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Compares `analytic` with central differences of `objective` w.r.t. every element
// of x (or, for large x, `max_checks` elements spread evenly over it).
void expect_gradient(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                     const std::function<double()>& objective, float h = 1e-2f, size_t max_checks = 0) {
  ASSERT_EQ(x.size(), analytic.size());
  int failures = 0;
  const size_t step = max_checks == 0 || x.size() <= max_checks ? 1 : (x.size() + max_checks - 1) / max_checks;
  for (size_t i = step / 2; i < x.size(); i += step) {
    const float saved = x[i];
    x[i] = saved + h;
    const double plus = objective();
    x[i] = saved - h;
    const double minus = objective();
    x[i] = saved;
    const double numeric = (plus - minus) / (2.0 * h);
    const double tol = 2e-3 + 1e-2 * std::abs(analytic[i]);
    if (std::abs(numeric - analytic[i]) > tol && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: numeric " << numeric << " vs analytic " << analytic[i];
    }
  }
  EXPECT_EQ(failures, 0) << what;
}

// Both weight layouts: Conv1D's (C, OC), GPT-2's, and nn.Linear's (OC, C), Llama's
// (out = res + inp @ W^T + b).
TEST(GradCheck, Linear) {
  for (const bool out_in : {false, true}) {
    const int64_t N = 5, C = 7, OC = 6;
    auto inp = random_vector(N * C, 1), w = random_vector(C * OC, 2, 0.5f), b = random_vector(OC, 3);
    auto res = random_vector(N * OC, 4), R = random_vector(N * OC, 5);
    std::vector<float> out(N * OC);
    auto objective = [&]() {
      if (out_in) {
        linear_forward_out_in(out.data(), inp.data(), w.data(), b.data(), N, C, OC, res.data());
      } else {
        linear_forward(out.data(), inp.data(), w.data(), b.data(), N, C, OC, res.data());
      }
      return dot(out, R);
    };
    std::vector<float> dinp(N * C), dw(C * OC, 0.0f), db(OC, 0.0f);
    if (out_in) {
      linear_backward_out_in(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(), N, C, OC);
    } else {
      linear_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(), N, C, OC);
    }
    expect_gradient("dinp", inp, dinp, objective);
    expect_gradient("dweight", w, dw, objective);
    expect_gradient("dbias", b, db, objective);
    // The residual passes the gradient through unchanged.
    expect_gradient("dresidual", res, R, objective);
  }
}

TEST(GradCheck, LayerNorm) {
  const int64_t N = 4, C = 9;
  auto inp = random_vector(N * C, 11, 2.0f), w = random_vector(C, 12), b = random_vector(C, 13);
  auto R = random_vector(N * C, 14);
  for (size_t i = 0; i < inp.size(); ++i) inp[i] += 3.0f;  // a non-zero mean
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto objective = [&]() {
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), N, C, 1e-5f);
    return dot(out, R);
  };
  objective();
  std::vector<float> dinp(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(), mean.data(), rstd.data(), N, C);
  expect_gradient("dinp", inp, dinp, objective);
  expect_gradient("dweight", w, dw, objective);
  expect_gradient("dbias", b, db, objective);
}

TEST(GradCheck, Gelu) {
  const int64_t n = 64;
  auto inp = random_vector(n, 21, 2.0f), R = random_vector(n, 22);
  std::vector<float> out(n);
  auto objective = [&]() {
    gelu_forward(out.data(), inp.data(), n);
    return dot(out, R);
  };
  std::vector<float> dinp(n);
  gelu_backward(dinp.data(), inp.data(), R.data(), n);
  expect_gradient("dinp", inp, dinp, objective, 1e-3f);
}

TEST(GradCheck, CausalAttention) {
  for (const auto& shape : {std::array<int64_t, 4>{2, 5, 8, 2}, {1, 7, 12, 3}, {1, 1, 4, 1}}) {
    const int64_t B = shape[0], T = shape[1], C = shape[2], NH = shape[3];  // (lambdas capture these)
    auto qkv = random_vector(B * T * 3 * C, 31 + T), R = random_vector(B * T * C, 32 + T);
    std::vector<float> out(B * T * C), lse(B * NH * T);
    auto objective = [&]() {
      attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
      return dot(out, R);
    };
    objective();
    std::vector<float> dqkv(B * T * 3 * C);
    attention_backward(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH);
    expect_gradient("dqkv", qkv, dqkv, objective);
  }
}

// RMSNorm, and its fused residual form giving the same output.
TEST(GradCheck, RmsNorm) {
  for (const int64_t C : {9, 64, 80}) {
    const int64_t N = 4;
    auto inp = random_vector(N * C, 111 + C, 2.0f), w = random_vector(C, 112), R = random_vector(N * C, 114);
    std::vector<float> out(N * C), rstd(N);
    auto objective = [&]() {
      rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-5f);
      return dot(out, R);
    };
    objective();
    std::vector<float> dinp(N * C, 0.0f), dw(C, 0.0f);
    rmsnorm_backward(dinp.data(), dw.data(), R.data(), inp.data(), w.data(), rstd.data(), N, C);
    expect_gradient("dinp", inp, dinp, objective);
    expect_gradient("dweight", w, dw, objective);
    // residual + delta, then the norm, in one pass: the same numbers.
    auto half = inp;
    for (auto& v : half) v *= 0.5f;
    std::vector<float> sum(N * C), fused(N * C), fused_rstd(N), applied(N * C);
    residual_rmsnorm_forward(sum.data(), fused.data(), fused_rstd.data(), half.data(), half.data(), w.data(), N, C,
                             1e-5f);
    rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-5f);
    rmsnorm_apply(applied.data(), inp.data(), rstd.data(), w.data(), N, C);
    EXPECT_EQ(sum, inp);
    EXPECT_EQ(fused, out);
    EXPECT_EQ(applied, out);  // the backward remakes the forward's output bit for bit
  }
}

TEST(GradCheck, SwiGlu) {
  const int64_t N = 4, F = 9;
  auto gate_up = random_vector(N * 2 * F, 121, 3.0f), R = random_vector(N * F, 122);
  std::vector<float> out(N * F);
  auto objective = [&]() {
    swiglu_forward(out.data(), gate_up.data(), N, F);
    return dot(out, R);
  };
  std::vector<float> dgate_up(N * 2 * F);
  swiglu_backward(dgate_up.data(), R.data(), gate_up.data(), N, F);
  expect_gradient("dgate_up", gate_up, dgate_up, objective, 1e-3f);
}

// RoPE on the q and k heads of q|k|v rows (v untouched), at positions t % T or
// packed positions; head widths 8 and 80.
TEST(GradCheck, Rope) {
  for (const int64_t hs : {8, 80}) {
    for (const bool packed : {false, true}) {
      const int64_t N = 6, T = 3, heads = 3, stride = 4 * hs;  // 2 q heads + 1 k head, then v
      const RopeTable table(8, hs, 10000.0f);
      const std::vector<int32_t> positions = {0, 1, 2, 3, 0, 7};
      auto x = random_vector(N * stride, 131 + hs), R = random_vector(N * stride, 132);
      std::vector<float> y;
      auto objective = [&]() {
        y = x;
        rope_forward(y.data(), N, stride, heads, hs, table, packed ? positions.data() : nullptr, T);
        return dot(y, R);
      };
      auto dx = R;
      rope_backward(dx.data(), N, stride, heads, hs, table, packed ? positions.data() : nullptr, T);
      expect_gradient("dx", x, dx, objective);
      // A rotation: lengths kept, position 0 the identity, v untouched.
      objective();
      for (int64_t i = 3 * hs; i < stride; ++i) EXPECT_EQ(y[i], x[i]);
      for (int64_t i = 0; i < hs; ++i) EXPECT_EQ(y[i], x[i]);
    }
  }
}

// Grouped-query attention: head widths 64, 80, 96, 128 (and tiny ones), T past
// one 64-query block, NKV dividing NH.
TEST(GradCheck, GroupedQueryAttention) {
  struct Shape {
    int64_t B, T, hs, NH, NKV;
  };
  for (const Shape& s : {Shape{2, 5, 4, 4, 2}, Shape{1, 7, 6, 3, 1}, Shape{1, 70, 64, 2, 1}, Shape{1, 67, 80, 4, 2},
                         Shape{1, 66, 96, 2, 2}, Shape{1, 65, 128, 2, 1}}) {
    const int64_t B = s.B, T = s.T, NH = s.NH, NKV = s.NKV, C = NH * s.hs, QKV = C + 2 * NKV * s.hs;
    auto qkv = random_vector(B * T * QKV, 141 + T, 0.5f), R = random_vector(B * T * C, 142 + T);
    std::vector<float> out(B * T * C), lse(B * NH * T);
    auto objective = [&]() {
      attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, nullptr, nullptr, NKV);
      return dot(out, R);
    };
    objective();
    std::vector<float> dqkv(B * T * QKV);
    attention_backward(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH, nullptr, nullptr, NKV);
    expect_gradient("dqkv", qkv, dqkv, objective, 1e-2f, T > 64 ? 600 : 0);
  }
}

TEST(GradCheck, Embedding) {
  const int64_t B = 2, T = 4, C = 3, V = 5;
  const std::vector<int32_t> tokens = {1, 3, 1, 1, 0, 4, 3, 1};  // repeats on purpose
  auto wte = random_vector(V * C, 41), wpe = random_vector(T * C, 42), R = random_vector(B * T * C, 43);
  std::vector<float> out(B * T * C);
  auto objective = [&]() {
    embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
  embedding_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  expect_gradient("dwte", wte, dwte, objective);
  expect_gradient("dwpe", wpe, dwpe, objective);
}

TEST(GradCheck, CrossEntropy) {
  const int64_t N = 6, V = 10;
  auto logits = random_vector(N * V, 51, 3.0f);
  const std::vector<int32_t> targets = {0, 9, 3, 3, 7, 1};
  std::vector<float> losses(N), lse(N);
  auto objective = [&]() {
    return static_cast<double>(cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V));
  };
  objective();
  std::vector<float> dlogits = logits;
  cross_entropy_backward_inplace(dlogits.data(), lse.data(), targets.data(), N, V, 1.0f / N);
  expect_gradient("dlogits", logits, dlogits, objective);
}

}  // namespace
}  // namespace gpt
