// Loans on a Topic within one process: every size by loan and by automatic
// publish, reading in place, when a chunk returns to the pool (last reader,
// history), drop_oldest taking the oldest chunk, waiting and exhaustion, and
// references that do not hold. With processes and SIGKILL:
// tests/process/topic_loan_process_test.cpp.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry/patterns/detail/topic_layout.hpp"
#include "ferry_test.hpp"
#include "loan_payload.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::Loan;
using ferry::SlowSubscriber;
using ferry::Topic;
using ferry::TopicOptions;
using ferry::detail::ChunkRef;
using ferry::detail::TopicControl;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = kKiB * kKiB;

std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> bytes(size);
  ferry::test::fill_pattern(bytes, seed);
  return bytes;
}

// release() as text for EXPECT_EQ: "intact", "overwritten", or the error.
std::string released(ferry::TopicSubscriber& subscriber) {
  auto outcome = subscriber.release();
  if (!outcome) return outcome.error().message();
  return *outcome ? "intact" : "overwritten";
}

struct Fixture {
  explicit Fixture(TopicOptions options = {}) : name(ferry::test::unique_name("tloan")) {
    auto made = Topic::create(name, options);
    EXPECT_TRUE(made) << made.error().message();
    topic.emplace(std::move(*made));
  }
  ~Fixture() {
    topic.reset();
    (void)Topic::destroy(name, kind);
  }
  TopicControl& control() { return *reinterpret_cast<TopicControl*>(topic->segment().data().data()); }
  std::byte* slot(std::uint64_t sequence) {
    return topic->segment().data().data() + ferry::detail::kTopicSlotsOffset +
           (sequence % control().capacity) * control().slot_size;
  }
  // Publishes a loan of `size` bytes filled with the pattern of `seed`.
  void publish_loan(ferry::TopicPublisher& publisher, std::size_t size, std::uint64_t seed) {
    auto loan = publisher.try_loan(size);
    ASSERT_TRUE(loan) << loan.error().message();
    ASSERT_TRUE(*loan) << "no chunk free";
    ferry::test::fill_pattern((*loan)->data(), seed);
    ASSERT_TRUE(publisher.publish(std::move(**loan)));
  }
  std::string name;
  ferry::SegmentKind kind = ferry::SegmentKind::posix;
  std::optional<Topic> topic;
};

// 64 KiB chunks, `chunks` of them at most.
ferry::LoanOptions chunks_of_64k(std::size_t chunks) { return {.limit = chunks * 64 * kKiB}; }

TEST(TopicLoan, EverySizeRoundTripsByLoanAndByAutomaticPublish) {
  Fixture f({.capacity = 8, .max_message = 256});
  auto readers = std::vector<ferry::TopicSubscriber>();
  for (int i = 0; i < 2; ++i) readers.push_back(std::move(*f.topic->subscribe()));
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher);
  const std::vector<std::size_t> sizes = {1, 100, 4095, 4096, 65537, kMiB + 3, 16 * kMiB, 64 * kMiB};
  std::uint64_t seed = 0;
  for (const std::size_t size : sizes) {
    SCOPED_TRACE(size);
    // By loan, read in place by both subscribers.
    f.publish_loan(*publisher, size, ++seed);
    for (auto& reader : readers) {
      auto view = reader.peek();
      ASSERT_TRUE(view) << view.error().message();
      EXPECT_EQ(view->data.size(), size);
      EXPECT_TRUE(ferry::test::holds_pattern(view->data, seed));
      EXPECT_EQ(released(reader), "intact");
    }
    // By publish(bytes): a chunk when larger than max_message; copied out by receive.
    const auto bytes = pattern(size, ++seed);
    ASSERT_TRUE(publisher->publish(bytes));
    for (auto& reader : readers) {
      std::vector<std::byte> buffer(size);
      auto got = reader.receive(buffer);
      ASSERT_TRUE(got) << got.error().message();
      EXPECT_EQ(got->size, size);
      EXPECT_TRUE(buffer == bytes);
    }
  }
  auto usage = publisher->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u) << "every chunk returned once both subscribers released it";
  EXPECT_GT(usage->slabs, 0u);
}

