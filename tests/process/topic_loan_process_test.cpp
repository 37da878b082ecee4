// Topic loans between real processes: four subscriber processes read every
// loaned payload in place, byte-exact; publishers SIGKILLed mid-loan and
// subscribers SIGKILLed mid-read, many times, leave the pool where it started
// and never show a reader a torn or recycled payload.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::SlowSubscriber;
using ferry::Topic;
using ferry::WaitStrategy;
using ferry::test::Child;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 300s;
constexpr std::size_t kKiB = 1024;

struct TopicName {
  TopicName() : name(ferry::test::unique_name("tloan")) {}
  ~TopicName() { (void)Topic::destroy(name); }
  std::string name;
};

// A payload that names itself: [origin][sequence], then words derived from
// both, so a torn, recycled or shifted chunk is caught. 16 B .. 128 KiB.
std::size_t payload_size(std::uint64_t sequence) { return 16 + (sequence * 2654435761u >> 5) % (128 * kKiB / 8) * 8; }

std::uint64_t payload_word(std::uint64_t origin, std::uint64_t sequence, std::size_t index) {
  return (origin * 0x9E3779B97F4A7C15ull) ^ (sequence * 0xBF58476D1CE4E5B9ull) ^ (index * 0x94D049BB133111EBull);
}

void write_payload(std::span<std::byte> bytes, std::uint64_t origin, std::uint64_t sequence) {
  auto* words = reinterpret_cast<std::uint64_t*>(bytes.data());
  words[0] = origin;
  words[1] = sequence;
  for (std::size_t i = 2; i < bytes.size() / 8; ++i) words[i] = payload_word(origin, sequence, i);
}

struct Payload {
  std::uint64_t origin = 0;
  std::uint64_t sequence = 0;
  bool intact = false;
};

Payload read_payload(std::span<const std::byte> bytes) {
  if (bytes.size() < 16 || bytes.size() % 8 != 0) return {};
  const auto* words = reinterpret_cast<const std::uint64_t*>(bytes.data());
  Payload payload{words[0], words[1], bytes.size() == payload_size(words[1])};
  for (std::size_t i = 2; payload.intact && i < bytes.size() / 8; ++i) {
    payload.intact = words[i] == payload_word(payload.origin, payload.sequence, i);
  }
  return payload;
}

// Publishes loans 0, 1, ... of `origin` until `count` or `stop`; signals
// `connected` once it is publishing (after its third message).
int publish_loans(const std::string& name, std::uint64_t origin, std::uint64_t count,
                  ferry::test::Event* connected = nullptr, const std::atomic<bool>* stop = nullptr,
                  std::atomic<std::uint64_t>* published = nullptr) {
  auto topic = Topic::open(name);
  FERRY_CHILD_CHECK(topic);
  auto publisher = topic->publisher();
  FERRY_CHILD_CHECK(publisher);
  std::uint64_t sequence = 0;
  for (; sequence < count && !(stop && stop->load()); ++sequence) {
    if (sequence == 3 && connected) connected->signal();
    auto loan = publisher->loan(payload_size(sequence));
    if (!loan) std::fprintf(stderr, "%s\n", loan.error().message().c_str());
    FERRY_CHILD_CHECK(loan);
    write_payload(loan->data(), origin, sequence);
    FERRY_CHILD_CHECK(publisher->publish(std::move(*loan)));
  }
  if (published) published->store(sequence);
  return 0;
}

std::size_t in_use(Topic& topic) {
  auto publisher = topic.publisher();
  auto usage = publisher->loan_usage();
  return usage ? usage->in_use : SIZE_MAX;
}

TEST(TopicLoanAcrossProcesses, FourSubscriberProcessesReadEveryLoanInPlace) {
  TopicName n;
  auto topic = Topic::create(n.name, {.capacity = 64, .max_message = 64, .loans = {.limit = 8 << 20}});
  ASSERT_TRUE(topic) << topic.error().message();
  const std::uint64_t count = ferry::test::scaled(5'000);
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
      for (std::uint64_t expected = 0; expected < count; ++expected) {
        auto view = subscriber->peek();
        FERRY_CHILD_CHECK(view);
        FERRY_CHILD_CHECK(view->sequence == expected && view->lost == 0);
        const Payload payload = read_payload(view->data);
        FERRY_CHILD_CHECK(payload.intact && payload.origin == 1 && payload.sequence == expected);
        auto released = subscriber->release();
        FERRY_CHILD_CHECK(released && *released);
      }
      return 0;
    }));
  }
  for (auto& event : subscribed) ASSERT_TRUE(event.wait());
  auto publisher = Child::spawn([&] { return publish_loans(n.name, 1, count); });
  EXPECT_EQ(publisher.wait_for(kWatchdog), 0);
  for (auto& subscriber : subscribers) EXPECT_EQ(subscriber.wait_for(kWatchdog), 0);
  EXPECT_EQ(topic->stats().published, count);
  EXPECT_EQ(in_use(*topic), 0u) << "every chunk back in the pool";
}

struct Steady {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{UINT64_MAX};
  std::atomic<std::uint64_t> damaged{0};
};

