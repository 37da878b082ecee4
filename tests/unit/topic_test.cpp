// Topic within one process (threads for publishers and subscribers); the
// process variants, with SIGKILL, are in tests/process/topic_process_test.cpp.
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry/patterns/detail/topic_layout.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::SlowSubscriber;
using ferry::Topic;
using ferry::TopicOptions;
using ferry::WaitStrategy;
using ferry::detail::TopicControl;

std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> data(size);
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::byte>((seed * 131 + i * 7) & 0xff);
  return data;
}

// Message `sequence` of a test stream: its sequence in the first 8 bytes,
// then a pattern derived from it; 8 .. 200 bytes.
std::vector<std::byte> numbered(std::uint64_t sequence) {
  auto data = pattern(8 + sequence % 193, sequence);
  std::memcpy(data.data(), &sequence, 8);
  return data;
}

bool is_numbered(std::span<const std::byte> message, std::uint64_t sequence) {
  const auto expected = numbered(sequence);
  return message.size() == expected.size() && std::memcmp(message.data(), expected.data(), expected.size()) == 0;
}

struct Fixture {
  explicit Fixture(TopicOptions options = {}) : name(ferry::test::unique_name("topic")) {
    auto made = Topic::create(name, options);
    EXPECT_TRUE(made) << made.error().message();
    topic.emplace(std::move(*made));
  }
  ~Fixture() {
    topic.reset();
    (void)Topic::destroy(name);
  }
  // The topic's segment mapped a second time, to scribble on.
  TopicControl& raw() {
    if (!raw_segment) raw_segment.emplace(std::move(*ferry::Segment::open(name)));
    return *reinterpret_cast<TopicControl*>(raw_segment->data().data());
  }
  std::byte* raw_slot(std::uint64_t sequence) {
    raw();
    return raw_segment->data().data() + ferry::detail::kTopicSlotsOffset +
           (sequence % topic->capacity()) * ferry::detail::topic_slot_size(topic->max_message());
  }
  std::string name;
  std::optional<Topic> topic;
  std::optional<ferry::Segment> raw_segment;
};

