// Channel within one process (threads for the two roles); the process
// variants, with SIGKILL, are in tests/process/channel_process_test.cpp.
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry/messaging/detail/channel_layout.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Channel;
using ferry::errc;
using ferry::WaitStrategy;

std::span<const std::byte> bytes_of(const std::vector<std::byte>& v) { return v; }

std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> data(size);
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::byte>((seed * 131 + i * 7) & 0xff);
  return data;
}

struct Fixture {
  explicit Fixture(ferry::ChannelOptions options = {}) : name(ferry::test::unique_name("chan")) {
    auto made = Channel::create(name, options);
    EXPECT_TRUE(made) << made.error().message();
    channel.emplace(std::move(*made));
  }
  ~Fixture() {
    channel.reset();
    (void)Channel::destroy(name);
  }
  std::string name;
  std::optional<Channel> channel;
};

class ChannelStrategies : public ::testing::TestWithParam<WaitStrategy> {};

TEST_P(ChannelStrategies, EverySizeArrivesWholeAndInOrder) {
  Fixture f({.capacity = 4096, .max_message = 1000});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  ASSERT_TRUE(tx && rx);
  const std::size_t rounds = ferry::test::scaled(3);
  std::thread sender([&] {
    for (std::size_t round = 0; round < rounds; ++round) {
      for (std::size_t size = 0; size <= 1000; ++size) {
        ASSERT_TRUE(tx->send(bytes_of(pattern(size, size + round)), GetParam()));
      }
    }
  });
  std::vector<std::byte> buffer(1000);
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::size_t size = 0; size <= 1000; ++size) {
      auto received = rx->receive(buffer, GetParam());
      ASSERT_TRUE(received) << received.error().message();
      ASSERT_EQ(*received, size);
      ASSERT_TRUE(std::equal(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(size),
                             pattern(size, size + round).begin()))
          << size;
    }
  }
  sender.join();
}

INSTANTIATE_TEST_SUITE_P(All, ChannelStrategies,
                         ::testing::Values(WaitStrategy::adaptive(), WaitStrategy::busy_poll(),
                                           WaitStrategy::block()),
                         ferry::test::strategy_name);

TEST(Channel, TooLargeMessageNamesBothSizes) {
  // Beyond max_message a message travels as a loan (channel_loan_test.cpp); beyond the loan limit it cannot.
  Fixture f({.capacity = 4096, .max_message = 100, .loans = {.limit = 4096}});
  auto tx = f.channel->sender();
  ASSERT_TRUE(tx);
  auto sent = tx->send(bytes_of(pattern(4097, 0)));
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code(), errc::invalid_argument);
  EXPECT_NE(sent.error().message().find("4097 bytes is larger than the chunk limit of 4096"), std::string::npos)
      << sent.error().message();
  EXPECT_NE(sent.error().message().find("channel '" + f.name + "'"), std::string::npos);
  EXPECT_EQ(tx->try_reserve(101).error().code(), errc::invalid_argument) << "the ring holds 100 bytes at most";
  auto memfd = Channel::create(ferry::test::unique_name("memfd"), {.max_message = 100, .kind = ferry::SegmentKind::memfd});
  ASSERT_TRUE(memfd) << memfd.error().message();
  auto memfd_sent = memfd->sender()->send(bytes_of(pattern(101, 0)));
  ASSERT_FALSE(memfd_sent);
  EXPECT_EQ(memfd_sent.error().code(), errc::invalid_argument);
  EXPECT_NE(memfd_sent.error().message().find("101 bytes is larger than its maximum of 100"), std::string::npos)
      << memfd_sent.error().message();
}

