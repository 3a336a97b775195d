// gpt.cpp against PyTorch: logits, loss, every gradient and the parameters after
// three clipped AdamW steps, for the fixtures made by tools/torch_reference.py
// (computed in float64 by PyTorch from the same float32 parameters).
// Tolerances (error relative to each tensor's largest magnitude, see below) hold
// at 1 thread and at 2.
#include <optional>
#include <gtest/gtest.h>
#include <omp.h>

#include <nlohmann/json.hpp>

#include "gpt/io/safetensors.h"
#include "gpt/kernels/matmul.h"
#include "gpt/kernels/matmul_bf16.h"
#include "gpt/model/gpt.h"
#include "gpt/training/adamw.h"
#include "test_support.h"

namespace gpt {
namespace {

using testing::relative_max_error;

// Stated tolerances; measured (2026-11-28): logits 5.1e-7, loss < 1e-7,
// gradients 9.5e-7, parameters after 3 steps 6.8e-6.
constexpr double kLogitsTol = 5e-6;  // max |err| / max |logit|
constexpr double kLossTol = 1e-6;    // relative
constexpr double kGradTol = 1e-5;    // per tensor: max |err| / max |grad|
constexpr double kStepTol = 5e-5;    // parameters after 3 AdamW steps, per tensor

struct Fixture {
  SafetensorsFile file;
  ModelConfig config;
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens, targets;
};

Fixture load_fixture(const std::string& name) {
  Fixture f{SafetensorsFile::load(testing::fixture(name + ".safetensors")), {}, 0, 0, {}, {}};
  f.config = ModelConfig::from_json(nlohmann::json::parse(f.file.metadata().at("config")));
  const auto& shape = f.file.entry("tokens").shape;
  f.B = shape[0];
  f.T = shape[1];
  f.tokens.resize(static_cast<size_t>(f.B * f.T));
  f.targets.resize(f.tokens.size());
  f.file.read_i32("tokens", shape, f.tokens.data());
  f.file.read_i32("targets", shape, f.targets.data());
  return f;
}

std::vector<float> read(const SafetensorsFile& file, const std::string& name, const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  std::vector<float> v(n);
  file.read_f32(name, shape, v.data());
  return v;
}

class TorchReference : public ::testing::TestWithParam<std::tuple<std::string, int>> {
 protected:
  void SetUp() override { omp_set_num_threads(std::get<1>(GetParam())); }
  void TearDown() override { omp_set_num_threads(omp_get_num_procs()); }
};

TEST_P(TorchReference, ForwardBackwardAndAdamWMatch) {
  const Fixture f = load_fixture(std::get<0>(GetParam()));
  GPT model(f.config);
  for (const TensorInfo& t : model.layout().tensors())
    f.file.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);

  // Forward: logits (kept without targets) and loss (with targets, chunked).
  model.forward(f.tokens.data(), nullptr, f.B, f.T);
  const float loss = model.forward(f.tokens.data(), f.targets.data(), f.B, f.T);
  const auto ref_logits = read(f.file, "logits", {f.B, f.T, f.config.vocab_size});
  const double logits_err = relative_max_error(model.logits(), ref_logits.data(), ref_logits.size());
  EXPECT_LT(logits_err, kLogitsTol);
  const float ref_loss = read(f.file, "loss", {1})[0];
  EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, kLossTol) << loss << " vs " << ref_loss;

