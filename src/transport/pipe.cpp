#include "ferry/transport/pipe.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace ferry {

namespace {

result<ByteStream> adopt_end(int fd, int access_mode, std::string_view name) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return error::from_errno(errno, name, "inherited fd " + std::to_string(fd) + " is not open");
  if ((flags & O_ACCMODE) != access_mode) {
    return error(errc::invalid_argument, name,
                 "fd " + std::to_string(fd) + " is open for " + ((flags & O_ACCMODE) == O_RDONLY ? "reading" : "writing"));
  }
  return ByteStream::adopt(fd, name);
}

}  // namespace

result<Pipe> Pipe::create() {
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return error::from_errno(errno, "pipe", "pipe2");
  Fd read_end(ends[0]);
  Fd write_end(ends[1]);
  auto reader = ByteStream::wrap(std::move(read_end), "pipe " + std::to_string(ends[0]) + " (read end)");
  if (!reader) return std::move(reader).error();
  auto writer = ByteStream::wrap(std::move(write_end), "pipe " + std::to_string(ends[1]) + " (write end)");
  if (!writer) return std::move(writer).error();
  return Pipe{std::move(*reader), std::move(*writer)};
}

result<ByteStream> Pipe::adopt_reader(int fd) {
  return adopt_end(fd, O_RDONLY, "inherited pipe " + std::to_string(fd) + " (read end)");
}

result<ByteStream> Pipe::adopt_writer(int fd) {
  return adopt_end(fd, O_WRONLY, "inherited pipe " + std::to_string(fd) + " (write end)");
}

}  // namespace ferry
