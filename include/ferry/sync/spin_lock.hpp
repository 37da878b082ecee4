// SpinLock: a lock that never sleeps in the kernel, for very short critical
// sections between processes.
//
// Waiting spins with exponential, bounded backoff (at most kMaxPauses PAUSE
// instructions between attempts), and yields the CPU after every
// kYieldAfterSpins attempts so that on a small machine the holder can run.
// The lock word is the holder's PID-reuse-proof ProcessId: while waiting,
// ferry checks every few milliseconds whether the holder still lives, and if
// it died holding the lock, takes it over and reports errc::owner_died (the
// lock is then held; repair the protected data). Ownership is per process:
// threads of one process are not told apart, and the lock is not reentrant.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

class alignas(64) SpinLock {
 public:
  static constexpr ObjectType kObjectType = ObjectType::spin_lock;
  static constexpr std::uint32_t kMaxPauses = 1024;
  static constexpr std::uint32_t kYieldAfterSpins = 64;

  // Not explicit: a SpinLock member of an aggregate in shared memory is
  // value-initialized by `T{}`.
  SpinLock() noexcept : SpinLock(std::string_view{}) {}
  explicit SpinLock(std::string_view label) noexcept : label_(label) {}
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  /// Errors: owner_died (taken over from a dead holder: held now).
  result<void> lock() { return lock_until(deadline::max()); }
  /// true if acquired. Errors: owner_died (held now).
  result<bool> try_lock();
  result<void> lock_for(steady_clock::duration timeout) { return lock_until(deadline_after(timeout)); }
  /// As lock(); errors also timed_out.
  result<void> lock_until(deadline until);
  /// Errors: not_owner (another process holds it, or nobody).
  result<void> unlock();

  [[nodiscard]] std::optional<ProcessId> owner() const noexcept;
  [[nodiscard]] bool held_by_current_process() const noexcept {
    return holder_.load(std::memory_order_relaxed) == ProcessId::current().packed();
  }

 private:
  result<bool> take_over_if_dead(std::uint64_t seen);

  std::atomic<std::uint64_t> holder_{0};
  detail::Label label_;
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(SpinLock) == 64);

}  // namespace ferry
