// RLHF's pieces: the PPO and GRPO objectives (clipped ratio, clipped value loss,
// the k3 KL term) and their gradients, and GAE, against PyTorch
// (tools/torch_reference.py make_ppo_fixture, float64); the prompt file's errors;
// the KL estimate gpt kl prints, against the exact KL where it can be summed.
#include <gtest/gtest.h>

#include <cmath>

#include "gpt/finetune/rlhf.h"
#include "gpt/model/gpt.h"
#include "gpt/util/rng.h"
#include "gpt/io/safetensors.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {

std::vector<double> read(const SafetensorsFile& f, const std::string& name) {
  const auto& shape = f.entry(name).shape;
  std::vector<float> v(static_cast<size_t>(shape[0]));
  f.read_f32(name, shape, v.data());
  return {v.begin(), v.end()};
}

void expect_close(const std::vector<double>& ours, const std::vector<double>& ref, double tol, const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::abs(ref[i]));
    err = std::max(err, std::abs(ours[i] - ref[i]));
  }
  EXPECT_LT(err / scale, tol) << what << ": worst error " << err << " of " << scale;
}

// Inputs are stored as float32 (PyTorch's results come from their float64
// originals), so the tolerance is float32's: 1e-5 relative.
TEST(TorchReferenceRlhf, PpoGrpoObjectivesAndGaeMatch) {
  const SafetensorsFile f = SafetensorsFile::load(testing::fixture("ppo_objective.safetensors"));
  const auto& meta = f.metadata();
  const double eps = std::stod(meta.at("clip_range")), ev = std::stod(meta.at("value_clip")),
               vf = std::stod(meta.at("vf_coef")), kl = std::stod(meta.at("kl_coef"));
  const auto old = read(f, "ppo.old"), adv = read(f, "ppo.adv");
  const auto v = read(f, "ppo.v"), v_old = read(f, "ppo.v_old"), ret = read(f, "ppo.ret");
  std::vector<double> d_new, d_v;
  const PpoTerms ppo = ppo_objective(read(f, "ppo.new"), old, adv, &v, &v_old, &ret, nullptr, eps, ev, vf, 0.0, d_new, d_v);
  EXPECT_NEAR(ppo.loss, read(f, "ppo.loss")[0], 1e-5 * std::abs(read(f, "ppo.loss")[0]));
  EXPECT_NEAR(ppo.clip_fraction, read(f, "ppo.clip_fraction")[0], 1e-6);  // 11 of 40 tokens (stored as float32)
  EXPECT_GT(ppo.clip_fraction, 0.05);  // the fixture exercises both sides of the clip
  expect_close(d_new, read(f, "ppo.d_new"), 1e-5, "d(loss)/d(new log-probability)");
  expect_close(d_v, read(f, "ppo.d_v"), 1e-5, "d(loss)/d(value)");

  const auto ref = read(f, "grpo.ref");
  std::vector<double> d_new2, unused;
  const PpoTerms grpo =
      ppo_objective(read(f, "grpo.new"), old, adv, nullptr, nullptr, nullptr, &ref, eps, ev, 0.0, kl, d_new2, unused);
  EXPECT_NEAR(grpo.loss, read(f, "grpo.loss")[0], 1e-5 * std::abs(read(f, "grpo.loss")[0]) + 1e-7);
  expect_close(d_new2, read(f, "grpo.d_new"), 1e-5, "GRPO d(loss)/d(new log-probability)");

  std::vector<double> a, r;
  gae(read(f, "gae.rewards"), read(f, "gae.values"), std::stod(meta.at("gamma")), std::stod(meta.at("lam")), a, r);
  expect_close(a, read(f, "gae.advantages"), 1e-5, "GAE advantages");
  expect_close(r, read(f, "gae.returns"), 1e-5, "GAE returns");
}