  // Backward: every parameter's gradient.
  model.zero_grad();
  EXPECT_EQ(model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T), loss);
  double worst = 0;
  std::string worst_name;
  for (const TensorInfo& t : model.layout().tensors()) {
    const auto ref = read(f.file, "grad." + t.name, t.shape);
    const double err = relative_max_error(model.grads.data() + t.offset, ref.data(), t.numel);
    EXPECT_LT(err, kGradTol) << "gradient of " << t.name;
    if (err > worst) worst = err, worst_name = t.name;
  }
  std::printf("[ measured ] logits %.2e, loss %.2e, worst gradient %.2e (%s)\n", logits_err,
              std::abs(loss - ref_loss) / ref_loss, worst, worst_name.c_str());

  // Three AdamW steps on the same batch, with clipping and decoupled weight decay.
  const auto meta = f.file.metadata();
  const auto lrs = nlohmann::json::parse(meta.at("lrs")).get<std::vector<float>>();
  const auto betas = nlohmann::json::parse(meta.at("betas")).get<std::vector<float>>();
  const float clip = std::stof(meta.at("grad_clip"));
  AdamW opt(model.layout(), {betas[0], betas[1], std::stof(meta.at("eps")), std::stof(meta.at("weight_decay"))});
  const auto ref_losses = read(f.file, "losses", {3});
  const auto ref_norms = read(f.file, "grad_norms", {3});
  for (int s = 0; s < 3; ++s) {
    model.zero_grad();
    const float l = model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T);
    const float norm = clip_grad_norm(model.grads.data(), model.grads.size(), clip);
    EXPECT_LT(std::abs(l - ref_losses[s]) / ref_losses[s], kLossTol) << "loss before step " << s + 1;
    EXPECT_LT(std::abs(norm - ref_norms[s]) / ref_norms[s], kGradTol) << "grad norm at step " << s + 1;
    opt.step(model.params.data(), model.grads.data(), lrs[s]);
  }
  // Adam divides each gradient by its own running magnitude, so where the true
  // gradient is tiny (below 1e-6 here: the key part of c_attn.bias is exactly 0,
  // since adding a constant to every score of a softmax row changes nothing, and
  // a few other entries happen to be ~1e-8) float32 rounding of the gradient
  // decides the direction of a step of about lr. With RoPE a key bias keeps only
  // a position-dependent part: its gradient is a near-cancelling sum, 1e-5 ..
  // 1e-3 of the largest entry, whose float32 rounding (about 1e-6 of the terms)
  // still moves its step by ~1e-5. Those entries (below 1e-6, or for k_proj.bias
  // below 1e-3 of its largest gradient) are checked for moving no more than Adam
  // allows; all others must match PyTorch to kStepTol.
  double worst_step = 0;
  size_t ill_conditioned = 0;
  const float lr_sum = lrs[0] + lrs[1] + lrs[2];
  for (const TensorInfo& t : model.layout().tensors()) {
    const auto ref = read(f.file, "step3." + t.name, t.shape);
    const auto initial = read(f.file, "param." + t.name, t.shape);
    const auto ref_grad = read(f.file, "grad." + t.name, t.shape);
    const float* ours = model.params.data() + t.offset;
    double max_ref = 1e-30, max_err = 0;
    float max_grad = 0;
    for (size_t i = 0; i < t.numel; ++i) max_ref = std::max(max_ref, std::abs(static_cast<double>(ref[i])));
    for (size_t i = 0; i < t.numel; ++i) max_grad = std::max(max_grad, std::abs(ref_grad[i]));
    const float tiny = t.name.ends_with("k_proj.bias") ? std::max(1e-6f, 1e-3f * max_grad) : 1e-6f;
    for (size_t i = 0; i < t.numel; ++i) {
      if (ref_grad[i] != 0.0f && std::abs(ref_grad[i]) < tiny) {
        ++ill_conditioned;
        EXPECT_LE(std::abs(ours[i] - initial[i]), 1.01f * lr_sum * (1.0f + std::abs(initial[i])))
            << t.name << "[" << i << "]";
      } else {
        max_err = std::max(max_err, std::abs(static_cast<double>(ours[i]) - ref[i]));
      }
    }
    EXPECT_LT(max_err / max_ref, kStepTol) << "parameter " << t.name << " after 3 AdamW steps";
    worst_step = std::max(worst_step, max_err / max_ref);
  }
  EXPECT_LT(ill_conditioned, model.params.size() / 50);
  std::printf("[ measured ] parameters after 3 AdamW steps: worst %.2e (%zu entries with tiny gradients bounded only)\n", worst_step, ill_conditioned);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchReference,
                         ::testing::Combine(::testing::Values("tiny_learned_tied", "tiny_sinusoidal_untied",
                                                              "tiny_llama_gqa_tied", "tiny_llama_untied",
                                                              "tiny_qwen2_bias_mqa", "tiny_llama_linear_x2",
                                                              "tiny_llama_yarn_x2"),
                                            ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_threads" + std::to_string(std::get<1>(info.param));
                         });

