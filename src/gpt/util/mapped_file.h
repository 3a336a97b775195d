// A whole file mapped read-only into memory (model files of hundreds of MB are
// read in place, and only the pages used are loaded).
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace gpt {

class MappedFile {
 public:
  MappedFile() = default;  // empty
  explicit MappedFile(const std::filesystem::path& path);  // gpt::Error if unreadable
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }
  size_t size() const { return size_; }
  // Drops the whole pages of [offset, offset + size) from this process's memory
  // (they are read from the file again if touched): a file copied out piece by
  // piece never has more than a piece resident.
  void release(size_t offset, size_t size) const;

 private:
  void* map_ = nullptr;
  size_t size_ = 0;
};

}  // namespace gpt