TEST(Topic, CreateOpenAndDestroyErrors) {
  EXPECT_EQ(Topic::create("bad/name").error().code(), errc::invalid_argument);
  const std::string name = ferry::test::unique_name("topic");
  EXPECT_EQ(Topic::create(name, {.capacity = 0}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Topic::create(name, {.capacity = (1u << 24) + 1}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Topic::create(name, {.max_message = 0}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Topic::create(name, {.max_message = (std::size_t{1} << 30) + 1}).error().code(), errc::invalid_argument);
  auto history = Topic::create(name, {.capacity = 8, .history = 9});
  ASSERT_FALSE(history);
  EXPECT_EQ(history.error().code(), errc::invalid_argument);
  EXPECT_NE(history.error().message().find("history (9) is beyond the capacity (8)"), std::string::npos)
      << history.error().message();
  EXPECT_EQ(Topic::open(name).error().code(), errc::not_found);

  auto made = Topic::create(name, {.capacity = 8, .max_message = 100, .history = 4});
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(made->capacity(), 8u);
  EXPECT_EQ(made->max_message(), 100u);
  EXPECT_EQ(made->history(), 4u);
  EXPECT_EQ(made->policy(), SlowSubscriber::block);
  EXPECT_EQ(Topic::create(name).error().code(), errc::already_exists);
  auto opened = Topic::open(name);
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(opened->capacity(), 8u);
  auto too_far = opened->subscribe({.history = 5});
  ASSERT_FALSE(too_far);
  EXPECT_EQ(too_far.error().code(), errc::invalid_argument);
  EXPECT_NE(too_far.error().message().find("topic '" + name + "'"), std::string::npos);

  auto read_only = Topic::open(name, {.access = ferry::Access::read_only});
  ASSERT_TRUE(read_only);
  EXPECT_EQ(read_only->publisher().error().code(), errc::permission_denied);
  EXPECT_EQ(read_only->subscribe().error().code(), errc::permission_denied);

  EXPECT_TRUE(Topic::destroy(name));
  EXPECT_EQ(Topic::open(name).error().code(), errc::not_found);
}

TEST(Topic, OpeningSomethingElseIsRefused) {
  const std::string name = ferry::test::unique_name("not-a-topic");
  auto plain = ferry::Segment::create(name, {.size = 8192});
  ASSERT_TRUE(plain);
  EXPECT_EQ(Topic::open(name).error().code(), errc::invalid_argument);
  EXPECT_TRUE(ferry::Segment::destroy(name));
  auto channel = ferry::Channel::create(name, {.capacity = 4096, .max_message = 64});
  ASSERT_TRUE(channel);
  auto opened = Topic::open(name);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::invalid_argument);
  EXPECT_NE(opened.error().message().find("not a topic"), std::string::npos) << opened.error().message();
  EXPECT_TRUE(ferry::Channel::destroy(name));
}

class TopicStreams : public ::testing::TestWithParam<std::tuple<SlowSubscriber, WaitStrategy>> {};

// Subscribers that keep up see every message, whole and in order; under
// drop_oldest one that fell behind reports exactly what it missed.
TEST_P(TopicStreams, EverySubscriberSeesEveryMessageInOrder) {
  const auto [policy, strategy] = GetParam();
  Fixture f({.capacity = 64, .max_message = 200, .policy = policy});
  constexpr int kSubscribers = 3;
  std::vector<ferry::TopicSubscriber> subscribers;
  for (int i = 0; i < kSubscribers; ++i) {
    auto subscriber = f.topic->subscribe();
    ASSERT_TRUE(subscriber) << subscriber.error().message();
    subscribers.push_back(std::move(*subscriber));
  }
  const std::uint64_t count = ferry::test::scaled(10'000);
  std::vector<std::thread> readers;
  std::vector<std::uint64_t> received(kSubscribers), lost(kSubscribers);
  std::vector<std::string> failures(kSubscribers);
  for (int i = 0; i < kSubscribers; ++i) {
    readers.emplace_back([&, i, strategy = strategy] {
      std::vector<std::byte> buffer(200);
      for (std::uint64_t expected = 0; expected < count;) {
        auto delivery = subscribers[static_cast<std::size_t>(i)].receive(buffer, strategy);
        if (!delivery) {
          failures[static_cast<std::size_t>(i)] = delivery.error().message();
          return;
        }
        expected += delivery->lost;
        lost[static_cast<std::size_t>(i)] += delivery->lost;
        if (delivery->sequence != expected ||
            !is_numbered(std::span(buffer).first(delivery->size), delivery->sequence)) {
          failures[static_cast<std::size_t>(i)] = "message " + std::to_string(expected) + " is wrong";
          return;
        }
        ++expected;
        ++received[static_cast<std::size_t>(i)];
      }
    });
  }
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher);
  for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
    ASSERT_TRUE(publisher->publish(numbered(sequence), strategy));
  }
  for (auto& reader : readers) reader.join();
  for (int i = 0; i < kSubscribers; ++i) {
    const auto index = static_cast<std::size_t>(i);
    EXPECT_EQ(failures[index], "") << "subscriber " << i;
    EXPECT_EQ(received[index] + lost[index], count) << "subscriber " << i;
    EXPECT_EQ(subscribers[index].lost(), lost[index]);
    if (policy == SlowSubscriber::block) {
      EXPECT_EQ(lost[index], 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, TopicStreams,
    ::testing::Combine(::testing::Values(SlowSubscriber::block, SlowSubscriber::drop_oldest),
                       ::testing::Values(WaitStrategy::adaptive(), WaitStrategy::busy_poll(), WaitStrategy::block())),
    [](const auto& param_info) {
      return std::string(ferry::to_string(std::get<0>(param_info.param))) + "_" +
             ferry::test::strategy_name({std::get<1>(param_info.param), param_info.index});
    });

TEST(Topic, SeveralPublishersKeepTheirOwnOrder) {
  Fixture f({.capacity = 16, .max_message = 16});
  auto subscriber = f.topic->subscribe();
  ASSERT_TRUE(subscriber);
  constexpr std::uint64_t kPublishers = 3;
  const std::uint64_t each = ferry::test::scaled(5'000);
  std::vector<std::thread> threads;
  for (std::uint64_t p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      auto publisher = f.topic->publisher();
      ASSERT_TRUE(publisher);
      for (std::uint64_t i = 0; i < each; ++i) {
        const std::uint64_t words[2] = {p, i};
        ASSERT_TRUE(publisher->publish(std::as_bytes(std::span(words))));
      }
    });
  }
  std::vector<std::uint64_t> next(kPublishers);
  std::uint64_t words[2];
  for (std::uint64_t n = 0; n < each * kPublishers; ++n) {
    auto delivery = subscriber->receive(std::as_writable_bytes(std::span(words)));
    ASSERT_TRUE(delivery) << delivery.error().message();
    ASSERT_EQ(delivery->size, 16u);
    ASSERT_EQ(delivery->sequence, n);
    ASSERT_LT(words[0], kPublishers);
    ASSERT_EQ(words[1], next[words[0]]++) << "publisher " << words[0];
  }
  for (auto& thread : threads) thread.join();
}

TEST(Topic, LateSubscribersGetTheHistoryTheyAskFor) {
  Fixture f({.capacity = 8, .max_message = 200, .history = 4});
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher);
  std::vector<std::byte> buffer(200);

  auto early = f.topic->subscribe({.history = 4});
  ASSERT_TRUE(early);
  EXPECT_FALSE(early->try_receive(buffer)->has_value()) << "nothing published yet";
  ASSERT_TRUE(publisher->publish(numbered(0)));
  ASSERT_TRUE(publisher->publish(numbered(1)));
  auto few = f.topic->subscribe({.history = 4});
  ASSERT_TRUE(few);
  for (std::uint64_t sequence : {0, 1}) {
    auto delivery = few->try_receive(buffer);
    ASSERT_TRUE(delivery && delivery->has_value());
    EXPECT_EQ((*delivery)->sequence, sequence) << "fewer than asked for were published";
  }
  EXPECT_FALSE(few->try_receive(buffer)->has_value());

  for (std::uint64_t sequence = 2; sequence < 10; ++sequence) {
    // `early` and `few` are the readers; keep them within the ring (block).
    ASSERT_TRUE(*publisher->try_publish(numbered(sequence)));
    ASSERT_TRUE(early->try_receive(buffer)->has_value());
    ASSERT_TRUE(few->try_receive(buffer)->has_value());
  }
  ASSERT_TRUE(early->try_receive(buffer)->has_value());
  ASSERT_TRUE(early->try_receive(buffer)->has_value());
  for (const std::size_t asked : {0u, 2u, 4u}) {
    auto late = f.topic->subscribe({.history = asked});
    ASSERT_TRUE(late);
    EXPECT_EQ(late->position(), 10 - asked);
    for (std::uint64_t sequence = 10 - asked; sequence < 10; ++sequence) {
      auto delivery = late->try_receive(buffer);
      ASSERT_TRUE(delivery && delivery->has_value());
      EXPECT_EQ((*delivery)->sequence, sequence);
      EXPECT_TRUE(is_numbered(std::span(buffer).first((*delivery)->size), sequence));
    }
    EXPECT_FALSE(late->try_receive(buffer)->has_value()) << asked;
  }
}

TEST(Topic, TryAndTimedForms) {
  Fixture f({.capacity = 4, .max_message = 64});
  auto subscriber = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(subscriber && publisher);
  std::vector<std::byte> buffer(64);
  auto empty = subscriber->try_receive(buffer);
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_value()) << "an empty topic gives an empty result";
  auto timed = subscriber->receive_for(buffer, 20ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  EXPECT_NE(timed.error().message().find("topic '" + f.name + "'"), std::string::npos);

  ASSERT_TRUE(publisher->publish_for(pattern(10, 1), 1s));
  ASSERT_TRUE(*publisher->try_publish(pattern(20, 2)));
  ASSERT_TRUE(publisher->publish_until(pattern(0, 3), ferry::deadline_after(1s), WaitStrategy::block()));
  auto first = subscriber->receive_for(buffer, 1s);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->size, 10u);
  EXPECT_EQ(first->lost, 0u);
  EXPECT_EQ(std::memcmp(buffer.data(), pattern(10, 1).data(), 10), 0);
  auto second = subscriber->receive_until(buffer, ferry::deadline_after(1s), WaitStrategy::busy_poll());
  ASSERT_TRUE(second);
  EXPECT_EQ(second->size, 20u);
  auto third = subscriber->try_receive(buffer);
  ASSERT_TRUE(third && third->has_value());
  EXPECT_EQ((*third)->size, 0u) << "an empty message is a message";
  EXPECT_EQ((*third)->sequence, 2u);
}

// Coalesced wake-ups (SubscribeOptions::coalesce): the interval is checked,
// a timed receive still ends at its deadline, and a lone message is taken
// once the interval passes, with no further publish to wake the subscriber.
TEST(Topic, CoalescingSubscribersKeepTheirDeadlinesAndTakeALoneMessage) {
  Fixture f({.capacity = 64, .max_message = 64});
  for (const auto wrong : {std::chrono::microseconds(0), std::chrono::microseconds(-5),
                           std::chrono::microseconds(std::chrono::seconds(11))}) {
    auto refused = f.topic->subscribe({.coalesce = wrong});
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code(), errc::invalid_argument);
    EXPECT_NE(refused.error().message().find("coalesced wake-ups"), std::string::npos) << refused.error().message();
  }
  auto idle = f.topic->subscribe({.coalesce = std::chrono::seconds(5)});
  ASSERT_TRUE(idle) << idle.error().message();
  std::vector<std::byte> buffer(64);
  auto timed = idle->receive_for(buffer, 20ms);
  ASSERT_FALSE(timed) << "the caller's deadline comes before the interval";
  EXPECT_EQ(timed.error().code(), errc::timed_out);

  auto lone = f.topic->subscribe({.coalesce = std::chrono::milliseconds(20)});
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(lone && publisher);
  std::thread late([&] {
    std::this_thread::sleep_for(5ms);  // the subscriber is asleep by now (most likely)
    EXPECT_TRUE(publisher->publish(pattern(12, 7)));
  });
  auto delivery = lone->receive_for(buffer, 30s, WaitStrategy::busy_poll());  // coalescing never spins
  late.join();
  ASSERT_TRUE(delivery) << delivery.error().message();
  EXPECT_EQ(delivery->size, 12u);
  EXPECT_EQ(std::memcmp(buffer.data(), pattern(12, 7).data(), 12), 0);

  // Half a ring (32 of 64) published wakes a sleeping one without waiting
  // for its interval (10 s; it is given 8 s).
  auto batched = f.topic->subscribe({.coalesce = std::chrono::seconds(10)});
  ASSERT_TRUE(batched);
  std::thread burst([&] {
    std::this_thread::sleep_for(5ms);
    for (std::uint64_t i = 0; i < f.topic->capacity() / 2; ++i) EXPECT_TRUE(publisher->publish(pattern(8, i)));
  });
  auto first = batched->receive_for(buffer, 8s);
  burst.join();
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->size, 8u);
}

