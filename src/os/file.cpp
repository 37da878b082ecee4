#include "ferry/os/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace ferry {

result<Fd> open_lock_file(std::string_view path, bool create, mode_t mode) {
  const std::string name(path);
  const std::string object = "file lock '" + name + "'";
  if (name.empty()) return error(errc::invalid_argument, object, "empty path");
  int fd = ::open(name.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), mode);
  if (fd < 0) {
    if (errno == ELOOP) return error(errc::invalid_argument, object, "is a symbolic link", ELOOP);
    return error::from_errno(errno, object, "open");
  }
  Fd file(fd);
  struct stat facts {};
  if (::fstat(fd, &facts) != 0) return error::from_errno(errno, object, "fstat");
  if (!S_ISREG(facts.st_mode)) return error(errc::invalid_argument, object, "not a regular file");
  return file;
}

namespace {
result<bool> set_lock(const Fd& file, short type, bool wait, std::string_view object) {
  struct flock request {};
  request.l_type = type;
  request.l_whence = SEEK_SET;
  request.l_start = 0;
  request.l_len = 0;  // the whole file, however it grows
  for (;;) {
    if (::fcntl(file.get(), wait ? F_OFD_SETLKW : F_OFD_SETLK, &request) == 0) return true;
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EACCES)) return false;
    return error::from_errno(errno, object, "fcntl(F_OFD_SETLK)");
  }
}
}  // namespace

result<bool> ofd_lock(const Fd& file, FileLockKind kind, bool wait, std::string_view object) {
  return set_lock(file, kind == FileLockKind::shared ? F_RDLCK : F_WRLCK, wait, object);
}

result<void> ofd_unlock(const Fd& file, std::string_view object) {
  auto released = set_lock(file, F_UNLCK, false, object);
  if (!released) return std::move(released).error();
  return {};
}

}  // namespace ferry
