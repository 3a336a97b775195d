#include "gpt/io/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "gpt/io/peft_adapter.h"
#include "gpt/io/safetensors.h"
#include "gpt/model/arch/architecture.h"
#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {

const std::set<std::string> kCheckpointFiles = {"config.json", "model.safetensors", kTokenizerFileName,
                                                kHfTokenizerFileName, "optimizer.safetensors", "trainer_state.json",
                                                "tokenizer_config.json", kAdapterConfigFile, kAdapterWeightsFile};

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
  auto rename_or_fail = [&](const fs::path& from, const fs::path& to) {
    fs::rename(from, to, ec);
    GPT_CHECK(!ec, "cannot rename " + from.string() + " to " + to.string() + ": " + ec.message());
  };
  if (!fs::exists(target, ec)) return rename_or_fail(staged, target);
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(staged, ec);  // now holds the previous checkpoint
    return;
  }
#endif
  const fs::path old = fs::path(target.string() + ".old");
  fs::remove_all(old, ec);
  rename_or_fail(target, old);
  rename_or_fail(staged, target);
  fs::remove_all(old, ec);
}

// Staging directories of saves that died (dir.tmp.<pid>@<host>.<n> of a process
// of this host that is gone, or the older dir.tmp): removed before a new save.
// Another host's are left alone: its processes cannot be seen from here.
void remove_dead_staging(const fs::path& dir) {
  std::error_code ec;
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  const std::string prefix = dir.filename().string() + ".tmp";
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    bool dead = rest.empty();
    const size_t at = rest.find('@'), dot = rest.rfind('.');
    if (rest.size() > 1 && rest[0] == '.' && at != std::string::npos && dot != std::string::npos && dot > at &&
        rest.substr(at + 1, dot - at - 1) == this_host()) {
      const long pid = std::strtol(rest.c_str() + 1, nullptr, 10);
      dead = pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    }
    std::error_code rm;
    if (dead) fs::remove_all(it->path(), rm);
  }
}

}  // namespace

fs::path resolve_checkpoint_dir(const fs::path& dir_in) {
  const fs::path dir = normalized(dir_in);
  std::error_code ec;
  // An interrupted fallback swap (no RENAME_EXCHANGE) can leave only dir.old.
  if (!fs::exists(dir, ec) && fs::is_directory(dir.string() + ".old", ec)) return dir.string() + ".old";
  GPT_CHECK(fs::is_directory(dir, ec), "checkpoint directory not found: " + dir_in.string());
  return dir;
}

namespace {
void write_staged_checkpoint(const fs::path& staged, const fs::path& dir, const CheckpointContents& c);
}  // namespace