// Message `sequence` of a stream carried in chunks: 16 KiB, numbered.
std::vector<std::byte> numbered_chunk(std::uint64_t sequence) {
  auto data = pattern(16 * 1024, sequence);
  std::memcpy(data.data(), &sequence, 8);
  return data;
}

// Two coalescing subscribers (and one that is not) read a stream far
// longer than what the topic holds, under block. Their interval is the
// longest (10 s): a publisher waits for them at every fill, so wake-ups that
// went missing would stall the stream an interval each time, far past the
// test's timeout. Every message arriving in order proves the wake-ups: in
// the ring, the half-ring notify; in chunks (a pool of 8 chunks, filled at a
// lag of 8 of a half ring of 32), the publisher's call when it has no room.
TEST(Topic, CoalescingSubscribersAreWokenWhenTheyHoldWhatPublishersNeed) {
  struct Case {
    const char* what;
    TopicOptions options;
    std::vector<std::byte> (*message)(std::uint64_t);
  };
  const Case cases[] = {
      {"ring", {.capacity = 8, .max_message = 256}, numbered},
      {"chunks", {.capacity = 64, .max_message = 64, .loans = {.limit = 128 * 1024}}, numbered_chunk},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Fixture f(c.options);
    // Whole half rings: the last message is a half ring's last, so the
    // stream's tail does not wait for the interval either.
    const std::uint64_t count = (ferry::test::scaled(2000) / 32 + 1) * 32;
    std::vector<std::thread> readers;
    std::atomic<std::uint64_t> bad{0};
    for (const bool coalescing : {true, true, false}) {
      ferry::SubscribeOptions options;
      if (coalescing) options.coalesce = std::chrono::seconds(10);
      auto subscriber = f.topic->subscribe(options);
      ASSERT_TRUE(subscriber) << subscriber.error().message();
      readers.emplace_back([&, s = std::make_shared<ferry::TopicSubscriber>(std::move(*subscriber))] {
        std::vector<std::byte> buffer(16 * 1024);
        for (std::uint64_t i = 0; i < count; ++i) {
          auto delivery = s->receive_for(buffer, 120s);  // ends even if the publisher failed
          const auto expected = c.message(i);
          if (!delivery || delivery->sequence != i || delivery->size != expected.size() ||
              std::memcmp(buffer.data(), expected.data(), expected.size()) != 0) {
            ++bad;
            return;
          }
        }
      });
    }
    auto publisher = f.topic->publisher();
    ASSERT_TRUE(publisher);
    for (std::uint64_t i = 0; i < count; ++i) {
      auto published = publisher->publish(c.message(i));
      EXPECT_TRUE(published) << published.error().message();
      if (!published) break;
    }
    for (auto& reader : readers) reader.join();
    EXPECT_EQ(bad.load(), 0u);
  }
}

