// Semaphore: a counting (or binary) semaphore shared between processes.
//
// `post` adds units up to a maximum fixed at construction; a post that would
// exceed it is errc::limit_reached and adds nothing (it never wraps).
// `wait` takes one unit, sleeping (per the WaitStrategy) while there is none.
// A binary semaphore is one with maximum 1.
//
// Crash tolerance: a waiter killed while waiting takes nothing with it; a
// process killed after taking a unit has used it (as with any semaphore).
// Lives in shared memory (`new (place) Semaphore(0, 16, "jobs")` or
// Named<Semaphore>); process-safe and lock-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "ferry/os/error.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

class alignas(64) Semaphore {
 public:
  static constexpr ObjectType kObjectType = ObjectType::semaphore;

  /// Precondition (aborts otherwise): 1 <= maximum, initial <= maximum.
  Semaphore(std::uint32_t initial, std::uint32_t maximum, std::string_view label = {});
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  /// Adds `units`. Errors: limit_reached (the count would pass the maximum; nothing added).
  result<void> post(std::uint32_t units = 1);
  /// Takes one unit if there is one, without waiting.
  [[nodiscard]] bool try_wait() noexcept;
  /// Takes one unit, waiting for it.
  void wait(WaitStrategy strategy = {});
  /// As wait; errors: timed_out.
  result<void> wait_for(steady_clock::duration timeout, WaitStrategy strategy = {});
  result<void> wait_until(deadline until, WaitStrategy strategy = {});

  [[nodiscard]] std::uint32_t value() const noexcept { return count_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint32_t maximum() const noexcept { return maximum_; }

 private:
  std::atomic<std::uint32_t> count_;
  std::uint32_t maximum_;
  WaitPoint available_;
  detail::Label label_;
};

static_assert(sizeof(Semaphore) == 64);

}  // namespace ferry
