// FileLock: a shared/exclusive lock on a path, between any processes.
//
// Uses open-file-description locks: each FileLock object is its own holder
// (two in one process conflict like two processes), and the kernel releases
// the lock when the process dies, however it dies. Timed forms poll with a
// backoff from 50 us to 2 ms (the kernel has no timed OFD lock).
//
//   auto lock = ferry::FileLock::open("/run/app/config.lock");
//   if (!lock) return lock.error();
//   if (auto held = lock->lock_for(1s); !held) return held.error();   // timed_out
//   ... exclusive section ...
//   lock->unlock();
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"
#include "ferry/os/file.hpp"

namespace ferry {

class FileLock {
 public:
  struct Options {
    bool create = true;   ///< create the file if it does not exist
    mode_t mode = 0600;   ///< its mode when created (the umask applies, as for open)
  };

  /// Errors: not_found (without create), permission_denied, invalid_argument (not a regular file).
  static result<FileLock> open(std::string_view path, Options options);
  static result<FileLock> open(std::string_view path) { return open(path, Options{}); }

  result<void> lock() { return lock_until(FileLockKind::exclusive, deadline::max()); }
  result<void> lock_shared() { return lock_until(FileLockKind::shared, deadline::max()); }
  /// true if acquired, false if another holder conflicts.
  result<bool> try_lock() { return ofd_lock(fd_, FileLockKind::exclusive, false, *description_); }
  result<bool> try_lock_shared() { return ofd_lock(fd_, FileLockKind::shared, false, *description_); }
  /// Errors: timed_out.
  result<void> lock_until(deadline until) { return lock_until(FileLockKind::exclusive, until); }
  result<void> lock_for(steady_clock::duration timeout) { return lock_until(deadline_after(timeout)); }
  result<void> lock_shared_until(deadline until) { return lock_until(FileLockKind::shared, until); }
  result<void> lock_shared_for(steady_clock::duration timeout) {
    return lock_shared_until(deadline_after(timeout));
  }
  result<void> unlock() { return ofd_unlock(fd_, *description_); }

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  /// The descriptor (for example to pread/pwrite the file it locks).
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  FileLock(Fd fd, std::string path);
  result<void> lock_until(FileLockKind kind, deadline until);

  Fd fd_;
  std::string path_;
  std::shared_ptr<const std::string> description_;
};

}  // namespace ferry
