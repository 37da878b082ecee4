// The sync primitives between real processes: exact counters, SIGKILL inside
// critical sections, killed waiters, deadlock-free lock_all, a second user.
// Every wait on a child has a watchdog, so a bug fails the test, never hangs it.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::WaitStrategy;
using ferry::test::Child;
using ferry::test::Event;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 120s;
constexpr int kProcesses = 4;

template <class Lock>
struct Counted {
  template <class... Args>
  explicit Counted(Args&&... args) : lock(std::forward<Args>(args)...) {}
  Lock lock;
  std::uint64_t counter = 0;
};

std::vector<Child> spawn_all(int count, const std::function<int(int)>& body) {
  std::vector<Child> children;
  for (int i = 0; i < count; ++i) children.push_back(Child::spawn([&, i] { return body(i); }));
  return children;
}

void expect_all_succeed(std::vector<Child>& children) {
  for (auto& child : children) EXPECT_EQ(child.wait_for(kWatchdog), 0);
}

class MutexStrategies : public ::testing::TestWithParam<WaitStrategy> {};

TEST_P(MutexStrategies, CounterUnderMutexIsExact) {
  SharedAnonymous<Counted<ferry::Mutex>> shared("counter");
  const std::size_t rounds = ferry::test::scaled(20000);
  auto children = spawn_all(kProcesses, [&](int) {
    for (std::size_t i = 0; i < rounds; ++i) {
      FERRY_CHILD_CHECK(shared->lock.lock(GetParam()));
      ++shared->counter;
      FERRY_CHILD_CHECK(shared->lock.unlock());
    }
    return 0;
  });
  expect_all_succeed(children);
  EXPECT_EQ(shared->counter, kProcesses * rounds);
}

INSTANTIATE_TEST_SUITE_P(All, MutexStrategies,
                         ::testing::Values(WaitStrategy::adaptive(), WaitStrategy::busy_poll(),
                                           WaitStrategy::block()),
                         ferry::test::strategy_name);

TEST(SyncAcrossProcesses, CounterUnderSpinLockIsExact) {
  SharedAnonymous<Counted<ferry::SpinLock>> shared("counter");
  const std::size_t rounds = ferry::test::scaled(20000);
  auto children = spawn_all(kProcesses, [&](int) {
    for (std::size_t i = 0; i < rounds; ++i) {
      FERRY_CHILD_CHECK(shared->lock.lock());
      ++shared->counter;
      FERRY_CHILD_CHECK(shared->lock.unlock());
    }
    return 0;
  });
  expect_all_succeed(children);
  EXPECT_EQ(shared->counter, kProcesses * rounds);
}

TEST(SyncAcrossProcesses, CounterUnderFileLockIsExact) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("counter.lock");
  SharedAnonymous<std::uint64_t> counter(0u);
  const std::size_t rounds = ferry::test::scaled(2000);
  auto children = spawn_all(kProcesses, [&](int) {
    auto lock = ferry::FileLock::open(path);
    FERRY_CHILD_CHECK(lock);
    for (std::size_t i = 0; i < rounds; ++i) {
      FERRY_CHILD_CHECK(lock->lock());
      ++*counter;
      FERRY_CHILD_CHECK(lock->unlock());
    }
    return 0;
  });
  expect_all_succeed(children);
  EXPECT_EQ(*counter, kProcesses * rounds);
}

// Protected data with an invariant: every slot holds the same number. A
// holder updates the slots one at a time, so a kill mid-update breaks it.
struct Guarded {
  ferry::Mutex lock{"guarded"};
  std::atomic<std::uint64_t> entered{0};  // critical sections begun
  std::uint64_t slots[32] = {};

  bool consistent() const {
    for (auto value : slots) {
      if (value != slots[0]) return false;
    }
    return true;
  }
  void repair() {
    std::uint64_t highest = 0;
    for (auto value : slots) highest = std::max(highest, value);
    for (auto& value : slots) value = highest;
  }
};

int update_forever(Guarded& guarded) {
  for (;;) {
    auto locked = guarded.lock.lock();
    if (!locked && locked.error() == errc::owner_died) {
      guarded.repair();
      FERRY_CHILD_CHECK(guarded.lock.mark_consistent());
    } else {
      FERRY_CHILD_CHECK(locked);
    }
    guarded.entered.fetch_add(1, std::memory_order_relaxed);
    for (auto& value : guarded.slots) {
      ++value;
      for (int spin = 0; spin < 40; ++spin) ferry::cpu_relax();
    }
    FERRY_CHILD_CHECK(guarded.lock.unlock());
  }
}

