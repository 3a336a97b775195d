#include "gpt/model/inference_weights.h"

#include "gpt/kernels/matmul.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/util/error.h"

#include <algorithm>
#include <vector>

namespace gpt {

namespace {
// Up to this many rows, gemm_rows_out_in beats oneDNN's sgemm on the LM head
// (bench_few_rows_matmul).
constexpr int64_t kFewRowsMax = 64;
}  // namespace

void apply_norm(const ModelConfig& c, float* out, float* stats, const float* x, const float* weight, const float* bias,
                int64_t rows) {
  architecture_rules(c.arch).norm(c, out, stats, x, weight, bias, rows);
}

size_t LinearWeights::bytes() const {
  if (f32 != nullptr || panels != nullptr) return sizeof(float) * static_cast<size_t>(in * out);
  const size_t head = ggml_row_bytes(packed.type, packed.cols) * static_cast<size_t>(packed.rows);
  return tail.rows == 0 ? head : head + ggml_row_bytes(tail.type, tail.cols) * static_cast<size_t>(tail.rows);
}

void linear_apply(const LinearWeights& w, float* out, const float* in, int64_t N, QuantScratch& scratch,
                  const float* residual) {
  if (w.panels != nullptr) {
    gemm_rows_panels(out, in, N, w.panels, w.bias, w.in, w.out, residual);
  } else if (w.f32 == nullptr && w.tail.rows > 0) {
    // Two types: each part's outputs, then side by side in each row.
    const int64_t head = w.packed.rows, rest = w.tail.rows;
    const float* tail_bias = w.bias != nullptr ? w.bias + head : nullptr;
    if (N == 1) {
      quantized_linear(out, in, w.packed, w.bias, 1, scratch, residual);
      quantized_linear(out + head, in, w.tail, tail_bias, 1, scratch, residual != nullptr ? residual + head : nullptr);
      return;
    }
    if (scratch.parts.size() < static_cast<size_t>(N * w.out)) scratch.parts.resize(static_cast<size_t>(N * w.out));
    float* a = scratch.parts.data();
    float* b = a + N * head;
    quantized_linear(a, in, w.packed, w.bias, N, scratch);
    quantized_linear(b, in, w.tail, tail_bias, N, scratch);
    for (int64_t r = 0; r < N; ++r) {
      float* row = out + r * w.out;
      const float* res = residual != nullptr ? residual + r * w.out : nullptr;
      for (int64_t j = 0; j < head; ++j) row[j] = a[r * head + j] + (res != nullptr ? res[j] : 0.0f);
      for (int64_t j = 0; j < rest; ++j) row[head + j] = b[r * rest + j] + (res != nullptr ? res[head + j] : 0.0f);
    }
  } else if (w.f32 == nullptr) {
    quantized_linear(out, in, w.packed, w.bias, N, scratch, residual);
  } else if (!w.out_major) {
    if (N == 1) return gemv_in_out(out, in, w.f32, w.bias, w.in, w.out, residual);  // decoding
    linear_forward(out, in, w.f32, w.bias, N, w.in, w.out, residual);
  } else if (w.bias != nullptr || residual != nullptr) {
    // nn.Linear's layout with a bias or onto the residual stream (Llama's blocks,
    // fp32): decoding's one row by rows of W into scratch, then the adds.
    if (N == 1) {
      if (scratch.panel.size() < static_cast<size_t>(w.out)) scratch.panel.resize(static_cast<size_t>(w.out));
      float* y = scratch.panel.data();
      gemv_out_in(y, in, w.f32, w.in, w.out);
      for (int64_t j = 0; j < w.out; ++j)
        out[j] = y[j] + (w.bias != nullptr ? w.bias[j] : 0.0f) + (residual != nullptr ? residual[j] : 0.0f);
      return;
    }
    linear_forward_out_in(out, in, w.f32, w.bias, N, w.in, w.out, residual);
  } else {
    if (N == 1) return gemv_out_in(out, in, w.f32, w.in, w.out);
    // A few rows (a step of batched decoding): 1.5-2x oneDNN from 4 to 32 rows
    // (bench_few_rows_matmul), unless products are meant to run in bf16.
    if (N <= kFewRowsMax && few_rows_kernels() && current_compute_context().precision() == MatmulPrecision::kFloat32) {
      return gemm_rows_out_in(out, in, N, w.f32, w.in, w.out);
    }
    gemm(false, true, N, w.out, w.in, 1.0f, in, w.in, w.f32, w.in, 0.0f, out, w.out);
  }
}

namespace {

// A row-major (in, out) matrix -> its panels, in place, through a copy.
void to_panels_in_place(float* W, int64_t in, int64_t out) {
  const std::vector<float> copy(W, W + in * out);
  pack_panels(copy.data(), in, out, W);
}

// A row-major (rows, cols) matrix -> the panels of its transpose (cols, rows),
// in place. Panel p holds rows 48p .. 48p + width of the original, which occupy
// exactly the bytes the panel takes: one panel's rows are copied at a time.
void transpose_to_panels_in_place(float* W, int64_t rows, int64_t cols) {
  std::vector<float> block(static_cast<size_t>(kPanelColumns * cols));
  for (int64_t r0 = 0; r0 < rows; r0 += kPanelColumns) {
    const int64_t width = std::min(kPanelColumns, rows - r0);
    float* p = W + r0 * cols;
    std::copy(p, p + width * cols, block.begin());
    for (int64_t k = 0; k < cols; ++k) {
      for (int64_t j = 0; j < width; ++j) p[k * width + j] = block[static_cast<size_t>(j * cols + k)];
    }
  }
}

}  // namespace

InferenceWeights InferenceWeights::in_panels(std::shared_ptr<GPT> model) {
  GPT_CHECK(model != nullptr, "InferenceWeights::in_panels needs a model");
  GPT_CHECK(few_rows_kernels(), "InferenceWeights::in_panels: this CPU runs no panel kernels (AVX-512 or NEON)");
  const ModelConfig& c = model->config();
  const ModelWeights& m = model->mutable_weights();
  const bool tied = m.lm_head == m.wte;
  InferenceWeights w = view(*model);
  const int64_t C = c.n_embd, V = c.vocab_size;
  auto relay = [](LinearWeights& lw, float* storage) {
    if (lw.out_major) {  // nn.Linear's (out, in): the panels of its transpose
      transpose_to_panels_in_place(storage, lw.out, lw.in);
      lw.out_major = false;
    } else {
      to_panels_in_place(storage, lw.in, lw.out);
    }
    lw.panels = storage;
    lw.f32 = nullptr;
  };
  for (size_t i = 0; i < w.layers.size(); ++i) {
    InferenceLayer& l = w.layers[i];
    const LayerWeights& L = m.layers[i];
    relay(l.c_attn, L.attn_c_attn_weight);
    relay(l.attn_proj, L.attn_c_proj_weight);
    relay(l.c_fc, L.mlp_c_fc_weight);
    relay(l.mlp_proj, L.mlp_c_proj_weight);
  }
  transpose_to_panels_in_place(m.lm_head, V, C);
  w.lm_head = {C, V, nullptr, false, {}, nullptr, m.lm_head};
  if (tied) {
    w.wte_f32 = nullptr;
    w.wte_panels = m.lm_head;
  }
  w.owner = std::move(model);
  return w;
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
  const int64_t C = c.n_embd, V = c.vocab_size, QKV = c.qkv_dim(), H = c.mlp_hidden(), H_IN = c.mlp_in_dim();
  const bool out_major = c.llama();  // nn.Linear's (out, in), as Hugging Face keeps Llama's matrices
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
    l.c_attn = {C, QKV, L.attn_c_attn_weight, out_major, {}, L.attn_c_attn_bias};
    l.attn_proj = {C, C, L.attn_c_proj_weight, out_major, {}, L.attn_c_proj_bias};
    l.c_fc = {C, H_IN, L.mlp_c_fc_weight, out_major, {}, L.mlp_c_fc_bias};
    l.mlp_proj = {H, C, L.mlp_c_proj_weight, out_major, {}, L.mlp_c_proj_bias};
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
  } else if (wte_panels != nullptr) {  // column `token` of the transpose: C floats `width` apart
    const int64_t p0 = token - token % kPanelColumns, width = std::min(kPanelColumns, config.vocab_size - p0);
    const float* col = wte_panels + p0 * C + (token - p0);
    for (int64_t i = 0; i < C; ++i) out[i] = col[i * width];
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

std::unique_ptr<QuantizedModel> QuantizedModel::quantize(const GPT& model, const QuantRecipe& recipe) {
  GPT_CHECK(recipe.base() != GgmlType::kF32, "QuantizedModel::quantize: F32 needs no conversion");
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
  // Conv1D weights are (in, out): quantized transposed, to rows of outputs
  // (nn.Linear's, Llama's, are rows of outputs already).
  auto convert = [&](LinearWeights& lw, bool conv1d, TensorRole role, int64_t layer) {
    conv1d = conv1d && !lw.out_major;
    const GgmlType t = recipe.type_for(role, layer, c.n_layer, lw.in);
    q->matrices.push_back(QuantizedStorage::quantize(t, lw.f32, lw.out, lw.in, conv1d));
    lw.packed = q->matrices.back().matrix;
    lw.f32 = nullptr;
    lw.out_major = true;
    lw.bias = keep(lw.bias, lw.out);
  };
  InferenceWeights& w = q->weights;
  const int64_t C = c.n_embd;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    InferenceLayer& l = w.layers[i];
    const auto layer = static_cast<int64_t>(i);
    convert(l.c_attn, true, TensorRole::kAttentionQkv, layer);
    convert(l.attn_proj, true, TensorRole::kAttentionOutput, layer);
    convert(l.c_fc, true, TensorRole::kFfnUp, layer);
    convert(l.mlp_proj, true, TensorRole::kFfnDown, layer);
    l.ln_1_weight = keep(l.ln_1_weight, C);
    l.ln_1_bias = keep(l.ln_1_bias, C);
    l.ln_2_weight = keep(l.ln_2_weight, C);
    l.ln_2_bias = keep(l.ln_2_bias, C);
  }
  const bool tied = w.lm_head.f32 == w.wte_f32;
  convert(w.lm_head, false, TensorRole::kOutput, 0);
  if (tied) {
    w.wte_packed = w.lm_head.packed;
  } else {
    const GgmlType t = recipe.type_for(TensorRole::kTokenEmbedding, 0, c.n_layer, C);
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