TEST(Topic, SizesAreCheckedAndATooSmallBufferLeavesTheMessage) {
  // Larger than max_message travels in a chunk (topic_loan_test.cpp), up to the loan limit.
  Fixture f({.capacity = 4, .max_message = 100, .loans = {.limit = 4096}});
  auto subscriber = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  auto large = publisher->publish(pattern(4097, 0));
  ASSERT_FALSE(large);
  EXPECT_EQ(large.error().code(), errc::invalid_argument);
  EXPECT_NE(large.error().message().find("4097 bytes is larger than the chunk limit of 4096"), std::string::npos)
      << large.error().message();
  EXPECT_EQ(publisher->try_publish(pattern(4097, 0)).error().code(), errc::invalid_argument);

  ASSERT_TRUE(publisher->publish(pattern(100, 7)));
  std::vector<std::byte> small(99), enough(100);
  auto refused = subscriber->receive(small);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  EXPECT_NE(refused.error().message().find("100 bytes does not fit a buffer of 99"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(subscriber->try_receive(small).error().code(), errc::invalid_argument);
  auto delivery = subscriber->receive(enough);
  ASSERT_TRUE(delivery);
  EXPECT_EQ(delivery->size, 100u);
  EXPECT_EQ(delivery->sequence, 0u);
  EXPECT_EQ(enough, pattern(100, 7));
}

TEST(Topic, BlockHoldsPublishersWhileTheSlowestIsARingBehind) {
  Fixture f({.capacity = 4, .max_message = 64});
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(*publisher->try_publish(pattern(8, 0))) << "no subscriber, no limit";

  auto fast = f.topic->subscribe();
  auto slow = f.topic->subscribe();
  ASSERT_TRUE(fast && slow);
  std::vector<std::byte> buffer(64);
  for (std::uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(*publisher->try_publish(pattern(8, i)));
    ASSERT_TRUE(fast->try_receive(buffer)->has_value());
  }
  auto full = publisher->try_publish(pattern(8, 4));
  ASSERT_TRUE(full);
  EXPECT_FALSE(*full) << "the slow subscriber is a ring behind";
  auto timed = publisher->publish_for(pattern(8, 4), 20ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);

  auto delivery = slow->try_receive(buffer);
  ASSERT_TRUE(delivery && delivery->has_value());
  EXPECT_EQ((*delivery)->sequence, 10u);
  EXPECT_TRUE(*publisher->try_publish(pattern(8, 4))) << "room for one";
  EXPECT_FALSE(*publisher->try_publish(pattern(8, 5)));
  slow.value() = std::move(*f.topic->subscribe());  // the old one leaves; the new one starts at the end
  EXPECT_TRUE(*publisher->try_publish(pattern(8, 5))) << "a subscriber that left holds nobody back";

  // A publisher blocked on a subscriber goes on when it reads.
  for (bool room = true; room;) {
    while (fast->try_receive(buffer)->has_value()) {
    }
    room = *publisher->try_publish(pattern(8, 6));
  }
  std::thread reader([&] {
    std::this_thread::sleep_for(10ms);
    std::vector<std::byte> mine(64);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(slow->receive(mine));
  });
  for (int i = 0; i < 3; ++i) {
    while (fast->try_receive(buffer)->has_value()) {
    }
    EXPECT_TRUE(publisher->publish(pattern(8, 7)));
  }
  reader.join();
}

TEST(Topic, DropOldestCountsExactlyWhatAStalledSubscriberLost) {
  Fixture f({.capacity = 8, .max_message = 200, .policy = SlowSubscriber::drop_oldest});
  auto stalled = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(stalled && publisher);
  constexpr std::uint64_t kPublished = 100;
  for (std::uint64_t sequence = 0; sequence < kPublished; ++sequence) {
    ASSERT_TRUE(*publisher->try_publish(numbered(sequence))) << "drop_oldest never holds a publisher";
  }
  std::vector<std::byte> buffer(200);
  auto first = stalled->receive(buffer);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->lost, kPublished - 8);
  EXPECT_EQ(first->sequence, kPublished - 8) << "the oldest message still in the ring";
  EXPECT_TRUE(is_numbered(std::span(buffer).first(first->size), first->sequence));
  EXPECT_EQ(stalled->lost(), kPublished - 8);
  for (std::uint64_t sequence = kPublished - 7; sequence < kPublished; ++sequence) {
    auto delivery = stalled->try_receive(buffer);
    ASSERT_TRUE(delivery && delivery->has_value());
    EXPECT_EQ((*delivery)->sequence, sequence);
    EXPECT_EQ((*delivery)->lost, 0u) << "reported once";
    EXPECT_TRUE(is_numbered(std::span(buffer).first((*delivery)->size), sequence));
  }
  const auto stats = f.topic->stats();
  ASSERT_EQ(stats.subscribers.size(), 1u);
  EXPECT_EQ(stats.subscribers[0].lost, kPublished - 8);
  EXPECT_EQ(stats.subscribers[0].received, 8u);
  EXPECT_EQ(stats.subscribers[0].lag, 0u);

  // Lapped again by a little, while a too-small buffer is refused: the loss
  // is kept for the next delivery.
  for (std::uint64_t sequence = kPublished; sequence < kPublished + 10; ++sequence) {
    ASSERT_TRUE(*publisher->try_publish(numbered(sequence)));
  }
  std::vector<std::byte> tiny(1);
  EXPECT_EQ(stalled->try_receive(tiny).error().code(), errc::invalid_argument);
  auto after = stalled->try_receive(buffer);
  ASSERT_TRUE(after && after->has_value());
  EXPECT_EQ((*after)->lost, 2u);
  EXPECT_EQ((*after)->sequence, kPublished + 2);
  EXPECT_EQ(stalled->lost(), kPublished - 8 + 2);
}

TEST(Topic, ADeadSubscriberHoldsNobodyBackAndItsEntryIsReused) {
  Fixture f({.capacity = 4, .max_message = 64});
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher);
  // A subscriber of a process that does not exist, a ring behind.
  const std::uint64_t dead = (std::uint64_t{std::numeric_limits<std::int32_t>::max()} << 32) | 12345;
  auto& control = f.raw();
  control.written.store(4);
  control.subscribers[5].cursor.store(0);
  control.subscribers[5].owner.store(dead);
  EXPECT_EQ(f.topic->stats().subscribers.size(), 1u);
  EXPECT_FALSE(f.topic->stats().subscribers[0].alive);
  EXPECT_TRUE(*publisher->try_publish(pattern(8, 0))) << "its entry is freed";
  EXPECT_EQ(control.subscribers[5].owner.load(), 0u);
  EXPECT_TRUE(f.topic->stats().subscribers.empty());

  // With every entry taken, subscribe() takes a dead subscriber's.
  std::vector<ferry::TopicSubscriber> live;
  for (std::size_t i = 0; i + 1 < Topic::kMaxSubscribers; ++i) live.push_back(std::move(*f.topic->subscribe()));
  for (auto& entry : control.subscribers) {
    if (entry.owner.load() == 0) entry.owner.store(dead);
  }
  auto reused = f.topic->subscribe();
  ASSERT_TRUE(reused) << reused.error().message();
  EXPECT_EQ(f.topic->stats().subscribers.size(), Topic::kMaxSubscribers);
}

