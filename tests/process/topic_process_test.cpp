// Topic between real processes: fan-out volume with integrity checks,
// drop_oldest losses counted exactly (also while racing a publisher), and
// SIGKILL of subscribers and publishers.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "checked_message.hpp"
#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::SlowSubscriber;
using ferry::Topic;
using ferry::TopicSubscriber;
using ferry::WaitStrategy;
using ferry::test::Child;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 300s;
constexpr std::size_t kMaxMessage = 512;
constexpr std::size_t kMessageWords = kMaxMessage / 8;

struct TopicName {
  TopicName() : name(ferry::test::unique_name("topic")) {}
  ~TopicName() { (void)Topic::destroy(name); }
  std::string name;
};

// Publishes message 0, 1, ... of `origin` until `count` (or `stop`).
int publish_sequence(const std::string& name, std::uint64_t origin, std::uint64_t count, WaitStrategy strategy,
                     ferry::test::Event* connected = nullptr, const std::atomic<bool>* stop = nullptr,
                     std::atomic<std::uint64_t>* published = nullptr) {
  auto topic = Topic::open(name);
  FERRY_CHILD_CHECK(topic);
  auto publisher = topic->publisher();
  FERRY_CHILD_CHECK(publisher);
  if (connected) connected->signal();
  std::uint64_t words[kMessageWords];
  std::uint64_t sequence = 0;
  for (; sequence < count && !(stop && stop->load()); ++sequence) {
    const std::size_t size = ferry::test::encode_checked(origin, sequence, kMessageWords, words);
    auto published_one = publisher->publish(std::as_bytes(std::span(words)).first(size), strategy);
    if (!published_one) std::fprintf(stderr, "%s\n", published_one.error().message().c_str());
    FERRY_CHILD_CHECK(published_one);
  }
  if (published) published->store(sequence);
  return 0;
}

// The message in `buffer` is whole and is `origin`'s message `sequence`.
bool intact(std::span<const std::byte> message, std::uint64_t origin, std::uint64_t sequence) {
  const auto checked = ferry::test::decode_checked(message, kMessageWords);
  return checked.intact && checked.origin == origin && checked.sequence == sequence;
}

class TopicAcrossProcesses : public ::testing::TestWithParam<WaitStrategy> {};