TEST(TopicLoan, AChunkReturnsWhenTheLastSubscriberReleasesIt) {
  Fixture f({.capacity = 8, .max_message = 64});
  auto a = f.topic->subscribe();
  auto b = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  f.publish_loan(*publisher, 10 * kKiB, 1);
  EXPECT_EQ(publisher->loan_usage()->in_use, 1u);
  ASSERT_TRUE(a->peek());
  ASSERT_EQ(released(*a), "intact");
  EXPECT_EQ(publisher->loan_usage()->in_use, 1u) << "b has not read it";
  std::vector<std::byte> buffer(10 * kKiB);
  ASSERT_TRUE(b->receive(buffer));
  EXPECT_TRUE(ferry::test::holds_pattern(buffer, 1));
  EXPECT_EQ(publisher->loan_usage()->in_use, 0u);
  // A dropped loan goes back at once; one of another publisher is refused.
  {
    auto dropped = publisher->loan(100);
    ASSERT_TRUE(dropped);
    EXPECT_EQ(publisher->loan_usage()->in_use, 1u);
  }
  EXPECT_EQ(publisher->loan_usage()->in_use, 0u);
  auto other = f.topic->publisher();
  auto foreign = other->loan(100);
  ASSERT_TRUE(foreign);
  EXPECT_EQ(publisher->publish(std::move(*foreign)).error().code(), errc::invalid_argument);
  auto release_without_peek = a->release();
  ASSERT_FALSE(release_without_peek);
  EXPECT_EQ(release_without_peek.error().code(), errc::invalid_argument);
}

TEST(TopicLoan, TheThresholdIsPerTopic) {
  Fixture f({.capacity = 8, .max_message = 4096, .loans = {.threshold = 1024}});
  auto subscriber = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher->publish(pattern(500, 1)));
  EXPECT_EQ(publisher->loan_usage()->chunks, 0u) << "below the threshold: inline";
  ASSERT_TRUE(publisher->publish(pattern(2000, 2)));
  EXPECT_EQ(publisher->loan_usage()->in_use, 1u) << "at or above: a chunk";
  std::uint32_t form = 0;
  std::memcpy(&form, f.slot(1) + 12, 4);
  EXPECT_EQ(form, ferry::detail::kSlotChunk);
  std::vector<std::byte> buffer(4096);
  EXPECT_EQ(subscriber->receive(buffer)->size, 500u);
  EXPECT_TRUE(ferry::test::holds_pattern(std::span(buffer).first(500), 1));
  EXPECT_EQ(subscriber->receive(buffer)->size, 2000u);
  EXPECT_TRUE(ferry::test::holds_pattern(std::span(buffer).first(2000), 2));
}

TEST(TopicLoan, HistoryKeepsChunksOnlyAsFarAsThePoolAllowsAndSaysWhatItGaveUp) {
  Fixture f({.capacity = 8, .max_message = 64, .history = 4, .loans = chunks_of_64k(2)});
  auto publisher = f.topic->publisher();
  for (std::uint64_t i = 0; i < 6; ++i) f.publish_loan(*publisher, 60 * kKiB, i);
  // The history is messages 2..5; the pool holds the last two of them.
  auto late = f.topic->subscribe({.history = 4});
  ASSERT_TRUE(late);
  auto first = late->peek();
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->sequence, 4u);
  EXPECT_EQ(first->lost, 2u) << "messages 2 and 3 gave their chunks up";
  EXPECT_TRUE(ferry::test::holds_pattern(first->data, 4));
  EXPECT_EQ(released(*late), "intact");
  std::vector<std::byte> buffer(60 * kKiB);
  auto second = late->receive(buffer);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->sequence, 5u);
  EXPECT_EQ(second->lost, 0u);
  EXPECT_TRUE(ferry::test::holds_pattern(buffer, 5));
  EXPECT_EQ(late->lost(), 2u);
}