TEST(Topic, FullTablesAreAClearError) {
  Fixture f({.capacity = 4, .max_message = 64});
  std::vector<ferry::TopicSubscriber> subscribers;
  for (std::size_t i = 0; i < Topic::kMaxSubscribers; ++i) {
    auto subscriber = f.topic->subscribe();
    ASSERT_TRUE(subscriber) << i << ": " << subscriber.error().message();
    subscribers.push_back(std::move(*subscriber));
  }
  auto refused = f.topic->subscribe();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::limit_reached);
  EXPECT_NE(refused.error().message().find("all 64 subscriber entries are held by live subscribers"),
            std::string::npos)
      << refused.error().message();
  subscribers.pop_back();
  EXPECT_TRUE(f.topic->subscribe()) << "a subscriber that left frees its entry";

  std::vector<ferry::TopicPublisher> publishers;
  for (std::size_t i = 0; i < Topic::kMaxPublishers; ++i) publishers.push_back(std::move(*f.topic->publisher()));
  EXPECT_EQ(f.topic->publisher().error().code(), errc::limit_reached);
  EXPECT_EQ(f.topic->stats().publishers.size(), Topic::kMaxPublishers);
  publishers.pop_back();
  EXPECT_TRUE(f.topic->publisher());
}

TEST(Topic, StatsShowPublishersAndEachSubscribersLag) {
  Fixture f({.capacity = 8, .max_message = 64, .policy = SlowSubscriber::drop_oldest, .history = 2});
  auto publisher = f.topic->publisher();
  auto reader = f.topic->subscribe();
  auto idle = f.topic->subscribe();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(publisher->publish(pattern(8, 0)));
  std::vector<std::byte> buffer(64);
  ASSERT_TRUE(reader->receive(buffer));
  ASSERT_TRUE(reader->receive(buffer));
  const auto stats = f.topic->stats();
  EXPECT_EQ(stats.name, f.name);
  EXPECT_EQ(stats.policy, SlowSubscriber::drop_oldest);
  EXPECT_EQ(stats.capacity, 8u);
  EXPECT_EQ(stats.history, 2u);
  EXPECT_EQ(stats.published, 5u);
  ASSERT_EQ(stats.publishers.size(), 1u);
  EXPECT_EQ(stats.publishers[0].pid, ::getpid());
  EXPECT_TRUE(stats.publishers[0].alive);
  EXPECT_EQ(stats.publishers[0].published, 5u);
  ASSERT_EQ(stats.subscribers.size(), 2u);
  EXPECT_EQ(stats.subscribers[0].lag, 3u);
  EXPECT_EQ(stats.subscribers[0].received, 2u);
  EXPECT_EQ(stats.subscribers[1].lag, 5u);
  EXPECT_TRUE(stats.subscribers[1].alive);
}