void save_checkpoint(const fs::path& dir_in, const CheckpointContents& c) {
  GPT_CHECK(c.model != nullptr && c.tokenizer != nullptr, "save_checkpoint needs a model and a tokenizer");
  const fs::path dir = normalized(dir_in);
  std::error_code exists_ec;
  GPT_CHECK(!fs::exists(dir, exists_ec) || fs::is_directory(dir, exists_ec),
            "cannot save a checkpoint at " + dir.string() + ": it exists and is not a directory");
  // Unique per save: two savers of one directory never share a staging directory.
  const fs::path staged = fs::path(dir.string() + unique_temp_suffix());
  std::error_code ec;
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  remove_dead_staging(dir);
  fs::create_directory(staged, ec);
  GPT_CHECK(!ec, "cannot create checkpoint directory " + staged.string() + ": " + ec.message());
  try {
    write_staged_checkpoint(staged, dir, c);
    swap_in_directory(staged, dir);
  } catch (...) {
    fs::remove_all(staged, ec);
    throw;
  }
  sync_directory(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
}

namespace {

void write_staged_checkpoint(const fs::path& staged, const fs::path& dir, const CheckpointContents& c) {
  std::error_code ec;

  const GPT& model = *c.model;
  save_tokenizer(*c.tokenizer, staged / tokenizer_file_name(*c.tokenizer));
  if (c.chat_template != nullptr) c.chat_template->save_to(staged);
  std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (c.trainer_state && c.trainer_state->contains("step"))
    meta["step"] = std::to_string((*c.trainer_state)["step"].get<int64_t>());
  if (c.adapter != nullptr) {
    write_adapter_files(staged, *c.adapter, c.adapter_base, c.adapter_base_vocab, c.adapter_base_model);
  } else {
    nlohmann::json config = model.config().to_json();
    for (auto it = c.config_extra.begin(); it != c.config_extra.end(); ++it) config[it.key()] = it.value();
    write_file_atomic(staged / "config.json", config.dump(2) + "\n");
    std::vector<TensorToWrite> tensors;
    for (const TensorInfo& t : model.layout().tensors())
      tensors.push_back({t.name, t.shape, model.params.data() + t.offset});
    tensors.insert(tensors.end(), c.extra_tensors.begin(), c.extra_tensors.end());
    write_safetensors(staged / "model.safetensors", tensors, meta);
  }
  const std::vector<TensorInfo>& trained = c.adapter != nullptr ? c.adapter->tensors() : model.layout().tensors();
  if (c.adam_m != nullptr && c.adam_v != nullptr) {
    std::vector<TensorToWrite> state;
    for (const TensorInfo& t : trained) {
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
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (kCheckpointFiles.count(name) != 0 || name.find(".tmp.") != std::string::npos) continue;
      std::error_code link;
      fs::create_hard_link(it->path(), staged / name, link);
      if (link) {
        fs::copy(it->path(), staged / name, fs::copy_options::recursive, link);
        GPT_CHECK(!link, "cannot carry " + it->path().string() + " over into the new checkpoint: " + link.message());
      }
    }
    GPT_CHECK(!ec, "cannot list " + dir.string() + ": " + ec.message());
  }
  sync_directory(staged);
}

}  // namespace

namespace {

// The file's name of a model tensor: Hugging Face checkpoints may prefix every
// name with "transformer.".
std::string stored_name(const ModelWeightFiles& st, const std::string& name) {
  if (!st.contains(name) && st.contains("transformer." + name)) return "transformer." + name;
  return name;
}

// Every tensor the layout needs is in the file with its shape and a readable
// dtype: checked before a model of the config's size is allocated.
void check_parameters(const ModelWeightFiles& st, const ParameterLayout& layout) {
  for (const TensorInfo& t : layout.tensors()) st.check_f32(stored_name(st, t.name), t.shape);
}

void read_parameters(const ModelWeightFiles& st, GPT& model) {
  for (const TensorInfo& t : model.layout().tensors())
    st.read_f32(stored_name(st, t.name), t.shape, model.params.data() + t.offset);
}

}  // namespace

void load_parameters(const fs::path& file, GPT& model) {
  const ModelWeightFiles st = ModelWeightFiles::single(file);
  check_parameters(st, model.layout());
  read_parameters(st, model);
}

LoadedModel load_model(const fs::path& dir_in) {
  const fs::path dir = resolve_checkpoint_dir(dir_in);
  std::error_code ec;
  GPT_CHECK(fs::exists(dir / "config.json", ec), "model directory " + dir.string() + " has no config.json");
  GPT_CHECK(ModelWeightFiles::present(dir), "model directory " + dir.string() +
                                                " has no model.safetensors (or model.safetensors.index.json)");
  GPT_CHECK(!find_tokenizer(dir).empty(), "model directory " + dir.string() + " has no tokenizer (" + kTokenizerFileName +
                                          " or " + kHfTokenizerFileName + ")");
  LoadedModel out;
  const ModelConfig config = ModelConfig::load(dir / "config.json");
  out.tokenizer = load_tokenizer(dir);
  GPT_CHECK(out.tokenizer->vocab_size() <= config.vocab_size,
        "tokenizer has " + std::to_string(out.tokenizer->vocab_size()) + " tokens but config.json says vocab_size " +
            std::to_string(config.vocab_size));
  // config.json is only a claim: the weights' header must agree with it before
  // memory for a model of its size is taken.
  const ModelWeightFiles st = ModelWeightFiles::open(dir);
  try {
    // The count first: even the table of a claimed model's tensors is not built
    // before the file could hold them.
    const ArchitectureRules& rules = architecture_rules(config.arch);
    const int64_t needed = rules.tensor_count(config);
    if (needed > static_cast<int64_t>(st.tensor_count())) {
      // Name the first block the file lacks (at most entries / 9 + 1 look-ups).
      for (int l = 0; l < config.n_layer; ++l) st.entry(stored_name(st, rules.first_tensor_of_layer(l)));
      throw Error(st.name() + " holds " + std::to_string(st.tensor_count()) +
                  " tensors, but " + std::to_string(needed) + " are needed");
    }
    check_parameters(st, ParameterLayout(config));
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (config.json and the weights disagree)");
  }
  out.model = std::make_unique<GPT>(config);
  read_parameters(st, *out.model);
  return out;
}

OptimizerState load_optimizer_state(const fs::path& dir, const ParameterLayout& layout) {
  return load_optimizer_state(dir, layout.tensors(), layout.total());
}

OptimizerState load_optimizer_state(const fs::path& dir, const std::vector<TensorInfo>& tensors, size_t total) {
  const SafetensorsFile st = SafetensorsFile::load(resolve_checkpoint_dir(dir) / "optimizer.safetensors");
  OptimizerState state;
  state.m.assign(total, 0.0f);
  state.v.assign(total, 0.0f);
  for (const TensorInfo& t : tensors) {
    st.read_f32("m." + t.name, t.shape, state.m.data() + t.offset);
    st.read_f32("v." + t.name, t.shape, state.v.data() + t.offset);
  }
  auto it = st.metadata().find("adamw_steps");
  GPT_CHECK(it != st.metadata().end(), "optimizer.safetensors has no adamw_steps metadata");
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
    GPT_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer() && j.contains("options"),
          file.string() + " lacks step or options");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + " is not valid JSON: " + e.what());
  }
}

}  // namespace gpt
