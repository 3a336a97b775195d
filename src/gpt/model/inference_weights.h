// The weights as inference reads them: every fully connected layer is either fp32
// (multiplied by oneDNN's GEMM) or stored in a compact type (F16, BF16, Q8_0,
// Q4_0; multiplied by the block kernels of kernels/quantize.h). A GPT's own fp32
// parameters are viewed in place; a QuantizedModel owns converted copies.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "gpt/kernels/quantize.h"
#include "gpt/model/quant_recipe.h"
#include "gpt/model/config.h"
#include "gpt/model/gpt.h"

namespace gpt {

struct LinearWeights {
  int64_t in = 0, out = 0;
  const float* f32 = nullptr;  // fp32: (in, out) Conv1D layout, or (out, in) when out_major
  bool out_major = false;
  QuantizedMatrix packed;      // used when f32 and panels are null: (out, in) rows
  const float* bias = nullptr;  // (out) or null
  const float* panels = nullptr;  // fp32 (in, out) in panels (kernels/matmul.h), f32 null
  // A fused product whose pieces come in two types (a K-quant mix gives attn_v
  // more bits than attn_q and attn_k): packed holds the first out - tail.rows
  // outputs, tail the rest. Empty otherwise.
  QuantizedMatrix tail = {};
  GgmlType type() const { return f32 != nullptr || panels != nullptr ? GgmlType::kF32 : packed.type; }  // of the head
  size_t bytes() const;  // weight bytes read per use
};

// The blocks' norm over `rows` rows of width C: LayerNorm (gpt2, with bias) or
// RMSNorm (llama, bias null). stats: 2 * rows floats of scratch.
void apply_norm(const ModelConfig& config, float* out, float* stats, const float* x, const float* weight,
                const float* bias, int64_t rows);

// out (N, w.out) = [residual +] in (N, w.in) @ W + bias; out may alias residual.
void linear_apply(const LinearWeights& w, float* out, const float* in, int64_t N, QuantScratch& scratch,
                  const float* residual = nullptr);

struct InferenceLayer {
  const float *ln_1_weight, *ln_1_bias, *ln_2_weight, *ln_2_bias;
  LinearWeights c_attn, attn_proj, c_fc, mlp_proj;
};

struct InferenceWeights {
  ModelConfig config;
  const float* wte_f32 = nullptr;     // (V, C) embedding rows when fp32 ...
  const float* wte_panels = nullptr;  // ... or its transpose (C, V) in panels (the tied LM head's) ...
  QuantizedMatrix wte_packed;         // ... else in a compact type
  const float* wpe = nullptr;      // (T, C), or null for the sinusoidal encoding
  std::vector<InferenceLayer> layers;
  const float *ln_f_weight = nullptr, *ln_f_bias = nullptr;
  LinearWeights lm_head;  // (V, C) out-major; the embedding itself when tied
  // What the pointers above point into, kept alive by every copy of these views
  // when set (open_model's weights); null when the caller keeps it alive.
  std::shared_ptr<const void> owner;

  // Views of a GPT's fp32 parameters: valid while the model lives, or for as long
  // as the views when given as a shared_ptr.
  static InferenceWeights view(const GPT& model);
  static InferenceWeights view(std::shared_ptr<const GPT> model);
  // fp32 weights for the few-rows kernels (kernels/matmul.h, AVX-512 CPUs): the
  // matrices re-laid in place as panels, the tied LM head as the embedding's
  // transpose (embedding rows are read from it), so no byte is added. Takes the
  // model over: its parameters no longer hold a GPT's layout, and the model must
  // not be used as one again (the views keep it alive). Decoding one sequence
  // reads the panels faster than the row-major matrices too (see docs/benchmarks.md).
  static InferenceWeights in_panels(std::shared_ptr<GPT> model);
  // Writes the embedding of `token` (C floats).
  void embed(int32_t token, float* out) const;
  // Bytes of weights a decode step reads (every matrix once, the embedding row aside).
  size_t bytes_per_token() const;
};

// A model whose matrices are stored in a compact type (F16, BF16, Q8_0 or Q4_0;
// each matrix may differ when loaded from a file). Norms, biases and positions
// stay fp32. `weights` points into the storage below, which is filled once: the
// object can neither be copied nor moved (it lives behind a pointer).
struct QuantizedModel {
  QuantizedModel() = default;
  QuantizedModel(const QuantizedModel&) = delete;
  QuantizedModel& operator=(const QuantizedModel&) = delete;

  InferenceWeights weights;
  std::vector<std::vector<float>> vectors;  // fp32 tensors
  std::vector<QuantizedStorage> matrices;   // compact matrices

  // Converts a GPT's weights, each matrix to the type the recipe gives it
  // (model/quant_recipe.h: one type, or one of llama.cpp's K-quant mixes).
  static std::unique_ptr<QuantizedModel> quantize(const GPT& model, const QuantRecipe& recipe);
  const ModelConfig& config() const { return weights.config; }
};

}  // namespace gpt
