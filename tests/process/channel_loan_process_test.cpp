// Loans between real processes: payloads of random sizes through loans and
// automatic sends, and SIGKILL of the sender mid-loan and of the receiver
// mid-read, many times: no reader sees a torn or recycled payload, and the
// pool returns to its starting level (nothing held by the dead stays held).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"
#include "loan_payload.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Channel;
using ferry::errc;
using ferry::WaitStrategy;
using ferry::test::Child;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 300s;

struct ChannelName {
  ChannelName() : name(ferry::test::unique_name("loans")) {}
  ~ChannelName() { (void)Channel::destroy(name); }
  std::string name;
};

// A payload names its origin and sequence in its first 16 bytes (when it has
// them) and every byte after depends on both: a torn, stale or recycled
// payload fails the check.
TEST(LoansAcrossProcesses, PayloadsOfRandomSizesArriveIntactByLoanAndByAutomaticSend) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 16, .max_message = 1024, .loans = {.limit = 32 << 20}});
  ASSERT_TRUE(channel);
  auto rx = channel->receiver();
  ASSERT_TRUE(rx);
  const std::uint64_t count = ferry::test::scaled(4000);
  auto sender = Child::spawn([&] {
    auto tx = Channel::open(n.name)->sender();
    FERRY_CHILD_CHECK(tx);
    std::mt19937_64 random(11);
    std::vector<std::byte> copy;
    for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
      const std::size_t size = ferry::test::random_payload_size(random, 1 << 20);
      if (sequence % 2 == 0) {
        auto loan = tx->loan(size);
        FERRY_CHILD_CHECK(loan);
        ferry::test::write_payload(loan->data(), 1, sequence);
        FERRY_CHILD_CHECK(tx->send(std::move(*loan)));
      } else {
        copy.resize(size);
        ferry::test::write_payload(copy, 1, sequence);
        FERRY_CHILD_CHECK(tx->send(std::span<const std::byte>(copy)));
      }
    }
    return 0;
  });
  std::mt19937_64 random(11);
  for (std::uint64_t expected = 0; expected < count; ++expected) {
    auto message = rx->peek_until(ferry::deadline_after(kWatchdog));
    ASSERT_TRUE(message) << message.error().message();
    ASSERT_EQ(message->size(), ferry::test::random_payload_size(random, 1 << 20));
    const auto checked = ferry::test::check_payload(*message);
    ASSERT_TRUE(checked.intact) << expected;
    ASSERT_EQ(checked.sequence, expected);
    ASSERT_TRUE(rx->release());
  }
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
  auto tx = channel->sender();  // takes over the role the child left
  ASSERT_TRUE(tx);
  auto usage = tx->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u);
  EXPECT_LE(usage->bytes, std::size_t{32} << 20);
}

TEST(LoanCrash, SendersKilledMidLoanLeaveNoChunkHeldAndNoTornPayload) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 14, .max_message = 256, .loans = {.limit = 16 << 20}});
  ASSERT_TRUE(channel);
  auto rx = channel->receiver();
  ASSERT_TRUE(rx);
  std::mt19937 random(5);
  const std::size_t kills = ferry::test::scaled(40);
  std::uint64_t received = 0;
  for (std::uint64_t origin = 1; origin <= kills; ++origin) {
    ferry::test::Event connected;
    auto sender = Child::spawn([&] {
      auto tx = Channel::open(n.name)->sender();  // takes over from the one killed before
      FERRY_CHILD_CHECK(tx);
      connected.signal();
      std::mt19937_64 sizes(origin);
      for (std::uint64_t sequence = 0;; ++sequence) {
        auto loan = tx->loan(ferry::test::random_payload_size(sizes, 256 << 10));
        FERRY_CHILD_CHECK(loan);
        ferry::test::write_payload(loan->data(), origin, sequence);
        FERRY_CHILD_CHECK(tx->send(std::move(*loan)));
      }
    });
    ASSERT_TRUE(connected.wait());
    const auto kill_at = ferry::steady_clock::now() + std::chrono::microseconds(500 + random() % 20000);
    bool killed = false;
    for (std::uint64_t expected = 0;;) {
      if (!killed && ferry::steady_clock::now() >= kill_at) {
        sender.kill(SIGKILL);
        ASSERT_EQ(sender.wait_for(kWatchdog), 128 + SIGKILL);
        killed = true;
      }
      auto message = rx->peek_until(ferry::deadline_after(kWatchdog));
      if (!message) {
        // Once everything the dead sender published is read: peer_gone.
        ASSERT_EQ(message.error().code(), errc::peer_gone) << message.error().message();
        ASSERT_TRUE(killed);
        break;
      }
      const auto checked = ferry::test::check_payload(*message);
      ASSERT_TRUE(checked.intact) << "origin " << origin << " message " << expected;
      ASSERT_EQ(checked.origin, origin);
      ASSERT_EQ(checked.sequence, expected);
      ASSERT_TRUE(rx->release()) << "the chunk was not reused while it was read";
      ++expected;
      ++received;
    }
  }
  auto tx = channel->sender();
  ASSERT_TRUE(tx);
  auto usage = tx->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u) << "chunks the killed senders had loaned or half-sent are free again";
  EXPECT_LE(usage->bytes, std::size_t{16} << 20);
  std::printf("%zu senders killed mid-loan; %llu intact payloads received\n", kills,
              static_cast<unsigned long long>(received));
}

