#include "gpt/io/model_loader.h"

#include <cmath>

#include "gpt/io/checkpoint.h"
#include "gpt/io/gguf_model.h"
#include "gpt/io/peft_adapter.h"
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

ModelConfig extended_context(const ModelConfig& config, float rope_factor, RopeScaling::Type scaling) {
  GPT_CHECK(config.position_encoding == PositionEncoding::kRotary,
            "--rope-factor and --rope-scaling are for models with rotary positions (llama), not " +
                to_string(config.position_encoding) + " ones");
  GPT_CHECK(rope_factor >= 1.0f && std::isfinite(rope_factor), "--rope-factor must be at least 1");
  GPT_CHECK(config.rope_scaling.type == RopeScaling::Type::kNone,
            "the model is scaled already (rope_scaling " + to_string(config.rope_scaling.type) + ")");
  ModelConfig c = config;
  c.block_size = static_cast<int>(std::lround(static_cast<double>(config.block_size) * rope_factor));
  if (scaling != RopeScaling::Type::kNone) c.rope_scaling = {scaling, rope_factor, config.block_size};
  c.validate();
  return c;
}

OpenedModel open_model(const std::filesystem::path& path, const ModelOpenOptions& options) {
  OpenedModel m;
  std::error_code ec;
  GPT_CHECK(std::filesystem::exists(path, ec), "model not found: " + path.string());
  if (std::filesystem::is_regular_file(path, ec)) {
    GPT_CHECK(is_gguf_file(path), path.string() + " is neither a model directory nor a GGUF file");
    // Converting starts from fp32 weights, so any conversion dequantizes first.
    GgufModel g = load_gguf_model(path, options.dequantize || options.convert_to.has_value() || !options.adapter.empty());
    m.fp32 = std::move(g.fp32);
    m.quantized = std::move(g.quantized);
    m.tokenizer = std::move(g.tokenizer);
    m.type = g.type;
    if (!g.chat_template.empty()) {
      try {
        m.chat_template = ChatTemplate::from_jinja(g.chat_template, g.bos_token, g.eos_token);
      } catch (const Error& e) {
        m.chat_template_problem = path.string() + ": " + e.what();
      }
    }
  } else {
    LoadedModel l = load_model(path);
    m.fp32 = std::move(l.model);
    m.tokenizer = std::move(l.tokenizer);
  }
  const GgmlType base_type = m.type;  // before an adapter's merge makes the weights f32
  // A template gpt.cpp cannot read does not stop the model from loading (generate
  // needs none); the commands that chat report it.
  auto read_template = [&](const std::filesystem::path& dir) {
    try {
      if (auto t = ChatTemplate::of_model(dir)) m.chat_template = t;
    } catch (const Error& e) {
      m.chat_template_problem = e.what();
    }
  };
  if (std::filesystem::is_directory(path, ec)) read_template(path);
  if (!options.adapter.empty()) {
    GPT_CHECK(std::filesystem::is_directory(options.adapter, ec), "adapter not found: " + options.adapter.string());
    LoadedAdapter a = load_adapter(options.adapter, m.fp32->config(), m.fp32.get());
    GPT_CHECK(a.tokenizer || a.adapter->config().trainable_tokens_begin < 0,
              "the adapter in " + options.adapter.string() + " adds tokens but has no tokenizer that knows them");
    m.fp32 = merge_adapter(*m.fp32, a);
    if (a.tokenizer) m.tokenizer = std::move(a.tokenizer);
    // The adapter's template (the one it was trained with) replaces the base's, and so does its verdict.
    if (std::filesystem::exists(options.adapter / "tokenizer_config.json", ec)) {
      m.chat_template.reset();
      m.chat_template_problem.clear();
      read_template(options.adapter);
    }
    // A compact base stays compact: the merged weights go back to its type unless --quantize says otherwise.
    if (!options.dequantize && !options.convert_to && base_type != GgmlType::kF32) {
      m.quantized = QuantizedModel::quantize(*m.fp32, QuantRecipe(base_type));
      m.fp32.reset();
    }
  }
  if (m.fp32) {
    m.type = GgmlType::kF32;
  } else if (!options.adapter.empty()) {
    m.type = base_type;
  }
  if (options.rope_factor != 1.0f || options.rope_scaling != RopeScaling::Type::kNone) {
    GPT_CHECK(options.rope_factor >= 1.0f, "--rope-factor must be at least 1");
    GPT_CHECK(options.rope_factor > 1.0f, "--rope-scaling needs --rope-factor above 1");
    const ModelConfig c = extended_context(m.config(), options.rope_factor, options.rope_scaling);
    if (m.fp32) {
      m.fp32 = std::make_shared<GPT>(with_config(*m.fp32, c));
    } else {
      m.quantized->weights.config = c;
    }
  }
  if (options.convert_to && options.convert_to->base() != GgmlType::kF32 && !options.dequantize) {
    m.quantized = QuantizedModel::quantize(*m.fp32, *options.convert_to);
    m.fp32.reset();
    m.type = options.convert_to->base();
  }
  if (options.panels && m.fp32 && few_rows_kernels()) m.panels = InferenceWeights::in_panels(std::move(m.fp32));
  return m;
}

}  // namespace gpt