TEST(SyncAcrossProcesses, HolderKilledAtManyPointsIsRecoveredWithRepair) {
  SharedAnonymous<Guarded> guarded;
  std::mt19937 random(12345);
  const std::size_t kills = ferry::test::scaled(40);
  std::size_t owner_died_seen = 0, broken_seen = 0;
  for (std::size_t round = 0; round < kills; ++round) {
    const std::uint64_t before = guarded->entered.load();
    auto holder = Child::spawn([&] { return update_forever(*guarded); });
    // Let it get going, then kill it at a random point of its work.
    while (guarded->entered.load() < before + 2) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 300));
    holder.kill(SIGKILL);
    ASSERT_EQ(holder.wait_for(kWatchdog), 128 + SIGKILL);

    auto locked = guarded->lock.lock_for(kWatchdog);
    if (!locked) {
      ASSERT_EQ(locked.error().code(), errc::owner_died) << locked.error().message();
      ++owner_died_seen;
      EXPECT_EQ(guarded->lock.status().state, ferry::Mutex::State::owner_died);
      if (!guarded->consistent()) ++broken_seen;
      guarded->repair();
      ASSERT_TRUE(guarded->lock.mark_consistent());
    }
    EXPECT_TRUE(guarded->consistent()) << "round " << round;
    ASSERT_TRUE(guarded->lock.unlock());
  }
  // The holder spends nearly all its time inside the lock, so nearly every
  // kill lands there; the invariant check above held after each repair.
  EXPECT_GE(owner_died_seen, kills / 2);
  std::printf("kills %zu, owner_died %zu, invariant broken mid-update %zu\n", kills, owner_died_seen,
              broken_seen);
}

