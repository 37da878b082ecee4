// The sync primitives between threads of one process (the process variants
// are in tests/process/sync_process_test.cpp). These run under TSan in CI.
#include <sys/mman.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::WaitStrategy;

class Strategies : public ::testing::TestWithParam<WaitStrategy> {};

template <class Body>
void run_threads(int count, Body body) {
  std::vector<std::thread> threads;
  for (int t = 0; t < count; ++t) threads.emplace_back(body, t);
  for (auto& thread : threads) thread.join();
}

TEST_P(Strategies, MutexCounterIsExact) {
  ferry::Mutex mutex("counter");
  std::uint64_t counter = 0;
  const std::size_t rounds = ferry::test::scaled(20000);
  run_threads(4, [&](int) {
    for (std::size_t i = 0; i < rounds; ++i) {
      ASSERT_TRUE(mutex.lock(GetParam()));
      ++counter;
      ASSERT_TRUE(mutex.unlock());
    }
  });
  EXPECT_EQ(counter, 4 * rounds);
}

TEST_P(Strategies, SemaphoreHandsOverEveryUnit) {
  ferry::Semaphore items(0, 1000, "items");
  const std::size_t count = ferry::test::scaled(20000);
  std::thread producer([&] {
    for (std::size_t i = 0; i < count; ++i) {
      while (!items.post()) std::this_thread::yield();  // limit_reached: consumer is behind
    }
  });
  for (std::size_t i = 0; i < count; ++i) items.wait(GetParam());
  producer.join();
  EXPECT_EQ(items.value(), 0u);
  EXPECT_FALSE(items.try_wait());
}

TEST_P(Strategies, CondVarProducerConsumer) {
  ferry::Mutex mutex;
  ferry::CondVar changed;
  std::uint64_t queued = 0, consumed = 0;
  const std::uint64_t count = ferry::test::scaled(5000);
  std::thread consumer([&] {
    ASSERT_TRUE(mutex.lock());
    while (consumed < count) {
      ASSERT_TRUE(changed.wait(mutex, [&] { return queued > 0; }, GetParam()));
      consumed += queued;
      queued = 0;
      changed.notify_all();
    }
    ASSERT_TRUE(mutex.unlock());
  });
  for (std::uint64_t i = 0; i < count; ++i) {
    ASSERT_TRUE(mutex.lock());
    ASSERT_TRUE(changed.wait(mutex, [&] { return queued < 8; }, GetParam()));
    ++queued;
    changed.notify_all();
    ASSERT_TRUE(mutex.unlock());
  }
  consumer.join();
  EXPECT_EQ(consumed, count);
}

INSTANTIATE_TEST_SUITE_P(All, Strategies,
                         ::testing::Values(WaitStrategy::adaptive(), WaitStrategy::busy_poll(),
                                           WaitStrategy::block()),
                         ferry::test::strategy_name);

TEST(Mutex, TryLockAndOwnership) {
  ferry::Mutex mutex("owned");
  ASSERT_TRUE(mutex.lock());
  EXPECT_TRUE(mutex.held_by_current_process());
  EXPECT_EQ(mutex.status().owner, ferry::ProcessId::current());
  std::thread other([&] {
    auto tried = mutex.try_lock();
    ASSERT_TRUE(tried);
    EXPECT_FALSE(*tried);
    auto stolen = mutex.unlock();
    ASSERT_FALSE(stolen);
    EXPECT_EQ(stolen.error().code(), errc::not_owner);
    EXPECT_NE(stolen.error().message().find("mutex 'owned'"), std::string::npos);
  });
  other.join();
  auto again = mutex.lock();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), errc::busy) << "relocking would deadlock";
  ASSERT_TRUE(mutex.unlock());
  EXPECT_FALSE(mutex.status().owner.has_value());
  EXPECT_EQ(mutex.unlock().error().code(), errc::not_owner);
}

