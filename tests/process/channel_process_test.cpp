// Channel between real processes: volume with integrity checks, every wait
// strategy, SIGKILL of either side mid-operation, takeover, peer_gone.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "checked_message.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Channel;
using ferry::errc;
using ferry::WaitStrategy;
using ferry::test::Child;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 300s;
constexpr std::size_t kMaxMessage = 256;

constexpr std::size_t kMessageWords = kMaxMessage / 8;

std::size_t encode(std::uint64_t generation, std::uint64_t sequence, std::uint64_t* out) {
  return ferry::test::encode_checked(generation, sequence, kMessageWords, out);
}

// Returns the sequence number, or a negative value if the message is damaged
// or from another generation.
std::int64_t check(std::span<const std::byte> message, std::uint64_t expected_generation) {
  const auto checked = ferry::test::decode_checked(message, kMessageWords);
  if (!checked.intact) return -1;
  if (checked.origin != expected_generation) return -2;
  return static_cast<std::int64_t>(checked.sequence);
}

struct ChannelName {
  ChannelName() : name(ferry::test::unique_name("channel")) {}
  ~ChannelName() { (void)Channel::destroy(name); }
  std::string name;
};

int send_sequence(const std::string& name, std::uint64_t generation, std::uint64_t count, WaitStrategy strategy,
                  ferry::test::Event* connected = nullptr) {
  auto channel = Channel::open(name);
  FERRY_CHILD_CHECK(channel);
  auto tx = channel->sender();
  FERRY_CHILD_CHECK(tx);
  if (connected) connected->signal();
  std::uint64_t words[kMaxMessage / 8];
  for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
    const std::size_t size = encode(generation, sequence, words);
    FERRY_CHILD_CHECK(tx->send(std::as_bytes(std::span(words)).first(size), strategy));
  }
  return 0;
}

class ChannelAcrossProcesses : public ::testing::TestWithParam<WaitStrategy> {};

TEST_P(ChannelAcrossProcesses, MessagesArriveWholeAndInOrder) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 16, .max_message = kMaxMessage});
  ASSERT_TRUE(channel);
  auto rx = channel->receiver();
  ASSERT_TRUE(rx);
  const std::uint64_t count = ferry::test::scaled(200'000);
  auto sender = Child::spawn([&] { return send_sequence(n.name, 1, count, GetParam()); });
  std::vector<std::byte> buffer(kMaxMessage);
  for (std::uint64_t expected = 0; expected < count; ++expected) {
    auto size = rx->receive(buffer, GetParam());
    ASSERT_TRUE(size) << size.error().message();
    ASSERT_EQ(check(std::span(buffer).first(*size), 1), static_cast<std::int64_t>(expected));
  }
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
}

INSTANTIATE_TEST_SUITE_P(All, ChannelAcrossProcesses,
                         ::testing::Values(WaitStrategy::adaptive(), WaitStrategy::busy_poll(),
                                           WaitStrategy::block()),
                         ferry::test::strategy_name);

TEST(ChannelVolume, TenMillionMessagesOfRandomSizes) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 20, .max_message = kMaxMessage});
  ASSERT_TRUE(channel);
  auto rx = channel->receiver();
  const std::uint64_t count = ferry::test::scaled(10'000'000);
  auto sender = Child::spawn([&] { return send_sequence(n.name, 7, count, WaitStrategy::adaptive()); });
  std::vector<std::byte> buffer(kMaxMessage);
  std::uint64_t bytes = 0;
  for (std::uint64_t expected = 0; expected < count; ++expected) {
    auto message = rx->peek();  // zero-copy on this side
    ASSERT_TRUE(message) << message.error().message();
    ASSERT_EQ(check(*message, 7), static_cast<std::int64_t>(expected));
    bytes += message->size();
    ASSERT_TRUE(rx->release());
  }
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
  std::printf("%llu messages, %llu bytes, all intact and in order\n",
              static_cast<unsigned long long>(count), static_cast<unsigned long long>(bytes));
}

TEST(ChannelCrash, SenderKilledMidWriteNeverExposesAPartialMessage) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 14, .max_message = kMaxMessage});
  ASSERT_TRUE(channel);
  auto rx = channel->receiver();
  std::mt19937 random(99);
  std::vector<std::byte> buffer(kMaxMessage);
  const std::size_t kills = ferry::test::scaled(20);
  std::uint64_t total = 0;
  for (std::uint64_t generation = 1; generation <= kills; ++generation) {
    ferry::test::Event connected;
    auto sender = Child::spawn(
        [&] { return send_sequence(n.name, generation, UINT64_MAX, WaitStrategy::adaptive(), &connected); });
    ASSERT_TRUE(connected.wait()) << "the new sender took over the dead one's role";
    std::uint64_t expected = 0;
    const auto kill_at = ferry::steady_clock::now() + std::chrono::microseconds(500 + random() % 5000);
    bool killed = false;
    for (;;) {
      if (!killed && ferry::steady_clock::now() >= kill_at) {
        sender.kill(SIGKILL);
        ASSERT_EQ(sender.wait_for(kWatchdog), 128 + SIGKILL);
        killed = true;
      }
      auto size = rx->receive_for(buffer, kWatchdog);
      if (!size) {
        // After the kill, once everything it published is read: peer_gone.
        ASSERT_EQ(size.error().code(), errc::peer_gone) << size.error().message();
        ASSERT_TRUE(killed);
        break;
      }
      ASSERT_EQ(check(std::span(buffer).first(*size), generation), static_cast<std::int64_t>(expected))
          << "generation " << generation;
      ++expected;
    }
    total += expected;
  }
  std::printf("%zu senders killed mid-stream; %llu intact messages received\n", kills,
              static_cast<unsigned long long>(total));
}

