#include "gpt/io/peft_adapter.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "gpt/io/safetensors.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {
// 64 weights of the base from two block matrices (not the embedding, which
// fine-tuning may grow): what tells one base model from another.
std::vector<float> base_sample(const GPT& base) {
  std::vector<float> out;
  const ModelConfig& c = base.config();
  GPT_CHECK(!c.llama(), "LoRA adapters are for gpt2 models only (llama's are not supported yet)");
  for (const std::string& name : {std::string("h.0.attn.c_attn.weight"),
                                  "h." + std::to_string(c.n_layer - 1) + ".mlp.c_proj.weight"}) {
    const TensorInfo* t = base.layout().find(name);
    for (size_t i = 0; i < 32; ++i) out.push_back(base.params[t->offset + (i * 7919 + 13) % t->numel]);
  }
  return out;
}
}  // namespace

void check_adapter_out(const fs::path& out_in, const fs::path& base_in) {
  const fs::path out = fs::weakly_canonical(out_in), base = fs::weakly_canonical(base_in);
  const auto [b, o] = std::mismatch(base.begin(), base.end(), out.begin(), out.end());
  GPT_CHECK(b != base.end(), "--out " + out_in.string() + " would replace the base model " + base_in.string() +
                                 " with the adapter: choose another directory");
}

bool is_adapter_dir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kAdapterConfigFile, ec);
}

void write_adapter_files(const fs::path& dir, const LoraAdapters& adapter, const std::string& base_model,
                         int base_vocab_size, const GPT* base) {
  const LoraConfig& c = adapter.config();
  nlohmann::ordered_json targets = nlohmann::ordered_json::array();
  for (int t = 0; t < kLoraTargetCount; ++t)
    if (c.targets[static_cast<size_t>(t)]) targets.push_back(lora_target_name(static_cast<LoraTarget>(t)));
  nlohmann::ordered_json j = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", c.rank},
      {"lora_alpha", c.alpha},
      {"lora_dropout", c.dropout},
      {"target_modules", targets},
      {"fan_in_fan_out", true},  // GPT-2's Conv1D keeps weights (in, out)
      {"bias", "none"},
      {"use_rslora", false},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"modules_to_save", nullptr},
  };
  if (c.trainable_tokens_begin >= 0) {
    nlohmann::ordered_json ids = nlohmann::ordered_json::array();
    for (int id = c.trainable_tokens_begin; id < adapter.model_config().vocab_size; ++id) ids.push_back(id);
    j["trainable_token_indices"] = ids;
  }
  j["gpt_base_vocab_size"] = base_vocab_size;
  if (base != nullptr) j["gpt_base_sample"] = base_sample(*base);
  write_file_atomic(dir / kAdapterConfigFile, j.dump(2) + "\n");
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : adapter.tensors()) tensors.push_back({t.name, t.shape, adapter.params.data() + t.offset});
  write_safetensors(dir / kAdapterWeightsFile, tensors, {{"format", "pt"}});
}

