// How ferry waits: the WaitStrategy every layer shares, and WaitPoint, the
// 8-byte shared-memory rendezvous it runs on.
//
// WaitStrategy::adaptive (the default) spins for a short budget, then sleeps
// on a futex; busy_poll never sleeps (lowest latency, burns a CPU); block
// sleeps at once (no spinning, kindest to a loaded machine). On these virtual
// machines a sleeping vCPU takes ~20 us to wake, so a short spin pays off
// whenever the other side answers within that time.
//
// WaitPoint is the condition-variable core of the sync and messaging layers:
// a waiter sleeps until its own condition (a predicate over shared memory)
// holds; a notifier makes the condition true, then calls notify_*. The
// notifier skips the futex syscall when nobody sleeps, so an uncontended
// hand-off costs one atomic read and no kernel entry.
//
// Memory ordering (the contract for users of WaitPoint): the notifier makes
// the condition true with a seq_cst read-modify-write (or follows its write
// with a seq_cst fence), then calls notify_*, which reads `sleepers` and, only
// if someone sleeps, bumps `sequence` and wakes. The waiter counts itself in
// `sleepers` (seq_cst RMW) before it reads `sequence` and re-checks the
// condition (with seq_cst loads: the same instruction as acquire on x86-64 and
// arm64). Both sides order "write mine, then read theirs" with seq_cst, so
// either the waiter sees the condition or the notifier sees the sleeper; and
// futex_wait compares `sequence` in the kernel, so a wake between the check
// and the sleep is not lost. (A condition variable gets the same guarantee
// from its mutex: see CondVar.)
//
// Crash tolerance: a waiter killed while asleep leaves `sleepers` counted
// high forever. That costs later notifiers a (harmless) futex_wake syscall;
// it never makes anyone wait, because only real sleepers are in the kernel's
// queue. Process-safe; lives in shared memory; all-zero bytes is a valid,
// empty WaitPoint.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "ferry/os/clock.hpp"
#include "ferry/os/futex.hpp"

namespace ferry {

struct WaitStrategy {
  enum class Mode : std::uint8_t { adaptive, busy_poll, block };

  Mode mode = Mode::adaptive;
  /// adaptive: how long to spin before sleeping.
  std::chrono::nanoseconds spin = std::chrono::microseconds(20);

  static constexpr WaitStrategy adaptive(std::chrono::nanoseconds spin_for = std::chrono::microseconds(20)) {
    return {Mode::adaptive, spin_for};
  }
  static constexpr WaitStrategy busy_poll() { return {Mode::busy_poll, {}}; }
  static constexpr WaitStrategy block() { return {Mode::block, {}}; }
};

/// One CPU-friendly spin iteration (the x86 PAUSE instruction, or its kin).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// Spins until `ready()` or until `budget` has passed; true if ready.
/// Reads the clock only every 64 iterations (a clock read costs ~20 ns here).
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds budget, deadline until = deadline::max()) {
  if (ready()) return true;
  const auto start = steady_clock::now();
  for (std::uint32_t i = 1;; ++i) {
    cpu_relax();
    if (ready()) return true;
    if ((i & 63) == 0) {
      const auto now = steady_clock::now();
      if (now - start >= budget || now >= until) return false;
    }
  }
}

enum class wait_status : std::uint8_t { ready, timed_out };

class WaitPoint {
 public:
  constexpr WaitPoint() noexcept = default;
  WaitPoint(const WaitPoint&) = delete;
  WaitPoint& operator=(const WaitPoint&) = delete;

  /// Waits until `ready()` is true or `until` passes. `ready` must read the
  /// condition with seq_cst loads (see "Memory ordering").
  template <class Ready>
  wait_status wait(Ready&& ready, WaitStrategy strategy = {},
                   std::optional<deadline> until = std::nullopt) {
    if (ready()) return wait_status::ready;
    if (strategy.mode == WaitStrategy::Mode::busy_poll) {
      return spin_until(ready, std::chrono::nanoseconds::max(), until.value_or(deadline::max()))
                 ? wait_status::ready
                 : wait_status::timed_out;
    }
    if (strategy.mode == WaitStrategy::Mode::adaptive &&
        spin_until(ready, strategy.spin, until.value_or(deadline::max()))) {
      return wait_status::ready;
    }
    for (;;) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      const std::uint32_t seen = sequence_.load(std::memory_order_seq_cst);
      if (ready()) {
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        return wait_status::ready;
      }
      const auto woke = futex_wait(sequence_, seen, until);
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      if (ready()) return wait_status::ready;
      if (woke == futex_wait_result::timed_out || (until && steady_clock::now() >= *until)) {
        return wait_status::timed_out;
      }
    }
  }

  /// For waits without a condition of their own (CondVar): counts the
  /// caller as a sleeper and returns the sequence to pass to sleep(). Call it
  /// while the caller's condition still cannot change (under its mutex).
  [[nodiscard]] std::uint32_t prepare_sleep() noexcept {
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    return sequence_.load(std::memory_order_seq_cst);
  }
  /// Undoes prepare_sleep() for a caller that will not sleep after all.
  void cancel_sleep() noexcept { sleepers_.fetch_sub(1, std::memory_order_relaxed); }
  /// Sleeps until a notify after prepare_sleep() (or `until`); stops counting
  /// the caller as a sleeper. May wake spuriously.
  wait_status sleep(std::uint32_t seen, std::optional<deadline> until = std::nullopt) {
    const auto woke = futex_wait(sequence_, seen, until);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return woke == futex_wait_result::timed_out ? wait_status::timed_out : wait_status::ready;
  }

  [[nodiscard]] std::uint32_t sequence() const noexcept {
    return sequence_.load(std::memory_order_seq_cst);
  }

  /// The word a sleeper sleeps on, for waiting on several points at once
  /// (futex_wait_any): prepare_sleep() each, check every condition, sleep on
  /// all the words with the sequences prepare_sleep() returned, then
  /// cancel_sleep() each.
  [[nodiscard]] const std::atomic<std::uint32_t>& futex_word() const noexcept { return sequence_; }

  /// Wakes one sleeper (if any sleeps). Call after making the condition true.
  void notify_one() noexcept { notify(1); }
  /// Wakes every sleeper (if any sleeps).
  void notify_all() noexcept { notify(INT32_MAX); }

  /// Processes counted as asleep (a killed sleeper stays counted).
  [[nodiscard]] std::uint32_t sleepers() const noexcept {
    return sleepers_.load(std::memory_order_relaxed);
  }

 private:
  // No sleeper: nothing to do, not even a write (see "Memory ordering").
  void notify(int count) noexcept {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    sequence_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(sequence_, count);
  }

  std::atomic<std::uint32_t> sequence_{0};
  std::atomic<std::uint32_t> sleepers_{0};
};

static_assert(sizeof(WaitPoint) == 8);
static_assert(std::is_standard_layout_v<WaitPoint>);

}  // namespace ferry
