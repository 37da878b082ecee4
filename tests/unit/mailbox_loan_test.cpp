// Loans on a Mailbox within one process: payloads of every size by loan and
// by automatic send, the threshold, the limit, priorities, leases that read
// in place, nack, retirement and destroy of the slabs, and references that do
// not hold (a scribbling sender). The process variants, with SIGKILL, are in
// tests/process/mailbox_loan_process_test.cpp.
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry/messaging/detail/mailbox_layout.hpp"
#include "ferry_test.hpp"
#include "loan_payload.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Capacity;
using ferry::errc;
using ferry::Mailbox;
using ferry::MailboxOptions;
using ferry::Segment;
using ferry::SegmentKind;
using ferry::detail::ChunkDescriptor;
using ferry::detail::ChunkRef;
using ferry::detail::SenderLogHeader;
using ferry::detail::SlabShape;

constexpr std::size_t kMiB = std::size_t{1} << 20;

struct Fixture {
  explicit Fixture(MailboxOptions options = {.capacity = Capacity::bounded(16, 1024)})
      : name(ferry::test::unique_name("mbxloan")), dir("/dev/shm/ferry." + name) {
    auto created = Mailbox::create(name, options);
    EXPECT_TRUE(created) << created.error().message();
    box.emplace(std::move(*created));
  }
  ~Fixture() {
    box.reset();
    (void)Mailbox::destroy(name);
  }
  // The files in the mailbox directory whose names contain `part`.
  std::vector<std::string> files(std::string_view part) const {
    std::vector<std::string> found;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ignored)) {
      const std::string file = entry.path().filename().string();
      if (file.find(part) != std::string::npos) found.push_back(entry.path().string());
    }
    return found;
  }
  // This process's sender log, writable as its owner (a scribbler) may.
  Segment log() const {
    const auto logs = files("sender.");
    std::string path;
    for (const auto& file : logs) {
      if (file.find(".chunks-") == std::string::npos) path = file;
    }
    auto opened = Segment::open(path, {.kind = SegmentKind::file});
    EXPECT_TRUE(opened) << path << ": " << (opened ? "" : opened.error().message());
    return std::move(*opened);
  }
  std::size_t in_use() {
    auto usage = box->loan_usage();
    EXPECT_TRUE(usage) << usage.error().message();
    return usage ? usage->in_use : 0;
  }

  std::string name;
  std::string dir;
  std::optional<Mailbox> box;
};

// Where the record sent `index`-th (0-based, all of 64 bytes: loans or tiny
// messages) holds its ChunkRef.
ChunkRef* record_ref(Segment& log, std::size_t index) {
  return reinterpret_cast<ChunkRef*>(log.data().data() + ferry::detail::kSenderLogRecords + index * 64 +
                                     ferry::detail::kLogRecordHeader);
}

TEST(MailboxLoan, PayloadsFromOneByteTo64MiBArriveExactByLoanAndByAutomaticSend) {
  Fixture f;
  const std::size_t sizes[] = {1, 1024, 1025, 4095, 4096, 65537, 1 * kMiB + 3, 16 * kMiB, 64 * kMiB};
  std::uint64_t seed = 1;
  for (const std::size_t size : sizes) {
    for (const bool leased : {false, true}) {
      auto loan = f.box->loan(size);
      ASSERT_TRUE(loan) << loan.error().message();
      ASSERT_EQ(loan->size(), size);
      ferry::test::fill_pattern(loan->data(), seed);
      ASSERT_TRUE(f.box->send(std::move(*loan)));
      if (leased) {
        auto lease = f.box->receive_leased();
        ASSERT_TRUE(lease) << lease.error().message();
        ASSERT_EQ(lease->data().size(), size);
        EXPECT_TRUE(ferry::test::holds_pattern(lease->data(), seed)) << size;
        ASSERT_TRUE(lease->ack());
      } else {
        auto message = f.box->receive();
        ASSERT_TRUE(message) << message.error().message();
        ASSERT_EQ(message->size(), size);
        EXPECT_TRUE(ferry::test::holds_pattern(message->data(), seed)) << size;
      }
      ++seed;

      std::vector<std::byte> payload(size);
      ferry::test::fill_pattern(payload, seed);
      ASSERT_TRUE(f.box->send(std::span<const std::byte>(payload)));  // a loan from 1025 B on (max_message)
      if (leased) {
        auto lease = f.box->receive_leased();
        ASSERT_TRUE(lease) << lease.error().message();
        ASSERT_EQ(lease->data().size(), size);
        EXPECT_TRUE(ferry::test::holds_pattern(lease->data(), seed)) << size;
        ASSERT_TRUE(lease->ack());
      } else {
        auto message = f.box->receive();
        ASSERT_TRUE(message) << message.error().message();
        ASSERT_EQ(message->size(), size);
        EXPECT_TRUE(ferry::test::holds_pattern(message->data(), seed)) << size;
      }
      ++seed;
    }
  }
  auto usage = f.box->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u);
  EXPECT_LE(usage->bytes, ferry::LoanOptions{}.limit);
  EXPECT_EQ(f.box->stats().received, 4 * std::size(sizes));
}