// bf16 matrix products (--dtype bf16: inputs rounded to bfloat16, float32
// accumulation), against the same float64 PyTorch answers. bfloat16 keeps 8 bits
// of mantissa (relative rounding 2^-9 = 2e-3 per input), so the stated tolerances
// are those of the format, measured (2026-11-28): logits 4.4e-3, loss 3e-4,
// gradients 1.6e-2 (both kernels: oneDNN's and the portable fallback). A Llama
// block chains more rounded products (SwiGLU multiplies two of them): logits
// 1.04e-2 (measured 2026-12-05), so its stated logits tolerance is 2e-2.
TEST(TorchReferenceBf16, ForwardAndBackwardWithinBf16Rounding) {
  for (bool portable : {false, true}) {
    for (const char* name : {"tiny_learned_tied", "tiny_sinusoidal_untied", "tiny_llama_gqa_tied"}) {
      const Fixture f = load_fixture(name);
      GPT model(f.config);
      for (const TensorInfo& t : model.layout().tensors())
        f.file.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);
      ComputeContext bf16({MatmulPrecision::kBFloat16});
      std::optional<ComputeScope> scope(std::in_place, bf16);
      // oneDNN's kernels where they exist, whatever auto would pick.
      const testing::Bf16GemmModeGuard native(Bf16GemmMode::kNative);
      force_portable_bf16_gemm(portable);
      const char* kernels = portable ? "portable" : (bf16_gemm_native() ? "oneDNN bf16" : "portable: no oneDNN bf16 here");
      model.forward(f.tokens.data(), nullptr, f.B, f.T);
      const auto ref_logits = read(f.file, "logits", {f.B, f.T, f.config.vocab_size});
      const double logits_err = relative_max_error(model.logits(), ref_logits.data(), ref_logits.size());
      const float ref_loss = read(f.file, "loss", {1})[0];
      model.zero_grad();
      const float loss = model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T);
      double worst = 0;
      for (const TensorInfo& t : model.layout().tensors()) {
        const auto ref = read(f.file, "grad." + t.name, t.shape);
        worst = std::max(worst, relative_max_error(model.grads.data() + t.offset, ref.data(), t.numel));
      }
      scope.reset();
      force_portable_bf16_gemm(false);
      std::printf("[ measured ] bf16 %s (%s): logits %.2e, loss %.2e, worst gradient %.2e\n", name, kernels,
                  logits_err, std::abs(loss - ref_loss) / ref_loss, worst);
      EXPECT_LT(logits_err, f.config.llama() ? 2e-2 : 1e-2) << name;
      EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, 2e-3) << name;
      EXPECT_LT(worst, 5e-2) << name;
      EXPECT_GT(logits_err, 1e-5) << "bf16 was not used";  // float32 is 5e-7
    }
  }
}

// Fine-tuning (tools/torch_reference.py make_lora_fixture): targets masked as a
// chat's prompt is, for the whole model; then a LoRA adapter on all four
// products with trainable token rows: logits, loss, every adapter gradient, and
// the adapter after 3 clipped AdamW steps (OptimizerStep over the adapter).
// Dropout as nanoGPT applies it (embeddings, attention weights, both residual
// branches) with gpt.cpp's hashed masks, which tools/torch_reference.py draws
// the same way: the training pass's loss and every gradient, for rows 5.. of a
// larger batch, on 1 and 3 threads; evaluation (forward) has no dropout.
TEST(TorchReferenceDropout, TrainingPassMatchesWithTheSameMasks) {
  const Fixture f = load_fixture("tiny_dropout");
  const auto meta = f.file.metadata();
  GPT model(f.config);
  for (const TensorInfo& t : model.layout().tensors())
    f.file.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);
  model.set_dropout(std::stof(meta.at("dropout")));
  model.set_dropout_seed(std::stoull(meta.at("dropout_seed")), std::stoll(meta.at("first_row")));
  const float ref_loss = read(f.file, "loss", {1})[0];
  const float ref_eval = read(f.file, "eval_loss", {1})[0];
  const gpt::testing::ThreadCountGuard restore;
  for (int threads : {1, 3}) {
    omp_set_num_threads(threads);
    model.zero_grad();
    const float loss = model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T);
    EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, kLossTol) << loss << " vs " << ref_loss;
    for (const TensorInfo& t : model.layout().tensors()) {
      const auto ref = read(f.file, "grad." + t.name, t.shape);
      EXPECT_LT(relative_max_error(model.grads.data() + t.offset, ref.data(), t.numel), kGradTol)
          << "gradient of " << t.name << " on " << threads << " threads";
    }
    const float eval = model.forward(f.tokens.data(), f.targets.data(), f.B, f.T);
    EXPECT_LT(std::abs(eval - ref_eval) / ref_eval, kLossTol) << eval << " vs " << ref_eval;
  }
  EXPECT_GT(std::abs(ref_loss - ref_eval), 1e-3) << "dropout should change the training loss";
}