TEST(TopicLoan, BlockWaitsForSubscribersAndUnsentLoansAreAClearError) {
  Fixture f({.capacity = 8, .max_message = 64, .loans = chunks_of_64k(2)});
  auto subscriber = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  f.publish_loan(*publisher, 60 * kKiB, 1);
  f.publish_loan(*publisher, 60 * kKiB, 2);
  // The subscriber holds both chunks: wait (try: empty; timed: timed_out).
  auto none = publisher->try_loan(60 * kKiB);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  auto late = publisher->loan_until(60 * kKiB, ferry::deadline_after(20ms));
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::timed_out);
  std::vector<std::byte> buffer(60 * kKiB);
  ASSERT_TRUE(subscriber->receive(buffer));
  EXPECT_TRUE(ferry::test::holds_pattern(buffer, 1));
  auto freed = publisher->try_loan(60 * kKiB);
  ASSERT_TRUE(freed);
  ASSERT_TRUE(*freed) << "the first message's chunk came back";
  ASSERT_TRUE(subscriber->receive(buffer));
  EXPECT_TRUE(ferry::test::holds_pattern(buffer, 2));
  // Only this publisher's own loans hold the limit now: waiting cannot help.
  auto second = publisher->loan(60 * kKiB);
  ASSERT_TRUE(second);
  auto exhausted = publisher->loan(60 * kKiB);
  ASSERT_FALSE(exhausted);
  EXPECT_EQ(exhausted.error().code(), errc::limit_reached) << exhausted.error().message();
  EXPECT_NE(exhausted.error().message().find(f.name), std::string::npos);
  auto huge = publisher->loan(129 * kKiB);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), errc::invalid_argument);
}

TEST(TopicLoan, DropOldestTakesTheOldestChunkAndTheSubscriberCountsItLost) {
  Fixture f({.capacity = 16, .max_message = 64, .policy = SlowSubscriber::drop_oldest, .loans = chunks_of_64k(2)});
  auto stalled = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  // Two chunks, five messages: the publisher never waits; 0, 1, 2 give theirs up.
  for (std::uint64_t i = 0; i < 5; ++i) f.publish_loan(*publisher, 60 * kKiB, i);
  auto view = stalled->peek();
  ASSERT_TRUE(view) << view.error().message();
  EXPECT_EQ(view->sequence, 3u);
  EXPECT_EQ(view->lost, 3u);
  EXPECT_TRUE(ferry::test::holds_pattern(view->data, 3));
  // While it reads message 3 in place, a publisher takes that chunk (the
  // oldest): release() says so, and the message counts as lost.
  f.publish_loan(*publisher, 60 * kKiB, 5);
  EXPECT_EQ(released(*stalled), "overwritten");
  EXPECT_EQ(stalled->lost(), 4u);
  std::vector<std::byte> buffer(60 * kKiB);
  auto next = stalled->receive(buffer);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->sequence, 4u);
  EXPECT_EQ(next->lost, 1u) << "message 3, reported with the next delivery";
  EXPECT_TRUE(ferry::test::holds_pattern(buffer, 4));
  auto last = stalled->receive(buffer);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->sequence, 5u);
  EXPECT_TRUE(ferry::test::holds_pattern(buffer, 5));
  EXPECT_EQ(f.topic->stats().subscribers.at(0).lost, 4u);
}

TEST(TopicLoan, DropOldestPeekCopiesRingMessagesSoAnOverwriteCannotTearThem) {
  Fixture f({.capacity = 2, .max_message = 64, .policy = SlowSubscriber::drop_oldest});
  auto subscriber = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  ASSERT_TRUE(publisher->publish(pattern(64, 1)));
  auto view = subscriber->peek();
  ASSERT_TRUE(view);
  for (std::uint64_t i = 2; i < 6; ++i) ASSERT_TRUE(publisher->publish(pattern(64, i)));  // laps the ring
  EXPECT_TRUE(ferry::test::holds_pattern(view->data, 1)) << "the subscriber's own copy";
  EXPECT_EQ(released(*subscriber), "intact");
}

