#include "ferry/sync/mutex.hpp"


#include <algorithm>
#include <cerrno>
#include <ctime>
#include <random>
#include <vector>

namespace ferry {
namespace {


std::uint64_t fresh_id() {
  std::random_device entropy;
  std::uint64_t id = 0;
  while (id == 0) id = (std::uint64_t{entropy()} << 32) | entropy();
  return id;
}

// Locks `native`, giving up at `until` (monotonic).
int lock_before(pthread_mutex_t* native, deadline until) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer (GCC 12) does not intercept pthread_mutex_clocklock and
  // would take the lock for never held: the realtime form there.
  timespec absolute{};
  ::clock_gettime(CLOCK_REALTIME, &absolute);
  const auto left = std::max(until - steady_clock::now(), steady_clock::duration::zero());
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count() + absolute.tv_nsec;
  absolute.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
  absolute.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return pthread_mutex_timedlock(native, &absolute);
#else
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(until.time_since_epoch()).count();
  const timespec absolute = ns <= 0 ? timespec{0, 0}
                                    : timespec{static_cast<time_t>(ns / 1'000'000'000),
                                               static_cast<long>(ns % 1'000'000'000)};
  return pthread_mutex_clocklock(native, CLOCK_MONOTONIC, &absolute);
#endif
}

}  // namespace

Mutex::Mutex(std::string_view label) noexcept : id_(fresh_id()), label_(label) {
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(&native_, &attributes);
  pthread_mutexattr_destroy(&attributes);
}

error Mutex::failure(errc code, std::string detail, int sys_errno) const {
  return error(code, label_.describe("mutex"), std::move(detail), sys_errno);
}

result<void> Mutex::finish_lock(int rc) {
  switch (rc) {
    case 0:
      note_acquired();
      return {};
    case EOWNERDEAD:
      note_acquired();
      state_.store(static_cast<std::uint32_t>(State::owner_died), std::memory_order_relaxed);
      return failure(errc::owner_died,
                     "its owner died holding it; you hold it now: repair the data, then mark_consistent()",
                     rc);
    case ENOTRECOVERABLE:
      state_.store(static_cast<std::uint32_t>(State::not_recoverable), std::memory_order_relaxed);
      return failure(errc::not_recoverable,
                     "a previous owner died and the next one unlocked without mark_consistent()", rc);
    case EDEADLK: return failure(errc::busy, "this thread already holds it", rc);
    case ETIMEDOUT: return failure(errc::timed_out, {}, rc);
    default: return failure(errc_from_errno(rc), "pthread mutex", rc);
  }
}

result<bool> Mutex::try_lock_slowly(int rc) {
  if (rc == EBUSY && !given_up()) return false;
  return finish_lock(given_up() ? ENOTRECOVERABLE : rc).error();
}

result<void> Mutex::lock_slowly(int rc, deadline until, WaitStrategy strategy) {
  // glibc reports not-recoverable only to the first locker after the fact;
  // ferry remembers it in shared memory and tells every later one at once.
  if (given_up()) return finish_lock(ENOTRECOVERABLE);
  if (rc != EBUSY) return finish_lock(rc);

  if (strategy.mode != WaitStrategy::Mode::block) {
    const auto budget = strategy.mode == WaitStrategy::Mode::busy_poll
                            ? std::chrono::nanoseconds::max()
                            : strategy.spin;
    // Try again whenever the lock looks free; the CAS inside trylock is
    // attempted only then, so spinning does not bounce the cache line.
    const bool acquired_or_failed = spin_until(
        [&] {
          if (!free_now()) return false;
          rc = pthread_mutex_trylock(&native_);
          return rc != EBUSY;
        },
        budget, until);
    if (acquired_or_failed) return finish_lock(rc);
    if (strategy.mode == WaitStrategy::Mode::busy_poll || steady_clock::now() >= until) {
      return failure(errc::timed_out, {});
    }
  }
  if (until == deadline::max()) {
    rc = pthread_mutex_lock(&native_);
  } else {
    rc = lock_before(&native_, until);
  }
  return finish_lock(rc);
}

result<void> Mutex::unlock_failed(int rc) {
  if (rc == EPERM) return failure(errc::not_owner, "only the thread holding it may unlock it", rc);
  return failure(errc_from_errno(rc), "pthread mutex unlock", rc);
}

result<void> Mutex::unlock_slowly() {
  if (!held_by_this_thread()) {
    return failure(errc::not_owner, "only the thread holding it may unlock it", EPERM);
  }
  const bool was_inconsistent =
      state_.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(State::owner_died);
  owner_.store(0, std::memory_order_relaxed);
  if (const int rc = pthread_mutex_unlock(&native_); rc != 0) return unlock_failed(rc);
  if (was_inconsistent) {
    // Unlocked while inconsistent: glibc (and POSIX) make it unusable for good.
    state_.store(static_cast<std::uint32_t>(State::not_recoverable), std::memory_order_relaxed);
  }
  return {};
}

result<void> Mutex::mark_consistent() {
  if (!held_by_this_thread()) return failure(errc::not_owner, "only its holder may mark it consistent");
  const int rc = pthread_mutex_consistent(&native_);
  if (rc != 0) return failure(errc::invalid_argument, "it is not in the owner-died state", rc);
  state_.store(static_cast<std::uint32_t>(State::consistent), std::memory_order_relaxed);
  return {};
}

Mutex::Status Mutex::status() const noexcept {
  Status status{};
  const std::uint64_t holder = owner_.load(std::memory_order_relaxed);
  if (holder != 0) status.owner = ProcessId::from_packed(holder);
  const std::uint32_t state = state_.load(std::memory_order_relaxed);
  status.state = state <= 2 ? static_cast<State>(state) : State::not_recoverable;
  return status;
}

namespace detail {

result<LockAllResult> lock_all(Mutex* const* mutexes, std::size_t count, WaitStrategy strategy,
                               std::optional<deadline> until) {
  if (count > 32) return error(errc::invalid_argument, "lock_all", "at most 32 mutexes at once");
  std::vector<std::size_t> order(count);
  for (std::size_t i = 0; i < count; ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return mutexes[a]->id() < mutexes[b]->id(); });
  for (std::size_t i = 1; i < count; ++i) {
    if (mutexes[order[i]]->id() == mutexes[order[i - 1]]->id()) {
      return error(errc::invalid_argument, "lock_all", "the same mutex is named twice");
    }
  }
  LockAllResult outcome;
  for (std::size_t taken = 0; taken < count; ++taken) {
    Mutex& mutex = *mutexes[order[taken]];
    auto locked = mutex.lock_until(until.value_or(deadline::max()), strategy);
    if (locked) continue;
    if (locked.error() == errc::owner_died) {
      outcome.owner_died_mask |= 1u << order[taken];
      continue;
    }
    while (taken-- > 0) (void)mutexes[order[taken]]->unlock();
    return std::move(locked).error();
  }
  return outcome;
}

}  // namespace detail
}  // namespace ferry
