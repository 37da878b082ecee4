#include "ferry/transport/fifo.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <thread>

namespace ferry {

namespace {

std::string fifo_name(std::string_view path) { return "fifo '" + std::string(path) + "'"; }

result<ByteStream> open_fifo(std::string_view path, int flags) {
  const std::string name = fifo_name(path);
  const std::string text(path);
  int fd;
  do {
    fd = ::open(text.c_str(), flags | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENXIO) return error(errc::would_block, name, "no reader has it open", ENXIO);
    return error::from_errno(errno, name, "open");
  }
  Fd owned(fd);
  struct stat status {};
  if (::fstat(fd, &status) != 0) return error::from_errno(errno, name, "fstat");
  if (!S_ISFIFO(status.st_mode)) return error(errc::invalid_argument, name, "not a FIFO");
  return ByteStream::wrap(std::move(owned), name);
}

}  // namespace

result<void> Fifo::create(std::string_view path, mode_t mode) {
  const std::string text(path);
  if (::mkfifo(text.c_str(), mode) != 0) return error::from_errno(errno, fifo_name(path), "mkfifo");
  // mkfifo applies the umask; the caller asked for exactly `mode`.
  if (::chmod(text.c_str(), mode) != 0) {
    const int saved = errno;
    ::unlink(text.c_str());
    return error::from_errno(saved, fifo_name(path), "chmod");
  }
  return {};
}

result<void> Fifo::remove(std::string_view path) {
  const std::string text(path);
  struct stat status {};
  if (::lstat(text.c_str(), &status) != 0) return error::from_errno(errno, fifo_name(path), "lstat");
  if (!S_ISFIFO(status.st_mode)) return error(errc::invalid_argument, fifo_name(path), "not a FIFO; not removed");
  if (::unlink(text.c_str()) != 0) return error::from_errno(errno, fifo_name(path), "unlink");
  return {};
}

result<ByteStream> Fifo::open_reader(std::string_view path) { return open_fifo(path, O_RDONLY); }

result<ByteStream> Fifo::try_open_reader(std::string_view path) { return open_fifo(path, O_RDONLY | O_NONBLOCK); }

result<ByteStream> Fifo::open_writer(std::string_view path) { return open_fifo(path, O_WRONLY); }

result<ByteStream> Fifo::try_open_writer(std::string_view path) { return open_fifo(path, O_WRONLY | O_NONBLOCK); }

result<ByteStream> Fifo::open_writer_until(std::string_view path, deadline when) {
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    auto opened = try_open_writer(path);
    if (opened || opened.error().code() != errc::would_block) return opened;
    const auto now = steady_clock::now();
    if (now >= when) return error(errc::timed_out, fifo_name(path), "no reader opened it", ENXIO);
    std::this_thread::sleep_for(std::min<steady_clock::duration>(pause, when - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

}  // namespace ferry