TEST(Channel, FullAndEmptyEdges) {
  Fixture f({.capacity = 1024, .max_message = 56});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(64);
  auto empty = rx->try_receive(buffer);
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_value()) << "an empty channel gives an empty result";

  // 56-byte payloads make 64-byte records: exactly 16 fit in 1024 bytes.
  int sent = 0;
  for (;;) {
    auto accepted = tx->try_send(bytes_of(pattern(56, static_cast<std::uint64_t>(sent))));
    ASSERT_TRUE(accepted);
    if (!*accepted) break;
    ++sent;
  }
  EXPECT_EQ(sent, 16);
  auto timed = tx->send_for(bytes_of(pattern(56, 99)), 20ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);

  for (int i = 0; i < sent; ++i) {
    auto received = rx->try_receive(buffer);
    ASSERT_TRUE(received && received->has_value());
    EXPECT_EQ(std::memcmp(buffer.data(), pattern(56, static_cast<std::uint64_t>(i)).data(), 56), 0);
  }
  EXPECT_FALSE(rx->try_receive(buffer)->has_value());
  auto timed_receive = rx->receive_for(buffer, 20ms);
  ASSERT_FALSE(timed_receive);
  EXPECT_EQ(timed_receive.error().code(), errc::timed_out);
  EXPECT_TRUE(*tx->try_send(bytes_of(pattern(56, 5)))) << "room again once released";
}

TEST(Channel, WrapAroundAtEveryOffset) {
  Fixture f({.capacity = 256, .max_message = 64});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(64);
  // Advance the ring by one record (one cache line) per round, then send
  // messages of every size, so that records of one and two lines start (and
  // wrap) at every line of the ring.
  for (std::size_t shift = 0; shift < 256 / ferry::detail::kLineSize; ++shift) {
    ASSERT_TRUE(*tx->try_send({}));
    ASSERT_EQ(**rx->try_receive(buffer), 0u);
    for (std::size_t size = 1; size <= 64; ++size) {
      ASSERT_TRUE(*tx->try_send(bytes_of(pattern(size, shift))));
      auto received = rx->try_receive(buffer);
      ASSERT_TRUE(received && received->has_value()) << shift << " " << size;
      ASSERT_EQ(**received, size);
      ASSERT_EQ(std::memcmp(buffer.data(), pattern(size, shift).data(), size), 0) << shift << " " << size;
    }
  }
}

TEST(Channel, ASendAbandonsAReservationNotCommitted) {
  Fixture f({.capacity = 65536, .max_message = 16384});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  // A small send, and one whose payload starts on a line (their paths differ).
  for (const std::size_t size : {std::size_t{8}, std::size_t{ferry::detail::kAlignedPayload}}) {
    ASSERT_TRUE(tx->reserve(64));
    ASSERT_TRUE(tx->send(bytes_of(pattern(size, size))));
    const auto committed = tx->commit(8);
    ASSERT_FALSE(committed) << "the reservation went with the send";
    EXPECT_EQ(committed.error().code(), errc::invalid_argument);
    std::vector<std::byte> buffer(16384);
    ASSERT_EQ(*rx->receive(buffer), size);
    EXPECT_EQ(std::memcmp(buffer.data(), pattern(size, size).data(), size), 0);
    EXPECT_FALSE(*rx->try_receive(buffer)) << "nothing else was published";
  }
}

TEST(Channel, ZeroCopyReserveCommitPeekRelease) {
  Fixture f({.capacity = 4096, .max_message = 512});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  EXPECT_EQ(tx->commit(1).error().code(), errc::invalid_argument) << "commit without reserve";
  EXPECT_EQ(rx->release().error().code(), errc::invalid_argument) << "release without peek";

  auto space = tx->reserve(512);
  ASSERT_TRUE(space);
  ASSERT_EQ(space->size(), 512u);
  std::memcpy(space->data(), "in place", 8);
  EXPECT_EQ(tx->commit(513).error().code(), errc::invalid_argument) << "more than reserved";
  ASSERT_TRUE(tx->commit(8)) << "shorter than reserved is fine";

  auto message = rx->peek();
  ASSERT_TRUE(message);
  ASSERT_EQ(message->size(), 8u);
  EXPECT_EQ(std::memcmp(message->data(), "in place", 8), 0);
  auto again = rx->try_peek();
  ASSERT_TRUE(again && again->has_value());
  EXPECT_EQ((*again)->data(), message->data()) << "peeking twice gives the same message";
  ASSERT_TRUE(rx->release());
  EXPECT_FALSE(rx->try_peek()->has_value());

  // A buffer too small is refused and the message stays.
  ASSERT_TRUE(tx->send(bytes_of(pattern(100, 1))));
  std::vector<std::byte> small(10), large(512);
  auto refused = rx->receive(small);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  EXPECT_NE(refused.error().message().find("100 bytes does not fit a buffer of 10"), std::string::npos);
  EXPECT_EQ(*rx->receive(large), 100u);
}

