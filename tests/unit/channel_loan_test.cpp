// Loans on a Channel within one process: payloads of every size by loan and
// by automatic send, the threshold, the limit, exhaustion, unsupported kinds,
// and references that do not hold (a scribbled or misbehaving sender). The
// process variants, with SIGKILL, are in tests/process/channel_loan_process_test.cpp.
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry/messaging/detail/channel_layout.hpp"
#include "ferry_test.hpp"
#include "loan_payload.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Channel;
using ferry::ChannelOptions;
using ferry::errc;
using ferry::Segment;
using ferry::detail::ChannelControl;
using ferry::detail::ChunkDescriptor;
using ferry::detail::SlabShape;

constexpr std::size_t kMiB = std::size_t{1} << 20;

struct Fixture {
  explicit Fixture(ChannelOptions options = {}, ferry::SegmentKind kind = ferry::SegmentKind::posix)
      : name(ferry::test::unique_name("loan")) {
    options.kind = kind;
    auto made = Channel::create(name, options);
    EXPECT_TRUE(made) << made.error().message();
    channel.emplace(std::move(*made));
    tx.emplace(std::move(*channel->sender()));
    rx.emplace(std::move(*channel->receiver()));
  }
  ~Fixture() {
    tx.reset();
    rx.reset();
    channel.reset();
    (void)Channel::destroy(name);
  }
  ChannelControl& control() { return *reinterpret_cast<ChannelControl*>(channel->segment().data().data()); }
  std::size_t slabs() {
    std::size_t count = 0;
    for (const auto& entry : control().slabs) count += SlabShape::decode(entry.load()).present() ? 1 : 0;
    return count;
  }
  // The first slab's segment, as a scribbling process would open it.
  Segment slab(std::size_t index = 0) {
    const auto shape = SlabShape::decode(control().slabs[index].load());
    auto opened = Segment::open(name + ".chunks-" + std::to_string(index) + "-" + std::to_string(shape.generation));
    EXPECT_TRUE(opened) << opened.error().message();
    return std::move(*opened);
  }

  std::string name;
  std::optional<Channel> channel;
  std::optional<ferry::ChannelSender> tx;
  std::optional<ferry::ChannelReceiver> rx;
};

TEST(ChannelLoan, PayloadsFromOneByteTo64MiBArriveExactByLoanAndByAutomaticSend) {
  Fixture f({.capacity = 1 << 16, .max_message = 1024});
  const std::size_t sizes[] = {1, 100, 4095, 4096, 4097, 65536, 1 * kMiB + 3, 16 * kMiB, 64 * kMiB};
  std::uint64_t seed = 1;
  for (const std::size_t size : sizes) {
    auto loan = f.tx->loan(size);
    ASSERT_TRUE(loan) << loan.error().message();
    ASSERT_EQ(loan->size(), size);
    ferry::test::fill_pattern(loan->data(), seed);
    ASSERT_TRUE(f.tx->send(std::move(*loan)));
    auto message = f.rx->peek();
    ASSERT_TRUE(message) << message.error().message();
    ASSERT_EQ(message->size(), size);
    EXPECT_TRUE(ferry::test::holds_pattern(*message, seed)) << size;
    ASSERT_TRUE(f.rx->release());
    ++seed;

    std::vector<std::byte> payload(size);
    ferry::test::fill_pattern(payload, seed);
    ASSERT_TRUE(f.tx->send(std::span<const std::byte>(payload)));  // larger than max_message from 1025 B on
    std::vector<std::byte> received(size);
    auto got = f.rx->receive(received);
    ASSERT_TRUE(got) << got.error().message();
    ASSERT_EQ(*got, size);
    EXPECT_TRUE(ferry::test::holds_pattern(received, seed)) << size;
    ++seed;
  }
  auto usage = f.tx->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u);
  EXPECT_LE(usage->bytes, ChannelOptions{}.loans.limit);
}