TEST_P(TopicAcrossProcesses, EverySubscriberProcessGetsEveryMessageInOrder) {
  TopicName n;
  auto topic = Topic::create(n.name, {.capacity = 1024, .max_message = kMaxMessage});
  ASSERT_TRUE(topic) << topic.error().message();
  const std::uint64_t count = ferry::test::scaled(100'000);
  constexpr std::size_t kSubscribers = 4;
  std::array<ferry::test::Event, kSubscribers> subscribed;
  std::vector<Child> subscribers;
  for (std::size_t i = 0; i < kSubscribers; ++i) {
    subscribers.push_back(Child::spawn([&, i] {
      auto opened = Topic::open(n.name);
      FERRY_CHILD_CHECK(opened);
      auto subscriber = opened->subscribe();
      FERRY_CHILD_CHECK(subscriber);
      subscribed[i].signal();
      std::vector<std::byte> buffer(kMaxMessage);
      for (std::uint64_t expected = 0; expected < count; ++expected) {
        auto delivery = subscriber->receive(buffer, GetParam());
        FERRY_CHILD_CHECK(delivery);
        FERRY_CHILD_CHECK(delivery->sequence == expected && delivery->lost == 0);
        FERRY_CHILD_CHECK(intact(std::span(buffer).first(delivery->size), 1, expected));
      }
      return 0;
    }));
  }
  for (auto& event : subscribed) ASSERT_TRUE(event.wait());
  auto publisher = Child::spawn([&] { return publish_sequence(n.name, 1, count, GetParam()); });
  EXPECT_EQ(publisher.wait_for(kWatchdog), 0);
  for (auto& subscriber : subscribers) EXPECT_EQ(subscriber.wait_for(kWatchdog), 0);
  const auto stats = topic->stats();
  EXPECT_EQ(stats.published, count);
  EXPECT_TRUE(stats.subscribers.empty()) << "every subscriber left";
}

INSTANTIATE_TEST_SUITE_P(All, TopicAcrossProcesses, ::testing::Values(WaitStrategy::adaptive(), WaitStrategy::block()),
                         ferry::test::strategy_name);

// Subscribers that coalesce their wake-ups (SubscribeOptions::coalesce),
// beside one that does not, each in its own process, under block with a
// ring far shorter than the stream: each gets every message, whole and in order.
TEST(TopicCoalescing, SubscriberProcessesGetEveryMessageInOrder) {
  TopicName n;
  auto topic = Topic::create(n.name, {.capacity = 64, .max_message = kMaxMessage});
  ASSERT_TRUE(topic) << topic.error().message();
  const std::uint64_t count = ferry::test::scaled(100'000);
  const std::array<std::optional<std::chrono::microseconds>, 3> wake_ups = {
      std::chrono::microseconds(1000), std::chrono::microseconds(50), std::nullopt};
  std::array<ferry::test::Event, wake_ups.size()> subscribed;
  std::vector<Child> subscribers;
  for (std::size_t i = 0; i < wake_ups.size(); ++i) {
    subscribers.push_back(Child::spawn([&, i] {
      auto opened = Topic::open(n.name);
      FERRY_CHILD_CHECK(opened);
      auto subscriber = opened->subscribe({.coalesce = wake_ups[i]});
      FERRY_CHILD_CHECK(subscriber);
      subscribed[i].signal();
      std::vector<std::byte> buffer(kMaxMessage);
      for (std::uint64_t expected = 0; expected < count; ++expected) {
        auto delivery = subscriber->receive(buffer);
        FERRY_CHILD_CHECK(delivery);
        FERRY_CHILD_CHECK(delivery->sequence == expected && delivery->lost == 0);
        FERRY_CHILD_CHECK(intact(std::span(buffer).first(delivery->size), 1, expected));
      }
      return 0;
    }));
  }
  for (auto& event : subscribed) ASSERT_TRUE(event.wait());
  auto publisher = Child::spawn([&] { return publish_sequence(n.name, 1, count, WaitStrategy::adaptive()); });
  EXPECT_EQ(publisher.wait_for(kWatchdog), 0);
  for (auto& subscriber : subscribers) EXPECT_EQ(subscriber.wait_for(kWatchdog), 0);
  EXPECT_EQ(topic->stats().published, count);
}

struct LossReport {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> lost{0};
  std::atomic<std::uint64_t> lost_total{0};  // as TopicSubscriber::lost() says
  std::atomic<std::uint64_t> first{0};
  std::atomic<bool> damaged{false};
};

TEST(TopicDropOldest, AStalledSubscriberProcessReportsExactlyWhatItLost) {
  TopicName n;
  constexpr std::uint64_t kCapacity = 64;
  auto topic = Topic::create(n.name, {.capacity = kCapacity, .max_message = kMaxMessage,
                                      .policy = SlowSubscriber::drop_oldest});
  ASSERT_TRUE(topic);
  SharedAnonymous<LossReport> report;
  ferry::test::Event subscribed, published;
  auto subscriber = Child::spawn([&] {
    auto opened = Topic::open(n.name);
    FERRY_CHILD_CHECK(opened);
    auto stalled = opened->subscribe();
    FERRY_CHILD_CHECK(stalled);
    subscribed.signal();
    FERRY_CHILD_CHECK(published.wait(kWatchdog / 2));
    std::vector<std::byte> buffer(kMaxMessage);
    std::uint64_t expected = 0;
    for (;;) {
      auto delivery = stalled->try_receive(buffer);
      FERRY_CHILD_CHECK(delivery);
      if (!delivery->has_value()) break;
      if (report->received == 0) report->first = (*delivery)->sequence;
      expected += (*delivery)->lost;
      report->lost += (*delivery)->lost;
      if ((*delivery)->sequence != expected ||
          !intact(std::span(buffer).first((*delivery)->size), 2, expected)) {
        report->damaged = true;
      }
      ++expected;
      ++report->received;
    }
    report->lost_total = stalled->lost();
    return 0;
  });
  ASSERT_TRUE(subscribed.wait());
  const std::uint64_t count = ferry::test::scaled(10'000) + kCapacity + 7;
  ASSERT_EQ(publish_sequence(n.name, 2, count, WaitStrategy::adaptive()), 0);
  published.signal();
  EXPECT_EQ(subscriber.wait_for(kWatchdog), 0);
  EXPECT_FALSE(report->damaged.load());
  EXPECT_EQ(report->received.load(), kCapacity) << "the ring's worth";
  EXPECT_EQ(report->lost.load(), count - kCapacity) << "exactly the messages overwritten";
  EXPECT_EQ(report->lost_total.load(), count - kCapacity);
  EXPECT_EQ(report->first.load(), count - kCapacity);
}

// A subscriber reading while a publisher laps it again and again: each copy
// that raced with an overwrite is thrown away, never returned, and every
// message is either received whole or counted lost.
TEST(TopicDropOldest, ACopyRacingAnOverwriteIsNeverReturned) {
  TopicName n;
  auto topic = Topic::create(n.name, {.capacity = 8, .max_message = kMaxMessage,
                                      .policy = SlowSubscriber::drop_oldest});
  ASSERT_TRUE(topic);
  auto subscriber = topic->subscribe();
  ASSERT_TRUE(subscriber);
  const std::uint64_t count = ferry::test::scaled(200'000);
  auto publisher = Child::spawn([&] { return publish_sequence(n.name, 3, count, WaitStrategy::adaptive()); });
  std::vector<std::byte> buffer(kMaxMessage);
  std::uint64_t expected = 0, received = 0, lost = 0;
  std::mt19937 random(5);
  while (expected < count) {
    auto delivery = subscriber->receive_for(buffer, kWatchdog);
    ASSERT_TRUE(delivery) << delivery.error().message();
    expected += delivery->lost;
    lost += delivery->lost;
    ASSERT_EQ(delivery->sequence, expected);
    ASSERT_TRUE(intact(std::span(buffer).first(delivery->size), 3, expected)) << "message " << expected;
    ++expected;
    ++received;
    // Now and then fall behind, so that copies race with overwrites.
    if (random() % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(random() % 200));
  }
  EXPECT_EQ(publisher.wait_for(kWatchdog), 0);
  EXPECT_EQ(received + lost, count);
  EXPECT_EQ(subscriber->lost(), lost);
  std::printf("%llu received whole, %llu lost (counted)\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(lost));
}

TEST(TopicCrash, AKilledSubscriberStopsHoldingABlockedPublisher) {
  TopicName n;
  constexpr std::uint64_t kCapacity = 16;
  auto topic = Topic::create(n.name, {.capacity = kCapacity, .max_message = kMaxMessage});
  ASSERT_TRUE(topic);
  const std::uint64_t count = kCapacity * 8;
  ferry::test::Event victim_subscribed, reader_subscribed;
  auto victim = Child::spawn([&] {
    auto subscriber = Topic::open(n.name)->subscribe();
    FERRY_CHILD_CHECK(subscriber);
    victim_subscribed.signal();
    for (;;) ::pause();  // never reads
    return 0;
  });
  auto reader = Child::spawn([&] {
    auto subscriber = Topic::open(n.name)->subscribe();
    FERRY_CHILD_CHECK(subscriber);
    reader_subscribed.signal();
    std::vector<std::byte> buffer(kMaxMessage);
    for (std::uint64_t expected = 0; expected < count; ++expected) {
      auto delivery = subscriber->receive(buffer);
      FERRY_CHILD_CHECK(delivery && delivery->sequence == expected);
      FERRY_CHILD_CHECK(intact(std::span(buffer).first(delivery->size), 4, expected));
    }
    return 0;
  });
  ASSERT_TRUE(victim_subscribed.wait());
  ASSERT_TRUE(reader_subscribed.wait());
  auto publisher = Child::spawn([&] { return publish_sequence(n.name, 4, count, WaitStrategy::adaptive()); });
  // The publisher fills the ring and waits for the victim.
  const auto watchdog = ferry::deadline_after(kWatchdog);
  while (topic->stats().published < kCapacity && ferry::steady_clock::now() < watchdog) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(topic->stats().published, kCapacity) << "held back by the victim";
  std::this_thread::sleep_for(20ms);  // (most likely asleep by now; either way it must go on)
  victim.kill(SIGKILL);
  EXPECT_EQ(victim.wait_for(kWatchdog), 128 + SIGKILL);
  EXPECT_EQ(publisher.wait_for(kWatchdog), 0) << "the publisher went on";
  EXPECT_EQ(reader.wait_for(kWatchdog), 0);
  const auto stats = topic->stats();
  EXPECT_EQ(stats.published, count);
  EXPECT_TRUE(stats.subscribers.empty()) << "the victim's entry was freed";
}

struct SteadyPublisher {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{UINT64_MAX};  // how many, once it stopped
};

TEST(TopicCrash, PublishersKilledMidPublishNeverTearAMessageOrStopOthers) {
  TopicName n;
  auto topic = Topic::create(n.name, {.capacity = 256, .max_message = kMaxMessage});
  ASSERT_TRUE(topic);
  auto subscriber = topic->subscribe();
  ASSERT_TRUE(subscriber);
  SharedAnonymous<SteadyPublisher> steady_state;
  ferry::test::Event steady_connected;
  auto steady = Child::spawn([&] {
    return publish_sequence(n.name, 0, UINT64_MAX, WaitStrategy::adaptive(), &steady_connected, &steady_state->stop,
                            &steady_state->published);
  });
  ASSERT_TRUE(steady_connected.wait());

  const std::size_t kills = ferry::test::scaled(100);
  std::vector<std::uint64_t> next(kills + 1);  // per origin: the next sequence expected
  std::vector<std::byte> buffer(kMaxMessage);
  std::uint64_t received = 0;
  const auto take = [&](ferry::deadline until) {
    while (ferry::steady_clock::now() < until) {
      auto delivery = subscriber->receive_until(buffer, until);
      if (!delivery) {
        ASSERT_EQ(delivery.error().code(), ferry::errc::timed_out) << delivery.error().message();
        return;
      }
      const auto checked = ferry::test::decode_checked(std::span(buffer).first(delivery->size), kMessageWords);
      ASSERT_TRUE(checked.intact) << "a torn message, sequence " << delivery->sequence;
      ASSERT_LE(checked.origin, kills);
      ASSERT_EQ(checked.sequence, next[checked.origin]) << "origin " << checked.origin;
      ++next[checked.origin];
      ++received;
    }
  };
  std::mt19937 random(11);
  for (std::uint64_t origin = 1; origin <= kills; ++origin) {
    ferry::test::Event connected;
    auto victim = Child::spawn(
        [&] { return publish_sequence(n.name, origin, UINT64_MAX, WaitStrategy::adaptive(), &connected); });
    ASSERT_TRUE(connected.wait());
    take(ferry::deadline_after(std::chrono::microseconds(500 + random() % 4000)));
    ASSERT_FALSE(HasFatalFailure());
    victim.kill(SIGKILL);
    ASSERT_EQ(victim.wait_for(kWatchdog), 128 + SIGKILL);
  }
  // Reading on while the steady publisher stops: it may be waiting for room.
  steady_state->stop = true;
  const auto watchdog = ferry::deadline_after(kWatchdog);
  while (steady_state->published.load() == UINT64_MAX && ferry::steady_clock::now() < watchdog) {
    take(ferry::deadline_after(10ms));
    ASSERT_FALSE(HasFatalFailure());
  }
  ASSERT_EQ(steady.wait_for(kWatchdog), 0) << "the steady publisher kept going";
  const std::uint64_t steady_count = steady_state->published.load();
  while (next[0] < steady_count && ferry::steady_clock::now() < watchdog) {
    take(ferry::deadline_after(100ms));
    ASSERT_FALSE(HasFatalFailure());
  }
  EXPECT_EQ(next[0], steady_count) << "every message of the steady publisher, in order";
  std::printf("%zu publishers killed mid-stream; %llu intact messages, %llu from the steady one\n", kills,
              static_cast<unsigned long long>(received), static_cast<unsigned long long>(steady_count));
}

}  // namespace
