#include "gpt/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "gpt/util/error.h"
#include "gpt/util/half.h"
#include "gpt/util/file_io.h"

namespace gpt {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

size_t dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}


}  // namespace

ModelWeightFiles ModelWeightFiles::single(const std::filesystem::path& path) {
  ModelWeightFiles w;
  w.name_ = path.string();
  w.shards_.push_back(SafetensorsFile::load(path));
  for (const auto& [name, e] : w.shards_[0].entries()) w.file_of_.emplace(name, 0);
  return w;
}

bool ModelWeightFiles::present(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::exists(dir / "model.safetensors", ec) ||
         std::filesystem::exists(dir / "model.safetensors.index.json", ec);
}

ModelWeightFiles ModelWeightFiles::open(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir / "model.safetensors", ec)) return single(dir / "model.safetensors");
  const std::filesystem::path index = dir / "model.safetensors.index.json";
  GPT_CHECK(std::filesystem::exists(index, ec),
            "model directory " + dir.string() + " has no model.safetensors (or model.safetensors.index.json)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(index));
  } catch (const nlohmann::json::exception& e) {
    throw Error(index.string() + " is not valid JSON: " + e.what());
  }
  GPT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object() && !j["weight_map"].empty(),
            index.string() + " has no \"weight_map\" of tensor names to files");
  ModelWeightFiles w;
  w.name_ = index.string();
  std::map<std::string, size_t> shard_of_file;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    GPT_CHECK(it.value().is_string(), index.string() + ": the file of '" + it.key() + "' is not a string");
    const std::string file = it.value().get<std::string>();
    // Shards are files beside the index, never paths that lead elsewhere.
    GPT_CHECK(!file.empty() && file.find('/') == std::string::npos && file.find('\\') == std::string::npos &&
                  file != "." && file != "..",
              index.string() + ": '" + file + "' is not a file name in the model directory");
    auto [at, added] = shard_of_file.emplace(file, w.shards_.size());
    if (added) {
      GPT_CHECK(std::filesystem::exists(dir / file, ec), index.string() + " names " + file + ", which is missing");
      w.shards_.push_back(SafetensorsFile::load(dir / file));
    }
    GPT_CHECK(w.shards_[at->second].contains(it.key()),
              index.string() + " puts '" + it.key() + "' in " + file + ", which does not hold it");
    w.file_of_.emplace(it.key(), at->second);
  }
  return w;
}

const SafetensorsFile& ModelWeightFiles::file(const std::string& name) const {
  auto it = file_of_.find(name);
  GPT_CHECK(it != file_of_.end(), name_ + ": missing tensor '" + name + "'");
  return shards_[it->second];
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsFile SafetensorsFile::load(const std::filesystem::path& path) {
  std::error_code ec;
  GPT_CHECK(std::filesystem::exists(path, ec), "file not found: " + path.string());
  SafetensorsFile f;
  f.name_ = path.string();
  f.mapped_ = MappedFile(path);
  f.bytes_ = f.mapped_.data();
  f.size_ = f.mapped_.size();
  f.parse_header();
  return f;
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string& name) {
  SafetensorsFile f;
  f.name_ = name;
  f.owned_ = std::move(bytes);
  f.bytes_ = f.owned_.data();
  f.size_ = f.owned_.size();
  f.parse_header();
  return f;
}

void SafetensorsFile::parse_header() {
  SafetensorsFile& f = *this;
  const std::string& name = name_;
  const auto fail = [&](const std::string& why) { throw Error(name + ": " + why); };
  if (f.size_ < 8) fail("not a safetensors file (shorter than its 8-byte header length)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | f.bytes_[static_cast<size_t>(i)];
  if (header_len > kMaxHeaderBytes) fail("header length " + std::to_string(header_len) + " is implausible");
  if (header_len > f.size_ - 8) fail("truncated: header runs past the end of the file");
  f.data_start_ = 8 + static_cast<size_t>(header_len);
  const size_t data_size = f.size_ - f.data_start_;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(f.bytes_ + 8, f.bytes_ + f.data_start_);
  } catch (const nlohmann::json::exception&) {
    fail("header is not valid JSON (corrupt file?)");
  }
  if (!header.is_object()) fail("header is not a JSON object");

  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const auto& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ must be an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ values must be strings");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail("tensor '" + key + "' lacks dtype, shape or data_offsets");
    SafetensorsEntry e;
    if (!v["dtype"].is_string()) fail("tensor '" + key + "' has a non-string dtype");
    e.dtype = v["dtype"].get<std::string>();
    const size_t esize = dtype_size(e.dtype);
    if (esize == 0) fail("tensor '" + key + "' has unknown dtype '" + e.dtype + "'");
    if (!v["shape"].is_array()) fail("tensor '" + key + "' has a malformed shape");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail("tensor '" + key + "' has a malformed shape");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim / 8)
        fail("tensor '" + key + "' is implausibly large");
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail("tensor '" + key + "' has malformed data_offsets");
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en || en > data_size)
      fail("tensor '" + key + "' data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
           "] run past the end of the data (" + std::to_string(data_size) + " bytes; truncated file?)");
    if (en - b != numel * esize)
      fail("tensor '" + key + "' holds " + std::to_string(en - b) + " bytes but " + e.dtype + " " +
           shape_to_string(e.shape) + " needs " + std::to_string(numel * esize));
    e.begin = static_cast<size_t>(b);
    e.end = static_cast<size_t>(en);
    ranges.emplace_back(e.begin, e.end);
    f.entries_.emplace(key, std::move(e));
  }
  // The data section must be covered exactly: no overlapping tensors, no holes.
  std::sort(ranges.begin(), ranges.end());
  size_t pos = 0;
  for (const auto& [b, e] : ranges) {
    if (b < pos) fail("tensors overlap at byte " + std::to_string(b));
    if (b > pos) fail("hole in the data section at byte " + std::to_string(pos));
    pos = e;
  }
  if (pos != data_size) fail("data section has " + std::to_string(data_size - pos) + " trailing bytes");
}

