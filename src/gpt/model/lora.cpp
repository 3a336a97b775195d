#include "gpt/model/lora.h"

#include <cmath>
#include <sstream>

#include "gpt/kernels/matmul.h"
#include "gpt/model/gpt.h"
#include "gpt/util/error.h"
#include "gpt/util/rng.h"

namespace gpt {

const char* lora_target_name(LoraTarget t) {
  switch (t) {
    case LoraTarget::kAttnQkv: return "c_attn";
    case LoraTarget::kAttnProj: return "attn.c_proj";
    case LoraTarget::kMlpFc: return "c_fc";
    case LoraTarget::kMlpProj: return "mlp.c_proj";
  }
  return "?";
}

namespace {
// PEFT's module path of a target inside block h.N.
const char* module_path(LoraTarget t) {
  switch (t) {
    case LoraTarget::kAttnQkv: return "attn.c_attn";
    case LoraTarget::kAttnProj: return "attn.c_proj";
    case LoraTarget::kMlpFc: return "mlp.c_fc";
    case LoraTarget::kMlpProj: return "mlp.c_proj";
  }
  return "?";
}
constexpr LoraTarget kTargets[] = {LoraTarget::kAttnQkv, LoraTarget::kAttnProj, LoraTarget::kMlpFc,
                                   LoraTarget::kMlpProj};
}  // namespace

std::array<bool, kLoraTargetCount> LoraConfig::parse_targets(const std::string& csv) {
  std::array<bool, kLoraTargetCount> on{};
  std::stringstream ss(csv);
  std::string name;
  bool any = false;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) continue;
    if (name == "all") {
      on.fill(true);
      any = true;
      continue;
    }
    bool found = false;
    for (LoraTarget t : kTargets) {
      // PEFT also accepts the full module path (attn.c_attn, mlp.c_fc).
      if (name == lora_target_name(t) || name == module_path(t)) {
        on[static_cast<size_t>(t)] = true;
        found = any = true;
      }
    }
    GPT_CHECK(found, "unknown LoRA target '" + name + "' (known: c_attn, attn.c_proj, c_fc, mlp.c_proj, all)");
  }
  GPT_CHECK(any, "--lora-targets names no target");
  return on;
}

std::string LoraConfig::targets_csv() const {
  std::string s;
  for (LoraTarget t : kTargets) {
    if (!targets[static_cast<size_t>(t)]) continue;
    if (!s.empty()) s.push_back(',');
    s.append(lora_target_name(t));
  }
  return s;
}

LoraConfig LoraConfig::from_flags(int rank, double alpha, double dropout, const std::string& targets_csv,
                                  int trainable_tokens_begin) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = static_cast<float>(alpha);
  c.dropout = static_cast<float>(dropout);
  c.targets = parse_targets(targets_csv);
  c.trainable_tokens_begin = trainable_tokens_begin;
  c.validate();
  return c;
}

void LoraConfig::validate() const {
  GPT_CHECK(rank > 0 && rank <= 4096, "--lora-rank must be in [1, 4096], got " + std::to_string(rank));
  GPT_CHECK(std::isfinite(alpha) && alpha > 0, "--lora-alpha must be positive");
  GPT_CHECK(dropout >= 0 && dropout < 1, "--lora-dropout must be in [0, 1)");
  bool any = false;
  for (bool b : targets) any = any || b;
  GPT_CHECK(any, "LoRA needs at least one target");
}

LoraAdapters::LoraAdapters(const ModelConfig& model, const LoraConfig& config) : model_(model), config_(config) {
  GPT_CHECK(!model.llama(), "LoRA adapters are for gpt2 models only (llama's are not supported yet)");
  config_.validate();
  const int64_t C = model.n_embd, r = config.rank;
  slots_.resize(static_cast<size_t>(model.n_layer * kLoraTargetCount));
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    TensorInfo t;
    t.name = name;
    t.shape = shape;
    t.offset = total_;
    t.numel = static_cast<size_t>(shape[0] * shape[1]);
    t.weight_decay = decay;
    total_ += t.numel;
    tensors_.push_back(t);
    return t.offset;
  };
  for (int l = 0; l < model.n_layer; ++l) {
    for (LoraTarget t : kTargets) {
      if (!config.targets[static_cast<size_t>(t)]) continue;
      Slot& s = slot(l, t);
      s.in = t == LoraTarget::kMlpProj ? 4 * C : C;
      s.out = t == LoraTarget::kAttnQkv ? 3 * C : t == LoraTarget::kMlpFc ? 4 * C : C;
      const std::string base = "base_model.model.transformer.h." + std::to_string(l) + "." + module_path(t);
      s.a = add(base + ".lora_A.weight", {r, s.in}, true);
      s.b = add(base + ".lora_B.weight", {s.out, r}, true);
      s.used = true;
    }
  }
  if (config.trainable_tokens_begin >= 0) {
    GPT_CHECK(config.trainable_tokens_begin < model.vocab_size, "trainable tokens start past the vocabulary");
    GPT_CHECK(model.tie_word_embeddings,
              "LoRA with new special tokens needs a tied LM head (GPT-2's); this model's head is separate");
    const int64_t n = model.vocab_size - config.trainable_tokens_begin;
    token_delta_ = add("base_model.model.transformer.wte.token_adapter.trainable_tokens_delta", {n, C}, false);
  }
  params.assign(total_, 0.0f);
}