struct ReceiverProgress {
  std::atomic<std::int64_t> done{-1};  // last sequence a receiver finished with (then released)
  std::atomic<int> receiving{0};       // receivers that claimed the role
  std::atomic<bool> bad_resume{false};
  std::atomic<bool> damaged{false};
};

TEST(LoanCrash, ReceiversKilledMidReadAreReplacedAndTheirChunksComeBack) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 14, .max_message = 256, .loans = {.limit = 8 << 20}});
  ASSERT_TRUE(channel);
  SharedAnonymous<ReceiverProgress> progress;
  const std::int64_t count = static_cast<std::int64_t>(ferry::test::scaled(5'000));
  // The sender is a process of its own: the test forks receivers, and a
  // process that forks should have no other threads.
  auto sender = Child::spawn([&] {
    auto tx = Channel::open(n.name)->sender();
    FERRY_CHILD_CHECK(tx);
    std::mt19937_64 sizes(3);
    for (std::int64_t sequence = 0; sequence < count; ++sequence) {
      const std::size_t size = ferry::test::random_payload_size(sizes, 64 << 10);
      for (;;) {  // peer_gone while a receiver is dead holding chunks: retry for the next one
        auto loan = tx->loan(size, WaitStrategy::block());
        if (!loan) {
          FERRY_CHILD_CHECK(loan.error().code() == errc::peer_gone);
          std::this_thread::sleep_for(1ms);
          continue;
        }
        ferry::test::write_payload(loan->data(), 9, static_cast<std::uint64_t>(sequence));
        if (tx->send(std::move(*loan), WaitStrategy::block())) break;
        std::this_thread::sleep_for(1ms);
      }
    }
    return 0;
  });
  const auto receive = [&] {
    auto rx = Channel::open(n.name)->receiver();
    FERRY_CHILD_CHECK(rx);
    ++progress->receiving;
    bool first = true;
    for (;;) {
      // After the last message, only one a killed predecessor left unreleased remains to read.
      std::span<const std::byte> message;
      if (progress->done.load() >= count - 1) {
        auto left = rx->try_peek();
        FERRY_CHILD_CHECK(left);
        if (!*left) break;
        message = **left;
      } else {
        auto next = rx->peek();
        FERRY_CHILD_CHECK(next);
        message = *next;
      }
      const auto checked = ferry::test::check_payload(message);
      if (!checked.intact || checked.origin != 9) progress->damaged = true;
      const auto sequence = static_cast<std::int64_t>(checked.sequence);
      const std::int64_t done = progress->done.load();
      // A successor resumes at the message its predecessor was reading, or
      // (if that one had released it) right after it; never anywhere else.
      if (sequence != done + 1 && !(first && sequence == done)) progress->bad_resume = true;
      first = false;
      progress->done.store(sequence);
      FERRY_CHILD_CHECK(rx->release());
    }
    return 0;
  };
  std::mt19937 random(8);
  int receivers = 0;
  // So many are killed, then one reads the rest (a sanitizer build's
  // receivers read little before they are killed, and forking costs more).
  const auto kill_rounds = static_cast<int>(ferry::test::scaled(200));
  for (;;) {
    auto child = Child::spawn(receive);
    ++receivers;
    // Killed at a random moment of its reading, not while it starts.
    const auto give_up = ferry::deadline_after(kWatchdog);
    while (progress->receiving.load() < receivers) {
      ASSERT_LT(ferry::steady_clock::now(), give_up) << "receiver " << receivers << " never started";
      std::this_thread::sleep_for(100us);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
    if (progress->done.load() >= count - 1 || receivers > kill_rounds) {
      EXPECT_EQ(child.wait_for(kWatchdog), 0);
      break;
    }
    child.kill(SIGKILL);
    child.wait_for(kWatchdog);
  }
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
  EXPECT_FALSE(progress->damaged.load());
  EXPECT_FALSE(progress->bad_resume.load());
  EXPECT_EQ(progress->done.load(), count - 1);
  auto tx = channel->sender();
  ASSERT_TRUE(tx);
  auto usage = tx->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u) << "chunks the killed receivers held are free again";
  std::printf("%d receivers, all but the last killed mid-read\n", receivers);
}

}  // namespace