TEST(TopicLoan, ReferencesThatDoNotHoldAreCorrupt) {
  const auto receive_after = [](auto edit) {
    Fixture f({.capacity = 8, .max_message = 64});
    auto subscriber = f.topic->subscribe();
    auto publisher = f.topic->publisher();
    f.publish_loan(*publisher, 5000, 1);
    ChunkRef ref;
    std::memcpy(&ref, f.slot(0) + ferry::detail::kTopicSlotHeader, sizeof ref);
    edit(ref);
    std::memcpy(f.slot(0) + ferry::detail::kTopicSlotHeader, &ref, sizeof ref);
    std::vector<std::byte> buffer(64 * kKiB);
    auto got = subscriber->receive(buffer);
    return got ? errc::system : got.error().code();
  };
  EXPECT_EQ(receive_after([](ChunkRef& r) { r.slab = 64; }), errc::corrupt) << "beyond the slab table";
  EXPECT_EQ(receive_after([](ChunkRef& r) { r.slab = 5; }), errc::corrupt) << "a slab that does not exist";
  EXPECT_EQ(receive_after([](ChunkRef& r) { r.chunk = 1000; }), errc::corrupt) << "beyond the slab";
  EXPECT_EQ(receive_after([](ChunkRef& r) { r.size = std::uint64_t{1} << 40; }), errc::corrupt) << "beyond the chunk";
  EXPECT_EQ(receive_after([](ChunkRef& r) { ++r.generation; }), errc::corrupt)
      << "under block, a live subscriber's chunk is never reused: a generation mismatch is garbage";
  // A reference length other than a ChunkRef's.
  Fixture f({.capacity = 8, .max_message = 64});
  auto subscriber = f.topic->subscribe();
  auto publisher = f.topic->publisher();
  f.publish_loan(*publisher, 5000, 1);
  const std::uint32_t length = 23;
  std::memcpy(f.slot(0) + 8, &length, 4);
  EXPECT_EQ(subscriber->peek().error().code(), errc::corrupt);
  // The loan limit is checked on open.
  f.control().loan_limit = 12;
  EXPECT_EQ(Topic::open(f.name).error().code(), errc::corrupt);
}

TEST(TopicLoan, DestroyRemovesTheChunksAndUnnamedTopicsHaveNone) {
  std::string slab;
  {
    Fixture f({.capacity = 8, .max_message = 64});
    auto publisher = f.topic->publisher();
    f.publish_loan(*publisher, 5000, 1);
    const auto shape = ferry::detail::SlabShape::decode(f.control().slabs[0].load());
    ASSERT_TRUE(shape.present());
    slab = f.name + ".chunks-0-" + std::to_string(shape.generation);
    EXPECT_TRUE(ferry::Segment::open(slab, {.access = ferry::Access::read_only}));
  }
  EXPECT_EQ(ferry::Segment::open(slab).error().code(), errc::not_found);

  // Every slab named after the topic goes, whatever its table says: that of
  // a topic too corrupt to open, and one its table never named (a publisher
  // killed between making a slab and entering it).
  {
    Fixture f({.capacity = 8, .max_message = 64});
    {
      auto publisher = f.topic->publisher();
      f.publish_loan(*publisher, 5000, 1);
    }
    const auto shape = ferry::detail::SlabShape::decode(f.control().slabs[0].load());
    slab = f.name + ".chunks-0-" + std::to_string(shape.generation);
    const std::string unlisted = f.name + ".chunks-9-1";
    ASSERT_TRUE(ferry::Segment::create(unlisted, {.size = 4096}));
    f.control().loan_limit = 12;
    ASSERT_EQ(Topic::open(f.name).error().code(), errc::corrupt);
    f.topic.reset();
    EXPECT_TRUE(Topic::destroy(f.name));
    EXPECT_EQ(ferry::Segment::open(slab).error().code(), errc::not_found);
    EXPECT_EQ(ferry::Segment::open(unlisted).error().code(), errc::not_found);
  }

  // Chunks are named after the topic's segment: a memfd topic has none.
  Fixture f({.capacity = 8, .max_message = 64, .kind = ferry::SegmentKind::memfd});
  f.kind = ferry::SegmentKind::memfd;
  auto publisher = f.topic->publisher();
  EXPECT_EQ(publisher->loan(100).error().code(), errc::unsupported);
  EXPECT_EQ(publisher->publish(pattern(65, 1)).error().code(), errc::invalid_argument);
}

}  // namespace