TEST(Rlhf, PromptFileFormatsAndErrors) {
  testing::TempDir dir;
  write_file_atomic(dir / "p.jsonl", R"({"prompt": "2+2="})" "\n" R"({"prompt": [{"role": "user", "content": "hi"}]})" "\n"
                                     R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]})" "\n");
  bool plain = true;
  const auto p = read_prompt_jsonl(dir / "p.jsonl", &plain);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_FALSE(plain);
  EXPECT_EQ(p[0][0].content, "2+2=");
  EXPECT_EQ(p[2].size(), 2u);
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    write_file_atomic(dir / "bad.jsonl", text);
    try {
      read_prompt_jsonl(dir / "bad.jsonl");
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"prompt": "a"})" "\n{x\n", "bad.jsonl:2: not valid JSON");
  expect_error(R"({"text": "a"})", "bad.jsonl:1: a prompt needs");
  expect_error(R"({"prompt": ""})", "\"prompt\" is empty");
  expect_error(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})",
               "must not end with the assistant's answer");
  RlhfOptions o;
  o.policy = std::string(1, 'p');
  o.reward = std::string(1, 'r');
  o.prompts = std::string(1, 'x');
  o.out = std::string(1, 'o');
  o.algo = "grpo";
  o.group = 1;
  EXPECT_THROW(o.validate(), Error);
  o.algo = "reinforce";
  EXPECT_THROW(o.validate(), Error);
  o.algo = "ppo";
  o.lora_rank = 4;
  o.lora_dropout = 0.1;  // the policy ratio needs one network for old and new log-probabilities
  EXPECT_THROW(o.validate(), Error);
}

// One-token answers: the estimate's mean over many samples against the exact
// KL(p || q) of the two models' next-token distributions (a sum over the
// vocabulary), within four standard errors; a model against itself is 0 exactly.
TEST(Rlhf, KlEstimateMatchesTheExactKlOfOneTokenAnswers) {
  const ModelConfig c = testing::model_config(7, 16, 1, 2, 8);
  GPT policy(c), reference(c);
  policy.init_weights(1);
  reference.init_weights(1);
  Rng rng(5);
  for (float& p : policy.params) p += static_cast<float>(rng.normal()) * 0.3f;  // moved away from the reference
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}};
  const KlEstimate e = estimate_kl(policy, reference, prompts, 4000, 1, {}, 11, 64);
  EXPECT_EQ(e.answers, 4000);
  EXPECT_EQ(e.mean_length, 1.0);
  const auto next_token = [&](GPT& m) {
    m.forward(prompts[0].data(), nullptr, 1, 3);
    const float* z = m.logits() + 2 * c.vocab_size;
    std::vector<double> p(static_cast<size_t>(c.vocab_size));
    double zmax = *std::max_element(z, z + c.vocab_size), sum = 0;
    for (int v = 0; v < c.vocab_size; ++v) sum += p[static_cast<size_t>(v)] = std::exp(z[v] - zmax);
    for (double& x : p) x /= sum;
    return p;
  };
  const auto p = next_token(policy), q = next_token(reference);
  double exact = 0;
  for (size_t v = 0; v < p.size(); ++v) exact += p[v] * std::log(p[v] / q[v]);
  ASSERT_GT(exact, 0.05) << "the two models should differ";
  EXPECT_GT(e.std_error, 0.0);
  EXPECT_NEAR(e.kl, exact, 4 * e.std_error) << "exact " << exact;
  const KlEstimate same = estimate_kl(reference, reference, prompts, 50, 4, {}, 11);
  EXPECT_EQ(same.kl, 0.0);
  EXPECT_EQ(same.mean_length, 4.0);
  // A reference with a shorter context: answers stop where both models can read them.
  GPT short_ref(testing::model_config(7, 8, 1, 2, 8));
  short_ref.init_weights(3);
  const KlEstimate cut = estimate_kl(policy, short_ref, prompts, 20, 30, {}, 5, 7);
  EXPECT_EQ(cut.answers, 20);
  EXPECT_LE(cut.mean_length, 5.0);  // 3 prompt tokens + 5 answer tokens = the reference's 8
  // Another vocabulary is refused.
  GPT other(testing::model_config(9, 16, 1, 2, 8));
  other.init_weights(2);
  EXPECT_THROW(estimate_kl(policy, other, prompts, 2, 1, {}, 1), Error);
}

}  // namespace
}  // namespace gpt