TEST(MailboxLoan, AutomaticSendCopiesBelowTheThresholdAndLoansFromIt) {
  Fixture f({.capacity = Capacity::bounded(16, 64 * 1024), .loans = {.threshold = 8192}});
  std::vector<std::byte> small(8191), large(8192);
  ferry::test::fill_pattern(small, 1);
  ferry::test::fill_pattern(large, 2);
  ASSERT_TRUE(f.box->send(std::span<const std::byte>(small)));
  EXPECT_TRUE(f.files(".chunks-").empty()) << "below the threshold: copied into the log";
  ASSERT_TRUE(f.box->send(std::span<const std::byte>(large)));
  EXPECT_EQ(f.files(".chunks-").size(), 1u) << "from the threshold on: a chunk";
  EXPECT_EQ(f.in_use(), 1u);
  auto first = f.box->receive();
  ASSERT_TRUE(first);
  EXPECT_TRUE(ferry::test::holds_pattern(first->data(), 1));
  auto second = f.box->receive();
  ASSERT_TRUE(second);
  EXPECT_TRUE(ferry::test::holds_pattern(second->data(), 2));
  EXPECT_EQ(f.in_use(), 0u);

  // Every process agrees: the threshold is the mailbox's, not the opener's.
  auto opened = Mailbox::open(f.name);
  ASSERT_TRUE(opened);
  ASSERT_TRUE(opened->send(std::span<const std::byte>(large)));
  auto usage = opened->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 1u);
  ASSERT_TRUE(f.box->receive());
}

TEST(MailboxLoan, SizesBeyondTheLimitAndBadLimitsAreInvalidArguments) {
  Fixture f({.capacity = Capacity::bounded(4, 1024), .loans = {.limit = 64 * 1024}});
  std::vector<std::byte> too_large(64 * 1024 + 1);
  auto sent = f.box->send(std::span<const std::byte>(too_large));
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code(), errc::invalid_argument);
  EXPECT_NE(sent.error().message().find("65537"), std::string::npos) << sent.error().message();
  EXPECT_NE(sent.error().message().find(f.name), std::string::npos) << sent.error().message();
  auto loan = f.box->loan(64 * 1024 + 1);
  ASSERT_FALSE(loan);
  EXPECT_EQ(loan.error().code(), errc::invalid_argument);
  std::vector<std::byte> at_limit(64 * 1024);
  EXPECT_TRUE(f.box->send(std::span<const std::byte>(at_limit)));
  ASSERT_TRUE(f.box->receive());

  for (const std::size_t limit : {std::size_t{4095}, (std::size_t{2} << 30) + 1}) {
    const std::string name = ferry::test::unique_name("mbxloan");
    auto created = Mailbox::create(name, {.loans = {.limit = limit}});
    ASSERT_FALSE(created) << limit;
    EXPECT_EQ(created.error().code(), errc::invalid_argument);
    (void)Mailbox::destroy(name);
  }
}

