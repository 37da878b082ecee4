// SealedPayload: a large payload in a memfd that its writer seals before
// handing it over, so the reader can rely on it: nobody can change, grow or
// shrink it any more (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK, and
// F_SEAL_SEAL so the seals stay). The reader checks the seals itself.
//
//   auto payload = ferry::SealedPayload::create(64 << 20);   // writer
//   fill(payload->data());
//   payload->seal();
//   socket.send_descriptor(payload->fd(), {});               // or fork/exec, pidfd_getfd...
//
//   auto fd = socket.receive_descriptor(note);               // reader
//   auto received = ferry::SealedPayload::adopt(std::move(*fd));  // refused unless sealed
//   use(received->bytes());
//
// The bytes are shared, not copied: handing over 64 MiB costs a descriptor.
// A payload that is not sealed against writing, growing and shrinking is
// refused (invalid_argument): its sender could change it under the reader,
// or shrink it so that reading the mapping raises SIGBUS.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"

namespace ferry {

class SealedPayload {
 public:
  /// A writable payload of `size` bytes (> 0), zero-filled. `name` shows in
  /// /proc/PID/fd ("memfd:NAME"). Errors: invalid_argument, no_space, system.
  static result<SealedPayload> create(std::size_t size, std::string_view name = "ferry-payload");
  /// A received payload, mapped read-only once its seals are checked.
  /// Errors: invalid_argument (not a memfd, or not sealed), system.
  static result<SealedPayload> adopt(Fd descriptor);

  SealedPayload(SealedPayload&& other) noexcept;
  SealedPayload& operator=(SealedPayload&& other) noexcept;
  ~SealedPayload();

  /// The bytes to write; empty once sealed.
  [[nodiscard]] std::span<std::byte> data() const noexcept;
  /// The bytes to read (after seal(), or as adopted).
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool sealed() const noexcept { return sealed_; }
  /// Seals it (the writable mapping goes first: the kernel refuses to seal
  /// writes while one exists) and maps it read-only.
  result<void> seal();
  /// The descriptor to hand over (close-on-exec).
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  SealedPayload(Fd fd, std::size_t size, void* mapping, bool sealed) noexcept
      : fd_(std::move(fd)), size_(size), mapping_(mapping), sealed_(sealed) {}
  void unmap() noexcept;

  Fd fd_;
  std::size_t size_ = 0;
  void* mapping_ = nullptr;
  bool sealed_ = false;
};

}  // namespace ferry