TEST(Mutex, TimedLockTimesOutAtItsDeadline) {
  ferry::Mutex mutex;
  ASSERT_TRUE(mutex.lock());
  for (auto strategy : {WaitStrategy::adaptive(), WaitStrategy::busy_poll(), WaitStrategy::block()}) {
    std::thread other([&] {
      const auto start = ferry::steady_clock::now();
      auto timed = mutex.lock_for(30ms, strategy);
      const auto waited = ferry::steady_clock::now() - start;
      ASSERT_FALSE(timed);
      EXPECT_EQ(timed.error().code(), errc::timed_out);
      EXPECT_GE(waited, 30ms);
      EXPECT_LT(waited, 10s);
    });
    other.join();
  }
  ASSERT_TRUE(mutex.unlock());
}

TEST(Mutex, ThreadDyingWithTheLockGivesOwnerDied) {
  ferry::Mutex mutex("robust");
  std::thread([&] { ASSERT_TRUE(mutex.lock()); }).join();  // exits holding it
  auto locked = mutex.lock();
  ASSERT_FALSE(locked);
  EXPECT_EQ(locked.error().code(), errc::owner_died);
  EXPECT_EQ(mutex.status().state, ferry::Mutex::State::owner_died);
  ASSERT_TRUE(mutex.mark_consistent());
  ASSERT_TRUE(mutex.unlock());
  EXPECT_TRUE(mutex.lock()) << "repaired: usable again";
  ASSERT_TRUE(mutex.unlock());
  EXPECT_EQ(mutex.mark_consistent().error().code(), errc::not_owner);
}

TEST(Mutex, UnlockWithoutRepairMakesItNotRecoverable) {
  ferry::Mutex mutex("lost");
  std::thread([&] { ASSERT_TRUE(mutex.lock()); }).join();
  ASSERT_EQ(mutex.lock().error().code(), errc::owner_died);
  ASSERT_TRUE(mutex.unlock());
  EXPECT_EQ(mutex.status().state, ferry::Mutex::State::not_recoverable);
  EXPECT_EQ(mutex.lock().error().code(), errc::not_recoverable);
  EXPECT_EQ(mutex.try_lock().error().code(), errc::not_recoverable);
  EXPECT_EQ(mutex.lock_for(1ms).error().code(), errc::not_recoverable);
}

TEST(LockAll, OppositeOrdersNeverDeadlock) {
  ferry::Mutex a("a"), b("b"), c("c");
  std::uint64_t shared = 0;
  const std::size_t rounds = ferry::test::scaled(5000);
  run_threads(2, [&](int t) {
    for (std::size_t i = 0; i < rounds; ++i) {
      auto locked = t == 0 ? ferry::lock_all(a, b, c) : ferry::lock_all(c, b, a);
      ASSERT_TRUE(locked);
      EXPECT_EQ(locked->owner_died_mask, 0u);
      ++shared;
      ASSERT_TRUE(t == 0 ? ferry::unlock_all(a, b, c) : ferry::unlock_all(c, b, a));
    }
  });
  EXPECT_EQ(shared, 2 * rounds);
}

TEST(LockAll, ReportsOwnerDiedPerArgumentAndRejectsDuplicates) {
  ferry::Mutex a, b;
  std::thread([&] { ASSERT_TRUE(b.lock()); }).join();
  auto locked = ferry::lock_all(a, b);
  ASSERT_TRUE(locked);
  EXPECT_EQ(locked->owner_died_mask, 0b10u);
  ASSERT_TRUE(b.mark_consistent());
  ASSERT_TRUE(ferry::unlock_all(a, b));
  EXPECT_EQ(ferry::lock_all(a, a).error().code(), errc::invalid_argument);
}

