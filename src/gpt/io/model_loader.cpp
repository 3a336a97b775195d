#include "gpt/io/model_loader.h"

#include "gpt/io/checkpoint.h"
#include "gpt/io/gguf_model.h"
#include "gpt/kernels/matmul.h"
#include "gpt/util/error.h"

namespace gpt {

InferenceWeights OpenedModel::inference_weights() const {
  if (panels) return *panels;
  if (fp32) return InferenceWeights::view(std::shared_ptr<const GPT>(fp32));
  GPT_CHECK(quantized != nullptr, "no model was opened");
  InferenceWeights w = quantized->weights;
  w.owner = quantized;
  return w;
}

OpenedModel open_model(const std::filesystem::path& path, const ModelOpenOptions& options) {
  OpenedModel m;
  std::error_code ec;
  GPT_CHECK(std::filesystem::exists(path, ec), "model not found: " + path.string());
  if (std::filesystem::is_regular_file(path, ec)) {
    GPT_CHECK(is_gguf_file(path), path.string() + " is neither a model directory nor a GGUF file");
    // Converting starts from fp32 weights, so any conversion dequantizes first.
    GgufModel g = load_gguf_model(path, options.dequantize || options.convert_to.has_value());
    m.fp32 = std::move(g.fp32);
    m.quantized = std::move(g.quantized);
    m.tokenizer = std::move(g.tokenizer);
    m.type = g.type;
  } else {
    LoadedModel l = load_model(path);
    m.fp32 = std::move(l.model);
    m.tokenizer = std::move(l.tokenizer);
  }
  if (m.fp32) m.type = GgmlType::kF32;
  if (options.convert_to && options.convert_to->base() != GgmlType::kF32 && !options.dequantize) {
    m.quantized = QuantizedModel::quantize(*m.fp32, *options.convert_to);
    m.fp32.reset();
    m.type = options.convert_to->base();
  }
  if (options.panels && m.fp32 && few_rows_kernels()) m.panels = InferenceWeights::in_panels(std::move(m.fp32));
  return m;
}

}  // namespace gpt