TEST(Channel, DeferredCommitsArePublishedTogether) {
  Fixture f({.capacity = 4096, .max_message = 120});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(120);
  for (int i = 0; i < 3; ++i) {
    auto space = tx->reserve(8);
    ASSERT_TRUE(space);
    std::memcpy(space->data(), &i, sizeof i);
    ASSERT_TRUE(tx->commit(sizeof i, ferry::Publish::later));
  }
  EXPECT_FALSE(rx->try_receive(buffer)->has_value()) << "nothing visible before publish()";
  tx->publish();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(**rx->try_receive(buffer), sizeof i);
    int value = -1;
    std::memcpy(&value, buffer.data(), sizeof value);
    EXPECT_EQ(value, i);
  }

  std::vector<std::vector<std::byte>> payloads;
  for (int i = 0; i < 100; ++i) payloads.push_back(pattern(120, static_cast<std::uint64_t>(i)));
  std::vector<std::span<const std::byte>> batch(payloads.begin(), payloads.end());
  auto sent = tx->try_send_batch(batch);
  ASSERT_TRUE(sent);
  // The ring is empty but starts at offset 48 (three packed 16-byte records
  // above). Each packed record of 120 bytes takes 128, but one is reserved
  // only where it would fit sent on its own (144 bytes, to the next line):
  // 31 fit before the end (48 + 31 * 128 = 4016); the 32nd would go after a
  // wrap record over the 80 bytes left there, and the first three left only
  // 48 bytes at the start.
  EXPECT_EQ(*sent, 31u);
  for (std::size_t i = 0; i < *sent; ++i) {
    ASSERT_EQ(**rx->try_receive(buffer), 120u);
    EXPECT_EQ(std::memcmp(buffer.data(), payloads[i].data(), 120), 0);
  }
  std::thread receiver([&] {
    std::vector<std::byte> local(120);
    for (int i = 0; i < 100; ++i) {
      ASSERT_EQ(*rx->receive(local), 120u);
      EXPECT_EQ(std::memcmp(local.data(), payloads[static_cast<std::size_t>(i)].data(), 120), 0);
    }
  });
  ASSERT_TRUE(tx->send_batch(batch));
  receiver.join();
}

TEST(Channel, ABatchPacksItsRecordsAndALoneRecordStartsALine) {
  Fixture f({.capacity = 1024, .max_message = 64});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  // Sent alone, an 8-byte message takes a line: 16 fit in 1024 bytes.
  int alone = 0;
  while (*tx->try_send(bytes_of(pattern(8, static_cast<std::uint64_t>(alone))))) ++alone;
  EXPECT_EQ(alone, 16);
  std::vector<std::byte> buffer(64);
  for (int i = 0; i < alone; ++i) ASSERT_TRUE(rx->try_receive(buffer)->has_value());

  // In a batch, each takes 16 bytes (8 of header, 8 of payload): 64 fit.
  std::vector<std::vector<std::byte>> payloads;
  for (int i = 0; i < 100; ++i) payloads.push_back(pattern(8, static_cast<std::uint64_t>(i)));
  const std::vector<std::span<const std::byte>> batch(payloads.begin(), payloads.end());
  EXPECT_EQ(*tx->try_send_batch(batch), 64u);
  for (std::size_t i = 0; i < 64; ++i) {
    ASSERT_EQ(**rx->try_receive(buffer), 8u) << i;
    EXPECT_EQ(std::memcmp(buffer.data(), payloads[i].data(), 8), 0) << i;
  }
  EXPECT_FALSE(rx->try_receive(buffer)->has_value());
}