TEST(MailboxLoan, OwnUnsentLoansHoldingTheLimitAreLimitReachedAndHeldChunksWait) {
  Fixture f({.capacity = Capacity::bounded(4, 1024), .loans = {.limit = 64 * 1024}});
  {
    auto held = f.box->loan(64 * 1024);  // a slab of one chunk: the whole limit
    ASSERT_TRUE(held) << held.error().message();
    auto again = f.box->try_loan(64 * 1024);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), errc::limit_reached) << again.error().message();
    auto small = f.box->loan(4096);
    ASSERT_FALSE(small);
    EXPECT_EQ(small.error().code(), errc::limit_reached) << small.error().message();
    EXPECT_EQ(f.in_use(), 1u);
  }
  EXPECT_EQ(f.in_use(), 0u) << "a dropped loan goes back";

  // Sent and not yet received: the receivers hold it, so a loan waits.
  auto loan = f.box->loan(64 * 1024);
  ASSERT_TRUE(loan);
  ferry::test::fill_pattern(loan->data(), 7);
  ASSERT_TRUE(f.box->send(std::move(*loan)));
  auto empty = f.box->try_loan(64 * 1024);
  ASSERT_TRUE(empty) << empty.error().message();
  EXPECT_FALSE(empty->has_value());
  auto timed = f.box->loan_for(64 * 1024, 10ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  auto message = f.box->receive();
  ASSERT_TRUE(message);
  EXPECT_TRUE(ferry::test::holds_pattern(message->data(), 7));
  auto freed = f.box->try_loan(64 * 1024);
  ASSERT_TRUE(freed);
  EXPECT_TRUE(freed->has_value()) << "received: the chunk is free again";
}

TEST(MailboxLoan, PrioritiesAndUrgentOrderLoansAsBytes) {
  Fixture f({.capacity = Capacity::bounded(16, 64)});
  struct Sent {
    unsigned priority;
    bool urgent;
    bool loaned;
    std::size_t size;
  };
  const Sent sent[] = {{1, false, true, 5000}, {5, false, false, 10}, {3, false, true, 70000},
                       {5, false, true, 100},  {0, true, true, 4096}, {1, false, false, 64}};
  for (std::size_t i = 0; i < std::size(sent); ++i) {
    const ferry::SendOptions options{.priority = sent[i].priority, .urgent = sent[i].urgent};
    if (sent[i].loaned) {
      auto loan = f.box->loan(sent[i].size);
      ASSERT_TRUE(loan);
      ferry::test::fill_pattern(loan->data(), i);
      ASSERT_TRUE(f.box->send(std::move(*loan), options));
    } else {
      std::vector<std::byte> payload(sent[i].size);
      ferry::test::fill_pattern(payload, i);
      ASSERT_TRUE(f.box->send(std::span<const std::byte>(payload), options));
    }
  }
  // Urgent first, then by priority, FIFO within one.
  for (const std::size_t expected : {4u, 1u, 3u, 2u, 0u, 5u}) {
    auto message = f.box->receive();
    ASSERT_TRUE(message) << message.error().message();
    ASSERT_EQ(message->size(), sent[expected].size) << expected;
    EXPECT_TRUE(ferry::test::holds_pattern(message->data(), expected)) << expected;
    EXPECT_EQ(message->urgent(), sent[expected].urgent);
    EXPECT_EQ(message->priority(), sent[expected].priority);
  }
  auto bad = f.box->loan(4096);
  ASSERT_TRUE(bad);
  auto refused = f.box->send(std::move(*bad), {.priority = 32});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  EXPECT_EQ(f.in_use(), 1u) << "a refused send leaves the loan with the caller";
  auto unsent = f.box->try_send(std::move(*bad));
  ASSERT_TRUE(unsent);
  EXPECT_TRUE(*unsent);
  ASSERT_TRUE(f.box->receive());
  EXPECT_EQ(f.in_use(), 0u);
}

TEST(MailboxLoan, ALeaseReadsTheChunkInPlaceAndItsAckFreesTheChunk) {
  Fixture f;
  auto loan = f.box->loan(kMiB);
  ASSERT_TRUE(loan);
  ferry::test::fill_pattern(loan->data(), 3);
  std::byte* written = loan->data().data();  // the sender's mapping stays (the pool's)
  ASSERT_TRUE(f.box->send(std::move(*loan)));
  auto lease = f.box->receive_leased();
  ASSERT_TRUE(lease) << lease.error().message();
  ASSERT_TRUE(ferry::test::holds_pattern(lease->data(), 3));
  // Zero copy: what the sender's mapping holds is what the lease reads.
  const std::byte before = written[kMiB / 2];
  written[kMiB / 2] = ~before;
  EXPECT_EQ(lease->data()[kMiB / 2], ~before);
  written[kMiB / 2] = before;
  const ferry::Message copy = lease->message();  // a copy owns its bytes
  written[0] = ~written[0];
  EXPECT_NE(copy.data()[0], lease->data()[0]);
  written[0] = ~written[0];
  EXPECT_EQ(f.in_use(), 1u) << "leased: the chunk is the receiver's";
  ASSERT_TRUE(lease->ack());
  EXPECT_TRUE(lease->data().empty()) << "acked: the chunk is not the lease's any more";
  EXPECT_TRUE(ferry::test::holds_pattern(copy.data(), 3));
  EXPECT_EQ(f.in_use(), 0u);
  auto again = lease->ack();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), errc::invalid_argument);
}

