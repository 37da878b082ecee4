#include "ferry/os/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <ctime>

namespace ferry {
namespace {

long futex_call(const std::atomic<std::uint32_t>& word, int op, std::uint32_t value,
                const timespec* timeout, std::uint32_t bitset) noexcept {
  auto* address = const_cast<std::atomic<std::uint32_t>*>(&word);
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(address), op, value, timeout,
                   nullptr, bitset);
}

// The absolute CLOCK_MONOTONIC time of `until`, or null for "forever";
// false if it has passed already.
bool absolute_timeout(const std::optional<deadline>& until, timespec& absolute, const timespec*& timeout) noexcept {
  timeout = nullptr;
  if (!until || *until == deadline::max()) return true;
  const auto since_epoch = until->time_since_epoch();
  if (since_epoch.count() <= 0) return false;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch).count();
  absolute.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  absolute.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  timeout = &absolute;
  return true;
}

futex_wait_result result_of(long rc) noexcept {
  if (rc >= 0) return futex_wait_result::woken;
  switch (errno) {
    case EAGAIN: return futex_wait_result::value_changed;
    case ETIMEDOUT: return futex_wait_result::timed_out;
    default: return futex_wait_result::woken;  // EINTR: the caller re-checks its condition
  }
}

}  // namespace

futex_wait_result futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                             std::optional<deadline> until) noexcept {
  timespec absolute{};
  const timespec* timeout = nullptr;
  // FUTEX_WAIT_BITSET takes an absolute time on CLOCK_MONOTONIC, which is
  // what steady_clock reads on Linux.
  if (!absolute_timeout(until, absolute, timeout)) return futex_wait_result::timed_out;
  return result_of(futex_call(word, FUTEX_WAIT_BITSET, expected, timeout, FUTEX_BITSET_MATCH_ANY));
}

futex_wait_result futex_wait_any(std::span<const FutexWaiter> waiters, std::optional<deadline> until) noexcept {
  if (waiters.empty()) return futex_wait_result::woken;
  // struct futex_waitv of <linux/futex.h> (5.16), spelled out for older headers.
  struct WaitV {
    std::uint64_t value;
    std::uint64_t address;
    std::uint32_t flags;
    std::uint32_t reserved;
  };
  constexpr std::uint32_t kFutex32 = 2;  // FUTEX2_SIZE_U32; shared (no FUTEX2_PRIVATE)
  constexpr long kSysFutexWaitv = 449;
  WaitV list[128];
  const std::size_t count = std::min<std::size_t>(waiters.size(), 128);
  for (std::size_t i = 0; i < count; ++i) {
    list[i] = WaitV{waiters[i].expected, reinterpret_cast<std::uintptr_t>(waiters[i].word), kFutex32, 0};
  }
  timespec absolute{};
  const timespec* timeout = nullptr;
  if (!absolute_timeout(until, absolute, timeout)) return futex_wait_result::timed_out;
  const long rc = ::syscall(kSysFutexWaitv, list, static_cast<unsigned>(count), 0u, timeout, CLOCK_MONOTONIC);
  if (rc >= 0 || errno != ENOSYS) return result_of(rc);
  // No futex_waitv: nap on the first word, briefly, so the others are polled.
  const deadline nap = deadline_after(std::chrono::milliseconds(1));
  return futex_wait(*waiters[0].word, waiters[0].expected, until ? std::min(*until, nap) : nap);
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  const long rc = futex_call(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

int futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept {
  return futex_wake(word, INT_MAX);
}

}  // namespace ferry
