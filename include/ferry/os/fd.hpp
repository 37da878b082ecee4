// RAII owner of a file descriptor.
//
// An Fd closes what it owns exactly once; it is move-only. ferry opens every
// descriptor with O_CLOEXEC, so a child only inherits what is handed to it on
// purpose (see `Fd::dup_inheritable`).
//
// Thread-safety: like any value; one Fd must not be used from two threads
// while one of them moves or resets it.
#pragma once

#include <utility>

#include "ferry/os/error.hpp"

namespace ferry {

class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  /// Gives up ownership without closing.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes what is owned (if anything) and owns `fd` instead.
  void reset(int fd = -1) noexcept;

  /// A second descriptor for the same open file, close-on-exec.
  [[nodiscard]] result<Fd> duplicate() const;
  /// A descriptor for the same open file that survives exec, at the lowest
  /// free number >= `min_fd`; for handing an object to a child process.
  [[nodiscard]] result<Fd> dup_inheritable(int min_fd = 3) const;

 private:
  int fd_ = -1;
};

}  // namespace ferry
