#include "gpt/io/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "gpt/io/safetensors.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {

const std::set<std::string> kCheckpointFiles = {"config.json", "model.safetensors", kTokenizerFileName,
                                                kHfTokenizerFileName, "optimizer.safetensors", "trainer_state.json"};

fs::path normalized(const fs::path& dir) {
  fs::path p = dir.lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();  // drop a trailing '/'
  return p;
}

// Replaces `target` by `staged` atomically: RENAME_EXCHANGE swaps the two
// directories in one step; where the filesystem can't, fall back to two renames
// (the old directory survives as target.old until the new one is in place).
void swap_in_directory(const fs::path& staged, const fs::path& target) {
  std::error_code ec;
  if (!fs::exists(target, ec)) {
    fs::rename(staged, target);
    return;
  }
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(staged, ec);  // now holds the previous checkpoint
    return;
  }
#endif
  const fs::path old = fs::path(target.string() + ".old");
  fs::remove_all(old, ec);
  fs::rename(target, old);
  fs::rename(staged, target);
  fs::remove_all(old, ec);
}

}  // namespace

fs::path resolve_checkpoint_dir(const fs::path& dir_in) {
  const fs::path dir = normalized(dir_in);
  std::error_code ec;
  // An interrupted fallback swap (no RENAME_EXCHANGE) can leave only dir.old.
  if (!fs::exists(dir, ec) && fs::is_directory(dir.string() + ".old", ec)) return dir.string() + ".old";
  check(fs::is_directory(dir, ec), "checkpoint directory not found: " + dir_in.string());
  return dir;
}

void save_checkpoint(const fs::path& dir_in, const CheckpointContents& c) {
  check(c.model != nullptr && c.tokenizer != nullptr, "save_checkpoint needs a model and a tokenizer");
  const fs::path dir = normalized(dir_in);
  const fs::path staged = fs::path(dir.string() + ".tmp");
  std::error_code ec;
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  fs::remove_all(staged, ec);  // left over from an interrupted save
  check(fs::create_directory(staged, ec) || fs::is_directory(staged),
        "cannot create checkpoint directory " + staged.string() + ": " + ec.message());

  const GPT& model = *c.model;
  write_file_atomic(staged / "config.json", model.config().to_json().dump(2) + "\n");
  save_tokenizer(*c.tokenizer, staged / tokenizer_file_name(*c.tokenizer));
  std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (c.trainer_state && c.trainer_state->contains("step"))
    meta["step"] = std::to_string((*c.trainer_state)["step"].get<int64_t>());
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : model.layout().tensors())
    tensors.push_back({t.name, t.shape, model.params.data() + t.offset});
  write_safetensors(staged / "model.safetensors", tensors, meta);
  if (c.adam_m != nullptr && c.adam_v != nullptr) {
    std::vector<TensorToWrite> state;
    for (const TensorInfo& t : model.layout().tensors()) {
      state.push_back({"m." + t.name, t.shape, c.adam_m + t.offset});
      state.push_back({"v." + t.name, t.shape, c.adam_v + t.offset});
    }
    auto ometa = meta;
    ometa["adamw_steps"] = std::to_string(c.adam_steps);
    write_safetensors(staged / "optimizer.safetensors", state, ometa);
  }
  if (c.trainer_state != nullptr) write_file_atomic(staged / "trainer_state.json", c.trainer_state->dump(1) + "\n");

  // Carry over what the user (or the trainer) keeps beside the checkpoint: hard
  // links cost nothing and keep appending to the same file.
  if (fs::is_directory(dir, ec)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (kCheckpointFiles.count(name) != 0 || name.find(".tmp.") != std::string::npos) continue;
      fs::create_hard_link(entry.path(), staged / name, ec);
      if (ec) fs::copy(entry.path(), staged / name, fs::copy_options::recursive, ec);
    }
  }
  sync_directory(staged);
  swap_in_directory(staged, dir);
  sync_directory(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
}

void load_parameters(const fs::path& file, GPT& model) {
  const SafetensorsFile st = SafetensorsFile::load(file);
  for (const TensorInfo& t : model.layout().tensors()) {
    // Hugging Face checkpoints may prefix every name with "transformer.".
    std::string name = t.name;
    if (!st.contains(name) && st.contains("transformer." + name)) name = "transformer." + name;
    st.read_f32(name, t.shape, model.params.data() + t.offset);
  }
}

LoadedModel load_model(const fs::path& dir_in) {
  const fs::path dir = resolve_checkpoint_dir(dir_in);
  std::error_code ec;
  for (const char* f : {"config.json", "model.safetensors"}) {
    check(fs::exists(dir / f, ec), "model directory " + dir.string() + " has no " + f);
  }
  check(!find_tokenizer(dir).empty(), "model directory " + dir.string() + " has no tokenizer (" + kTokenizerFileName +
                                          " or " + kHfTokenizerFileName + ")");
  LoadedModel out;
  const ModelConfig config = ModelConfig::load(dir / "config.json");
  out.tokenizer = load_tokenizer(dir);
  check(out.tokenizer->vocab_size() <= config.vocab_size,
        "tokenizer has " + std::to_string(out.tokenizer->vocab_size()) + " tokens but config.json says vocab_size " +
            std::to_string(config.vocab_size));
  out.model = std::make_unique<GPT>(config);
  load_parameters(dir / "model.safetensors", *out.model);
  return out;
}

OptimizerState load_optimizer_state(const fs::path& dir, const ParameterLayout& layout) {
  const SafetensorsFile st = SafetensorsFile::load(resolve_checkpoint_dir(dir) / "optimizer.safetensors");
  OptimizerState state;
  state.m.assign(layout.total(), 0.0f);
  state.v.assign(layout.total(), 0.0f);
  for (const TensorInfo& t : layout.tensors()) {
    st.read_f32("m." + t.name, t.shape, state.m.data() + t.offset);
    st.read_f32("v." + t.name, t.shape, state.v.data() + t.offset);
  }
  auto it = st.metadata().find("adamw_steps");
  check(it != st.metadata().end(), "optimizer.safetensors has no adamw_steps metadata");
  try {
    state.steps = std::stoll(it->second);
  } catch (const std::exception&) {
    throw Error("optimizer.safetensors: malformed adamw_steps '" + it->second + "'");
  }
  return state;
}

nlohmann::json load_trainer_state(const fs::path& dir) {
  const fs::path file = resolve_checkpoint_dir(dir) / "trainer_state.json";
  try {
    nlohmann::json j = nlohmann::json::parse(read_text_file(file));
    check(j.is_object() && j.contains("step") && j["step"].is_number_integer() && j.contains("options"),
          file.string() + " lacks step or options");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + " is not valid JSON: " + e.what());
  }
}

}  // namespace gpt
