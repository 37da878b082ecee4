// futex wait and wake on a 32-bit word, shared between processes.
//
// The word may live in any shared mapping (ferry never uses the private
// futex flag). Waits take an absolute deadline on the monotonic clock.
//
// Memory ordering: futex_wait compares `word` with `expected` inside the
// kernel, atomically with going to sleep; a waker must change the word before
// calling futex_wake, so no wake-up can be lost between check and sleep.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"

namespace ferry {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4);

enum class futex_wait_result : std::uint8_t {
  woken,          ///< woken by futex_wake, or spuriously: re-check the condition
  value_changed,  ///< the word no longer held `expected` when the call began
  timed_out,      ///< the deadline passed
};

/// Sleeps while `word == expected`, until woken or until `until` (if given).
/// Never fails for a valid word; EINTR is reported as `woken`.
futex_wait_result futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                             std::optional<deadline> until = std::nullopt) noexcept;

/// One word of futex_wait_any: sleep while `*word == expected`.
struct FutexWaiter {
  const std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
};

/// Sleeps while every word holds its expected value, until one is woken or
/// changed, or until `until` (futex_waitv; on kernels before 5.16 it sleeps
/// on the first word for at most a millisecond at a time). At most 128 words.
futex_wait_result futex_wait_any(std::span<const FutexWaiter> waiters,
                                 std::optional<deadline> until = std::nullopt) noexcept;

/// Wakes up to `count` waiters on `word`; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept;

/// Wakes every waiter on `word`.
int futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept;

}  // namespace ferry
