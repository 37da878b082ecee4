#include "ferry/sync/condvar.hpp"

namespace ferry {

result<void> CondVar::wait(Mutex& mutex, WaitStrategy strategy) {
  return wait_until(mutex, deadline::max(), strategy);
}

result<void> CondVar::wait_until(Mutex& mutex, deadline until, WaitStrategy strategy) {
  // Count ourselves as a sleeper while still holding the mutex: a notifier
  // that changes the predicate must take the mutex after our unlock, so it
  // sees us and bumps the sequence, and the sleep below cannot miss it.
  const std::uint32_t seen = changed_.prepare_sleep();
  if (auto unlocked = mutex.unlock(); !unlocked) {
    changed_.cancel_sleep();
    return unlocked;
  }
  const std::optional<deadline> limit =
      until == deadline::max() ? std::nullopt : std::optional<deadline>(until);
  const auto notified = [&] { return changed_.sequence() != seen; };
  if (strategy.mode != WaitStrategy::Mode::block) {
    const auto budget = strategy.mode == WaitStrategy::Mode::busy_poll ? std::chrono::nanoseconds::max()
                                                                        : strategy.spin;
    spin_until(notified, budget, until);
  }
  wait_status status = changed_.sleep(seen, limit);  // returns at once if notified already
  if (notified()) status = wait_status::ready;
  if (auto relocked = mutex.lock(strategy); !relocked) return relocked;
  if (status == wait_status::timed_out) return error(errc::timed_out, label_.describe("condvar"));
  return {};
}

}  // namespace ferry
