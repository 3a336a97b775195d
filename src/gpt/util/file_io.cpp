#include "gpt/util/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "gpt/util/error.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

std::vector<uint8_t> read_binary_file(const fs::path& path) {
  std::error_code ec;
  check(fs::exists(path, ec), "file not found: " + path.string());
  check(!fs::is_directory(path, ec), "expected a file but found a directory: " + path.string());
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot open " + path.string() + ": " + errno_text());
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> data(static_cast<size_t>(size));
  if (size > 0) in.read(reinterpret_cast<char*>(data.data()), size);
  check(in.good() || in.eof(), "cannot read " + path.string());
  return data;
}

std::string read_text_file(const fs::path& path) {
  std::vector<uint8_t> bytes = read_binary_file(path);
  return std::string(bytes.begin(), bytes.end());
}

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)) {
  temp_path_ = path_;
  temp_path_ += ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check(fd_ >= 0, "cannot create " + temp_path_.string() + ": " + errno_text());
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    check(n > 0, "cannot write " + temp_path_.string() + ": " + errno_text());
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  check(::fsync(fd_) == 0, "cannot sync " + temp_path_.string() + ": " + errno_text());
  check(::close(fd_) == 0, "cannot close " + temp_path_.string() + ": " + errno_text());
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    std::string why = errno_text();
    ::unlink(temp_path_.c_str());
    throw Error("cannot rename " + temp_path_.string() + " to " + path_.string() + ": " + why);
  }
  sync_directory(path_.has_parent_path() ? path_.parent_path() : fs::path("."));
}

void write_file_atomic(const fs::path& path, std::string_view data) {
  AtomicFileWriter writer(path);
  writer.write(data.data(), data.size());
  writer.commit();
}

void sync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems refuse to open directories
  ::fsync(fd);
  ::close(fd);
}

void append_line(const fs::path& path, std::string_view line) {
  std::ofstream out(path, std::ios::app);
  check(out.good(), "cannot open log file " + path.string() + " for appending");
  out << line << '\n';
  check(out.good(), "cannot write log file " + path.string());
}

}  // namespace gpt
