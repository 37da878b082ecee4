#include "ferry/sync/file_lock.hpp"

#include <algorithm>
#include <thread>

namespace ferry {

FileLock::FileLock(Fd fd, std::string path)
    : fd_(std::move(fd)),
      path_(std::move(path)),
      description_(std::make_shared<const std::string>("file lock '" + path_ + "'")) {}

result<FileLock> FileLock::open(std::string_view path, Options options) {
  auto fd = open_lock_file(path, options.create, options.mode);
  if (!fd) return std::move(fd).error();
  return FileLock(std::move(*fd), std::string(path));
}

result<void> FileLock::lock_until(FileLockKind kind, deadline until) {
  if (until == deadline::max()) {
    auto taken = ofd_lock(fd_, kind, true, *description_);
    if (!taken) return std::move(taken).error();
    return {};
  }
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    auto taken = ofd_lock(fd_, kind, false, *description_);
    if (!taken) return std::move(taken).error();
    if (*taken) return {};
    const auto now = steady_clock::now();
    if (now >= until) return error(errc::timed_out, description_);
    std::this_thread::sleep_for(std::min<steady_clock::duration>(pause, until - now));
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

}  // namespace ferry
