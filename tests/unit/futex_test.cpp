#include "ferry/os/futex.hpp"

#include <sys/mman.h>

#include <thread>

#include <gtest/gtest.h>

#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::futex_wait_result;

TEST(Futex, WaitReturnsAtOnceWhenTheValueDiffers) {
  std::atomic<std::uint32_t> word{1};
  EXPECT_EQ(ferry::futex_wait(word, 0), futex_wait_result::value_changed);
}

TEST(Futex, TimedWaitTimesOutNoEarlierThanTheDeadline) {
  std::atomic<std::uint32_t> word{0};
  const auto start = ferry::steady_clock::now();
  EXPECT_EQ(ferry::futex_wait(word, 0, ferry::deadline_after(20ms)), futex_wait_result::timed_out);
  EXPECT_GE(ferry::steady_clock::now() - start, 20ms);
}

TEST(Futex, DeadlineInThePastTimesOutImmediately) {
  std::atomic<std::uint32_t> word{0};
  EXPECT_EQ(ferry::futex_wait(word, 0, ferry::steady_clock::now() - 1s), futex_wait_result::timed_out);
}

TEST(Futex, WakeReleasesAWaitingThread) {
  std::atomic<std::uint32_t> word{0};
  std::thread waiter([&] {
    while (word.load() == 0) ferry::futex_wait(word, 0);
  });
  std::this_thread::sleep_for(10ms);
  word.store(1);
  ferry::futex_wake_all(word);
  waiter.join();
  EXPECT_EQ(word.load(), 1u);
}

TEST(Futex, WakeCrossesProcessesThroughSharedMemory) {
  void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* word = new (shared) std::atomic<std::uint32_t>(0);
  ferry::test::Event child_waiting;
  auto child = ferry::test::Child::spawn([&] {
    child_waiting.signal();
    const auto give_up = ferry::deadline_after(20s);
    while (word->load() == 0) {
      if (ferry::futex_wait(*word, 0, give_up) == futex_wait_result::timed_out) return 1;
    }
    return word->load() == 7 ? 0 : 2;
  });
  ASSERT_TRUE(child_waiting.wait());
  word->store(7);
  ferry::futex_wake_all(*word);
  EXPECT_EQ(child.wait(), 0);
  ::munmap(shared, 4096);
}

TEST(Clock, DeadlineAfterSaturates) {
  EXPECT_EQ(ferry::deadline_after(ferry::steady_clock::duration::max()), ferry::deadline::max());
  EXPECT_GT(ferry::deadline_after(1s), ferry::steady_clock::now());
}

TEST(Clock, ACoarseDeadlineIsOnTheSameClockAndAtMostATickEarly) {
  EXPECT_EQ(ferry::coarse_deadline_after(ferry::steady_clock::duration::max()), ferry::deadline::max());
  const auto before = ferry::steady_clock::now();
  const auto coarse = ferry::coarse_deadline_after(1s);
  const auto after = ferry::steady_clock::now();
  EXPECT_LE(coarse, after + 1s);          // never late
  EXPECT_GT(coarse, before + 1s - 50ms);  // a clock tick (1-10 ms) early at most, on the same origin
}

}  // namespace