TEST(ChannelLoan, AutomaticSendCopiesBelowTheThresholdAndLoansFromIt) {
  Fixture f({.capacity = 1 << 20, .max_message = 64 * 1024, .loans = {.threshold = 8192}});
  std::vector<std::byte> small(8191), large(8192);
  ASSERT_TRUE(f.tx->send(std::span<const std::byte>(small)));
  EXPECT_EQ(f.slabs(), 0u) << "below the threshold the message is copied into the ring";
  ASSERT_TRUE(f.tx->send(std::span<const std::byte>(large)));
  EXPECT_EQ(f.slabs(), 1u) << "from the threshold on it travels in a chunk";
  auto usage = f.tx->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 1u);
  std::vector<std::byte> buffer(8192);
  ASSERT_EQ(*f.rx->receive(buffer), 8191u);
  ASSERT_EQ(*f.rx->receive(buffer), 8192u);
  EXPECT_EQ(f.tx->loan_usage()->in_use, 0u);
}

TEST(ChannelLoan, ABufferTooSmallForALoanedMessageLeavesItInTheChannel) {
  Fixture f;
  std::vector<std::byte> payload(100'000);
  ferry::test::fill_pattern(payload, 5);
  ASSERT_TRUE(f.tx->send(std::span<const std::byte>(payload)));
  std::vector<std::byte> small(1000);
  auto refused = f.rx->receive(small);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  std::vector<std::byte> enough(payload.size());
  ASSERT_EQ(*f.rx->receive(enough), payload.size());
  EXPECT_EQ(enough, payload);
}

TEST(ChannelLoan, DroppedLoansReturnToThePoolAndUnsentLoansExhaustItWithAnError) {
  Fixture f({.loans = {.limit = 64 * 1024}});
  std::vector<ferry::Loan> held;
  for (int i = 0; i < 16; ++i) {  // 16 chunks of 4 KiB are the whole limit
    auto loan = f.tx->loan(4096);
    ASSERT_TRUE(loan) << i << ": " << loan.error().message();
    held.push_back(std::move(*loan));
  }
  auto refused = f.tx->loan(4096);  // would wait forever: this sender holds it all
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::limit_reached) << refused.error().message();
  EXPECT_EQ(f.tx->loan_usage()->in_use, 16u);
  held.clear();
  EXPECT_EQ(f.tx->loan_usage()->in_use, 0u);
  EXPECT_TRUE(f.tx->loan(4096));

  auto too_large = f.tx->loan(64 * 1024 + 1);
  ASSERT_FALSE(too_large);
  EXPECT_EQ(too_large.error().code(), errc::invalid_argument);
  EXPECT_NE(too_large.error().message().find("limit"), std::string::npos) << too_large.error().message();
}

TEST(ChannelLoan, ChunksHeldByTheReceiverMakeTheSenderWaitUntilOneIsReleased) {
  Fixture f({.loans = {.limit = 8192}});
  for (int i = 0; i < 2; ++i) {
    auto loan = f.tx->loan(4096);
    ASSERT_TRUE(loan);
    ASSERT_TRUE(f.tx->send(std::move(*loan)));
  }
  auto none = f.tx->try_loan(4096);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  auto timed_out = f.tx->loan_until(4096, ferry::deadline_after(20ms));
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.error().code(), errc::timed_out);

  std::thread receiver([&] {
    std::this_thread::sleep_for(20ms);
    auto first = f.rx->peek();
    ASSERT_TRUE(first);
    ASSERT_TRUE(f.rx->release());
  });
  auto loan = f.tx->loan(4096);  // waits for the release
  receiver.join();
  ASSERT_TRUE(loan) << loan.error().message();
}

TEST(ChannelLoan, ASizeOfAnotherClassRemovesAWhollyFreeSlabToStayWithinTheLimit) {
  Fixture f({.loans = {.limit = 4 * kMiB}});
  std::vector<std::byte> buffer(4 * kMiB);
  for (const std::size_t size : {std::size_t{1} << 20, std::size_t{4} << 20, std::size_t{64} << 10}) {
    auto loan = f.tx->loan(size);
    ASSERT_TRUE(loan) << size << ": " << loan.error().message();
    ferry::test::fill_pattern(loan->data(), size);
    ASSERT_TRUE(f.tx->send(std::move(*loan)));
    ASSERT_EQ(*f.rx->receive(buffer), size);
    EXPECT_TRUE(ferry::test::holds_pattern(std::span(buffer).first(size), size));
    auto usage = f.tx->loan_usage();
    EXPECT_LE(usage->bytes, 4 * kMiB);
    EXPECT_EQ(usage->slabs, 1u);
  }
}