TEST(Channel, PackedRecordsWrapAtEveryEightByteOffset) {
  // Batches of messages of 1 to 64 bytes, so that packed records (and the
  // wrap records before them) start at every 8-byte offset of a small ring,
  // mixed with lone ones that round up to a line.
  Fixture f({.capacity = 256, .max_message = 64});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(64);
  std::uint64_t sent = 0, received = 0;
  for (std::size_t round = 0; round < 400; ++round) {
    const std::size_t size = 1 + (round * 7) % 64;
    const std::size_t count = 1 + round % 3;
    std::vector<std::vector<std::byte>> payloads;
    for (std::size_t i = 0; i < count; ++i) payloads.push_back(pattern(size, sent + i));
    const std::vector<std::span<const std::byte>> batch(payloads.begin(), payloads.end());
    if (round % 5 == 4) {
      ASSERT_TRUE(*tx->try_send(batch[0]));
      sent += 1;
    } else {
      auto taken = tx->try_send_batch(batch);
      ASSERT_TRUE(taken) << taken.error().message();
      ASSERT_GE(*taken, 1u) << round;
      sent += *taken;
    }
    while (received < sent) {
      auto got = rx->try_receive(buffer);
      ASSERT_TRUE(got && got->has_value()) << round << " " << received;
      ASSERT_EQ(**got, size) << round;
      ASSERT_EQ(std::memcmp(buffer.data(), pattern(size, received).data(), size), 0) << round << " " << received;
      ++received;
    }
  }
}

TEST(Channel, LargePayloadsStartOnALineSmallOnesRightBehindTheirHeader) {
  // Sizes on both sides of kAlignedPayload, lone and in batches (packed
  // records start at every 8-byte offset), through a ring that wraps often;
  // every payload arrives whole, and where it starts is what the layout says.
  constexpr std::size_t kLarge = ferry::detail::kAlignedPayload;
  Fixture f({.capacity = 16 * kLarge, .max_message = 3 * kLarge});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  const std::size_t sizes[] = {1, 8, 56, 64, 200, kLarge - 8, kLarge - 1, kLarge, kLarge + 1, 2 * kLarge + 24, 3 * kLarge};
  std::uint64_t sent = 0, received = 0;
  std::vector<std::size_t> in_flight;
  for (std::size_t round = 0; round < ferry::test::scaled(600); ++round) {
    const std::size_t count = 1 + round % 4;
    std::vector<std::vector<std::byte>> payloads;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t size = sizes[(round * 5 + i * 3) % std::size(sizes)];
      payloads.push_back(pattern(size, sent + i));
    }
    const std::vector<std::span<const std::byte>> batch(payloads.begin(), payloads.end());
    std::size_t taken = 1;
    if (round % 3 == 2) {
      ASSERT_TRUE(*tx->try_send(batch[0]));
    } else {
      auto batched = tx->try_send_batch(batch);
      ASSERT_TRUE(batched) << batched.error().message();
      ASSERT_GE(*batched, 1u) << round;
      taken = *batched;
    }
    for (std::size_t i = 0; i < taken; ++i) in_flight.push_back(payloads[i].size());
    sent += taken;
    for (; received < sent; ++received) {
      auto message = rx->try_peek();
      ASSERT_TRUE(message && message->has_value()) << round << " " << received;
      const std::size_t size = in_flight[received];
      ASSERT_EQ((*message)->size(), size) << round;
      ASSERT_EQ(std::memcmp((*message)->data(), pattern(size, received).data(), size), 0) << round << " " << received;
      const auto line_offset = reinterpret_cast<std::uintptr_t>((*message)->data()) % 64;
      if (size >= kLarge) {
        EXPECT_EQ(line_offset, 0u) << size << " bytes, round " << round;
      } else {
        EXPECT_EQ(line_offset % 8, 0u) << size << " bytes, round " << round;  // right behind an 8-byte header
      }
      ASSERT_TRUE(rx->release());
    }
  }
}

