#include "gpt/model/inference_weights.h"

#include "gpt/kernels/matmul.h"
#include "gpt/util/error.h"

namespace gpt {

size_t LinearWeights::bytes() const {
  if (f32 != nullptr) return sizeof(float) * static_cast<size_t>(in * out);
  return ggml_row_bytes(packed.type, packed.cols) * static_cast<size_t>(packed.rows);
}

void linear_apply(const LinearWeights& w, float* out, const float* in, int64_t N, QuantScratch& scratch,
                  const float* residual) {
  if (w.f32 == nullptr) {
    quantized_linear(out, in, w.packed, w.bias, N, scratch, residual);
  } else if (!w.out_major) {
    if (N == 1) return gemv_in_out(out, in, w.f32, w.bias, w.in, w.out, residual);  // decoding
    linear_forward(out, in, w.f32, w.bias, N, w.in, w.out, residual);
  } else {
    GPT_CHECK(w.bias == nullptr && residual == nullptr, "linear_apply: out-major fp32 weights take no bias");
    if (N == 1) return gemv_out_in(out, in, w.f32, w.in, w.out);
    gemm(false, true, N, w.out, w.in, 1.0f, in, w.in, w.f32, w.in, 0.0f, out, w.out);
  }
}

InferenceWeights InferenceWeights::view(std::shared_ptr<const GPT> model) {
  GPT_CHECK(model != nullptr, "InferenceWeights::view needs a model");
  InferenceWeights w = view(*model);
  w.owner = std::move(model);
  return w;
}

InferenceWeights InferenceWeights::view(const GPT& model) {
  const ModelConfig& c = model.config();
  const ConstModelWeights& m = model.weights();
  const int64_t C = c.n_embd, V = c.vocab_size;
  InferenceWeights w;
  w.config = c;
  w.wte_f32 = m.wte;
  w.wpe = m.wpe;
  for (const ConstLayerWeights& L : m.layers) {
    InferenceLayer l{};
    l.ln_1_weight = L.ln_1_weight;
    l.ln_1_bias = L.ln_1_bias;
    l.ln_2_weight = L.ln_2_weight;
    l.ln_2_bias = L.ln_2_bias;
    l.c_attn = {C, 3 * C, L.attn_c_attn_weight, false, {}, L.attn_c_attn_bias};
    l.attn_proj = {C, C, L.attn_c_proj_weight, false, {}, L.attn_c_proj_bias};
    l.c_fc = {C, 4 * C, L.mlp_c_fc_weight, false, {}, L.mlp_c_fc_bias};
    l.mlp_proj = {4 * C, C, L.mlp_c_proj_weight, false, {}, L.mlp_c_proj_bias};
    w.layers.push_back(l);
  }
  w.ln_f_weight = m.ln_f_weight;
  w.ln_f_bias = m.ln_f_bias;
  w.lm_head = {C, V, m.lm_head, true, {}, nullptr};
  return w;
}

void InferenceWeights::embed(int32_t token, float* out) const {
  const int64_t C = config.n_embd;
  if (wte_f32 != nullptr) {
    const float* row = wte_f32 + static_cast<int64_t>(token) * C;
    for (int64_t i = 0; i < C; ++i) out[i] = row[i];
  } else {
    wte_packed.float_row(token, out);
  }
}

size_t InferenceWeights::bytes_per_token() const {
  size_t total = lm_head.bytes();
  for (const InferenceLayer& l : layers) {
    total += l.c_attn.bytes() + l.attn_proj.bytes() + l.c_fc.bytes() + l.mlp_proj.bytes();
  }
  return total;
}

std::unique_ptr<QuantizedModel> QuantizedModel::quantize(const GPT& model, GgmlType type) {
  GPT_CHECK(type != GgmlType::kF32, "QuantizedModel::quantize: F32 needs no conversion");
  auto q = std::make_unique<QuantizedModel>();
  q->weights = InferenceWeights::view(model);
  const ModelConfig& c = model.config();
  // Storage is reserved up front so the views taken below never move.
  q->matrices.reserve(static_cast<size_t>(4 * c.n_layer + 2));
  q->vectors.reserve(static_cast<size_t>(6 * c.n_layer + 8));
  auto keep = [&](const float* src, int64_t n) -> const float* {
    if (src == nullptr) return nullptr;
    q->vectors.emplace_back(src, src + n);
    return q->vectors.back().data();
  };
  // Conv1D weights are (in, out): quantized transposed, to rows of outputs.
  auto convert = [&](LinearWeights& lw, bool conv1d) {
    const GgmlType t = lw.in % ggml_block_size(type) == 0 ? type : GgmlType::kF16;
    q->matrices.push_back(QuantizedStorage::quantize(t, lw.f32, lw.out, lw.in, conv1d));
    lw.packed = q->matrices.back().matrix;
    lw.f32 = nullptr;
    lw.out_major = true;
    lw.bias = keep(lw.bias, lw.out);
  };
  InferenceWeights& w = q->weights;
  const int64_t C = c.n_embd;
  for (InferenceLayer& l : w.layers) {
    convert(l.c_attn, true);
    convert(l.attn_proj, true);
    convert(l.c_fc, true);
    convert(l.mlp_proj, true);
    l.ln_1_weight = keep(l.ln_1_weight, C);
    l.ln_1_bias = keep(l.ln_1_bias, C);
    l.ln_2_weight = keep(l.ln_2_weight, C);
    l.ln_2_bias = keep(l.ln_2_bias, C);
  }
  const bool tied = w.lm_head.f32 == w.wte_f32;
  convert(w.lm_head, false);
  if (tied) {
    w.wte_packed = w.lm_head.packed;
  } else {
    const GgmlType t = C % ggml_block_size(type) == 0 ? type : GgmlType::kF16;
    q->matrices.push_back(QuantizedStorage::quantize(t, w.wte_f32, c.vocab_size, C));
    w.wte_packed = q->matrices.back().matrix;
  }
  w.wte_f32 = nullptr;
  w.wpe = keep(w.wpe, static_cast<int64_t>(c.block_size) * C);
  w.ln_f_weight = keep(w.ln_f_weight, C);
  w.ln_f_bias = keep(w.ln_f_bias, C);
  return q;
}

}  // namespace gpt
