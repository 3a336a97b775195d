#include "gpt/util/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "gpt/util/error.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

std::vector<uint8_t> read_binary_file(const fs::path& path) {
  std::error_code ec;
  GPT_CHECK(fs::exists(path, ec), "file not found: " + path.string());
  GPT_CHECK(!fs::is_directory(path, ec), "expected a file but found a directory: " + path.string());
  std::ifstream in(path, std::ios::binary);
  GPT_CHECK(in.good(), "cannot open " + path.string() + ": " + errno_text());
  std::vector<uint8_t> data;
  if (fs::is_regular_file(path, ec)) {
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    in.seekg(0, std::ios::beg);
    GPT_CHECK(size >= 0, "cannot read " + path.string() + ": " + errno_text());
    data.resize(static_cast<size_t>(size));
    if (size > 0) in.read(reinterpret_cast<char*>(data.data()), size);
  } else {
    // A pipe or a device (`--data <(command)`, /dev/stdin): read until its end.
    char chunk[1 << 16];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) data.insert(data.end(), chunk, chunk + in.gcount());
  }
  GPT_CHECK(in.good() || in.eof(), "cannot read " + path.string());
  return data;
}

std::string read_text_file(const fs::path& path) {
  std::vector<uint8_t> bytes = read_binary_file(path);
  return std::string(bytes.begin(), bytes.end());
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  std::string host(name);
  for (char& c : host)
    if (c == '.' || c == '/') c = '_';  // the suffix is parsed at its dots
  return host;
}

std::string unique_temp_suffix() {
  // Process id, host and a process-wide counter: unique among every writer of
  // this process (any thread), of every other process, and of other machines
  // writing to a shared filesystem.
  static const std::string host = this_host();
  static std::atomic<uint64_t> counter{0};
  return ".tmp." + std::to_string(::getpid()) + "@" + host + "." + std::to_string(counter.fetch_add(1));
}

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)) {
  temp_path_ = path_;
  temp_path_ += unique_temp_suffix();
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  GPT_CHECK(fd_ >= 0, "cannot create " + temp_path_.string() + ": " + errno_text());
}

AtomicFileWriter::~AtomicFileWriter() { discard(); }

void AtomicFileWriter::discard() {
  if (fd_ < 0) return;
  ::close(std::exchange(fd_, -1));
  ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    GPT_CHECK(fd_ >= 0, "write to " + temp_path_.string() + " after it was committed or failed");
    ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? errno_text() : "no progress";
      discard();
      throw Error("cannot write " + temp_path_.string() + ": " + why);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  GPT_CHECK(fd_ >= 0, "commit of " + temp_path_.string() + " after it was already committed or failed");
  if (::fsync(fd_) != 0) {
    const std::string why = errno_text();
    discard();
    throw Error("cannot sync " + temp_path_.string() + ": " + why);
  }
  // close() releases the descriptor even when it fails: never close it again
  // (its number may already belong to another thread's file).
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(temp_path_.c_str());
    throw Error("cannot close " + temp_path_.string() + ": " + why);
  }
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
  GPT_CHECK(out.good(), "cannot open log file " + path.string() + " for appending");
  out << line << '\n';
  GPT_CHECK(out.good(), "cannot write log file " + path.string());
}

}  // namespace gpt
