#include "gpt/io/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;  // GGML_MAX_DIMS

bool is_known_type(uint32_t t) { return is_known_ggml_type(t); }

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool is_integer(GgufType t) {
  return t == GgufType::kU8 || t == GgufType::kI8 || t == GgufType::kU16 || t == GgufType::kI16 ||
         t == GgufType::kU32 || t == GgufType::kI32 || t == GgufType::kU64 || t == GgufType::kI64 ||
         t == GgufType::kBool;
}

// Bounds-checked little-endian reader over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

  size_t position() const { return pos_; }
  void need(size_t n, const char* what) const {
    if (n > size_ - pos_) throw Error(path_ + ": truncated GGUF file (" + what + " runs past the end)");
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const auto n = read<uint64_t>(what);
    if (n > size_ - pos_) throw Error(path_ + ": truncated GGUF file (" + what + " runs past the end)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  // A scalar of type t as an integer or a real.
  void read_scalar(GgufType t, int64_t& integer, double& real, const char* what) {
    switch (t) {
      case GgufType::kU8: integer = read<uint8_t>(what); break;
      case GgufType::kI8: integer = read<int8_t>(what); break;
      case GgufType::kU16: integer = read<uint16_t>(what); break;
      case GgufType::kI16: integer = read<int16_t>(what); break;
      case GgufType::kU32: integer = read<uint32_t>(what); break;
      case GgufType::kI32: integer = read<int32_t>(what); break;
      case GgufType::kU64: {
        const auto v = read<uint64_t>(what);
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          throw Error(path_ + ": " + what + " holds a u64 too large for gpt.cpp");
        integer = static_cast<int64_t>(v);
        break;
      }
      case GgufType::kI64: integer = read<int64_t>(what); break;
      case GgufType::kBool: {
        const auto v = read<uint8_t>(what);
        if (v > 1) throw Error(path_ + ": " + what + " is a bool that is neither 0 nor 1");
        integer = v;
        break;
      }
      case GgufType::kF32: real = read<float>(what); break;
      case GgufType::kF64: real = read<double>(what); break;
      default: throw Error(path_ + ": " + what + " is not a scalar");
    }
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

void append_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void append(std::vector<uint8_t>& out, T v) {
  append_bytes(out, &v, sizeof(T));
}
void append_string(std::vector<uint8_t>& out, const std::string& s) {
  append<uint64_t>(out, s.size());
  append_bytes(out, s.data(), s.size());
}

void append_scalar(std::vector<uint8_t>& out, GgufType t, int64_t integer, double real) {
  switch (t) {
    case GgufType::kU8: append<uint8_t>(out, static_cast<uint8_t>(integer)); break;
    case GgufType::kI8: append<int8_t>(out, static_cast<int8_t>(integer)); break;
    case GgufType::kU16: append<uint16_t>(out, static_cast<uint16_t>(integer)); break;
    case GgufType::kI16: append<int16_t>(out, static_cast<int16_t>(integer)); break;
    case GgufType::kU32: append<uint32_t>(out, static_cast<uint32_t>(integer)); break;
    case GgufType::kI32: append<int32_t>(out, static_cast<int32_t>(integer)); break;
    case GgufType::kU64: append<uint64_t>(out, static_cast<uint64_t>(integer)); break;
    case GgufType::kI64: append<int64_t>(out, integer); break;
    case GgufType::kBool: append<uint8_t>(out, integer != 0 ? 1 : 0); break;
    case GgufType::kF32: append<float>(out, static_cast<float>(real)); break;
    case GgufType::kF64: append<double>(out, real); break;
    default: throw Error("GGUF writer: not a scalar type");
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

size_t ggml_tensor_bytes(GgmlType type, const std::vector<int64_t>& ne) {
  GPT_CHECK(!ne.empty() && ne.size() <= kMaxDims, "a tensor needs 1 to 4 dimensions");
  const int64_t block = ggml_block_size(type);
  GPT_CHECK(ne[0] % block == 0, std::string("rows of a ") + ggml_type_name(type) + " tensor must be a multiple of " +
                                std::to_string(block) + " elements, got " + std::to_string(ne[0]));
  uint64_t blocks = 1;
  for (size_t i = 0; i < ne.size(); ++i) {
    GPT_CHECK(ne[i] > 0, "tensor dimensions must be positive");
    const auto d = static_cast<uint64_t>(i == 0 ? ne[0] / block : ne[i]);
    GPT_CHECK(blocks <= (uint64_t(1) << 62) / d, "tensor size overflows");
    blocks *= d;
  }
  const auto bb = static_cast<uint64_t>(ggml_block_bytes(type));
  GPT_CHECK(blocks <= (uint64_t(1) << 62) / bb, "tensor size overflows");
  return static_cast<size_t>(blocks * bb);
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufValue GgufValue::u32(uint32_t v) { return {.type = GgufType::kU32, .integer = v}; }
GgufValue GgufValue::i32(int32_t v) { return {.type = GgufType::kI32, .integer = v}; }
GgufValue GgufValue::f32(float v) { return {.type = GgufType::kF32, .real = v}; }
GgufValue GgufValue::boolean(bool v) { return {.type = GgufType::kBool, .integer = v ? 1 : 0}; }
GgufValue GgufValue::string(std::string v) { return {.type = GgufType::kString, .text = std::move(v)}; }
GgufValue GgufValue::string_array(std::vector<std::string> v) {
  return {.type = GgufType::kArray, .element_type = GgufType::kString, .strings = std::move(v)};
}
GgufValue GgufValue::i32_array(std::vector<int64_t> v) {
  return {.type = GgufType::kArray, .element_type = GgufType::kI32, .integers = std::move(v)};
}
GgufValue GgufValue::f32_array(std::vector<double> v) {
  return {.type = GgufType::kArray, .element_type = GgufType::kF32, .reals = std::move(v)};
}

GgufFile GgufFile::load(const std::filesystem::path& path) {
  GgufFile f;
  f.path_ = path.string();
  f.file_ = MappedFile(path);
  const std::string& p = f.path_;
  Cursor in(f.file_.data(), f.file_.size(), p);

  if (f.file_.size() < 4 || in.read<uint32_t>("magic") != kMagic) throw Error(p + " is not a GGUF file (bad magic)");
  f.version_ = in.read<uint32_t>("version");
  GPT_CHECK(f.version_ == 2 || f.version_ == 3,
        p + ": GGUF version " + std::to_string(f.version_) + " is not supported (gpt.cpp reads versions 2 and 3)");
  const auto n_tensors = in.read<uint64_t>("tensor count");
  const auto n_kv = in.read<uint64_t>("metadata count");
  // Every entry takes at least 8 bytes of file: reject counts the file cannot hold
  // before reserving anything.
  const uint64_t room = f.file_.size() / 8;
  GPT_CHECK(n_tensors <= room && n_kv <= room, p + ": corrupt GGUF header (counts larger than the file)");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = in.read_string("metadata key");
    GPT_CHECK(!key.empty(), p + ": empty metadata key");
    GgufValue v;
    const auto type = in.read<uint32_t>("metadata type");
    GPT_CHECK(type <= static_cast<uint32_t>(GgufType::kF64), p + ": metadata '" + key + "' has unknown type " +
                                                             std::to_string(type));
    v.type = static_cast<GgufType>(type);
    const std::string what = "metadata '" + key + "'";
    if (v.type == GgufType::kString) {
      v.text = in.read_string(what.c_str());
    } else if (v.type == GgufType::kArray) {
      const auto et = in.read<uint32_t>(what.c_str());
      GPT_CHECK(et <= static_cast<uint32_t>(GgufType::kF64), p + ": " + what + " has unknown element type");
      v.element_type = static_cast<GgufType>(et);
      GPT_CHECK(v.element_type != GgufType::kArray, p + ": " + what + " is a nested array (not supported)");
      const auto n = in.read<uint64_t>(what.c_str());
      const size_t each = v.element_type == GgufType::kString ? 8 : scalar_size(v.element_type);
      GPT_CHECK(n <= (f.file_.size() - in.position()) / each, p + ": truncated GGUF file (" + what + " runs past the end)");
      for (uint64_t k = 0; k < n; ++k) {
        if (v.element_type == GgufType::kString) {
          v.strings.push_back(in.read_string(what.c_str()));
        } else {
          int64_t integer = 0;
          double real = 0;
          in.read_scalar(v.element_type, integer, real, what.c_str());
          if (is_integer(v.element_type)) {
            v.integers.push_back(integer);
          } else {
            v.reals.push_back(real);
          }
        }
      }
    } else {
      in.read_scalar(v.type, v.integer, v.real, what.c_str());
    }
    GPT_CHECK(f.metadata_.emplace(key, std::move(v)).second, p + ": metadata key '" + key + "' appears twice");
  }
  if (f.has("general.alignment")) {
    const GgufValue& a = f.metadata_.at("general.alignment");
    GPT_CHECK(a.type == GgufType::kU32 && a.integer > 0 && a.integer % 8 == 0 && (a.integer & (a.integer - 1)) == 0,
          p + ": general.alignment must be a u32 power of two, a multiple of 8");
    f.alignment_ = static_cast<uint64_t>(a.integer);
  }

  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = in.read_string("tensor name");
    GPT_CHECK(names.insert(t.name).second, p + ": tensor '" + t.name + "' appears twice");
    const std::string what = "tensor '" + t.name + "'";
    const auto n_dims = in.read<uint32_t>(what.c_str());
    GPT_CHECK(n_dims >= 1 && n_dims <= kMaxDims, p + ": " + what + " has " + std::to_string(n_dims) + " dimensions");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto n = in.read<uint64_t>(what.c_str());
      GPT_CHECK(n >= 1 && n < (uint64_t(1) << 40), p + ": " + what + " has a dimension of " + std::to_string(n));
      t.ne.push_back(static_cast<int64_t>(n));
    }
    const auto type = in.read<uint32_t>(what.c_str());
    GPT_CHECK(is_known_type(type), p + ": " + what + " has ggml type " + std::to_string(type) +
                                   ", which gpt.cpp does not read (F32, F16, BF16, Q8_0, Q4_0)");
    t.type = static_cast<GgmlType>(type);
    t.offset = in.read<uint64_t>(what.c_str());
    try {
      t.bytes = ggml_tensor_bytes(t.type, t.ne);
    } catch (const Error& e) {
      throw Error(p + ": " + what + ": " + e.what());
    }
    GPT_CHECK(t.offset % f.alignment_ == 0, p + ": " + what + " is not aligned to " + std::to_string(f.alignment_));
    f.tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = align_up(in.position(), f.alignment_);
  GPT_CHECK(data_start <= f.file_.size() || f.tensors_.empty(), p + ": truncated GGUF file (no tensor data)");
  const uint64_t data_size = f.file_.size() > data_start ? f.file_.size() - data_start : 0;
  std::vector<const GgufTensor*> by_offset;
  for (GgufTensor& t : f.tensors_) {
    GPT_CHECK(t.offset <= data_size && t.bytes <= data_size - t.offset,
          p + ": truncated GGUF file (tensor '" + t.name + "' runs past the end)");
    t.data = f.file_.data() + data_start + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    GPT_CHECK(by_offset[i - 1]->offset + by_offset[i - 1]->bytes <= by_offset[i]->offset,
          p + ": tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  }
  return f;
}

const GgufTensor* GgufFile::find(const std::string& name) const {
  for (const GgufTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const GgufValue& GgufFile::value(const std::string& key, bool (*is_kind)(const GgufValue&), const char* kind) const {
  auto it = metadata_.find(key);
  GPT_CHECK(it != metadata_.end(), path_ + ": metadata '" + key + "' is missing");
  GPT_CHECK(is_kind(it->second), path_ + ": metadata '" + key + "' is not " + kind);
  return it->second;
}

std::string GgufFile::get_string(const std::string& key) const {
  return value(key, [](const GgufValue& v) { return v.type == GgufType::kString; }, "a string").text;
}

int64_t GgufFile::get_int(const std::string& key) const {
  return value(key, [](const GgufValue& v) { return is_integer(v.type); }, "an integer").integer;
}

double GgufFile::get_float(const std::string& key) const {
  return value(key, [](const GgufValue& v) { return v.type == GgufType::kF32 || v.type == GgufType::kF64; }, "a float")
      .real;
}

const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  return value(key, [](const GgufValue& v) { return v.type == GgufType::kArray && v.element_type == GgufType::kString; },
               "an array of strings")
      .strings;
}

const std::vector<int64_t>& GgufFile::get_ints(const std::string& key) const {
  return value(key, [](const GgufValue& v) { return v.type == GgufType::kArray && is_integer(v.element_type); },
               "an array of integers")
      .integers;
}

const std::vector<double>& GgufFile::get_floats(const std::string& key) const {
  return value(key,
               [](const GgufValue& v) {
                 return v.type == GgufType::kArray && (v.element_type == GgufType::kF32 || v.element_type == GgufType::kF64);
               },
               "an array of floats")
      .reals;
}

bool GgufFile::get_bool(const std::string& key) const {
  return value(key, [](const GgufValue& v) { return v.type == GgufType::kBool; }, "a bool").integer != 0;
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type,
                            std::vector<uint8_t> data) {
  GPT_CHECK(data.size() == ggml_tensor_bytes(type, ne), "GGUF writer: tensor '" + name + "' has the wrong byte count");
  for (const Pending& t : tensors_) GPT_CHECK(t.name != name, "GGUF writer: tensor '" + name + "' added twice");
  tensors_.push_back({name, std::move(ne), type, std::move(data)});
}

void GgufWriter::write(const std::filesystem::path& path) const {
  uint64_t alignment = kDefaultAlignment;
  for (const auto& [k, v] : metadata_) {
    if (k == "general.alignment") alignment = static_cast<uint64_t>(v.integer);
  }
  std::vector<uint8_t> head;
  append<uint32_t>(head, kMagic);
  append<uint32_t>(head, kVersion);
  append<uint64_t>(head, tensors_.size());
  append<uint64_t>(head, metadata_.size());
  for (const auto& [key, v] : metadata_) {
    append_string(head, key);
    append<uint32_t>(head, static_cast<uint32_t>(v.type));
    if (v.type == GgufType::kString) {
      append_string(head, v.text);
    } else if (v.type == GgufType::kArray) {
      append<uint32_t>(head, static_cast<uint32_t>(v.element_type));
      if (v.element_type == GgufType::kString) {
        append<uint64_t>(head, v.strings.size());
        for (const std::string& s : v.strings) append_string(head, s);
      } else if (is_integer(v.element_type)) {
        append<uint64_t>(head, v.integers.size());
        for (int64_t x : v.integers) append_scalar(head, v.element_type, x, 0.0);
      } else {
        append<uint64_t>(head, v.reals.size());
        for (double x : v.reals) append_scalar(head, v.element_type, 0, x);
      }
    } else {
      append_scalar(head, v.type, v.integer, v.real);
    }
  }
  uint64_t offset = 0;
  for (const Pending& t : tensors_) {
    append_string(head, t.name);
    append<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) append<uint64_t>(head, static_cast<uint64_t>(d));
    append<uint32_t>(head, static_cast<uint32_t>(t.type));
    append<uint64_t>(head, offset);
    offset = align_up(offset + t.data.size(), alignment);
  }
  head.resize(align_up(head.size(), alignment), 0);

  AtomicFileWriter out(path);
  out.write(head.data(), head.size());
  const std::vector<uint8_t> zeros(alignment, 0);
  for (const Pending& t : tensors_) {
    out.write(t.data.data(), t.data.size());
    const uint64_t pad = align_up(t.data.size(), alignment) - t.data.size();
    if (pad > 0) out.write(zeros.data(), pad);
  }
  out.commit();
}

}  // namespace gpt
