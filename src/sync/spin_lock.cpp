#include "ferry/sync/spin_lock.hpp"

#include <thread>

namespace ferry {
namespace {
constexpr auto kLivenessCheckInterval = std::chrono::milliseconds(2);
}

result<bool> SpinLock::take_over_if_dead(std::uint64_t seen) {
  if (ProcessId::from_packed(seen).alive()) return false;
  if (!holder_.compare_exchange_strong(seen, ProcessId::current().packed(), std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
    return false;
  }
  return error(errc::owner_died, label_.describe("spin lock"),
               "process " + std::to_string(ProcessId::from_packed(seen).pid()) +
                   " died holding it; you hold it now: repair the data");
}

result<bool> SpinLock::try_lock() {
  std::uint64_t seen = 0;
  if (holder_.compare_exchange_strong(seen, ProcessId::current().packed(), std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
    return true;
  }
  return take_over_if_dead(seen);
}

result<void> SpinLock::lock_until(deadline until) {
  const std::uint64_t me = ProcessId::current().packed();
  std::uint64_t free = 0;
  if (holder_.compare_exchange_strong(free, me, std::memory_order_acquire, std::memory_order_relaxed)) {
    return {};  // uncontended: no clock read
  }
  std::uint32_t pauses = 1;
  std::uint32_t spins = 0;
  auto next_check = steady_clock::now() + kLivenessCheckInterval;
  for (;;) {
    std::uint64_t seen = holder_.load(std::memory_order_relaxed);
    if (seen == 0 && holder_.compare_exchange_weak(seen, me, std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
      return {};
    }
    for (std::uint32_t i = 0; i < pauses; ++i) cpu_relax();
    pauses = std::min(pauses * 2, kMaxPauses);
    if (++spins % kYieldAfterSpins != 0) continue;
    std::this_thread::yield();
    const auto now = steady_clock::now();
    if (now >= until) return error(errc::timed_out, label_.describe("spin lock"));
    if (now >= next_check) {
      next_check = now + kLivenessCheckInterval;
      seen = holder_.load(std::memory_order_relaxed);
      if (seen == 0) continue;
      auto taken = take_over_if_dead(seen);
      if (!taken) return std::move(taken).error();
    }
  }
}

result<void> SpinLock::unlock() {
  // A check and a plain store, no locked instruction: while this process
  // holds the lock nobody else may change the word (a takeover needs the
  // holder dead), so what is read here stays true until the store.
  const std::uint64_t holder = holder_.load(std::memory_order_relaxed);
  if (holder != ProcessId::current().packed()) {
    return error(errc::not_owner, label_.describe("spin lock"),
                 holder == 0 ? "it is not locked"
                             : "process " + std::to_string(ProcessId::from_packed(holder).pid()) + " holds it");
  }
  holder_.store(0, std::memory_order_release);
  return {};
}

std::optional<ProcessId> SpinLock::owner() const noexcept {
  const std::uint64_t holder = holder_.load(std::memory_order_relaxed);
  if (holder == 0) return std::nullopt;
  return ProcessId::from_packed(holder);
}

}  // namespace ferry