TEST(LockAll, TimeoutLeavesNothingLocked) {
  ferry::Mutex a, b;
  std::thread holder_ready;
  ASSERT_TRUE(b.lock());
  std::thread([&] {
    auto locked = ferry::lock_all_until(ferry::deadline_after(20ms), a, b);
    ASSERT_FALSE(locked);
    EXPECT_EQ(locked.error().code(), errc::timed_out);
    auto free_a = a.try_lock();
    ASSERT_TRUE(free_a && *free_a) << "a was released again";
    ASSERT_TRUE(a.unlock());
  }).join();
  ASSERT_TRUE(b.unlock());
}

TEST(Semaphore, BoundedMaximumAndBinary) {
  ferry::Semaphore binary(1, 1, "gate");
  EXPECT_TRUE(binary.try_wait());
  EXPECT_FALSE(binary.try_wait());
  ASSERT_TRUE(binary.post());
  auto overflow = binary.post();
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().code(), errc::limit_reached);
  EXPECT_NE(overflow.error().message().find("semaphore 'gate'"), std::string::npos);
  EXPECT_EQ(binary.value(), 1u) << "a refused post adds nothing";

  ferry::Semaphore counting(3, 5);
  EXPECT_EQ(counting.post(3).error().code(), errc::limit_reached);
  EXPECT_EQ(counting.value(), 3u);
  ASSERT_TRUE(counting.post(2));
  EXPECT_EQ(counting.value(), 5u);
  EXPECT_EQ(counting.post(UINT32_MAX).error().code(), errc::limit_reached) << "no wrap-around";
}

TEST(Semaphore, TimedWaitTimesOut) {
  ferry::Semaphore none(0, 1);
  for (auto strategy : {WaitStrategy::adaptive(), WaitStrategy::busy_poll(), WaitStrategy::block()}) {
    const auto start = ferry::steady_clock::now();
    auto waited = none.wait_for(20ms, strategy);
    ASSERT_FALSE(waited);
    EXPECT_EQ(waited.error().code(), errc::timed_out);
    EXPECT_GE(ferry::steady_clock::now() - start, 20ms);
  }
}

TEST(SemaphoreDeathTest, ImpossibleBoundsAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(ferry::Semaphore(2, 1, "bad"), "semaphore 'bad'");
  EXPECT_DEATH(ferry::Semaphore(0, 0), "maximum");
}

TEST(CondVar, TimedWaitReturnsWithTheMutexHeld) {
  ferry::Mutex mutex;
  ferry::CondVar never("never");
  ASSERT_TRUE(mutex.lock());
  const auto start = ferry::steady_clock::now();
  auto waited = never.wait_for(mutex, 20ms);
  ASSERT_FALSE(waited);
  EXPECT_EQ(waited.error().code(), errc::timed_out);
  EXPECT_GE(ferry::steady_clock::now() - start, 20ms);
  EXPECT_TRUE(mutex.unlock()) << "held again after the timeout";
  EXPECT_EQ(never.wait(mutex).error().code(), errc::not_owner) << "waiting needs the mutex";
}

TEST(CondVar, NotifyAllWakesEveryWaiter) {
  ferry::Mutex mutex;
  ferry::CondVar go;
  bool started = false;
  std::atomic<int> woken{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&] {
      ASSERT_TRUE(mutex.lock());
      ASSERT_TRUE(go.wait(mutex, [&] { return started; }));
      ++woken;
      ASSERT_TRUE(mutex.unlock());
    });
  }
  std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(mutex.lock());
  started = true;
  go.notify_all();
  ASSERT_TRUE(mutex.unlock());
  for (auto& waiter : waiters) waiter.join();
  EXPECT_EQ(woken.load(), 4);
}

