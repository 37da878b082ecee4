#include "ferry/os/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace

futex_wait_result futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                             std::optional<deadline> until) noexcept {
  timespec absolute{};
  const timespec* timeout = nullptr;
  if (until && *until != deadline::max()) {
    // FUTEX_WAIT_BITSET takes an absolute time on CLOCK_MONOTONIC, which is
    // what steady_clock reads on Linux.
    const auto since_epoch = until->time_since_epoch();
    if (since_epoch.count() <= 0) return futex_wait_result::timed_out;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch).count();
    absolute.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    absolute.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    timeout = &absolute;
  }
  const long rc =
      futex_call(word, FUTEX_WAIT_BITSET, expected, timeout, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return futex_wait_result::woken;
  switch (errno) {
    case EAGAIN: return futex_wait_result::value_changed;
    case ETIMEDOUT: return futex_wait_result::timed_out;
    default: return futex_wait_result::woken;  // EINTR: the caller re-checks its condition
  }
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  const long rc = futex_call(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

int futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept {
  return futex_wake(word, INT_MAX);
}

}  // namespace ferry
