// CondVar: a condition variable shared between processes, used with Mutex.
//
// Built on a futex sequence counter (WaitPoint), not on glibc's
// process-shared pthread_cond, which has had lost-wake-up bugs and cannot
// survive a waiter killed mid-wait. Here a waiter killed while waiting
// leaves nothing behind that a later notify could wait for.
//
// As with std::condition_variable, wake-ups may be spurious: wait in a loop
// on your predicate, or use the predicate overloads.
//
// The wait functions return with the mutex held, except when re-locking it
// failed with not_recoverable. If re-locking reports owner_died, the mutex
// IS held and the caller must repair (see Mutex).
#pragma once

#include <string_view>

#include "ferry/os/error.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/mutex.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

class alignas(64) CondVar {
 public:
  static constexpr ObjectType kObjectType = ObjectType::condvar;

  explicit CondVar(std::string_view label = {}) noexcept : label_(label) {}
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  /// Unlocks `mutex`, waits for a notify, re-locks. Errors: not_owner (the
  /// caller did not hold it), and the re-lock's errors (owner_died: held).
  result<void> wait(Mutex& mutex, WaitStrategy strategy = WaitStrategy::block());
  /// As wait; timed_out when `until` passes (the mutex is held again).
  result<void> wait_until(Mutex& mutex, deadline until, WaitStrategy strategy = WaitStrategy::block());
  result<void> wait_for(Mutex& mutex, steady_clock::duration timeout,
                        WaitStrategy strategy = WaitStrategy::block()) {
    return wait_until(mutex, deadline_after(timeout), strategy);
  }

  /// Waits until `ready()` holds (checked under the mutex).
  template <class Ready>
  result<void> wait(Mutex& mutex, Ready&& ready, WaitStrategy strategy = WaitStrategy::block()) {
    return wait_until(mutex, deadline::max(), std::forward<Ready>(ready), strategy);
  }
  template <class Ready>
  result<void> wait_until(Mutex& mutex, deadline until, Ready&& ready,
                          WaitStrategy strategy = WaitStrategy::block()) {
    while (!ready()) {
      if (auto woken = wait_until(mutex, until, strategy); !woken) {
        if (woken.error() == errc::timed_out && ready()) return {};
        return woken;
      }
    }
    return {};
  }
  template <class Ready>
  result<void> wait_for(Mutex& mutex, steady_clock::duration timeout, Ready&& ready,
                        WaitStrategy strategy = WaitStrategy::block()) {
    return wait_until(mutex, deadline_after(timeout), std::forward<Ready>(ready), strategy);
  }

  void notify_one() noexcept { changed_.notify_one(); }
  void notify_all() noexcept { changed_.notify_all(); }

 private:
  WaitPoint changed_;
  detail::Label label_;
};

static_assert(sizeof(CondVar) == 64);

}  // namespace ferry