TEST(Topic, AHalfWrittenSlotOfADeadPublisherIsNeverSeen) {
  Fixture f({.capacity = 4, .max_message = 64, .policy = SlowSubscriber::drop_oldest, .history = 4});
  auto publisher = f.topic->publisher();
  for (std::uint64_t sequence = 0; sequence < 6; ++sequence) ASSERT_TRUE(publisher->publish(numbered(sequence)));
  // A publisher died writing message 6 over message 2: its stamp says so,
  // `written` stayed at 6.
  std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(f.raw_slot(6)))
      .store(ferry::detail::stamp_writing(6));
  auto late = f.topic->subscribe({.history = 4});
  ASSERT_TRUE(late);
  EXPECT_EQ(late->position(), 3u) << "message 2 is gone: the history starts after it";
  std::vector<std::byte> buffer(64);
  for (std::uint64_t sequence = 3; sequence < 6; ++sequence) {
    auto delivery = late->try_receive(buffer);
    ASSERT_TRUE(delivery && delivery->has_value());
    EXPECT_EQ((*delivery)->sequence, sequence);
  }
  EXPECT_FALSE(late->try_receive(buffer)->has_value()) << "the half-written message never appears";
  ASSERT_TRUE(publisher->publish(numbered(6)));
  auto delivery = late->try_receive(buffer);
  ASSERT_TRUE(delivery && delivery->has_value());
  EXPECT_EQ((*delivery)->sequence, 6u);
  EXPECT_TRUE(is_numbered(std::span(buffer).first((*delivery)->size), 6));

  // One died after writing message 7 whole but before advancing `written`:
  // not there for readers either; the next publisher writes it again.
  std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(f.raw_slot(7)))
      .store(ferry::detail::stamp_written(7));
  EXPECT_FALSE(late->try_receive(buffer)->has_value());
  ASSERT_TRUE(publisher->publish(numbered(7)));
  delivery = late->try_receive(buffer);
  ASSERT_TRUE(delivery && delivery->has_value());
  EXPECT_EQ((*delivery)->sequence, 7u);
  EXPECT_TRUE(is_numbered(std::span(buffer).first((*delivery)->size), 7));
}