TEST(TorchReferenceFinetune, MaskedLossAndLoraMatch) {
  const Fixture f = load_fixture("tiny_lora_sft");
  GPT model(f.config);
  for (const TensorInfo& t : model.layout().tensors())
    f.file.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);
  const auto meta = f.file.metadata();

  // The whole model with ignored targets (-1).
  model.zero_grad();
  const float loss = model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T);
  const float ref_loss = read(f.file, "loss", {1})[0];
  EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, kLossTol) << loss << " vs " << ref_loss;
  EXPECT_EQ(model.forward(f.tokens.data(), f.targets.data(), f.B, f.T), loss);
  double worst = 0;
  for (const TensorInfo& t : model.layout().tensors()) {
    const auto ref = read(f.file, "grad." + t.name, t.shape);
    const double err = relative_max_error(model.grads.data() + t.offset, ref.data(), t.numel);
    EXPECT_LT(err, kGradTol) << "gradient of " << t.name;
    worst = std::max(worst, err);
  }

  // LoRA: the adapter as the fixture has it.
  LoraConfig lc;
  lc.rank = std::stoi(meta.at("rank"));
  lc.alpha = std::stof(meta.at("alpha"));
  lc.trainable_tokens_begin = std::stoi(meta.at("tokens_begin"));
  auto adapter = std::make_shared<LoraAdapters>(f.config, lc);
  for (const TensorInfo& t : adapter->tensors())
    f.file.read_f32("lora." + t.name, t.shape, adapter->params.data() + t.offset);
  adapter->apply_token_rows(model);
  model.attach_lora(adapter);
  model.forward(f.tokens.data(), nullptr, f.B, f.T);
  const auto ref_logits = read(f.file, "lora_logits", {f.B, f.T, f.config.vocab_size});
  const double logits_err = relative_max_error(model.logits(), ref_logits.data(), ref_logits.size());
  EXPECT_LT(logits_err, kLogitsTol);
  model.zero_grad();
  const float lora_loss = model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T);
  const float ref_lora_loss = read(f.file, "lora_loss", {1})[0];
  EXPECT_LT(std::abs(lora_loss - ref_lora_loss) / ref_lora_loss, kLossTol) << lora_loss << " vs " << ref_lora_loss;
  double worst_lora = 0;
  for (const TensorInfo& t : adapter->tensors()) {
    const auto ref = read(f.file, "lora_grad." + t.name, t.shape);
    const double err = relative_max_error(adapter->grads.data() + t.offset, ref.data(), t.numel);
    EXPECT_LT(err, kGradTol) << "gradient of " << t.name;
    worst_lora = std::max(worst_lora, err);
  }
  EXPECT_TRUE(model.grads.size() == model.layout().total());  // the earlier full pass's, untouched
  const std::vector<float> base_grads = model.grads;

  // Three AdamW steps of the adapter alone (its table: decay on A and B, not on the token rows), clipped.
  const auto lrs = nlohmann::json::parse(meta.at("lrs")).get<std::vector<float>>();
  const auto betas = nlohmann::json::parse(meta.at("betas")).get<std::vector<float>>();
  AdamW opt(adapter->tensors(), adapter->total(),
            {betas[0], betas[1], std::stof(meta.at("eps")), std::stof(meta.at("weight_decay"))});
  const float clip = std::stof(meta.at("grad_clip"));
  const std::vector<float> base_params = model.params;
  const auto ref_losses = read(f.file, "lora_losses", {3});
  for (int s = 0; s < 3; ++s) {
    model.zero_grad();
    const float l = model.forward_backward(f.tokens.data(), f.targets.data(), f.B, f.T);
    EXPECT_LT(std::abs(l - ref_losses[s]) / ref_losses[s], kLossTol) << "loss before step " << s + 1;
    clip_grad_norm(adapter->grads.data(), adapter->total(), clip);
    opt.step(adapter->params.data(), adapter->grads.data(), lrs[s]);
    adapter->apply_token_rows(model);
  }
  double worst_step = 0;
  for (const TensorInfo& t : adapter->tensors()) {
    const auto ref = read(f.file, "lora_step3." + t.name, t.shape);
    const double err = relative_max_error(adapter->params.data() + t.offset, ref.data(), t.numel);
    EXPECT_LT(err, kStepTol) << t.name << " after 3 AdamW steps";
    worst_step = std::max(worst_step, err);
  }
  // The base stayed frozen (only the trainable token rows, written back from the adapter, changed).
  const int64_t C = f.config.n_embd;
  for (size_t i = 0; i < base_params.size(); ++i) {
    if (i >= static_cast<size_t>(lc.trainable_tokens_begin * C) && i < static_cast<size_t>(f.config.vocab_size * C)) continue;
    ASSERT_EQ(model.params[i], base_params[i]) << "base parameter " << i << " moved";
  }
  EXPECT_EQ(model.grads, base_grads);
  std::printf("[ measured ] masked loss: worst gradient %.2e; LoRA: logits %.2e, worst gradient %.2e, after 3 steps %.2e\n",
              worst, logits_err, worst_lora, worst_step);
}

}  // namespace
}  // namespace gpt