TEST(Channel, AReservationCommittedSmallerThanTheAlignedSizeArrivesWhole) {
  // reserve() of a large size places the payload on the line after the
  // header; a commit of fewer than kAlignedPayload bytes moves them behind
  // the header, where the receiver looks for a payload of that size.
  constexpr std::size_t kLarge = ferry::detail::kAlignedPayload;
  Fixture f({.capacity = 8 * kLarge, .max_message = 2 * kLarge});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(2 * kLarge);
  for (const std::size_t used : {std::size_t{0}, std::size_t{1}, std::size_t{100}, kLarge - 1, kLarge, kLarge + 100}) {
    for (const auto when : {ferry::Publish::now, ferry::Publish::later}) {
      SCOPED_TRACE(used);
      auto space = tx->reserve(2 * kLarge);
      ASSERT_TRUE(space) << space.error().message();
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(space->data()) % 64, 0u);
      const auto bytes = pattern(used, used + 7);
      std::copy(bytes.begin(), bytes.end(), space->begin());  // (memcpy from an empty vector's null data() is UB)
      ASSERT_TRUE(tx->commit(used, when));
      tx->publish();
      auto got = rx->try_receive(buffer);
      ASSERT_TRUE(got && got->has_value()) << (got ? "nothing" : got.error().message());
      ASSERT_EQ(**got, used);
      EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), buffer.begin()));
    }
  }
}

TEST(Channel, AWrapRecordAheadOfADeferredBatchIsNotCorruption) {
  // The wrap record is visible once written; the batch behind it is not. A
  // receiver that skips the wrap and stores its position must not make the
  // sender believe the segment is corrupt.
  // Records of one and two lines, mixed, leave a one-line gap at the end of
  // the ring now and then: a wrap record.
  Fixture f({.capacity = 512, .max_message = 100});
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(100);
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 3; ++i) {
      auto space = tx->reserve((round + i) % 3 == 0 ? 100 : 40);
      ASSERT_TRUE(space) << round << ": " << space.error().message();
      ASSERT_TRUE(tx->commit(space->size(), ferry::Publish::later));
      auto nothing_yet = rx->try_receive(buffer);  // may skip a wrap and store its position
      ASSERT_TRUE(nothing_yet) << nothing_yet.error().message();
      EXPECT_FALSE(nothing_yet->has_value());
    }
    tx->publish();
    for (int i = 0; i < 3; ++i) {
      auto received = rx->try_receive(buffer);
      ASSERT_TRUE(received && received->has_value()) << round;
    }
  }
}

TEST(Channel, RolesAreExclusiveUntilLeft) {
  Fixture f;
  auto tx = f.channel->sender();
  ASSERT_TRUE(tx);
  auto second = f.channel->sender();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), errc::busy);
  EXPECT_NE(second.error().message().find("already has a sender: process " + std::to_string(::getpid())),
            std::string::npos)
      << second.error().message();
  auto rx = f.channel->receiver();
  ASSERT_TRUE(rx);
  EXPECT_EQ(f.channel->receiver().error().code(), errc::busy);
  ASSERT_TRUE(tx->send(bytes_of(pattern(10, 1))));
  { auto leaving = std::move(*tx); }
  auto replacement = f.channel->sender();
  ASSERT_TRUE(replacement) << "the role is free once its holder left";
  ASSERT_TRUE(replacement->send(bytes_of(pattern(10, 2))));
  std::vector<std::byte> buffer(64);
  EXPECT_EQ(**rx->try_receive(buffer), 10u);
  EXPECT_EQ(**rx->try_receive(buffer), 10u);
  EXPECT_EQ(std::memcmp(buffer.data(), pattern(10, 2).data(), 10), 0);
}

