// GGUF, llama.cpp's single-file model format (version 3, little-endian):
//   "GGUF" | version u32 | tensor count u64 | metadata count u64
//   metadata: key (u64 length + bytes) | value type u32 | value
//   tensor infos: name | n_dims u32 | ne[n_dims] u64 (ne[0] varies fastest) | ggml type u32 | offset u64
//   padding to general.alignment (default 32) | tensor data, each at offset (aligned) from here
// The reader maps the file and checks every length, count and offset against the
// file's size before anything is used, so a damaged file is a gpt::Error, never an
// out-of-bounds read.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gpt/kernels/quantize.h"  // GgmlType and the block formats
#include "gpt/util/mapped_file.h"

namespace gpt {

// Metadata value types (GGUF's numbering).
enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::kU32;
  GgufType element_type = GgufType::kU32;  // arrays only
  // Scalars: integers and bools in `integer`, floats in `real`, strings in `text`.
  int64_t integer = 0;
  double real = 0.0;
  std::string text{};
  // Arrays: by element type.
  std::vector<int64_t> integers{};
  std::vector<double> reals{};
  std::vector<std::string> strings{};

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue i32_array(std::vector<int64_t> v);
  static GgufValue f32_array(std::vector<double> v);
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row length
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;      // from the start of the data section
  size_t bytes = 0;
  const uint8_t* data = nullptr;  // into the mapped file (reader only)
  int64_t numel() const;
};

class GgufFile {
 public:
  static GgufFile load(const std::filesystem::path& path);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find(const std::string& name) const;
  const std::string& path() const { return path_; }

  // Typed metadata access; a missing key or another type is a gpt::Error.
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;   // any integer type
  double get_float(const std::string& key) const;  // f32 or f64
  const std::vector<std::string>& get_strings(const std::string& key) const;
  const std::vector<int64_t>& get_ints(const std::string& key) const;
  const std::vector<double>& get_floats(const std::string& key) const;  // f32 or f64 elements
  bool get_bool(const std::string& key) const;

 private:
  const GgufValue& value(const std::string& key, bool (*is_kind)(const GgufValue&), const char* kind) const;
  MappedFile file_;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
};

// Builds a GGUF file in memory order: metadata, then tensors in the order added.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  // `data` must hold exactly the bytes of `ne` elements of `type`.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type, std::vector<uint8_t> data);
  // Writes to a temporary file and renames it over `path`.
  void write(const std::filesystem::path& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  struct Pending {
    std::string name;
    std::vector<int64_t> ne;
    GgmlType type;
    std::vector<uint8_t> data;
  };
  std::vector<Pending> tensors_;
};

// Bytes of a tensor of `ne` elements of `type`; gpt::Error if ne[0] is not a whole
// number of blocks or the size overflows.
size_t ggml_tensor_bytes(GgmlType type, const std::vector<int64_t>& ne);

}  // namespace gpt