TEST(ChannelLoan, ALoanNeedsANamedSegmentAndRingMessagesStillWorkWithout) {
  {
    Fixture f({.max_message = 64 * 1024, .loans = {.threshold = 16 * 1024}}, ferry::SegmentKind::memfd);
    auto loan = f.tx->loan(4096);
    ASSERT_FALSE(loan);
    EXPECT_EQ(loan.error().code(), errc::unsupported) << loan.error().message();
    std::vector<std::byte> payload(60'000);
    ferry::test::fill_pattern(payload, 3);
    ASSERT_TRUE(f.tx->send(std::span<const std::byte>(payload))) << "above the threshold, inline where loans cannot go";
    std::vector<std::byte> received(payload.size());
    ASSERT_EQ(*f.rx->receive(received), payload.size());
    EXPECT_EQ(received, payload);
    std::vector<std::byte> too_large(64 * 1024 + 1);
    auto refused = f.tx->send(std::span<const std::byte>(too_large));
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  }
}

TEST(ChannelLoan, AChunkReusedWhileItIsReadIsReportedNotHandedOut) {
  Fixture f;
  auto loan = f.tx->loan(10'000);
  ASSERT_TRUE(loan);
  ASSERT_TRUE(f.tx->send(std::move(*loan)));
  auto message = f.rx->peek();
  ASSERT_TRUE(message);
  // A misbehaving sender reloans the chunk under the reader.
  Segment slab = f.slab();
  auto* descriptor = reinterpret_cast<ChunkDescriptor*>(slab.data().data());
  descriptor->generation.fetch_add(1);
  auto released = f.rx->release();
  ASSERT_FALSE(released);
  EXPECT_EQ(released.error().code(), errc::corrupt);
  EXPECT_NE(released.error().message().find("reused"), std::string::npos) << released.error().message();

  // And one reused before it is read is refused at peek.
  auto second = f.tx->loan(10'000);
  ASSERT_TRUE(second);
  ASSERT_TRUE(f.tx->send(std::move(*second)));
  reinterpret_cast<ChunkDescriptor*>(slab.data().data())[1].generation.fetch_add(1);
  auto refused = f.rx->peek();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::corrupt) << refused.error().message();
}

TEST(ChannelLoan, GarbageInTheSlabTableOrTheReferenceIsCorrupt) {
  Fixture f;
  auto loan = f.tx->loan(5000);
  ASSERT_TRUE(loan);
  ASSERT_TRUE(f.tx->send(std::move(*loan)));
  const std::uint64_t entry = f.control().slabs[0].load();
  f.control().slabs[0].store(SlabShape{1, 63, 9999}.encode());  // chunk size and count out of bounds
  auto bad_table = f.rx->try_peek();
  ASSERT_FALSE(bad_table);
  EXPECT_EQ(bad_table.error().code(), errc::corrupt) << bad_table.error().message();
  f.control().slabs[0].store(0);
  auto no_slab = f.rx->try_peek();
  ASSERT_FALSE(no_slab);
  EXPECT_EQ(no_slab.error().code(), errc::corrupt) << no_slab.error().message();
  f.control().slabs[0].store(entry);
  // The reference itself: a chunk index beyond the slab.
  const std::uint64_t head = f.control().head.load();
  auto* ref = reinterpret_cast<ferry::detail::ChunkRef*>(f.channel->segment().data().data() +
                                                         ferry::detail::kChannelRingOffset +
                                                         (head & (f.channel->capacity() - 1)) + 8);
  const auto good = *ref;
  ref->chunk = 1000;
  auto bad_ref = f.rx->try_peek();
  ASSERT_FALSE(bad_ref);
  EXPECT_EQ(bad_ref.error().code(), errc::corrupt) << bad_ref.error().message();
  *ref = good;
  auto fine = f.rx->try_peek();
  ASSERT_TRUE(fine && *fine) << (fine ? "empty" : fine.error().message());
  EXPECT_EQ((*fine)->size(), 5000u);
}

TEST(ChannelLoan, DestroyRemovesTheChunksSegments) {
  std::string slab_name;
  {
    Fixture f;
    auto loan = f.tx->loan(4096);
    ASSERT_TRUE(loan);
    const auto shape = SlabShape::decode(f.control().slabs[0].load());
    slab_name = f.name + ".chunks-0-" + std::to_string(shape.generation);
    EXPECT_TRUE(Segment::open(slab_name));
  }
  auto gone = Segment::open(slab_name);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), errc::not_found);
}

}  // namespace
