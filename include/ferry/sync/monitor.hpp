// Monitor<T>: a value in shared memory together with the mutex that guards
// it and the condition that announces its changes.
//
//   struct Stock { int items; };
//   auto stock = ferry::Named<ferry::Monitor<Stock>>::create("stock", {}, Stock{0});
//   (*stock)->with_lock([](Stock& s) { ++s.items; });               // producer
//   (*stock)->wait_then([](const Stock& s) { return s.items > 0; },  // consumer
//                       [](Stock& s) { --s.items; });
//
// Every with_lock/wait_then notifies all waiters afterwards, since the value
// may have changed. If a process died inside the monitor, the next caller
// gets errc::owner_died and the mutex becomes not_recoverable — unless it
// passed a `repair` function, which then restores the value's invariants
// before the work runs.
//
// T must be trivially copyable and standard layout (it lives in shared
// memory and is seen by processes with different address spaces).
#pragma once

#include <cstddef>
#include <string_view>
#include <type_traits>

#include "ferry/os/segment.hpp"
#include "ferry/sync/condvar.hpp"
#include "ferry/sync/mutex.hpp"

namespace ferry {

template <class T>
  requires std::is_trivially_copyable_v<T> && std::is_standard_layout_v<T>
class Monitor {
 public:
  static constexpr ObjectType kObjectType = ObjectType::monitor;

  explicit Monitor(const T& initial = T{}, std::string_view label = {}) noexcept
      : mutex_(label), changed_(label), value_(initial) {
    static_assert(offsetof(Monitor, mutex_) == 0, "ferry ls reads a monitor's mutex at offset 0");
  }
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  /// Runs `work(value)` under the lock; returns what it returns.
  template <class Work>
  auto with_lock(Work&& work) {
    return with_lock(std::forward<Work>(work), nullptr);
  }

  /// As with_lock; if the previous holder died, runs `repair(value)` first.
  template <class Work, class Repair>
  auto with_lock(Work&& work, Repair&& repair) -> result<std::invoke_result_t<Work, T&>> {
    if (auto locked = acquire(repair); !locked) return std::move(locked).error();
    return run_and_release(work);
  }

  /// Waits until `ready(value)` holds; returns with the lock released.
  template <class Ready>
  result<void> wait(Ready&& ready, deadline until = deadline::max()) {
    return wait_then(std::forward<Ready>(ready), [](T&) {}, until);
  }
  template <class Ready>
  result<void> wait_for(Ready&& ready, steady_clock::duration timeout) {
    return wait(std::forward<Ready>(ready), deadline_after(timeout));
  }

  /// Waits until `ready(value)` holds, then runs `work(value)` under the same lock.
  template <class Ready, class Work>
  auto wait_then(Ready&& ready, Work&& work, deadline until = deadline::max())
      -> result<std::invoke_result_t<Work, T&>> {
    if (auto locked = acquire(nullptr); !locked) return std::move(locked).error();
    auto waited = changed_.wait_until(mutex_, until, [&] { return ready(std::as_const(value_)); });
    if (!waited) {
      // timed_out and owner_died return with the lock held; without a repair
      // an owner_died monitor is given up (not_recoverable for everyone after).
      if (waited.error() != errc::not_recoverable) (void)mutex_.unlock();
      return std::move(waited).error();
    }
    return run_and_release(work);
  }

  /// A copy of the value, taken under the lock.
  result<T> load() {
    return with_lock([](T& value) { return value; });
  }

  [[nodiscard]] Mutex& mutex() noexcept { return mutex_; }
  [[nodiscard]] bool held_by_current_process() const noexcept { return mutex_.held_by_current_process(); }

 private:
  template <class Repair>
  result<void> acquire(Repair&& repair) {
    auto locked = mutex_.lock();
    if (locked || locked.error() != errc::owner_died) return locked;
    if constexpr (std::is_null_pointer_v<std::remove_cvref_t<Repair>>) {
      (void)mutex_.unlock();  // no repair: the data cannot be trusted, and every later caller is told
      return locked;
    } else {
      repair(value_);
      return mutex_.mark_consistent();
    }
  }

  template <class Work>
  auto run_and_release(Work& work) -> result<std::invoke_result_t<Work, T&>> {
    using R = std::invoke_result_t<Work, T&>;
    if constexpr (std::is_void_v<R>) {
      work(value_);
      changed_.notify_all();
      if (auto unlocked = mutex_.unlock(); !unlocked) return unlocked;
      return {};
    } else {
      R outcome = work(value_);
      changed_.notify_all();
      if (auto unlocked = mutex_.unlock(); !unlocked) return std::move(unlocked).error();
      return outcome;
    }
  }

  Mutex mutex_;
  CondVar changed_;
  T value_;
};

}  // namespace ferry