TEST(SpinLock, CounterIsExactAndOwnershipIsChecked) {
  ferry::SpinLock lock("spin");
  std::uint64_t counter = 0;
  const std::size_t rounds = ferry::test::scaled(20000);
  run_threads(4, [&](int) {
    for (std::size_t i = 0; i < rounds; ++i) {
      ASSERT_TRUE(lock.lock());
      ++counter;
      ASSERT_TRUE(lock.unlock());
    }
  });
  EXPECT_EQ(counter, 4 * rounds);
  EXPECT_EQ(lock.unlock().error().code(), errc::not_owner);
  auto first = lock.try_lock();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ(lock.owner(), ferry::ProcessId::current());
  auto timed = lock.lock_for(10ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  ASSERT_TRUE(lock.unlock());
}

TEST(FileLock, ExclusiveSharedAndTimed) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("lock");
  auto first = ferry::FileLock::open(path);
  auto second = ferry::FileLock::open(path);
  ASSERT_TRUE(first && second) << first.error().message();
  ASSERT_TRUE(first->lock());
  auto tried = second->try_lock();
  ASSERT_TRUE(tried);
  EXPECT_FALSE(*tried) << "two FileLock objects conflict even in one process";
  const auto start = ferry::steady_clock::now();
  auto timed = second->lock_for(30ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  EXPECT_GE(ferry::steady_clock::now() - start, 30ms);
  ASSERT_TRUE(first->unlock());
  ASSERT_TRUE(first->lock_shared());
  auto shared = second->try_lock_shared();
  ASSERT_TRUE(shared && *shared) << "readers share";
  auto writer = second->try_lock();
  ASSERT_TRUE(writer);
  EXPECT_FALSE(*writer) << "a writer waits for the other reader";
  ASSERT_TRUE(first->unlock());
  ASSERT_TRUE(second->lock_for(1s)) << "upgrade once alone";
  ASSERT_TRUE(second->unlock());
}

TEST(FileLock, BadPathsAreTypedErrors) {
  EXPECT_EQ(ferry::FileLock::open("/nonexistent-dir-ferry/lock").error().code(), errc::not_found);
  EXPECT_EQ(ferry::FileLock::open("/tmp/ferry-missing-lock-file", {.create = false}).error().code(),
            errc::not_found);
  EXPECT_EQ(ferry::FileLock::open("/tmp").error().code(), errc::invalid_argument);
  EXPECT_EQ(ferry::FileLock::open("").error().code(), errc::invalid_argument);
}

TEST(FileLock, CounterIsExactAcrossThreadsWithTheirOwnLocks) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("counter.lock");
  // Read-then-write (not an atomic increment): without mutual exclusion,
  // updates would be lost. Relaxed atomics only because TSan cannot see that
  // a file lock orders memory.
  std::atomic<std::uint64_t> counter{0};
  const std::size_t rounds = ferry::test::scaled(2000);
  run_threads(4, [&](int) {
    auto lock = ferry::FileLock::open(path);
    ASSERT_TRUE(lock);
    for (std::size_t i = 0; i < rounds; ++i) {
      ASSERT_TRUE(lock->lock());
      counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      ASSERT_TRUE(lock->unlock());
    }
  });
  EXPECT_EQ(counter.load(), 4 * rounds);
}

struct Stock {
  int items;
  int produced;
};