const TensorInfo* LoraAdapters::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::shared_ptr<LoraAdapters> LoraAdapters::fresh(const GPT& model, const LoraConfig& config, uint64_t seed) {
  auto adapter = std::make_shared<LoraAdapters>(model.config(), config);
  adapter->init(seed, model);
  return adapter;
}

void LoraAdapters::init(uint64_t seed, const GPT& model) {
  Rng rng(seed);
  std::fill(params.begin(), params.end(), 0.0f);
  if (config_.trainable_tokens_begin >= 0) {
    GPT_CHECK(model.config().vocab_size == model_.vocab_size && model.config().n_embd == model_.n_embd,
              "LoRA adapter and model differ in shape");
    const float* rows = model.weights().wte + static_cast<int64_t>(config_.trainable_tokens_begin) * model_.n_embd;
    std::copy_n(rows, static_cast<size_t>((model_.vocab_size - config_.trainable_tokens_begin) * model_.n_embd),
                params.begin() + static_cast<std::ptrdiff_t>(token_delta_));
  }
  for (const Slot& s : slots_) {
    if (!s.used) continue;
    const double bound = 1.0 / std::sqrt(static_cast<double>(s.in));
    float* a = params.data() + s.a;
    for (int64_t i = 0; i < config_.rank * s.in; ++i) a[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
  }
}

void LoraAdapters::apply_token_rows(GPT& model) const {
  if (config_.trainable_tokens_begin < 0) return;
  float* wte = model.mutable_weights().wte + static_cast<int64_t>(config_.trainable_tokens_begin) * model_.n_embd;
  std::copy_n(params.data() + token_delta_,
              static_cast<size_t>((model_.vocab_size - config_.trainable_tokens_begin) * model_.n_embd), wte);
}

bool LoraAdapters::adapts(int layer, LoraTarget t) const { return slot(layer, t).used; }

namespace {
// The mask's index of element i of an (N, in) buffer of `key`'s rows: global row, position, feature.
inline uint64_t mask_index(const DropoutKey& key, int64_t i, int64_t in) { return dropout_index(key, i / in, i % in, in); }
inline bool keep(uint64_t seed, uint64_t index, uint32_t threshold) { return dropout_keep(seed, index, threshold); }
inline uint64_t target_seed(const DropoutKey& key, int layer, LoraTarget t) {
  return mix64(key.seed ^ (static_cast<uint64_t>(layer) << 8 | static_cast<uint64_t>(t)));
}
}  // namespace

const float* LoraAdapters::dropped_input(const float* x, int64_t N, int64_t in, const DropoutKey& key, int layer,
                                         LoraTarget t) {
  if (config_.dropout <= 0.0f) return x;
  if (scratch_x_.size() < static_cast<size_t>(N * in)) scratch_x_.resize(static_cast<size_t>(N * in));
  const uint32_t threshold = dropout_threshold(config_.dropout);
  const float kept_scale = 1.0f / (1.0f - config_.dropout);
  const uint64_t s = target_seed(key, layer, t);
  float* out = scratch_x_.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N * in; ++i) out[i] = keep(s, mask_index(key, i, in), threshold) ? x[i] * kept_scale : 0.0f;
  return out;
}

