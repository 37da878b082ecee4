#include "ferry/sync/condvar.hpp"

namespace ferry {

result<void> CondVar::wait(Mutex& mutex, WaitStrategy strategy) {
  return wait_until(mutex, deadline::max(), strategy);
}

result<void> CondVar::wait_until(Mutex& mutex, deadline until, WaitStrategy strategy) {
  // Read the sequence while still holding the mutex: a notify that follows
  // our unlock changes it, so the sleep below cannot miss it.
  const std::uint32_t seen = changed_.sequence();
  if (auto unlocked = mutex.unlock(); !unlocked) return unlocked;
  const std::optional<deadline> limit =
      until == deadline::max() ? std::nullopt : std::optional<deadline>(until);
  wait_status status = wait_status::ready;
  const auto notified = [&] { return changed_.sequence() != seen; };
  if (strategy.mode == WaitStrategy::Mode::block ||
      !spin_until(notified, strategy.mode == WaitStrategy::Mode::busy_poll
                                ? std::chrono::nanoseconds::max()
                                : strategy.spin,
                  until)) {
    if (!notified()) status = changed_.sleep(seen, limit);
  }
  if (limit && !notified() && steady_clock::now() >= *limit) status = wait_status::timed_out;
  if (auto relocked = mutex.lock(); !relocked) return relocked;
  if (status == wait_status::timed_out) return error(errc::timed_out, label_.describe("condvar"));
  return {};
}

}  // namespace ferry