LoadedAdapter load_adapter(const fs::path& dir, const ModelConfig& base, const GPT* base_model) {
  const fs::path file = dir / kAdapterConfigFile;
  GPT_CHECK(is_adapter_dir(dir), dir.string() + " is not a LoRA adapter (no " + kAdapterConfigFile + ")");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + " is not valid JSON: " + e.what());
  }
  LoadedAdapter out;
  LoraConfig c;
  ModelConfig shape = base;
  try {
    GPT_CHECK(j.is_object() && j.value("peft_type", std::string("LORA")) == "LORA",
              file.string() + ": only LoRA adapters are supported (peft_type " + j.value("peft_type", std::string()) + ")");
    c.rank = j.at("r").get<int>();
    c.alpha = j.at("lora_alpha").get<float>();
    c.dropout = j.value("lora_dropout", 0.0f);
    GPT_CHECK(!j.value("use_rslora", false), file.string() + ": rsLoRA scaling is not supported");
    GPT_CHECK(j.value("bias", std::string("none")) == "none", file.string() + ": adapters with trained biases are not supported");
    for (const char* key : {"alpha_pattern", "rank_pattern", "layers_to_transform", "modules_to_save"}) {
      const auto it = j.find(key);
      GPT_CHECK(it == j.end() || it->is_null() || it->empty(),
                file.string() + ": \"" + key + "\" is not supported (adapters with one rank and alpha for every target)");
    }
    const nlohmann::json& tm = j.at("target_modules");
    std::string csv;
    if (tm.is_string()) {
      csv = tm.get<std::string>() == "all-linear" ? "all" : tm.get<std::string>();
    } else {
      for (const auto& t : tm) {
        std::string name = t.get<std::string>();
        // PEFT matches by suffix: "c_proj" names both projections.
        if (name == "c_proj") name = "attn.c_proj,mlp.c_proj";
        csv += (csv.empty() ? "" : ",") + name;
      }
    }
    c.targets = LoraConfig::parse_targets(csv);
    out.base_model = j.value("base_model_name_or_path", std::string());
    out.base_vocab_size = j.value("gpt_base_vocab_size", base.vocab_size);
    if (j.contains("trainable_token_indices") && !j["trainable_token_indices"].is_null()) {
      const auto ids = j["trainable_token_indices"].get<std::vector<int>>();
      GPT_CHECK(!ids.empty(), file.string() + ": trainable_token_indices is empty");
      for (size_t i = 0; i < ids.size(); ++i) {
        GPT_CHECK(ids[i] == ids[0] + static_cast<int>(i),
                  file.string() + ": trainable_token_indices must be consecutive ids (gpt.cpp's added tokens)");
      }
      c.trainable_tokens_begin = ids[0];
      shape.vocab_size = ids.back() + 1;
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + ": " + e.what());
  }
  GPT_CHECK(out.base_vocab_size == base.vocab_size,
            "the adapter in " + dir.string() + " was made for a base model with a vocabulary of " +
                std::to_string(out.base_vocab_size) + " tokens, this one has " + std::to_string(base.vocab_size));
  GPT_CHECK(c.trainable_tokens_begin < 0 || c.trainable_tokens_begin <= base.vocab_size,
            "the adapter's trainable tokens start at id " + std::to_string(c.trainable_tokens_begin) +
                ", past the base vocabulary of " + std::to_string(base.vocab_size));
  shape.vocab_size = std::max(shape.vocab_size, base.vocab_size);
  if (base_model != nullptr && j.contains("gpt_base_sample")) {
    std::vector<float> saved;
    try {
      saved = j["gpt_base_sample"].get<std::vector<float>>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(file.string() + ": gpt_base_sample: " + e.what());
    }
    const std::vector<float> now = base_sample(*base_model);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < now.size() && i < saved.size(); ++i) {
      diff += (now[i] - saved[i]) * static_cast<double>(now[i] - saved[i]);
      norm += saved[i] * static_cast<double>(saved[i]);
    }
    // A conversion moves weights by a few percent (Q4_0: about 10%); another model by about sqrt(2).
    GPT_CHECK(saved.size() == now.size() && diff <= 0.0625 * norm,
              "the adapter in " + dir.string() + " was made for another base model: its weights differ (trained on " +
                  j.value("base_model_name_or_path", std::string("?")) + ")");
  }
  shape.validate();
  out.adapter = std::make_shared<LoraAdapters>(shape, c);
  const SafetensorsFile st = SafetensorsFile::load(dir / kAdapterWeightsFile);
  for (const TensorInfo& t : out.adapter->tensors()) {
    if (!st.contains(t.name)) {
      throw Error("the adapter in " + dir.string() + " lacks " + t.name +
                  " (made for a model with other layers or targets?)");
    }
    const std::vector<int64_t>& have = st.entry(t.name).shape;
    if (have != t.shape) {
      throw Error("the adapter in " + dir.string() + " was made for another base model: " + t.name + " is " +
                  shape_to_string(have) + ", this model needs " + shape_to_string(t.shape));
    }
    st.read_f32(t.name, t.shape, out.adapter->params.data() + t.offset);
  }
  for (const auto& [name, entry] : st.entries()) {
    GPT_CHECK(out.adapter->find(name) != nullptr,
              "the adapter in " + dir.string() + " holds " + name + ", which this base model has no place for");
  }
  if (!find_tokenizer(dir).empty()) out.tokenizer = load_tokenizer(dir);
  if (out.tokenizer) {
    GPT_CHECK(out.tokenizer->vocab_size() <= shape.vocab_size,
              "the adapter's tokenizer has " + std::to_string(out.tokenizer->vocab_size()) + " tokens, more than its " +
                  "model's " + std::to_string(shape.vocab_size) + " rows");
  }
  return out;
}

std::shared_ptr<GPT> merge_adapter(const GPT& base, const LoadedAdapter& loaded) {
  const LoraAdapters& a = *loaded.adapter;
  auto merged = std::make_shared<GPT>(with_vocabulary(base, a.model_config().vocab_size));
  a.merge_into(*merged);
  return merged;
}

}  // namespace gpt