TEST(TopicLoanCrash, PublishersKilledMidLoanLeaveNoChunkBehind) {
  TopicName n;
  auto topic = Topic::create(n.name, {.capacity = 64, .max_message = 64, .loans = {.limit = 4 << 20}});
  ASSERT_TRUE(topic);
  auto subscriber = topic->subscribe();
  ASSERT_TRUE(subscriber);
  const std::size_t kills = ferry::test::scaled(40);
  std::vector<std::uint64_t> next(kills + 1);  // per origin: the next sequence expected
  std::uint64_t received = 0;
  const auto take = [&](ferry::deadline until) {
    while (ferry::steady_clock::now() < until) {
      auto view = subscriber->peek_until(until);
      if (!view) {
        ASSERT_EQ(view.error().code(), ferry::errc::timed_out) << view.error().message();
        return;
      }
      const Payload payload = read_payload(view->data);
      ASSERT_TRUE(payload.intact) << "a torn or recycled payload, message " << view->sequence;
      ASSERT_LE(payload.origin, kills);
      ASSERT_EQ(payload.sequence, next[payload.origin]) << "origin " << payload.origin;
      ASSERT_EQ(view->lost, 0u);
      ASSERT_TRUE(*subscriber->release());
      ++next[payload.origin];
      ++received;
    }
  };
  std::mt19937 random(17);
  for (std::uint64_t origin = 1; origin <= kills; ++origin) {
    ferry::test::Event connected;
    auto victim = Child::spawn([&] { return publish_loans(n.name, origin, UINT64_MAX, &connected); });
    // Read until it has published a few, and on for a random while.
    const auto connected_by = ferry::deadline_after(kWatchdog);
    while (!connected.wait(0ms) && ferry::steady_clock::now() < connected_by) {
      take(ferry::deadline_after(1ms));
      ASSERT_FALSE(HasFatalFailure());
    }
    take(ferry::deadline_after(std::chrono::microseconds(random() % 3000)));
    ASSERT_FALSE(HasFatalFailure());
    victim.kill(SIGKILL);
    ASSERT_EQ(victim.wait_for(kWatchdog), 128 + SIGKILL);
  }
  take(ferry::deadline_after(50ms));  // what the last victim published
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(in_use(*topic), 0u) << "the dead publishers' loans and unpublished chunks are free";
  std::printf("%zu publishers killed mid-loan; %llu intact payloads\n", kills,
              static_cast<unsigned long long>(received));
}

TEST(TopicLoanCrash, SubscribersKilledMidReadNeverSeeARecycledChunk) {
  TopicName n;
  // A small pool, so that chunks are reused all the time.
  auto topic = Topic::create(n.name, {.capacity = 64, .max_message = 64, .loans = {.limit = 1 << 20}});
  ASSERT_TRUE(topic);
  SharedAnonymous<Steady> steady;
  ferry::test::Event reader_ready;
  // The steady subscriber checks every payload; the victims check what they read before they die.
  auto reader = Child::spawn([&] {
    auto opened = Topic::open(n.name);
    FERRY_CHILD_CHECK(opened);
    auto subscriber = opened->subscribe();
    FERRY_CHILD_CHECK(subscriber);
    reader_ready.signal();
    for (std::uint64_t expected = 0;; ++expected) {
      const std::uint64_t published = steady->published.load();
      if (expected == published) return 0;
      auto view = subscriber->peek_for(100ms);
      if (!view && view.error().code() == ferry::errc::timed_out) {
        --expected;
        continue;
      }
      FERRY_CHILD_CHECK(view);
      const Payload payload = read_payload(view->data);
      if (!payload.intact || payload.sequence != expected || view->lost != 0) steady->damaged.fetch_add(1);
      FERRY_CHILD_CHECK(*subscriber->release());
    }
  });
  ASSERT_TRUE(reader_ready.wait());
  ferry::test::Event connected;
  auto publisher = Child::spawn(
      [&] { return publish_loans(n.name, 0, UINT64_MAX, &connected, &steady->stop, &steady->published); });
  ASSERT_TRUE(connected.wait());

  // Each dead subscriber holds the publisher back until it is found dead
  // (~100 ms): fewer kills than for publishers.
  const std::size_t kills = ferry::test::scaled(20);
  std::mt19937 random(23);
  for (std::size_t k = 0; k < kills; ++k) {
    ferry::test::Event subscribed;
    auto victim = Child::spawn([&] {
      auto opened = Topic::open(n.name);
      FERRY_CHILD_CHECK(opened);
      auto subscriber = opened->subscribe();
      FERRY_CHILD_CHECK(subscriber);
      for (std::uint64_t read = 0;; ++read) {
        if (read == 3) subscribed.signal();  // killed while reading from here on
        auto view = subscriber->peek();
        FERRY_CHILD_CHECK(view);
        if (!read_payload(view->data).intact) steady->damaged.fetch_add(1);
        FERRY_CHILD_CHECK(*subscriber->release());
      }
    });
    ASSERT_TRUE(subscribed.wait());
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 2000));
    victim.kill(SIGKILL);
    ASSERT_EQ(victim.wait_for(kWatchdog), 128 + SIGKILL);
  }
  steady->stop = true;
  ASSERT_EQ(publisher.wait_for(kWatchdog), 0) << "the dead subscribers held the publisher back for good";
  ASSERT_EQ(reader.wait_for(kWatchdog), 0);
  EXPECT_EQ(steady->damaged.load(), 0u) << "a torn, recycled or out-of-order payload";
  EXPECT_GT(steady->published.load(), 0u);
  EXPECT_EQ(in_use(*topic), 0u) << "the dead subscribers hold no chunk";
  std::printf("%zu subscribers killed mid-read; %llu payloads through\n", kills,
              static_cast<unsigned long long>(steady->published.load()));
}

}  // namespace
