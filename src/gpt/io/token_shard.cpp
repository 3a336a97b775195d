#include "gpt/io/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"

namespace gpt {
namespace {

template <class T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

void write_token_shard(const std::filesystem::path& path, std::span<const int32_t> ids, int64_t vocab_size) {
  GPT_CHECK(vocab_size > 0 && vocab_size <= (int64_t(1) << 31), "shard vocabulary size out of range");
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  uint8_t header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, 8);
  put<uint32_t>(header + 8, 1);
  put<uint32_t>(header + 12, width);
  put<uint64_t>(header + 16, ids.size());
  put<uint64_t>(header + 24, static_cast<uint64_t>(vocab_size));
  AtomicFileWriter out(path);
  out.write(header, sizeof header);
  std::vector<uint8_t> buf;
  const size_t chunk = 1 << 20;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    const size_t n = std::min(chunk, ids.size() - i);
    buf.resize(n * width);
    for (size_t k = 0; k < n; ++k) {
      const int32_t id = ids[i + k];
      GPT_CHECK(id >= 0 && id < vocab_size, "token id " + std::to_string(id) + " outside the vocabulary");
      if (width == 2) put<uint16_t>(buf.data() + 2 * k, static_cast<uint16_t>(id));
      else put<uint32_t>(buf.data() + 4 * k, static_cast<uint32_t>(id));
    }
    out.write(buf.data(), buf.size());
  }
  out.commit();
}

bool is_token_shard(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in.gcount() == 8 && std::memcmp(magic, kShardMagic, 8) == 0;
}

TokenShard::TokenShard(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  GPT_CHECK(fd >= 0, "cannot open token shard " + name);
  struct stat st {};
  ::fstat(fd, &st);
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ < kShardHeaderBytes) {
    ::close(fd);
    throw Error(name + ": not a token shard (shorter than its header)");
  }
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  GPT_CHECK(map_ != MAP_FAILED, "cannot map token shard " + name);
  const auto* h = static_cast<const uint8_t*>(map_);
  auto fail = [&](const std::string& why) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw Error(name + ": " + why);
  };
  if (std::memcmp(h, kShardMagic, 8) != 0) fail("not a token shard (bad magic)");
  if (get<uint32_t>(h + 8) != 1) fail("unsupported shard version " + std::to_string(get<uint32_t>(h + 8)));
  width_ = static_cast<int>(get<uint32_t>(h + 12));
  if (width_ != 2 && width_ != 4) fail("unsupported token width " + std::to_string(width_));
  const uint64_t count = get<uint64_t>(h + 16);
  vocab_size_ = static_cast<int64_t>(get<uint64_t>(h + 24));
  if (count > (map_bytes_ - kShardHeaderBytes) / static_cast<uint64_t>(width_) ||
      count * static_cast<uint64_t>(width_) != map_bytes_ - kShardHeaderBytes) {
    fail("truncated or padded: header says " + std::to_string(count) + " tokens, the file holds " +
         std::to_string((map_bytes_ - kShardHeaderBytes) / static_cast<uint64_t>(width_)));
  }
  if (vocab_size_ <= 0 || (width_ == 2 && vocab_size_ > 65536)) fail("bad vocabulary size in the header");
  count_ = static_cast<int64_t>(count);
  data_ = h + kShardHeaderBytes;
  ::madvise(map_, map_bytes_, MADV_RANDOM);  // training reads windows at random offsets
}

TokenShard::~TokenShard() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

}  // namespace gpt