TEST(Channel, ReceiverLearnsTheSenderLeftAfterDraining) {
  Fixture f;
  auto rx = f.channel->receiver();
  std::vector<std::byte> buffer(64);
  {
    auto tx = f.channel->sender();
    ASSERT_TRUE(tx->send(bytes_of(pattern(5, 1))));
  }
  EXPECT_EQ(*rx->receive(buffer), 5u) << "what was sent before leaving is delivered";
  const auto start = ferry::steady_clock::now();
  auto gone = rx->receive(buffer);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), errc::peer_gone);
  EXPECT_LT(ferry::steady_clock::now() - start, 10s);
}

TEST(Channel, SenderLearnsTheReceiverLeftWhenFull) {
  Fixture f({.capacity = 256, .max_message = 56});
  auto tx = f.channel->sender();
  {
    auto rx = f.channel->receiver();
    std::thread([&] { (void)rx; }).join();
  }
  while (*tx->try_send(bytes_of(pattern(56, 0)))) {
  }
  auto blocked = tx->send(bytes_of(pattern(56, 0)), WaitStrategy::block());
  ASSERT_FALSE(blocked);
  EXPECT_EQ(blocked.error().code(), errc::peer_gone);
}

TEST(Channel, NotifyFdPollsReadableWhileMessagesWait) {
  Fixture f;
  auto tx = f.channel->sender();
  auto rx = f.channel->receiver();
  auto fd = rx->notify_fd();
  ASSERT_TRUE(fd) << fd.error().message();
  EXPECT_EQ(*rx->notify_fd(), *fd) << "one descriptor per receiver";
  auto readable = [&](int timeout_ms) {
    pollfd ready{*fd, POLLIN, 0};
    return ::poll(&ready, 1, timeout_ms) == 1;
  };
  EXPECT_FALSE(readable(20));
  std::vector<std::byte> buffer(64);
  for (int round = 0; round < 20; ++round) {
    ASSERT_TRUE(tx->send(bytes_of(pattern(8, static_cast<std::uint64_t>(round)))));
    ASSERT_TRUE(tx->send(bytes_of(pattern(8, static_cast<std::uint64_t>(round) + 1))));
    EXPECT_TRUE(readable(10000)) << round;
    int received = 0;
    while (auto message = rx->try_receive(buffer)) {
      if (!message->has_value()) break;
      ++received;
    }
    EXPECT_EQ(received, 2);
    EXPECT_FALSE(readable(0)) << "cleared once drained";
  }
}

// Opens the channel's segment raw and lets `edit` scribble on it.
template <class Edit>
ferry::errc receive_after(Edit edit) {
  Fixture f({.capacity = 1024, .max_message = 64});
  auto tx = f.channel->sender();
  EXPECT_TRUE(tx->send(bytes_of(pattern(16, 1))));
  auto raw = ferry::Segment::open(f.name);
  auto* control = reinterpret_cast<ferry::detail::ChannelControl*>(raw->data().data());
  edit(*control, raw->data().data() + ferry::detail::kChannelRingOffset);
  auto rx = f.channel->receiver();
  if (!rx) return rx.error().code();
  std::vector<std::byte> buffer(64);
  auto received = rx->try_receive(buffer);
  return received ? errc::system : received.error().code();
}