TEST(Monitor, WithLockAndWaitThen) {
  ferry::Monitor<Stock> stock(Stock{0, 0}, "stock");
  const int count = static_cast<int>(ferry::test::scaled(2000));
  std::thread consumer([&] {
    for (int i = 0; i < count; ++i) {
      auto taken = stock.wait_then([](const Stock& s) { return s.items > 0; },
                                   [](Stock& s) { return --s.items; });
      ASSERT_TRUE(taken);
      EXPECT_GE(*taken, 0);
    }
  });
  for (int i = 0; i < count; ++i) {
    ASSERT_TRUE(stock.with_lock([](Stock& s) {
      ++s.items;
      ++s.produced;
    }));
  }
  consumer.join();
  auto final_state = stock.load();
  ASSERT_TRUE(final_state);
  EXPECT_EQ(final_state->items, 0);
  EXPECT_EQ(final_state->produced, count);
  auto timed = stock.wait_for([](const Stock& s) { return s.items > 0; }, 20ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  EXPECT_FALSE(stock.held_by_current_process()) << "a timed-out wait releases the lock";
}

TEST(Monitor, RepairRunsAfterAHolderDied) {
  ferry::Monitor<Stock> stock(Stock{5, 5});
  std::thread([&] { ASSERT_TRUE(stock.mutex().lock()); }).join();
  auto repaired = stock.with_lock([](Stock& s) { return s.items; }, [](Stock& s) { s.items = 42; });
  ASSERT_TRUE(repaired);
  EXPECT_EQ(*repaired, 42);
  std::thread([&] { ASSERT_TRUE(stock.mutex().lock()); }).join();
  auto unrepaired = stock.with_lock([](Stock& s) { return s.items; });
  ASSERT_FALSE(unrepaired);
  EXPECT_EQ(unrepaired.error().code(), errc::owner_died);
  EXPECT_EQ(stock.load().error().code(), errc::not_recoverable);
}

TEST(WaitPoint, WaitsForItsConditionAndTimesOut) {
  ferry::WaitPoint point;
  std::atomic<bool> flag{false};
  std::thread notifier([&] {
    std::this_thread::sleep_for(5ms);
    flag.store(true, std::memory_order_release);
    point.notify_all();
  });
  EXPECT_EQ(point.wait([&] { return flag.load(std::memory_order_acquire); }, WaitStrategy::block()),
            ferry::wait_status::ready);
  notifier.join();
  EXPECT_EQ(point.wait([] { return false; }, WaitStrategy::adaptive(), ferry::deadline_after(5ms)),
            ferry::wait_status::timed_out);
  EXPECT_EQ(point.sleepers(), 0u);
}

TEST(Named, EachPrimitiveByNameWithTypeChecks) {
  const std::string name = ferry::test::unique_name("named");
  auto mutex = ferry::Named<ferry::Mutex>::create(name);
  ASSERT_TRUE(mutex) << mutex.error().message();
  EXPECT_EQ(mutex->segment().info().object_type, ferry::ObjectType::mutex);
  auto same = ferry::Named<ferry::Mutex>::open(name);
  ASSERT_TRUE(same) << same.error().message();
  ASSERT_TRUE((*same)->lock());
  std::thread([&] {
    auto busy = (*mutex)->try_lock();
    ASSERT_TRUE(busy);
    EXPECT_FALSE(*busy) << "one mutex, two mappings";
  }).join();
  ASSERT_TRUE((*same)->unlock());

  auto wrong = ferry::Named<ferry::Semaphore>::open(name);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), errc::size_mismatch);
  auto wrong_type = ferry::Named<ferry::CondVar>::open(name);
  ASSERT_FALSE(wrong_type);

  const std::string semaphore_name = ferry::test::unique_name("sem");
  auto semaphore = ferry::Named<ferry::Semaphore>::create(semaphore_name, {}, 2u, 4u);
  ASSERT_TRUE(semaphore);
  EXPECT_EQ((*semaphore)->value(), 2u);
  auto timed = (*semaphore)->post(3);
  EXPECT_NE(timed.error().message().find("semaphore '" + semaphore_name + "'"), std::string::npos);

  const std::string spin_name = ferry::test::unique_name("spin");
  auto spin = ferry::Named<ferry::SpinLock>::create(spin_name, {.persistence = ferry::Persistence::process});
  ASSERT_TRUE(spin);
  const std::string monitor_name = ferry::test::unique_name("monitor");
  auto monitor = ferry::Named<ferry::Monitor<Stock>>::create(monitor_name, {}, Stock{7, 0});
  ASSERT_TRUE(monitor);
  auto opened_monitor = ferry::Named<ferry::Monitor<Stock>>::open(monitor_name);
  ASSERT_TRUE(opened_monitor);
  EXPECT_EQ((*opened_monitor)->load()->items, 7);
  for (const auto& n : {name, semaphore_name, monitor_name}) EXPECT_TRUE(ferry::Segment::destroy(n));
}

}  // namespace