TEST(MailboxLoan, APlainReceiveCopiesTheChunkOut) {
  Fixture f;
  auto loan = f.box->loan(100000);
  ASSERT_TRUE(loan);
  ferry::test::fill_pattern(loan->data(), 4);
  std::byte* written = loan->data().data();
  ASSERT_TRUE(f.box->send(std::move(*loan)));
  auto message = f.box->receive();
  ASSERT_TRUE(message);
  EXPECT_EQ(f.in_use(), 0u) << "received: freed at once";
  written[10] = ~written[10];
  EXPECT_TRUE(ferry::test::holds_pattern(message->data(), 4)) << "the message owns its copy";
}

TEST(MailboxLoan, ANackedOrDroppedLeaseIsRedeliveredWithTheSameChunk) {
  Fixture f;
  auto loan = f.box->loan(200000);
  ASSERT_TRUE(loan);
  ferry::test::fill_pattern(loan->data(), 5);
  ASSERT_TRUE(f.box->send(std::move(*loan), {.priority = 2}));
  const std::byte* first_bytes = nullptr;
  {
    auto lease = f.box->receive_leased();
    ASSERT_TRUE(lease);
    first_bytes = lease->data().data();
    ASSERT_TRUE(lease->nack());
    EXPECT_TRUE(lease->data().empty());
  }
  {
    auto lease = f.box->receive_leased();
    ASSERT_TRUE(lease);
    EXPECT_EQ(lease->delivery_count(), 2u);
    EXPECT_EQ(lease->data().data(), first_bytes) << "the same chunk, mapped once";
    EXPECT_TRUE(ferry::test::holds_pattern(lease->data(), 5));
    EXPECT_EQ(f.in_use(), 1u);
  }  // dropped: nacked
  auto message = f.box->receive();
  ASSERT_TRUE(message);
  EXPECT_EQ(message->delivery_count(), 3u);
  EXPECT_EQ(message->priority(), 2u);
  EXPECT_TRUE(ferry::test::holds_pattern(message->data(), 5));
  EXPECT_EQ(f.in_use(), 0u);
  EXPECT_EQ(f.box->stats().redelivered, 2u);
}

TEST(MailboxLoan, FlushFreesQueuedChunks) {
  Fixture f;
  for (int i = 0; i < 3; ++i) {
    auto loan = f.box->loan(5000);
    ASSERT_TRUE(loan);
    ASSERT_TRUE(f.box->send(std::move(*loan)));
  }
  EXPECT_EQ(f.in_use(), 3u);
  auto flushed = f.box->flush();
  ASSERT_TRUE(flushed);
  EXPECT_EQ(*flushed, 3u);
  EXPECT_EQ(f.in_use(), 0u);
}

