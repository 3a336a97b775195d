// The safetensors format (Hugging Face): an 8-byte little-endian header length, a
// JSON header mapping each tensor name to {dtype, shape, data_offsets} (plus an
// optional "__metadata__" string map), then the raw little-endian tensor bytes.
// The reader validates everything before use: offsets inside the file, sizes that
// match dtype x shape, no overlaps, no holes.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gpt/util/mapped_file.h"

namespace gpt {

struct SafetensorsEntry {
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;
  size_t begin = 0;  // byte offsets into the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps the file and validates its header against its size (no tensor is read
  // yet); throws gpt::Error naming the file and the problem.
  static SafetensorsFile load(const std::filesystem::path& path);
  // The same over bytes in memory.
  static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string& name);

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }

  // gpt::Error unless tensor `name` exists with shape `expected_shape` and a dtype
  // read_f32 converts (F32, F16, BF16): what a loader checks of every tensor before
  // it allocates anything.
  void check_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // Copies tensor `name` into dst as float32 (F32, F16 and BF16 are converted),
  // checking it as check_f32 does. From a mapped file, a piece at a time, each
  // piece's pages dropped once copied.
  void read_f32(const std::string& name, const std::vector<int64_t>& expected_shape,
                float* dst) const;
  // Copies an I32 tensor (token ids in test fixtures), checking its shape.
  void read_i32(const std::string& name, const std::vector<int64_t>& expected_shape,
                int32_t* dst) const;
  const SafetensorsEntry& entry(const std::string& name) const;

 private:
  void parse_header();

  std::string name_;
  MappedFile mapped_;           // the file, when loaded from one ...
  std::vector<uint8_t> owned_;  // ... or bytes given to parse()
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, SafetensorsEntry> entries_;
};

// A model's weights as Hugging Face keeps them: one model.safetensors, or shards
// named by model.safetensors.index.json ({"weight_map": {tensor: file}}), as
// models past a few GB come. Every shard is mapped and checked when opened, and
// the index must agree with the shards (each tensor in the file it names).
class ModelWeightFiles {
 public:
  // model.safetensors, else model.safetensors.index.json, in `dir`; gpt::Error if
  // neither is there or the index is malformed.
  static ModelWeightFiles open(const std::filesystem::path& dir);
  // One safetensors file.
  static ModelWeightFiles single(const std::filesystem::path& file);
  // Whether a directory holds weights open() would read.
  static bool present(const std::filesystem::path& dir);

  size_t tensor_count() const { return file_of_.size(); }
  bool contains(const std::string& name) const { return file_of_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const { return file(name).entry(name); }
  void check_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const {
    file(name).check_f32(name, expected_shape);
  }
  void read_f32(const std::string& name, const std::vector<int64_t>& expected_shape, float* dst) const {
    file(name).read_f32(name, expected_shape, dst);
  }
  // What to call the weights in messages ("dir/model.safetensors").
  const std::string& name() const { return name_; }

 private:
  const SafetensorsFile& file(const std::string& name) const;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t> file_of_;  // tensor -> shard
  std::string name_;
};

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;  // F32, numel(shape) values
};

// Writes F32 tensors in the given order, atomically (temp file + rename).
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata);

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace gpt
