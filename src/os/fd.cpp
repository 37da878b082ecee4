#include "ferry/os/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace ferry {

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) {
    // close() is not retried on EINTR: on Linux the descriptor is released anyway.
    ::close(fd_);
  }
  fd_ = fd;
}

result<Fd> Fd::duplicate() const {
  int copy = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return error::from_errno(errno, "fd " + std::to_string(fd_), "dup");
  return Fd(copy);
}

result<Fd> Fd::dup_inheritable(int min_fd) const {
  int copy = ::fcntl(fd_, F_DUPFD, min_fd);
  if (copy < 0) return error::from_errno(errno, "fd " + std::to_string(fd_), "dup");
  return Fd(copy);
}

}  // namespace ferry
