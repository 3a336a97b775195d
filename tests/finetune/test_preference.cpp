// Preference tuning: the pair formats TRL writes and their errors; the
// Bradley-Terry and DPO losses and every gradient against PyTorch
// (tools/torch_reference.py make_preference_fixture, float64).
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "gpt/finetune/preference_data.h"
#include "gpt/finetune/preference_trainer.h"
#include "gpt/io/safetensors.h"
#include "gpt/model/gpt.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

namespace gpt {
namespace {

using testing::relative_max_error;

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(PreferenceData, ReadsTheThreeFormatsOfTrl) {
  const auto standard = preference_from_json(nlohmann::json::parse(R"({"prompt": "2+2=", "chosen": "4", "rejected": "5"})"));
  EXPECT_TRUE(standard.plain);
  EXPECT_EQ(standard.chosen[0].content, "4");
  const auto conv = preference_from_json(nlohmann::json::parse(
      R"({"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
          "rejected": [{"role": "assistant", "content": "5"}]})"));
  EXPECT_FALSE(conv.plain);
  EXPECT_EQ(conv.prompt.size(), 1u);
  const auto implicit = preference_from_json(nlohmann::json::parse(
      R"({"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
          "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]})"));
  ASSERT_EQ(implicit.prompt.size(), 1u);
  EXPECT_EQ(implicit.prompt[0].content, "2+2?");
  EXPECT_EQ(implicit.rejected[0].content, "5");
}

TEST(PreferenceData, BadPairsAreNamedByLine) {
  testing::TempDir dir;
  auto check = [&](const std::string& text, const std::string& needle) {
    write_file_atomic(dir / "p.jsonl", text);
    expect_error([&] { read_preference_jsonl(dir / "p.jsonl"); }, needle);
  };
  const std::string good = R"({"prompt": "q", "chosen": "a", "rejected": "b"})";
  check(good + "\n" + R"({"prompt": "q", "chosen": "same", "rejected": "same"})" + "\n", "p.jsonl:2: \"chosen\" and \"rejected\" are the same");
  check(good + "\n{broken\n", "p.jsonl:2: not valid JSON");
  check(R"({"prompt": "q", "chosen": "a"})", "p.jsonl:1: a preference pair needs \"chosen\" and \"rejected\"");
  check(R"({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]})", "both be strings");
  check(R"({"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]})",
        "share no prompt");
  check(R"({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "user", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})",
        "must end with an assistant message");
}

TEST(PreferenceData, ResponsesAreMarkedThroughTheTemplateOrAfterThePrompt) {
  const ChatTemplate chatml = ChatTemplate::named("chatml");
  const auto tok = make_byte_tokenizer()->with_special_tokens(chatml.markers());
  const auto p = preference_from_json(nlohmann::json::parse(R"({"prompt": "Q", "chosen": "yes", "rejected": "no"})"));
  const auto e = encode_preference(p, *tok, &chatml, 100);
  ASSERT_TRUE(e.has_value());
  std::string response;
  for (size_t i = 0; i < e->chosen.ids.size(); ++i)
    if (e->chosen.response[i]) response += tok->decode(std::vector<int32_t>{e->chosen.ids[i]});
  EXPECT_EQ(response, "yes<|im_end|>");
  EXPECT_EQ(e->chosen.ids.back(), *tok->special_token_id("<|im_end|>"));  // a sequence ends at its end of turn
  const auto plain = encode_preference(p, *make_byte_tokenizer(), nullptr, 100);
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->rejected.ids, (std::vector<int32_t>{'Q', 'n', 'o'}));
  EXPECT_EQ(plain->rejected.response, (std::vector<uint8_t>{0, 1, 1}));
  // Cut so short that a response is gone: the pair is dropped; so is one with nothing in it.
  EXPECT_FALSE(encode_preference(p, *make_byte_tokenizer(), nullptr, 1).has_value());
  const auto empty = preference_from_json(nlohmann::json::parse(R"({"prompt": "", "chosen": "", "rejected": "x"})"));
  EXPECT_FALSE(encode_preference(empty, *make_byte_tokenizer(), nullptr, 100).has_value());
}

struct PrefFixture {
  SafetensorsFile file;
  ModelConfig config;
  std::vector<EncodedPair> pairs;
  std::vector<double> ref_chosen, ref_rejected;
};

