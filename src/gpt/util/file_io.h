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
// Temp names (path + ".tmp.<pid>.<n>") are unique per writer, so any number of
// threads and processes may write the same path at once; the last rename wins.
void write_file_atomic(const std::filesystem::path& path, std::string_view data);

// Streaming writer behind write_file_atomic, for large files written in pieces.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();  // removes the temp file if commit() was never reached
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Each throws gpt::Error on failure, after removing the temp file (the
  // destination is untouched); the writer is then spent.
  void write(const void* data, size_t size);
  void commit();  // fsync + rename over the destination + fsync the directory

 private:
  void discard();  // closes and removes the temp file, if still open

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
};

// A suffix no other temp file of this process or another one has:
// ".tmp.<pid>@<host>.<n>" (dots in the host name become '_').
std::string unique_temp_suffix();
// This machine's name as unique_temp_suffix writes it.
std::string this_host();

// fsync a directory so a rename inside it is durable.
void sync_directory(const std::filesystem::path& dir);

// Appends one line (plus '\n') to a file, opening and closing it each time so the
// file stays valid and readable by others while training runs.
void append_line(const std::filesystem::path& path, std::string_view line);

}  // namespace gpt
