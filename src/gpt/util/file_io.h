// File helpers. Writes are atomic (temp file + fsync + rename) so a crash never
// leaves a half-written file where a good one used to be.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace gpt {

std::string read_text_file(const std::filesystem::path& path);
std::vector<uint8_t> read_binary_file(const std::filesystem::path& path);

// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename.
void write_file_atomic(const std::filesystem::path& path, std::string_view data);

// Streaming writer behind write_file_atomic, for large files written in pieces.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();  // removes the temp file if commit() was never reached
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void commit();  // fsync + rename over the destination + fsync the directory

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
};

// fsync a directory so a rename inside it is durable.
void sync_directory(const std::filesystem::path& dir);

// Appends one line (plus '\n') to a file, opening and closing it each time so the
// file stays valid and readable by others while training runs.
void append_line(const std::filesystem::path& path, std::string_view line);

}  // namespace gpt