// Whenever the scribble lands (before the receiver looks, while it polls in
// place, or once it waits), the record is refused, never handed out.
TEST(Channel, ACorruptRecordLandingWhileTheReceiverWaitsIsCorrupt) {
  for (const auto strategy : {ferry::WaitStrategy::busy_poll(), ferry::WaitStrategy::adaptive()}) {
    Fixture f({.capacity = 1024, .max_message = 64});
    auto tx = f.channel->sender();  // alive: the receiver waits rather than learning the sender left
    auto rx = f.channel->receiver();
    auto raw = ferry::Segment::open(f.name);
    std::byte* ring = raw->data().data() + ferry::detail::kChannelRingOffset;
    std::thread scribbler([ring] {
      // The first record's header with the right tag and a length beyond max_message.
      ferry::detail::header_at(ring, 0).store(ferry::detail::record_header(1000, ferry::detail::record_tag(0)),
                                              std::memory_order_seq_cst);
    });
    const auto peeked = rx->peek(strategy);
    scribbler.join();
    ASSERT_FALSE(peeked);
    EXPECT_EQ(peeked.error().code(), errc::corrupt);
  }
}

TEST(Channel, HostileSegmentGivesCorruptNeverACrash) {
  using ferry::detail::ChannelControl;
  EXPECT_EQ(receive_after([](ChannelControl& c, std::byte*) { c.tail.store(1u << 30); }), errc::corrupt);
  EXPECT_EQ(receive_after([](ChannelControl& c, std::byte*) { c.head.store(8); }), errc::corrupt);
  EXPECT_EQ(receive_after([](ChannelControl&, std::byte* ring) {
              const std::uint32_t huge = ferry::detail::kLengthMask;
              std::memcpy(ring, &huge, 4);
            }),
            errc::corrupt);
  EXPECT_EQ(receive_after([](ChannelControl&, std::byte* ring) {
              const std::uint32_t bogus_kind = 0xdeadbeef;
              std::memcpy(ring + 4, &bogus_kind, 4);
            }),
            errc::corrupt);
  EXPECT_EQ(receive_after([](ChannelControl&, std::byte* ring) {
              const std::uint64_t wrap =
                  ferry::detail::record_header(8, ferry::detail::record_tag(0) | ferry::detail::kWrapBit);
              std::memcpy(ring, &wrap, 8);
            }),
            errc::corrupt);

  // Geometry is checked on open.
  const auto open_after = [](auto edit) {
    Fixture f({.capacity = 1024, .max_message = 64});
    auto raw = ferry::Segment::open(f.name);
    edit(*reinterpret_cast<ChannelControl*>(raw->data().data()));
    auto opened = Channel::open(f.name);
    return opened ? errc::system : opened.error().code();
  };
  EXPECT_EQ(open_after([](ChannelControl& c) { c.capacity = 1000; }), errc::corrupt);
  EXPECT_EQ(open_after([](ChannelControl& c) { c.capacity = 1u << 30; }), errc::corrupt);
  EXPECT_EQ(open_after([](ChannelControl& c) { c.max_message = 4096; }), errc::corrupt);
  EXPECT_EQ(open_after([](ChannelControl& c) { c.magic = 42; }), errc::corrupt);
  EXPECT_EQ(open_after([](ChannelControl& c) { c.layout_version = 7; }), errc::version_mismatch);
  EXPECT_EQ(open_after([](ChannelControl& c) { c.ring_offset = 64; }), errc::corrupt);
}

TEST(Channel, OpeningSomethingElseIsRefused) {
  const std::string name = ferry::test::unique_name("not-a-channel");
  auto plain = ferry::Segment::create(name, {.size = 4096});
  ASSERT_TRUE(plain);
  auto opened = Channel::open(name);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::invalid_argument);
  EXPECT_TRUE(ferry::Segment::destroy(name));
  EXPECT_EQ(Channel::open(name).error().code(), errc::not_found);
  EXPECT_EQ(Channel::create("bad/name").error().code(), errc::invalid_argument);
}

TEST(Channel, CapacityIsRoundedAndLargeEnough) {
  Fixture f({.capacity = 1000, .max_message = 300});
  EXPECT_EQ(f.channel->capacity(), 1024u);
  EXPECT_EQ(f.channel->max_message(), 300u);
  Fixture g({.capacity = 16, .max_message = 1000});
  EXPECT_GE(g.channel->capacity(), 2 * (1000u + 8u)) << "room for two largest records";
}

}  // namespace
