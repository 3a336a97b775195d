// Atomic file writes: failures leave no stray descriptor or temp file, and any
// number of writers may write one path at once.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gpt/util/error.h"
#include "gpt/util/file_io.h"
#include "test_support.h"

// close() is interposed in this test program (the library links statically):
// it fails once, on request, for one descriptor, as a close on NFS can. Like
// Linux's close, it releases the descriptor even when it reports the failure.
namespace {
std::atomic<int> g_fail_close_fd{-1};
}  // namespace

extern "C" int close(int fd) {
  using CloseFn = int (*)(int);
  static const auto real_close = reinterpret_cast<CloseFn>(::dlsym(RTLD_NEXT, "close"));
  int expected = fd;
  if (fd >= 0 && g_fail_close_fd.compare_exchange_strong(expected, -1)) {
    real_close(fd);
    errno = EIO;
    return -1;
  }
  return real_close(fd);
}

namespace gpt {
namespace {
namespace fs = std::filesystem;

// The descriptor the writer holds: the newest one pointing at a temp file of `path`.
int descriptor_of_temp_file(const fs::path& path) {
  int found = -1;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(e.path(), ec);
    if (!ec && target.string().rfind(path.string() + ".tmp.", 0) == 0) found = std::stoi(e.path().filename().string());
  }
  return found;
}

TEST(AtomicFileWriter, AFailedCloseIsNotFollowedBySecondClose) {
  testing::TempDir dir;
  const fs::path path = dir / "model.bin";
  int other = -1;
  {
    AtomicFileWriter writer(path);
    writer.write("abc", 3);
    const int fd = descriptor_of_temp_file(path);
    ASSERT_GE(fd, 0);
    g_fail_close_fd = fd;
    EXPECT_THROW(writer.commit(), Error);
    // The number is free again: another file (another thread's, in a server) gets it.
    other = ::open("/dev/null", O_RDONLY);
    ASSERT_EQ(other, fd);
    // The writer's destructor runs here; closing `fd` again would close the other file.
  }
  EXPECT_NE(::fcntl(other, F_GETFD), -1) << "the writer closed a descriptor it no longer owned";
  ::close(other);
  EXPECT_FALSE(fs::exists(path));  // nothing half-written took the destination's place
  for (const auto& e : fs::directory_iterator(dir.path())) ADD_FAILURE() << "left behind: " << e.path();
}

TEST(AtomicFileWriter, ManyThreadsWritingOnePathEachWriteAWholeFile) {
  // Temp names are unique per writer: with one name per process, two threads
  // would write into the same temp file and rename each other's half-written data.
  testing::TempDir dir;
  const fs::path path = dir / "state.json";
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string body(100000 + static_cast<size_t>(t), static_cast<char>('a' + t));
      for (int i = 0; i < 25; ++i) {
        try {
          write_file_atomic(path, body);
        } catch (const Error&) {
          ++errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  const std::string final_text = read_text_file(path);
  ASSERT_GE(final_text.size(), 100000u);
  const size_t t = final_text.size() - 100000;
  ASSERT_LT(t, 4u);
  EXPECT_EQ(final_text, std::string(final_text.size(), static_cast<char>('a' + t)));
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1u);  // no temp file left
}

}  // namespace
}  // namespace gpt

// `gpt eval --data <(command)` and /dev/stdin: a pipe has no size to seek to.
TEST(ReadFile, ReadsAPipeToItsEnd) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::string sent;
  for (int i = 0; i < 20000; ++i) sent += "line " + std::to_string(i) + "\n";  // more than one pipe buffer
  std::thread writer([&] {
    size_t off = 0;
    while (off < sent.size()) {
      const ssize_t n = ::write(fds[1], sent.data() + off, sent.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(fds[1]);
  });
  const std::string got = gpt::read_text_file("/proc/self/fd/" + std::to_string(fds[0]));
  writer.join();
  ::close(fds[0]);
  EXPECT_EQ(got.size(), sent.size());
  EXPECT_EQ(got, sent);
}