void LoraAdapters::forward(int layer, LoraTarget t, const float* x, int64_t N, float* y, bool training,
                           const DropoutKey& key) {
  const Slot& s = slot(layer, t);
  if (!s.used) return;
  const int64_t r = config_.rank;
  float* h;
  if (training) {
    if (hidden_rows_ < N) {
      hidden_rows_ = N;
      hidden_.assign(slots_.size() * static_cast<size_t>(N * r), 0.0f);
    }
    h = hidden_.data() + static_cast<size_t>(layer * kLoraTargetCount + static_cast<int>(t)) * static_cast<size_t>(hidden_rows_ * r);
  } else {
    if (scratch_h_.size() < static_cast<size_t>(N * r)) scratch_h_.resize(static_cast<size_t>(N * r));
    h = scratch_h_.data();
  }
  const float* xd = training ? dropped_input(x, N, s.in, key, layer, t) : x;
  // h (N, r) = xd (N, in) @ A^T;  y (N, out) += scale * h @ B^T
  gemm(false, true, N, r, s.in, 1.0f, xd, s.in, params.data() + s.a, s.in, 0.0f, h, r);
  gemm(false, true, N, s.out, r, config_.scale(), h, r, params.data() + s.b, r, 1.0f, y, s.out);
}

void LoraAdapters::backward(int layer, LoraTarget t, const float* x, const float* dy, int64_t N, float* dx,
                            const DropoutKey& key) {
  const Slot& s = slot(layer, t);
  if (!s.used) return;
  GPT_CHECK(N <= hidden_rows_, "LoRA backward without its training forward");
  const int64_t r = config_.rank;
  const float scale = config_.scale();
  const float* h =
      hidden_.data() + static_cast<size_t>(layer * kLoraTargetCount + static_cast<int>(t)) * static_cast<size_t>(hidden_rows_ * r);
  if (grads.size() != total_) grads.assign(total_, 0.0f);
  if (scratch_h_.size() < static_cast<size_t>(N * r)) scratch_h_.resize(static_cast<size_t>(N * r));
  float* dh = scratch_h_.data();
  // dB (out, r) += scale * dy^T @ h;  dh (N, r) = scale * dy @ B
  gemm(true, false, s.out, r, N, scale, dy, s.out, h, r, 1.0f, grads.data() + s.b, r);
  gemm(false, false, N, r, s.out, scale, dy, s.out, params.data() + s.b, r, 0.0f, dh, r);
  // dA (r, in) += dh^T @ dropout(x)
  const float* xd = dropped_input(x, N, s.in, key, layer, t);
  gemm(true, false, r, s.in, N, 1.0f, dh, r, xd, s.in, 1.0f, grads.data() + s.a, s.in);
  if (dx == nullptr) return;
  if (config_.dropout <= 0.0f) {
    gemm(false, false, N, s.in, r, 1.0f, dh, r, params.data() + s.a, s.in, 1.0f, dx, s.in);
    return;
  }
  // Through the dropout: the mask (and 1/(1-p)) applies to dx as it did to x. The
  // scratch that held dropout(x) takes dh @ A.
  float* tmp = scratch_x_.data();
  gemm(false, false, N, s.in, r, 1.0f, dh, r, params.data() + s.a, s.in, 0.0f, tmp, s.in);
  const uint32_t threshold = dropout_threshold(config_.dropout);
  const float kept_scale = 1.0f / (1.0f - config_.dropout);
  const uint64_t sd = target_seed(key, layer, t);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N * s.in; ++i)
    if (keep(sd, mask_index(key, i, s.in), threshold)) dx[i] += tmp[i] * kept_scale;
}

void LoraAdapters::merge_into(GPT& model) const {
  const ModelConfig& c = model.config();
  GPT_CHECK(c.n_layer == model_.n_layer && c.n_embd == model_.n_embd && c.vocab_size == model_.vocab_size,
            "the adapter was made for another model shape");
  const ModelWeights& w = model.mutable_weights();
  const int64_t r = config_.rank;
  for (int l = 0; l < model_.n_layer; ++l) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    for (LoraTarget t : kTargets) {
      const Slot& s = slot(l, t);
      if (!s.used) continue;
      float* W = t == LoraTarget::kAttnQkv ? L.attn_c_attn_weight
                 : t == LoraTarget::kAttnProj ? L.attn_c_proj_weight
                 : t == LoraTarget::kMlpFc    ? L.mlp_c_fc_weight
                                              : L.mlp_c_proj_weight;
      // W (in, out) += scale * A^T (in, r) @ B^T (r, out), in float32 whatever the compute precision
      gemm_f32(true, true, s.in, s.out, r, config_.scale(), params.data() + s.a, s.in, params.data() + s.b, r, 1.0f,
               W, s.out);
    }
  }
  apply_token_rows(model);
}

}  // namespace gpt