PrefFixture load_pref_fixture() {
  PrefFixture f{SafetensorsFile::load(testing::fixture("tiny_preference.safetensors")), {}, {}, {}, {}};
  f.config = ModelConfig::from_json(nlohmann::json::parse(f.file.metadata().at("config")));
  const auto& shape = f.file.entry("pairs.ids").shape;
  std::vector<int32_t> ids(static_cast<size_t>(shape[0] * shape[1])), resp(ids.size());
  f.file.read_i32("pairs.ids", shape, ids.data());
  f.file.read_i32("pairs.response", shape, resp.data());
  std::vector<float> ref(static_cast<size_t>(shape[0]));
  f.file.read_f32("ref", {shape[0]}, ref.data());
  for (int64_t i = 0; i < shape[0]; i += 2) {
    EncodedPair p;
    for (int side = 0; side < 2; ++side) {
      ScoredSequence& s = side == 0 ? p.chosen : p.rejected;
      for (int64_t t = 0; t < shape[1]; ++t) {
        const int32_t id = ids[static_cast<size_t>((i + side) * shape[1] + t)];
        if (id < 0) break;
        s.ids.push_back(id);
        s.response.push_back(static_cast<uint8_t>(resp[static_cast<size_t>((i + side) * shape[1] + t)]));
      }
    }
    f.pairs.push_back(p);
    f.ref_chosen.push_back(ref[static_cast<size_t>(i)]);
    f.ref_rejected.push_back(ref[static_cast<size_t>(i + 1)]);
  }
  return f;
}

std::vector<float> read(const SafetensorsFile& file, const std::string& name, const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  std::vector<float> v(n);
  file.read_f32(name, shape, v.data());
  return v;
}

// Stated tolerances (as the GPT-2 fixtures'): loss 1e-6 relative, gradients 1e-5
// relative to each tensor's largest value.
TEST(TorchReferencePreference, DpoAndBradleyTerryLossesAndGradientsMatch) {
  PrefFixture f = load_pref_fixture();
  GPT model(f.config);
  for (const TensorInfo& t : model.layout().tensors())
    f.file.read_f32("param." + t.name, t.shape, model.params.data() + t.offset);
  std::vector<const EncodedPair*> pairs;
  for (const EncodedPair& p : f.pairs) pairs.push_back(&p);
  const double beta = std::stod(f.file.metadata().at("beta"));
  PreferenceScratch scratch;

  model.zero_grad();
  const PreferenceMetrics dpo = preference_forward_backward(model, nullptr, nullptr, pairs, f.ref_chosen.data(),
                                                            f.ref_rejected.data(), beta, scratch);
  const float ref_loss = read(f.file, "dpo_loss", {1})[0];
  EXPECT_LT(std::abs(dpo.loss - ref_loss) / ref_loss, 1e-6) << dpo.loss << " vs " << ref_loss;
  const auto z = read(f.file, "dpo_z", {static_cast<int64_t>(pairs.size())});
  double mean_z = 0;
  for (float v : z) mean_z += v / static_cast<double>(z.size());
  EXPECT_NEAR(dpo.margin, mean_z, 1e-5 * std::abs(mean_z) + 1e-6);
  double worst = 0;
  for (const TensorInfo& t : model.layout().tensors()) {
    const auto g = read(f.file, "dpo_grad." + t.name, t.shape);
    const double err = relative_max_error(model.grads.data() + t.offset, g.data(), t.numel);
    EXPECT_LT(err, 1e-5) << "DPO gradient of " << t.name;
    worst = std::max(worst, err);
  }

  const int64_t C = f.config.n_embd;
  std::vector<float> head = read(f.file, "head", {C}), head_grad(static_cast<size_t>(C), 0.0f);
  model.zero_grad();
  const PreferenceMetrics bt = preference_forward_backward(model, head.data(), head_grad.data(), pairs, nullptr,
                                                           nullptr, 0.0, scratch);
  const float ref_bt = read(f.file, "bt_loss", {1})[0];
  EXPECT_LT(std::abs(bt.loss - ref_bt) / ref_bt, 1e-6) << bt.loss << " vs " << ref_bt;
  const auto ref_head_grad = read(f.file, "bt_grad_head", {C});
  EXPECT_LT(relative_max_error(head_grad.data(), ref_head_grad.data(), head_grad.size()), 1e-5);
  double worst_bt = 0;
  for (const TensorInfo& t : model.layout().tensors()) {
    const auto g = read(f.file, "bt_grad." + t.name, t.shape);
    const double err = relative_max_error(model.grads.data() + t.offset, g.data(), t.numel);
    EXPECT_LT(err, 1e-5) << "Bradley-Terry gradient of " << t.name;
    worst_bt = std::max(worst_bt, err);
  }
  // The scores alone (no backward) are PyTorch's rewards.
  score_pairs(model, head.data(), pairs, scratch);
  const auto rewards = read(f.file, "bt_rewards", {static_cast<int64_t>(2 * pairs.size())});
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_NEAR(scratch.chosen[i], rewards[2 * i], 1e-5 * (1 + std::abs(rewards[2 * i])));
    EXPECT_NEAR(scratch.rejected[i], rewards[2 * i + 1], 1e-5 * (1 + std::abs(rewards[2 * i + 1])));
  }
  std::printf("[ measured ] DPO loss %.2e, worst gradient %.2e; Bradley-Terry loss %.2e, worst gradient %.2e\n",
              std::abs(dpo.loss - ref_loss) / ref_loss, worst, std::abs(bt.loss - ref_bt) / ref_bt, worst_bt);
}

}  // namespace
}  // namespace gpt