void SafetensorsFile::check_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const SafetensorsEntry& e = entry(name);
  GPT_CHECK(e.shape == expected_shape, name_ + ": tensor '" + name + "' has shape " + shape_to_string(e.shape) +
                                           " but the model expects " + shape_to_string(expected_shape));
  GPT_CHECK(e.dtype == "F32" || e.dtype == "F16" || e.dtype == "BF16",
            name_ + ": tensor '" + name + "' has dtype " + e.dtype + ", expected F32, F16 or BF16");
}

void SafetensorsFile::read_f32(const std::string& name, const std::vector<int64_t>& expected_shape,
                               float* dst) const {
  check_f32(name, expected_shape);
  const SafetensorsEntry& e = entry(name);
  const size_t esize = dtype_size(e.dtype), n = (e.end - e.begin) / esize;
  constexpr size_t kPiece = size_t(1) << 21;  // values per piece (8 MB of F32)
  for (size_t i0 = 0; i0 < n; i0 += kPiece) {
    const size_t count = std::min(kPiece, n - i0);
    const size_t offset = data_start_ + e.begin + i0 * esize;
    const uint8_t* src = bytes_ + offset;
    float* out = dst + i0;
    if (e.dtype == "F32") {
      std::memcpy(out, src, count * 4);
    } else if (e.dtype == "F16") {
      for (size_t i = 0; i < count; ++i) out[i] = half_to_float(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
    } else {  // BF16
      for (size_t i = 0; i < count; ++i) {
        const uint32_t bits = static_cast<uint32_t>(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
        std::memcpy(out + i, &bits, 4);
      }
    }
    mapped_.release(offset, count * esize);
  }
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  GPT_CHECK(it != entries_.end(), name_ + ": missing tensor '" + name + "'");
  return it->second;
}

void SafetensorsFile::read_i32(const std::string& name, const std::vector<int64_t>& expected_shape,
                               int32_t* dst) const {
  const SafetensorsEntry& e = entry(name);
  GPT_CHECK(e.dtype == "I32", name_ + ": tensor '" + name + "' has dtype " + e.dtype + ", expected I32");
  GPT_CHECK(e.shape == expected_shape, name_ + ": tensor '" + name + "' has shape " + shape_to_string(e.shape) +
                                       " but " + shape_to_string(expected_shape) + " was expected");
  std::memcpy(dst, bytes_ + data_start_ + e.begin, e.end - e.begin);
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // nlohmann::ordered_json keeps the tensors in buffer order in the header.
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& t : tensors) {
    size_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<size_t>(d);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + numel * 4}}};
    offset += numel * 4;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  AtomicFileWriter out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const auto& t : tensors) {
    size_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<size_t>(d);
    out.write(t.data, numel * 4);
  }
  out.commit();
}

}  // namespace gpt