struct ReceiverProgress {
  std::atomic<std::int64_t> peeked{-1};    // sequence handed out by peek, not yet released
  std::atomic<std::int64_t> released{-1};  // last sequence released
  std::atomic<std::int64_t> first_of_receiver{-1};
  std::atomic<bool> bad_resume{false};
  std::atomic<bool> damaged{false};
};

TEST(ChannelCrash, ReceiverKilledMidReadIsReplacedAndResumes) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 1 << 14, .max_message = kMaxMessage});
  ASSERT_TRUE(channel);
  SharedAnonymous<ReceiverProgress> progress;
  const std::int64_t count = static_cast<std::int64_t>(ferry::test::scaled(300'000));
  // The sender is a process of its own: the test forks receivers, and a
  // process that forks should have no other threads.
  auto sender = Child::spawn([&] {
    auto opened = Channel::open(n.name);
    FERRY_CHILD_CHECK(opened);
    auto tx = opened->sender();
    FERRY_CHILD_CHECK(tx);
    std::uint64_t words[kMaxMessage / 8];
    for (std::int64_t sequence = 0; sequence < count; ++sequence) {
      const std::size_t size = encode(3, static_cast<std::uint64_t>(sequence), words);
      // peer_gone while a receiver is dead and the ring is full: retry for the next one.
      while (!tx->send(std::as_bytes(std::span(words)).first(size), WaitStrategy::block())) {
        std::this_thread::sleep_for(1ms);
      }
    }
    return 0;
  });
  const auto receive = [&] {
    auto opened = Channel::open(n.name);
    FERRY_CHILD_CHECK(opened);
    auto rx = opened->receiver();
    FERRY_CHILD_CHECK(rx);
    bool first = true;
    while (progress->released.load() < count - 1) {
      auto message = rx->peek();
      FERRY_CHILD_CHECK(message);
      const std::int64_t sequence = check(*message, 3);
      if (sequence < 0) progress->damaged = true;
      if (first) {
        // A successor resumes at the message its predecessor was holding
        // (not released) or right after it (released); never anywhere else.
        const std::int64_t held = progress->peeked.load();
        if (sequence != held && sequence != held + 1) progress->bad_resume = true;
        first = false;
      } else if (sequence != progress->released.load() + 1) {
        progress->bad_resume = true;
      }
      progress->peeked.store(sequence);
      FERRY_CHILD_CHECK(rx->release());
      progress->released.store(sequence);
    }
    return 0;
  };
  std::mt19937 random(7);
  int receivers = 0;
  // So many are killed, then one reads the rest (a sanitizer build's
  // receivers read little before they are killed, and forking costs more).
  const auto kill_rounds = static_cast<int>(ferry::test::scaled(800));
  while (progress->released.load() < count - 1) {
    auto child = Child::spawn(receive);
    ++receivers;
    std::this_thread::sleep_for(std::chrono::microseconds(200 + random() % 3000));
    if (progress->released.load() >= count - 1 || receivers > kill_rounds) {
      EXPECT_EQ(child.wait_for(kWatchdog), 0);
      break;
    }
    child.kill(SIGKILL);
    child.wait_for(kWatchdog);
  }
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
  EXPECT_FALSE(progress->damaged.load());
  EXPECT_FALSE(progress->bad_resume.load());
  EXPECT_EQ(progress->released.load(), count - 1);
  std::printf("%d receivers, all but the last killed mid-read\n", receivers);
}

TEST(ChannelCrash, EachSideLearnsTheOtherDied) {
  ChannelName n;
  auto channel = Channel::create(n.name, {.capacity = 4096, .max_message = 64});
  ASSERT_TRUE(channel);
  {
    auto rx = channel->receiver();
    ferry::test::Event connected;
    auto sender = Child::spawn([&] {
      auto tx = Channel::open(n.name)->sender();
      FERRY_CHILD_CHECK(tx);
      connected.signal();
      for (;;) ::pause();
      return 0;
    });
    ASSERT_TRUE(connected.wait());
    sender.kill(SIGKILL);
    sender.wait();
    std::vector<std::byte> buffer(64);
    auto received = rx->receive_for(buffer, kWatchdog, WaitStrategy::block());
    ASSERT_FALSE(received);
    EXPECT_EQ(received.error().code(), errc::peer_gone) << received.error().message();
  }
  {
    auto tx = channel->sender();
    ASSERT_TRUE(tx);
    ferry::test::Event connected;
    auto receiver = Child::spawn([&] {
      auto rx = Channel::open(n.name)->receiver();
      FERRY_CHILD_CHECK(rx);
      connected.signal();
      for (;;) ::pause();
      return 0;
    });
    ASSERT_TRUE(connected.wait());
    receiver.kill(SIGKILL);
    receiver.wait();
    const std::vector<std::byte> message(64);
    errc outcome = errc::system;
    for (int i = 0; i < 1000; ++i) {
      auto sent = tx->send_for(message, kWatchdog);
      if (!sent) {
        outcome = sent.error().code();
        break;
      }
    }
    EXPECT_EQ(outcome, errc::peer_gone) << "a full channel whose receiver died";
  }
}

}  // namespace
