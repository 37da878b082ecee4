// Mutex: a robust mutex shared between processes.
//
// Place it in shared memory (`new (place) ferry::Mutex("orders")`, or use
// `Named<Mutex>`), and lock it from any process that maps it.
//
// Robustness: if the process holding the lock dies, the kernel releases it
// and the next `lock` succeeds with errc::owner_died. That caller now HOLDS
// the lock; the protected data may be half-updated. Repair it, then call
// `mark_consistent()` and carry on. If it unlocks without marking, the mutex
// becomes permanently not_recoverable: every later locker gets that error.
//
//   auto locked = mutex.lock();
//   if (!locked && locked.error() == ferry::errc::owner_died) {
//     repair(shared_data);
//     mutex.mark_consistent();
//   } else if (!locked) {
//     return locked.error();   // not_recoverable, timed_out, ...
//   }
//   ... critical section ...
//   mutex.unlock();
//
// Why glibc underneath: owner-death detection needs the kernel's per-thread
// robust-futex list, and glibc already owns that list for every thread
// (set_robust_list replaces it). A second, home-made robust lock would have to
// splice itself into glibc's private list layout. So ferry uses glibc's
// process-shared robust mutex for the kernel part and adds the rest: typed
// errors, monotonic timeouts, the shared WaitStrategy (spin before sleeping),
// the owner's PID-reuse-proof identity for `ferry ls`, and a global id that
// lets `lock_all` order locks the same way in every process.
//
// Only the owner may unlock (errc::not_owner otherwise). Locking a mutex the
// calling thread already holds is errc::busy (it would deadlock).
//
// Never unmap memory holding a Mutex this process still holds: the kernel
// could then not mark it owner-died when the process exits, and it would
// stay locked for good (glibc bug 14485). Named<Mutex> keeps such a mapping.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ferry/os/detail/thread_identity.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

class alignas(64) Mutex {
 public:
  static constexpr ObjectType kObjectType = ObjectType::mutex;

  /// A process-shared, robust, unlocked mutex. `label` names it in errors.
  explicit Mutex(std::string_view label = {}) noexcept;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  ~Mutex() = default;  // shared memory outlives any one process's view of it

  // The uncontended paths are inline (a glibc call and one store); the rest
  // is out of line in mutex.cpp.

  /// Errors: owner_died (acquired; repair, then mark_consistent), not_recoverable, busy.
  result<void> lock(WaitStrategy strategy = {}) { return lock_until(deadline::max(), strategy); }
  /// true if acquired, false if someone else holds it. Errors as lock().
  result<bool> try_lock() {
    const int rc = pthread_mutex_trylock(&native_);
    if (rc == 0) [[likely]] {
      note_acquired();
      return true;
    }
    return try_lock_slowly(rc);
  }
  /// As lock(), or timed_out.
  result<void> lock_for(steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return lock_until(deadline_after(timeout), strategy);
  }
  result<void> lock_until(deadline until, WaitStrategy strategy = {}) {
    const int rc = pthread_mutex_trylock(&native_);
    if (rc == 0) [[likely]] {
      note_acquired();
      return {};
    }
    return lock_slowly(rc, until, strategy);
  }
  /// Errors: not_owner.
  result<void> unlock() {
    // The robust futex word holds the owner's thread id: a wrong unlock is
    // refused here, before glibc (and sanitizers that intercept it) see it.
    if (state_.load(std::memory_order_relaxed) != 0 || !held_by_this_thread()) [[unlikely]] {
      return unlock_slowly();
    }
    owner_.store(0, std::memory_order_relaxed);
    if (const int rc = pthread_mutex_unlock(&native_); rc != 0) [[unlikely]] return unlock_failed(rc);
    return {};
  }
  /// After owner_died and repair: makes the mutex usable again. Errors: not_owner,
  /// invalid_argument (it was not inconsistent).
  result<void> mark_consistent();