// Publishes two messages, subscribes (with history) and receives the
// first, lets `edit` scribble on the segment, then receives again: the code
// that comes back (errc::system if none).
template <class Edit>
errc receive_after(SlowSubscriber policy, Edit edit) {
  Fixture f({.capacity = 4, .max_message = 64, .policy = policy, .history = 2});
  auto publisher = f.topic->publisher();
  EXPECT_TRUE(publisher->publish(pattern(16, 1)));
  EXPECT_TRUE(publisher->publish(pattern(16, 2)));
  auto subscriber = f.topic->subscribe({.history = 2});
  EXPECT_TRUE(subscriber);
  std::vector<std::byte> buffer(64);
  EXPECT_TRUE(subscriber->receive(buffer));
  edit(f);
  for (int i = 0; i < 3; ++i) {
    auto received = subscriber->try_receive(buffer);
    if (!received) return received.error().code();
  }
  return errc::system;
}

TEST(Topic, HostileSegmentGivesCorruptNeverACrashOrHang) {
  for (const auto policy : {SlowSubscriber::block, SlowSubscriber::drop_oldest}) {
    EXPECT_EQ(receive_after(policy, [](Fixture& f) { f.raw().written.store(0); }), errc::corrupt)
        << "written went back";
    EXPECT_EQ(receive_after(policy, [](Fixture& f) { std::memset(f.raw_slot(1), 0, 8); }), errc::corrupt)
        << "a published message is not in its slot";
    EXPECT_EQ(receive_after(policy,
                            [](Fixture& f) {
                              const std::uint32_t huge = 1u << 30;
                              std::memcpy(f.raw_slot(1) + 8, &huge, 4);
                            }),
              errc::corrupt)
        << "length beyond max_message";
    EXPECT_EQ(receive_after(policy,
                            [](Fixture& f) {
                              const std::uint32_t unknown = 7;
                              std::memcpy(f.raw_slot(1) + 12, &unknown, 4);
                            }),
              errc::corrupt)
        << "a form this ferry does not know";
    EXPECT_EQ(receive_after(policy,
                            [](Fixture& f) {
                              const std::uint64_t future = ferry::detail::stamp_written(1000);
                              std::memcpy(f.raw_slot(1), &future, 8);
                            }),
              policy == SlowSubscriber::block ? errc::corrupt : errc::system)
        << "block cannot lap; drop_oldest jumps and then finds nothing wrong";
  }
  // A publisher checks the cursors holding it back, and the slot it writes.
  {
    Fixture f({.capacity = 4, .max_message = 64});
    auto publisher = f.topic->publisher();
    auto subscriber = f.topic->subscribe();
    f.raw().subscribers[0].cursor.store(1000);
    EXPECT_EQ(publisher->publish(pattern(8, 0)).error().code(), errc::corrupt);
  }
  {
    Fixture f({.capacity = 4, .max_message = 64, .policy = SlowSubscriber::drop_oldest});
    auto publisher = f.topic->publisher();
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(publisher->publish(pattern(8, 0)));
    f.raw().written.store(1);
    EXPECT_EQ(publisher->publish(pattern(8, 0)).error().code(), errc::corrupt) << "written went back";
  }
  {
    // The publish lock held by a thread that does not exist: corrupt after
    // two liveness slices, not a hang.
    Fixture f({.capacity = 4, .max_message = 64});
    auto publisher = f.topic->publisher();
    int lock_word = 0x3fff0000;
    std::memcpy(reinterpret_cast<std::byte*>(&f.raw().publish_lock), &lock_word, sizeof lock_word);
    auto published = publisher->publish(pattern(8, 0));
    ASSERT_FALSE(published);
    EXPECT_EQ(published.error().code(), errc::corrupt) << published.error().message();
  }

  // Geometry is checked on open.
  const auto open_after = [](auto edit) {
    Fixture f({.capacity = 4, .max_message = 64});
    edit(f.raw());
    auto opened = Topic::open(f.name);
    return opened ? errc::system : opened.error().code();
  };
  EXPECT_EQ(open_after([](TopicControl& c) { c.magic = 42; }), errc::corrupt);
  EXPECT_EQ(open_after([](TopicControl& c) { c.layout_version = 9; }), errc::version_mismatch);
  EXPECT_EQ(open_after([](TopicControl& c) { c.capacity = 0; }), errc::corrupt);
  EXPECT_EQ(open_after([](TopicControl& c) { c.capacity = 5; }), errc::corrupt) << "beyond the segment";
  EXPECT_EQ(open_after([](TopicControl& c) { c.max_message = 1000; }), errc::corrupt);
  EXPECT_EQ(open_after([](TopicControl& c) { c.slot_size = 8; }), errc::corrupt);
  EXPECT_EQ(open_after([](TopicControl& c) { c.history = 5; }), errc::corrupt);
  EXPECT_EQ(open_after([](TopicControl& c) { c.slots_offset = 64; }), errc::corrupt);
  EXPECT_EQ(open_after([](TopicControl& c) { c.policy = static_cast<ferry::detail::TopicPolicy>(7); }),
            errc::corrupt);
}

}  // namespace