TEST(SyncAcrossProcesses, WithoutRepairEveryLaterLockerIsToldNotRecoverable) {
  SharedAnonymous<Guarded> guarded;
  Event inside;
  auto holder = Child::spawn([&] {
    FERRY_CHILD_CHECK(guarded->lock.lock());
    inside.signal();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(inside.wait());
  holder.kill(SIGKILL);
  holder.wait();
  auto first = Child::spawn([&] {
    auto locked = guarded->lock.lock();
    FERRY_CHILD_CHECK(!locked && locked.error() == errc::owner_died);
    FERRY_CHILD_CHECK(guarded->lock.unlock());  // gives up without repair
    return 0;
  });
  ASSERT_EQ(first.wait_for(kWatchdog), 0);
  auto later = Child::spawn([&] {
    FERRY_CHILD_CHECK(guarded->lock.lock().error() == errc::not_recoverable);
    FERRY_CHILD_CHECK(guarded->lock.try_lock().error() == errc::not_recoverable);
    return 0;
  });
  EXPECT_EQ(later.wait_for(kWatchdog), 0);
  EXPECT_EQ(guarded->lock.lock().error().code(), errc::not_recoverable);
}

TEST(SyncAcrossProcesses, OnlyTheOwnerMayUnlock) {
  SharedAnonymous<ferry::Mutex> mutex("mine");
  ASSERT_TRUE(mutex->lock());
  auto thief = Child::spawn([&] {
    auto unlocked = mutex->unlock();
    FERRY_CHILD_CHECK(!unlocked && unlocked.error() == errc::not_owner);
    auto tried = mutex->try_lock();
    FERRY_CHILD_CHECK(tried && !*tried);
    return 0;
  });
  EXPECT_EQ(thief.wait_for(kWatchdog), 0);
  EXPECT_EQ(mutex->status().owner, ferry::ProcessId::current());
  ASSERT_TRUE(mutex->unlock());
}

struct Ring {
  ferry::Mutex lock;
  ferry::CondVar changed;
  std::uint64_t items[16];
  std::uint64_t head = 0, tail = 0;  // head: next to write, tail: next to read
  bool full() const { return head - tail == 16; }
  bool empty() const { return head == tail; }
};

TEST(SyncAcrossProcesses, ProducerConsumerWithCondVar) {
  SharedAnonymous<Ring> ring;
  const std::uint64_t count = ferry::test::scaled(20000);
  SharedAnonymous<std::uint64_t> consumed_sum(0u);
  auto consumer = Child::spawn([&] {
    for (std::uint64_t received = 0; received < count; ++received) {
      FERRY_CHILD_CHECK(ring->lock.lock());
      FERRY_CHILD_CHECK(ring->changed.wait(ring->lock, [&] { return !ring->empty(); }));
      *consumed_sum += ring->items[ring->tail++ % 16];
      ring->changed.notify_all();
      FERRY_CHILD_CHECK(ring->lock.unlock());
    }
    return 0;
  });
  auto producer = Child::spawn([&] {
    for (std::uint64_t value = 1; value <= count; ++value) {
      FERRY_CHILD_CHECK(ring->lock.lock());
      FERRY_CHILD_CHECK(ring->changed.wait(ring->lock, [&] { return !ring->full(); }));
      ring->items[ring->head++ % 16] = value;
      ring->changed.notify_all();
      FERRY_CHILD_CHECK(ring->lock.unlock());
    }
    return 0;
  });
  EXPECT_EQ(producer.wait_for(kWatchdog), 0);
  EXPECT_EQ(consumer.wait_for(kWatchdog), 0);
  EXPECT_EQ(*consumed_sum, count * (count + 1) / 2);
}

struct SlotBuffer {
  ferry::Semaphore free_slots{8, 8, "free"};
  ferry::Semaphore filled{0, 8, "filled"};
  ferry::SpinLock lock{"buffer"};
  std::uint64_t items[8];
  std::uint64_t head = 0, tail = 0;
};

TEST(SyncAcrossProcesses, ProducerConsumerWithSemaphores) {
  SharedAnonymous<SlotBuffer> buffer;
  SharedAnonymous<std::uint64_t> consumed_sum(0u);
  const std::uint64_t count = ferry::test::scaled(20000);
  auto consumer = Child::spawn([&] {
    for (std::uint64_t i = 0; i < count; ++i) {
      buffer->filled.wait();
      FERRY_CHILD_CHECK(buffer->lock.lock());
      *consumed_sum += buffer->items[buffer->tail++ % 8];
      FERRY_CHILD_CHECK(buffer->lock.unlock());
      FERRY_CHILD_CHECK(buffer->free_slots.post());
    }
    return 0;
  });
  auto producer = Child::spawn([&] {
    for (std::uint64_t value = 1; value <= count; ++value) {
      buffer->free_slots.wait();
      FERRY_CHILD_CHECK(buffer->lock.lock());
      buffer->items[buffer->head++ % 8] = value;
      FERRY_CHILD_CHECK(buffer->lock.unlock());
      FERRY_CHILD_CHECK(buffer->filled.post());
    }
    return 0;
  });
  EXPECT_EQ(producer.wait_for(kWatchdog), 0);
  EXPECT_EQ(consumer.wait_for(kWatchdog), 0);
  EXPECT_EQ(*consumed_sum, count * (count + 1) / 2);
}

struct Gate {
  ferry::Mutex lock;
  ferry::CondVar opened;
  ferry::Semaphore tokens{0, 16};
  bool open = false;
  std::atomic<int> waiting{0};
};

TEST(SyncAcrossProcesses, KilledWaitersDoNotBlockLaterWakeUps) {
  SharedAnonymous<Gate> gate;
  // Two victims: one asleep on the condvar, one asleep on the semaphore.
  auto condvar_victim = Child::spawn([&] {
    FERRY_CHILD_CHECK(gate->lock.lock());
    gate->waiting.fetch_add(1);
    FERRY_CHILD_CHECK(gate->opened.wait(gate->lock, [&] { return gate->open; }));
    return 0;
  });
  auto semaphore_victim = Child::spawn([&] {
    gate->waiting.fetch_add(1);
    gate->tokens.wait(WaitStrategy::block());
    return 0;
  });
  while (gate->waiting.load() < 2) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);  // let both fall asleep in the kernel
  condvar_victim.kill(SIGKILL);
  semaphore_victim.kill(SIGKILL);
  condvar_victim.wait();
  semaphore_victim.wait();

  auto survivor = Child::spawn([&] {
    FERRY_CHILD_CHECK(gate->lock.lock());
    gate->waiting.fetch_add(1);
    FERRY_CHILD_CHECK(gate->opened.wait(gate->lock, [&] { return gate->open; }));
    FERRY_CHILD_CHECK(gate->lock.unlock());
    gate->tokens.wait(WaitStrategy::block());
    return 0;
  });
  while (gate->waiting.load() < 3) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(gate->lock.lock());
  gate->open = true;
  gate->opened.notify_one();
  ASSERT_TRUE(gate->lock.unlock());
  ASSERT_TRUE(gate->tokens.post());
  EXPECT_EQ(survivor.wait_for(30s), 0) << "the survivor was woken despite the dead sleepers";
}

struct Pair {
  ferry::Mutex first{"first"};
  ferry::Mutex second{"second"};
  std::uint64_t both_held = 0;
};

TEST(SyncAcrossProcesses, LockAllInOppositeOrdersNeverDeadlocks) {
  SharedAnonymous<Pair> pair;
  const std::size_t rounds = ferry::test::scaled(20000);
  auto children = spawn_all(2, [&](int which) {
    for (std::size_t i = 0; i < rounds; ++i) {
      auto locked = which == 0 ? ferry::lock_all(pair->first, pair->second)
                               : ferry::lock_all(pair->second, pair->first);
      FERRY_CHILD_CHECK(locked);
      ++pair->both_held;
      FERRY_CHILD_CHECK(ferry::unlock_all(pair->first, pair->second));
    }
    return 0;
  });
  for (auto& child : children) EXPECT_EQ(child.wait_for(kWatchdog), 0) << "watchdog: deadlock?";
  EXPECT_EQ(pair->both_held, 2 * rounds);
}

TEST(SyncAcrossProcesses, SpinLockHolderKilledIsTakenOver) {
  SharedAnonymous<ferry::SpinLock> spin("spin");
  Event holding;
  auto holder = Child::spawn([&] {
    FERRY_CHILD_CHECK(spin->lock());
    holding.signal();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(holding.wait());
  holder.kill(SIGKILL);
  holder.wait();
  auto taken = spin->lock_for(kWatchdog);
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code(), errc::owner_died);
  EXPECT_TRUE(spin->held_by_current_process());
  ASSERT_TRUE(spin->unlock());
}

TEST(SyncAcrossProcesses, FileLockIsReleasedWhenItsHolderIsKilled) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("held.lock");
  Event holding;
  auto holder = Child::spawn([&] {
    auto lock = ferry::FileLock::open(path);
    FERRY_CHILD_CHECK(lock && lock->lock());
    holding.signal();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(holding.wait());
  auto lock = ferry::FileLock::open(path);
  ASSERT_TRUE(lock);
  auto tried = lock->try_lock();
  ASSERT_TRUE(tried);
  EXPECT_FALSE(*tried);
  holder.kill(SIGKILL);
  holder.wait();
  EXPECT_TRUE(lock->lock_for(kWatchdog));
}

TEST(SyncAcrossProcesses, NamedPrimitivesAcrossProcessesAndUsers) {
  const std::string name = ferry::test::unique_name("named-mutex");
  auto mutex = ferry::Named<ferry::Mutex>::create(name);
  ASSERT_TRUE(mutex) << mutex.error().message();
  ASSERT_TRUE((*mutex)->lock());
  auto other = Child::spawn([&] {
    auto opened = ferry::Named<ferry::Mutex>::open(name);
    FERRY_CHILD_CHECK(opened);
    auto tried = (*opened)->try_lock();
    FERRY_CHILD_CHECK(tried && !*tried);
    FERRY_CHILD_CHECK((*opened)->status().owner == ferry::ProcessId::of(::getppid()));
    return 0;
  });
  EXPECT_EQ(other.wait_for(kWatchdog), 0);
  auto stranger = Child::spawn([&] {
    ferry::test::become_other_user();
    auto opened = ferry::Named<ferry::Mutex>::open(name, {.allow_foreign_owner = true});
    FERRY_CHILD_CHECK(!opened && opened.error().code() == errc::permission_denied);
    return 0;
  });
  EXPECT_EQ(stranger.wait_for(kWatchdog), 0);
  ASSERT_TRUE((*mutex)->unlock());
  EXPECT_TRUE(ferry::Named<ferry::Mutex>::destroy(name));
}

struct Account {
  std::int64_t debit;
  std::int64_t credit;  // invariant: debit + credit == 0
};

TEST(SyncAcrossProcesses, MonitorRepairsAfterAKilledHolder) {
  const std::string name = ferry::test::unique_name("monitor");
  auto account = ferry::Named<ferry::Monitor<Account>>::create(name, {}, Account{0, 0});
  ASSERT_TRUE(account);
  Event half_done;
  auto holder = Child::spawn([&] {
    auto opened = ferry::Named<ferry::Monitor<Account>>::open(name);
    FERRY_CHILD_CHECK(opened);
    (void)(*opened)->with_lock([&](Account& a) {
      a.debit -= 10;  // ... and dies before the credit
      half_done.signal();
      for (;;) ::pause();
    });
    return 0;
  });
  ASSERT_TRUE(half_done.wait());
  holder.kill(SIGKILL);
  holder.wait();
  auto balance = (*account)->with_lock([](Account& a) { return a.debit + a.credit; },
                                       [](Account& a) { a.debit = -a.credit; });
  ASSERT_TRUE(balance) << balance.error().message();
  EXPECT_EQ(*balance, 0);
  EXPECT_TRUE(ferry::Segment::destroy(name));
}

}  // namespace