TEST(MailboxLoan, ARetiredSendersSlabsAreRemovedAndDestroyRemovesTheRest) {
  Fixture f;
  {
    auto other = Mailbox::open(f.name);  // a second sender (its own log and pool)
    ASSERT_TRUE(other);
    auto kept = other->loan(300000);  // loaned and dropped unsent
    ASSERT_TRUE(kept);
    for (int i = 0; i < 2; ++i) {
      auto loan = other->loan(70000);
      ASSERT_TRUE(loan);
      ferry::test::fill_pattern(loan->data(), i);
      ASSERT_TRUE(other->send(std::move(*loan)));
    }
  }  // the sender leaves
  auto mine = f.box->loan(5000);
  ASSERT_TRUE(mine);
  ASSERT_TRUE(f.box->send(std::move(*mine)));
  EXPECT_EQ(f.files(".chunks-").size(), 3u);  // two slabs of the one that left, one of this sender
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(f.box->receive());
  // Retirement happens as receivers look now and then: no timing is asserted, only that it comes.
  const auto give_up = ferry::deadline_after(20s);
  while (f.files(".chunks-").size() > 1 && ferry::steady_clock::now() < give_up) {
    ASSERT_TRUE(f.box->try_receive());
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(f.files(".chunks-").size(), 1u) << "the retired sender's slabs went with its log";
  f.box.reset();
  ASSERT_TRUE(Mailbox::destroy(f.name));
  EXPECT_FALSE(std::filesystem::exists(f.dir));
}

// ------------------------------------------------------- hostile bytes

TEST(MailboxLoan, ReferencesThatDoNotHoldAreCorruptNeverACrash) {
  for (int variant = 0; variant < 5; ++variant) {
    Fixture f;
    auto loan = f.box->loan(5000);
    ASSERT_TRUE(loan);
    ferry::test::fill_pattern(loan->data(), 9);
    ASSERT_TRUE(f.box->send(std::move(*loan)));
    Segment log = f.log();
    ChunkRef* ref = record_ref(log, 0);
    switch (variant) {
      case 0: ref->slab = 64; break;           // beyond the table
      case 1: ref->slab = 7; break;            // no such slab
      case 2: ref->chunk = 1000; break;        // beyond the slab
      case 3: ref->generation += 1; break;     // not the chunk's generation
      case 4: ref->size = 8192 + 1; break;     // beyond its 8 KiB chunk (within the limit)
    }
    auto received = f.box->try_receive();
    ASSERT_FALSE(received) << "variant " << variant << ": garbage went unnoticed";
    EXPECT_EQ(received.error().code(), errc::corrupt) << variant << ": " << received.error().message();
    EXPECT_NE(received.error().message().find(f.name), std::string::npos) << received.error().message();
    auto dropped = f.box->try_receive_leased();
    ASSERT_TRUE(dropped) << dropped.error().message();
    EXPECT_FALSE(dropped->has_value()) << "an unreadable message is dropped, never redelivered";
    // The mailbox goes on.
    std::vector<std::byte> payload(3000);
    ferry::test::fill_pattern(payload, 10);
    ASSERT_TRUE(f.box->send(std::span<const std::byte>(payload), {}));
    auto next = f.box->receive();
    ASSERT_TRUE(next) << next.error().message();
    EXPECT_TRUE(ferry::test::holds_pattern(next->data(), 10));
  }
}

TEST(MailboxLoan, AChunkReusedUnderALeaseIsCorruptAtAck) {
  Fixture f;
  auto loan = f.box->loan(5000);
  ASSERT_TRUE(loan);
  ASSERT_TRUE(f.box->send(std::move(*loan)));
  auto lease = f.box->receive_leased();
  ASSERT_TRUE(lease);
  // A misbehaving sender loans the chunk again: its generation moves on.
  Segment log = f.log();
  const auto* header = reinterpret_cast<const SenderLogHeader*>(log.data().data());
  const SlabShape shape = SlabShape::decode(header->slabs[0].load());
  ASSERT_TRUE(shape.present());
  const auto slab_path = f.files(".chunks-0-" + std::to_string(shape.generation));
  ASSERT_EQ(slab_path.size(), 1u);
  auto slab = Segment::open(slab_path[0], {.kind = SegmentKind::file});
  ASSERT_TRUE(slab) << slab.error().message();
  auto* descriptors = reinterpret_cast<ChunkDescriptor*>(slab->data().data());
  descriptors[0].generation.fetch_add(1);
  auto acked = lease->ack();
  ASSERT_FALSE(acked);
  EXPECT_EQ(acked.error().code(), errc::corrupt) << acked.error().message();
  EXPECT_EQ(f.box->stats().leased, 0u) << "removed all the same";
}

TEST(MailboxLoan, LoanBoundsInTheControlFileAreCheckedOnOpen) {
  for (const std::uint64_t limit : {std::uint64_t{0}, std::uint64_t{1} << 40}) {
    Fixture f;
    auto control = Segment::open(f.dir + "/control", {.kind = SegmentKind::file});
    ASSERT_TRUE(control) << control.error().message();
    reinterpret_cast<ferry::detail::MailboxControl*>(control->data().data())->loan_limit = limit;
    auto opened = Mailbox::open(f.name);
    ASSERT_FALSE(opened);
    EXPECT_EQ(opened.error().code(), errc::corrupt) << opened.error().message();
  }
}

}  // namespace