  enum class State : std::uint32_t { consistent = 0, owner_died = 1, not_recoverable = 2 };
  struct Status {
    std::optional<ProcessId> owner;  ///< the process holding it (or that died holding it)
    State state;
  };
  /// A snapshot for inspection (`ferry ls`), not for synchronisation.
  [[nodiscard]] Status status() const noexcept;
  /// True if a thread of this process holds it (Named keeps such memory mapped).
  [[nodiscard]] bool held_by_current_process() const noexcept {
    return owner_.load(std::memory_order_relaxed) == ProcessId::current().packed();
  }
  /// Same for every process; lock_all orders by it.
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

 private:
  // The robust-futex word: the owner's thread id in the low 30 bits.
  static constexpr int kFutexTidMask = 0x3fffffff;

  void note_acquired() noexcept {
    owner_.store(detail::this_thread_identity().process, std::memory_order_relaxed);
  }
  bool free_now() const noexcept {
    return (__atomic_load_n(&native_.__data.__lock, __ATOMIC_RELAXED) & kFutexTidMask) == 0;
  }
  bool held_by_this_thread() const noexcept {
    return (__atomic_load_n(&native_.__data.__lock, __ATOMIC_RELAXED) & kFutexTidMask) ==
           detail::this_thread_identity().tid;
  }
  bool given_up() const noexcept {
    return state_.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(State::not_recoverable);
  }

  result<void> finish_lock(int rc);
  result<void> lock_slowly(int rc, deadline until, WaitStrategy strategy);
  result<bool> try_lock_slowly(int rc);
  result<void> unlock_slowly();
  result<void> unlock_failed(int rc);
  error failure(errc code, std::string detail, int sys_errno = 0) const;

  pthread_mutex_t native_;
  std::atomic<std::uint64_t> owner_{0};  // packed ProcessId of the holder, 0 if free
  std::uint64_t id_;
  std::atomic<std::uint32_t> state_{0};  // State
  [[maybe_unused]] std::uint32_t reserved_ = 0;
  detail::Label label_;
};

static_assert(sizeof(pthread_mutex_t) == 40, "the Mutex layout assumes glibc's x86-64/arm64 mutex");
static_assert(sizeof(Mutex) == 128);

/// Which of the mutexes passed to lock_all reported owner_died (bit i = argument i).
struct LockAllResult {
  std::uint32_t owner_died_mask = 0;
};

namespace detail {
result<LockAllResult> lock_all(Mutex* const* mutexes, std::size_t count, WaitStrategy strategy,
                               std::optional<deadline> until);
}

/// Locks every mutex, in an order that is the same in every process (by id),
/// so two callers naming the same mutexes in any order cannot deadlock.
/// On owner_died the lock is still taken and reported in the mask; on any
/// other error nothing stays locked.
template <class... Mutexes>
  requires(std::is_same_v<Mutexes, Mutex> && ...)
result<LockAllResult> lock_all(Mutexes&... mutexes) {
  Mutex* all[] = {&mutexes...};
  return detail::lock_all(all, sizeof...(Mutexes), {}, std::nullopt);
}

/// As lock_all, giving up (with nothing locked) at `until`.
template <class... Mutexes>
  requires(std::is_same_v<Mutexes, Mutex> && ...)
result<LockAllResult> lock_all_until(deadline until, Mutexes&... mutexes) {
  Mutex* all[] = {&mutexes...};
  return detail::lock_all(all, sizeof...(Mutexes), {}, until);
}

/// Unlocks every mutex (in reverse order); reports the first failure.
template <class... Mutexes>
  requires(std::is_same_v<Mutexes, Mutex> && ...)
result<void> unlock_all(Mutexes&... mutexes) {
  Mutex* all[] = {&mutexes...};
  result<void> outcome;
  for (std::size_t i = sizeof...(Mutexes); i-- > 0;) {
    if (auto unlocked = all[i]->unlock(); !unlocked && outcome) outcome = unlocked;
  }
  return outcome;
}

}  // namespace ferry
