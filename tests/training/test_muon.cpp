// Muon: the Newton-Schulz orthogonalisation and three update steps against a
// float64 PyTorch reference (tools/torch_reference.py make_muon_fixture), for a
// wide and a tall matrix; which tensors it trains. (Training with it, and
// resuming: test_resume.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpt/io/safetensors.h"
#include "gpt/model/gpt.h"
#include "gpt/training/muon.h"
#include "gpt/util/rng.h"
#include "test_support.h"

namespace gpt {
namespace {

std::vector<float> read_tensor(const SafetensorsFile& f, const std::string& name) {
  const auto& shape = f.entry(name).shape;
  std::vector<float> v(static_cast<size_t>(shape[0] * shape[1]));
  f.read_f32(name, shape, v.data());
  return v;
}

// max |a - b| / max |b|
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return err / scale;
}

TEST(TorchReferenceMuon, NewtonSchulzAndThreeStepsMatch) {
  const SafetensorsFile f = SafetensorsFile::load(testing::fixture("muon_update.safetensors"));
  const auto& meta = f.metadata();
  MuonConfig c;
  c.lr = std::stof(meta.at("lr"));
  c.momentum = std::stof(meta.at("momentum"));
  c.weight_decay = std::stof(meta.at("weight_decay"));
  c.ns_steps = std::stoi(meta.at("ns_steps"));
  const int steps = std::stoi(meta.at("steps"));
  for (const std::string key : {"wide", "tall"}) {
    const auto& shape = f.entry(key + ".w0").shape;
    const int64_t rows = shape[0], cols = shape[1], n = rows * cols;
    // The orthogonalisation alone (float32 against float64: the iteration is stable).
    std::vector<float> x = read_tensor(f, key + ".grad0"), scratch;
    newton_schulz(x.data(), rows, cols, c.ns_steps, scratch);
    EXPECT_LT(relative_error(x, read_tensor(f, key + ".ns")), 2e-5) << key;
    // Three steps from w0: the parameters after each.
    std::vector<float> params = read_tensor(f, key + ".w0"), grads, momentum(static_cast<size_t>(n), 0.0f);
    const std::vector<TensorInfo> table = {
        {"h.0.mlp.c_fc.weight", {rows, cols}, 0, static_cast<size_t>(n), true, WeightRole::kMlpInWeight, 0}};
    ASSERT_TRUE(is_muon_tensor(table[0]));
    Muon muon(table, c);
    for (int s = 0; s < steps; ++s) {
      grads = read_tensor(f, key + ".grad" + std::to_string(s));
      const std::vector<float> before = params;
      muon.step(params.data(), grads.data(), momentum.data(), c.lr);
      const std::vector<float> ref = read_tensor(f, key + ".w" + std::to_string(s + 1));
      // The step itself (not the weights it is added to) within float32's reach.
      std::vector<float> ours(params.size()), theirs(params.size());
      const std::vector<float> ref_before = read_tensor(f, key + ".w" + std::to_string(s));
      for (size_t i = 0; i < params.size(); ++i) {
        ours[i] = params[i] - before[i];
        theirs[i] = ref[i] - ref_before[i];
      }
      EXPECT_LT(relative_error(ours, theirs), 5e-5) << key << " step " << s + 1;
      EXPECT_LT(relative_error(params, ref), 1e-5) << key << " step " << s + 1;
    }
    // The same matrix stored (out, in), as Llama's nn.Linear weights are: the
    // transposed parameters after the same three steps (the scale follows
    // the matrix's out / in, not its storage).
    auto transposed = [&](const std::vector<float>& m) {
      std::vector<float> t(m.size());
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) t[static_cast<size_t>(j * rows + i)] = m[static_cast<size_t>(i * cols + j)];
      return t;
    };
    std::vector<float> pt = transposed(read_tensor(f, key + ".w0")), mt(static_cast<size_t>(n), 0.0f);
    const std::vector<TensorInfo> out_major = {{"model.layers.0.mlp.up_proj.weight", {cols, rows}, 0,
                                                static_cast<size_t>(n), true, WeightRole::kPart, 0, true}};
    ASSERT_TRUE(is_muon_tensor(out_major[0]));
    Muon muon_t(out_major, c);
    for (int s = 0; s < steps; ++s) {
      const std::vector<float> gt = transposed(read_tensor(f, key + ".grad" + std::to_string(s)));
      muon_t.step(pt.data(), gt.data(), mt.data(), c.lr);
    }
    EXPECT_LT(relative_error(pt, transposed(read_tensor(f, key + ".w" + std::to_string(steps)))), 1e-5) << key;
  }
}

TEST(Muon, TrainsTheBlocksMatricesOnly) {
  const GPT model(testing::model_config(11, 8, 2, 2, 8));
  int matrices = 0;
  for (const TensorInfo& t : model.layout().tensors()) {
    const bool hidden = t.name.starts_with("h.") && t.name.ends_with(".weight") && t.shape.size() == 2;
    EXPECT_EQ(is_muon_tensor(t), hidden) << t.name;
    matrices += is_muon_tensor(t);
  }
  EXPECT_EQ(matrices, 8);  // 4 per block: c_attn, attn.c_proj, c_fc, mlp.c_proj
  const GPT llama(testing::llama_config(11, 8, 2, 2, 1, 8));
  matrices = 0;
  for (const TensorInfo& t : llama.layout().tensors()) {
    const bool hidden = t.name.starts_with("model.layers.") && t.shape.size() == 2;
    EXPECT_EQ(is_muon_tensor(t), hidden) << t.name;
    matrices += is_muon_tensor(t);
  }
  EXPECT_EQ(matrices, 14);  // 7 per block: q, k, v, o, gate, up, down
  // A transposed matrix gives the transposed orthogonalisation, exactly.
  Rng rng(4);
  std::vector<float> g(12 * 40), gt(g.size()), scratch;
  for (auto& v : g) v = static_cast<float>(rng.normal());
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < 40; ++j) gt[static_cast<size_t>(j * 12 + i)] = g[static_cast<size_t>(i * 40 + j)];
  newton_schulz(g.data(), 12, 40, 5, scratch);
  newton_schulz(gt.data(), 40, 12, 5, scratch);
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < 40; ++j) ASSERT_EQ(gt[static_cast<size_t>(j * 12 + i)], g[static_cast<size_t>(i * 40 + j)]);
}

}  // namespace
}  // namespace gpt
