// Mailbox within one process (and its threads): semantics, edges, hostile bytes.
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry/messaging/detail/mailbox_layout.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::Capacity;
using ferry::errc;
using ferry::Mailbox;
using ferry::MailboxOptions;
using ferry::test::unique_name;

std::span<const std::byte> bytes(const std::string& text) { return std::as_bytes(std::span(text.data(), text.size())); }
std::string text(const ferry::Message& message) {
  return std::string(reinterpret_cast<const char*>(message.data().data()), message.size());
}

struct Fixture {
  explicit Fixture(MailboxOptions options = {}) : name(unique_name("mbx")) {
    auto created = Mailbox::create(name, options);
    EXPECT_TRUE(created) << created.error().message();
    box.emplace(std::move(*created));
  }
  ~Fixture() {
    box.reset();
    (void)Mailbox::destroy(name);
  }
  std::string name;
  std::optional<Mailbox> box;
};

TEST(Mailbox, SendsAndReceivesWithTheSendersIdentity) {
  Fixture f;
  ASSERT_TRUE(f.box->send(bytes("hello")));
  auto message = f.box->receive();
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text(*message), "hello");
  EXPECT_EQ(message->sender().uid, ::geteuid());
  EXPECT_EQ(message->sender().pid, ::getpid());
  EXPECT_TRUE(message->sender().pid_attested);
  EXPECT_EQ(message->delivery_count(), 1u);
  EXPECT_EQ(message->sequence(), 1u);
  auto nothing = f.box->try_receive();
  ASSERT_TRUE(nothing);
  EXPECT_FALSE(nothing->has_value());
}

TEST(Mailbox, ASenderInTheSameProcessButAnotherObjectIsAttestedToo) {
  Fixture f;
  auto sender = Mailbox::open(f.name);
  ASSERT_TRUE(sender) << sender.error().message();
  ASSERT_TRUE(sender->send(bytes("from a second object")));
  auto message = f.box->receive();
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message->sender().pid, ::getpid());
  EXPECT_TRUE(message->sender().pid_attested) << "the kernel's record lock hides our own locks: ferry knows its own logs";
}

TEST(Mailbox, MessagesKeepTheirBytesWhenCopiedAndMovedInlineOrOnTheHeap) {
  Fixture f;
  const std::string small(ferry::detail::MessageBytes::kInline, 's');  // the largest kept inline
  const std::string large(ferry::detail::MessageBytes::kInline + 1, 'L');
  for (const std::string& payload : {small, large, std::string()}) {
    ASSERT_TRUE(f.box->send(bytes(payload)));
    auto received = f.box->receive();
    ASSERT_TRUE(received) << received.error().message();
    const ferry::Message copy = *received;
    EXPECT_EQ(text(copy), payload);
    ferry::Message moved = std::move(*received);
    EXPECT_EQ(text(moved), payload);
    ferry::Message assigned;
    assigned = copy;
    EXPECT_EQ(text(assigned), payload);
    assigned = std::move(moved);
    EXPECT_EQ(text(assigned), payload);
    EXPECT_EQ(assigned.sender().pid, ::getpid());
  }
}

TEST(Mailbox, HigherPriorityFirstFifoWithinOneAndUrgentOvertakesAll) {
  Fixture f;
  const std::vector<std::pair<std::string, unsigned>> sent{{"a0", 0}, {"b5", 5}, {"c0", 0}, {"d31", 31}, {"e5", 5}};
  for (const auto& [payload, priority] : sent) ASSERT_TRUE(f.box->send(bytes(payload), {.priority = priority}));
  ASSERT_TRUE(f.box->send(bytes("urgent"), {.urgent = true}));
  std::vector<std::string> order;
  while (auto message = *f.box->try_receive()) order.push_back(text(*message));
  EXPECT_EQ(order, (std::vector<std::string>{"urgent", "d31", "b5", "e5", "a0", "c0"}));
  auto stats = f.box->stats();
  EXPECT_EQ(stats.sent, 6u);
  EXPECT_EQ(stats.received, 6u);
  EXPECT_EQ(stats.queued, 0u);
}

TEST(Mailbox, FlushDiscardsBelowAPriorityAndCounts) {
  Fixture f;
  for (unsigned priority : {0u, 1u, 2u, 3u, 3u}) ASSERT_TRUE(f.box->send(bytes("m"), {.priority = priority}));
  ASSERT_TRUE(f.box->send(bytes("u"), {.urgent = true}));
  auto flushed = f.box->flush(2);
  ASSERT_TRUE(flushed);
  EXPECT_EQ(*flushed, 2u) << "priorities 0 and 1";
  EXPECT_EQ(*f.box->flush(), 3u) << "the rest but the urgent one";
  auto left = f.box->try_receive();
  ASSERT_TRUE(left && left->has_value());
  EXPECT_TRUE((*left)->urgent());
  EXPECT_EQ(f.box->stats().flushed, 5u);
}

TEST(Mailbox, BoundedTrySendReportsFullAndRoomReturns) {
  Fixture f({.capacity = Capacity::bounded(3, 64)});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(*f.box->try_send(bytes("x")));
  auto full = f.box->try_send(bytes("x"));
  ASSERT_TRUE(full);
  EXPECT_FALSE(*full);
  auto timed = f.box->send_for(bytes("x"), std::chrono::milliseconds(20));
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  ASSERT_TRUE(f.box->receive());
  EXPECT_TRUE(*f.box->try_send(bytes("x")));
  EXPECT_EQ(f.box->stats().high_water, 3u);
}

TEST(Mailbox, TooLargeNamesBothSizes) {
  // Beyond max_message a message travels in a chunk (mailbox_loan_test.cpp), up to the loan limit.
  Fixture f({.capacity = Capacity::bounded(4, 100), .loans = {.limit = 4096}});
  const std::string large(4097, 'x');
  auto refused = f.box->send(bytes(large));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  EXPECT_NE(refused.error().message().find("4097 bytes is larger than its maximum of 100"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(f.box->send(bytes("x"), {.priority = 32}).error().code(), errc::invalid_argument);
}

TEST(Mailbox, LeaseNackRedeliversWithACountAndAckRemoves) {
  Fixture f;
  ASSERT_TRUE(f.box->send(bytes("job")));
  auto first = f.box->receive_leased();
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->delivery_count(), 1u);
  EXPECT_FALSE(f.box->try_receive()->has_value()) << "leased: invisible to others";
  EXPECT_EQ(f.box->stats().leased, 1u);
  ASSERT_TRUE(first->nack());
  EXPECT_EQ(first->ack().error().code(), errc::invalid_argument) << "already nacked";
  {
    auto second = f.box->receive_leased();
    ASSERT_TRUE(second);
    EXPECT_EQ(second->delivery_count(), 2u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(second->data().data()), second->data().size()), "job");
  }  // dropped without ack: nacked
  auto third = f.box->receive_leased();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->delivery_count(), 3u);
  ASSERT_TRUE(third->ack());
  EXPECT_FALSE(f.box->try_receive()->has_value());
  const auto stats = f.box->stats();
  EXPECT_EQ(stats.redelivered, 2u);
  EXPECT_EQ(stats.received, 1u);
}

TEST(Mailbox, VariableSizesWrapTheLogManyTimes) {
  Fixture f({.capacity = Capacity::bounded(8, 300)});
  for (std::size_t i = 0; i < 2000; ++i) {
    std::string payload(i % 301, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(f.box->send(bytes(payload))) << i;
    auto message = f.box->receive();
    ASSERT_TRUE(message) << i << ": " << message.error().message();
    ASSERT_EQ(text(*message), payload) << i;
    ASSERT_EQ(message->sequence(), i + 1);
  }
}

TEST(Mailbox, ThreadsShareTheLoadAndLoseNothing) {
  Fixture f({.capacity = Capacity::bounded(64, 16)});
  const std::size_t count = ferry::test::scaled(20000);
  std::atomic<std::size_t> received{0};
  std::vector<std::thread> receivers;
  std::vector<std::uint64_t> sums(2, 0);
  for (int r = 0; r < 2; ++r) {
    receivers.emplace_back([&, r] {
      auto opened = Mailbox::open(f.name);
      ASSERT_TRUE(opened);
      while (received.load() < count) {
        auto message = opened->receive_for(std::chrono::milliseconds(50));
        if (!message) continue;
        std::uint64_t value = 0;
        std::memcpy(&value, message->data().data(), sizeof value);
        sums[r] += value;
        received.fetch_add(1);
      }
    });
  }
  for (std::uint64_t i = 1; i <= count; ++i) {
    ASSERT_TRUE(f.box->send(std::as_bytes(std::span(&i, 1))));
  }
  for (auto& thread : receivers) thread.join();
  EXPECT_EQ(received.load(), count);
  EXPECT_EQ(sums[0] + sums[1], count * (count + 1) / 2);
}

TEST(Mailbox, CreateRefusesWhatExistsAndOpenWhatDoesNot) {
  Fixture f;
  EXPECT_EQ(Mailbox::create(f.name).error().code(), errc::already_exists);
  EXPECT_EQ(Mailbox::open(unique_name("absent")).error().code(), errc::not_found);
  EXPECT_EQ(Mailbox::create("a/b").error().code(), errc::invalid_argument);
  EXPECT_EQ(Mailbox::create(unique_name("zero"), {.capacity = Capacity::bounded(0)}).error().code(),
            errc::invalid_argument);
}

TEST(Mailbox, OpenOrCreateCreatesOnceThenOpensThatMailbox) {
  const std::string name = unique_name("mbx");
  auto first = Mailbox::open_or_create(name, {.capacity = Capacity::bounded(8, 64)});
  ASSERT_TRUE(first) << first.error().message();
  auto second = Mailbox::open_or_create(name, {.capacity = Capacity::bounded(100, 64)});
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->stats().capacity.count, 8u) << "the options of the creating call";
  ASSERT_TRUE(first->send(bytes("shared")));
  auto message = second->try_receive();
  ASSERT_TRUE(message && message->has_value());
  EXPECT_EQ(text(**message), "shared");
  EXPECT_EQ(Mailbox::open_or_create("a/b").error().code(), errc::invalid_argument);
  ASSERT_TRUE(Mailbox::destroy(name));
}

// A creation half done looks like a directory without its control file.
TEST(Mailbox, OpenOrCreateWaitsForAHalfDoneCreationAndNamesOneThatNeverCompletes) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("jobs.mbx");
  const MailboxOptions options{.persistence = ferry::Persistence::filesystem};
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  auto stuck = Mailbox::open_or_create(path, options);
  ASSERT_FALSE(stuck);
  EXPECT_EQ(stuck.error().code(), errc::timed_out);
  EXPECT_NE(stuck.error().message().find("mailbox '" + path + "'"), std::string::npos) << stuck.error().message();
  // A creator that gives up removes what it made: the waiting call creates it.
  std::thread undo([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ::rmdir(path.c_str());
  });
  auto created = Mailbox::open_or_create(path, options);
  undo.join();
  ASSERT_TRUE(created) << created.error().message();
  ASSERT_TRUE(created->send(bytes("x")));
  EXPECT_EQ(created->stats().sent, 1u);
}

TEST(Mailbox, FilesystemPersistenceKeepsMessagesAcrossReopen) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("orders.mbx");
  {
    auto box = Mailbox::create(path, {.persistence = ferry::Persistence::filesystem});
    ASSERT_TRUE(box) << box.error().message();
    ASSERT_TRUE(box->send(bytes("kept"), {.priority = 4}));
    ASSERT_TRUE(box->sync());
  }
  {
    auto reopened = Mailbox::open(path);
    ASSERT_TRUE(reopened) << reopened.error().message();
    auto message = reopened->try_receive();
    ASSERT_TRUE(message && message->has_value());
    EXPECT_EQ(text(**message), "kept");
    EXPECT_EQ((*message)->priority(), 4u);
  }
  ASSERT_TRUE(Mailbox::destroy(path));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Mailbox, ProcessPersistenceGoesWithTheLastParticipant) {
  const std::string name = unique_name("mbx");
  {
    auto box = Mailbox::create(name, {.persistence = ferry::Persistence::process});
    ASSERT_TRUE(box) << box.error().message();
    ASSERT_TRUE(box->send(bytes("x")));
    auto second = Mailbox::open(name);
    ASSERT_TRUE(second);
  }
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/ferry." + name));
  EXPECT_EQ(Mailbox::open(name).error().code(), errc::not_found);
}

// Scribbling on the queue must give corrupt errors, never a crash.
TEST(Mailbox, HostileQueueGivesCorruptNeverACrash) {
  Fixture f({.capacity = Capacity::bounded(8, 64)});
  ASSERT_TRUE(f.box->send(bytes("one")));
  ASSERT_TRUE(f.box->send(bytes("two")));
  auto raw = ferry::Segment::open("/dev/shm/ferry." + f.name + "/queue", {.kind = ferry::SegmentKind::file});
  ASSERT_TRUE(raw) << raw.error().message();
  auto* queue = reinterpret_cast<ferry::detail::MailboxQueue*>(raw->data().data());
  auto* progress = reinterpret_cast<ferry::detail::SlotProgress*>(raw->data().data() + ferry::detail::queue_slots_offset());
  ASSERT_TRUE(f.box->try_receive());  // binds the sender's log and indexes both records
  ASSERT_TRUE(f.box->send(bytes("three")));
  progress[0].scanned.store(progress[0].scanned.load() + 32);  // the middle of a record
  auto first = f.box->try_receive();
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code(), errc::corrupt) << first.error().message();
  // A list head out of bounds: also corrupt or nothing, never a wild read.
  progress[0].scanned.store(0);
  queue->levels[0].first = 1u << 30;
  auto second = f.box->try_receive();
  if (!second) {
    EXPECT_EQ(second.error().code(), errc::corrupt) << second.error().message();
  }
}

// A receiver killed inside a step on the queue (between a message's new
// state and its counter): the next lock holder finishes or undoes the step
// from the journal, so the counters keep adding up and nothing is lost. The
// holder is a real process killed with the lock held, leaving the state a
// kill at that instruction would.
enum class KilledAt { after_ack, before_ack, after_redelivery, after_flush };

class MailboxStepKilled : public testing::TestWithParam<KilledAt> {};

TEST_P(MailboxStepKilled, TheNextReceiverCompletesTheCounters) {
  using ferry::detail::DescriptorState;
  using ferry::detail::QueueStep;
  const KilledAt at = GetParam();
  Fixture f({.capacity = Capacity::bounded(8, 64)});
  ASSERT_TRUE(f.box->send(bytes("a")));
  ASSERT_TRUE(f.box->send(bytes("b")));
  auto lease = f.box->receive_leased();  // "a"
  ASSERT_TRUE(lease) << lease.error().message();
  ferry::test::Child holder = ferry::test::Child::spawn([&] {
    auto raw = ferry::Segment::open("/dev/shm/ferry." + f.name + "/queue", {.kind = ferry::SegmentKind::file});
    FERRY_CHILD_CHECK(raw);
    auto* queue = reinterpret_cast<ferry::detail::MailboxQueue*>(raw->data().data());
    auto* descriptors = reinterpret_cast<ferry::detail::Descriptor*>(
        raw->data().data() + ferry::detail::queue_descriptors_offset(queue->max_senders));
    FERRY_CHILD_CHECK(queue->lock.lock());
    std::uint32_t leased = 0, queued = 0;
    for (std::uint32_t i = 0; i < queue->pool_used; ++i) {
      if (descriptors[i].state == DescriptorState::leased) leased = i;
      if (descriptors[i].state == DescriptorState::queued) queued = i;
    }
    const std::uint32_t index = at == KilledAt::after_flush ? queued : leased;
    auto& journal = queue->journal;
    journal.index = index;
    journal.deliveries = descriptors[index].deliveries;
    const auto* progress = reinterpret_cast<ferry::detail::SlotProgress*>(raw->data().data() +
                                                                          ferry::detail::queue_slots_offset());
    journal.taken = progress[descriptors[index].slot].taken.load();
    journal.received = queue->received.load();
    journal.redelivered = queue->redelivered.load();
    journal.flushed = queue->flushed.load();
    journal.step = at == KilledAt::after_redelivery ? QueueStep::redeliver
                   : at == KilledAt::after_flush    ? QueueStep::flush
                                                    : QueueStep::deliver;
    switch (at) {
      case KilledAt::after_ack:
      case KilledAt::after_flush:
        descriptors[index].state = DescriptorState::done;
        break;
      case KilledAt::after_redelivery:
        descriptors[index].state = DescriptorState::queued;
        break;
      case KilledAt::before_ack:
        break;
    }
    ::raise(SIGKILL);
    return 1;
  });
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
  ASSERT_TRUE(f.box->flush(0)) << "takes the lock over from the dead holder";
  const auto stats = f.box->stats();
  EXPECT_EQ(stats.unsorted, 0u) << "every message sent is counted somewhere";
  EXPECT_EQ(stats.received + stats.flushed + stats.leased + stats.queued, 2u);
  switch (at) {
    case KilledAt::after_ack:
      EXPECT_EQ(stats.received, 1u);
      EXPECT_EQ(stats.queued, 1u);
      EXPECT_EQ(lease->ack().error().code(), errc::busy) << "the message is gone";
      break;
    case KilledAt::before_ack:
      EXPECT_EQ(stats.leased, 1u);
      EXPECT_TRUE(lease->ack()) << "the lease still holds";
      EXPECT_EQ(f.box->stats().received, 1u);
      break;
    case KilledAt::after_redelivery:
      EXPECT_EQ(stats.redelivered, 1u);
      EXPECT_EQ(stats.queued, 2u);
      EXPECT_EQ(lease->ack().error().code(), errc::busy) << "the message went back to the queue";
      break;
    case KilledAt::after_flush:
      EXPECT_EQ(stats.flushed, 1u);
      EXPECT_EQ(stats.leased, 1u);
      EXPECT_TRUE(lease->ack());
      break;
  }
  // The queue works on: what is left is received, and the counters close.
  while (f.box->stats().queued > 0) ASSERT_TRUE(f.box->receive_for(std::chrono::seconds(5)));
  const auto after = f.box->stats();
  EXPECT_EQ(after.unsorted + after.leased + after.queued, 0u);
  EXPECT_EQ(after.received + after.flushed, 2u);
}

INSTANTIATE_TEST_SUITE_P(Mailbox, MailboxStepKilled,
                         testing::Values(KilledAt::after_ack, KilledAt::before_ack, KilledAt::after_redelivery,
                                         KilledAt::after_flush),
                         [](const testing::TestParamInfo<KilledAt>& case_info) {
                           switch (case_info.param) {
                             case KilledAt::after_ack: return "AfterAck";
                             case KilledAt::before_ack: return "BeforeAck";
                             case KilledAt::after_redelivery: return "AfterRedelivery";
                             case KilledAt::after_flush: return "AfterFlush";
                           }
                           return "";
                         });

}  // namespace

namespace {

TEST(Mailbox, NotifyFdPollsReadableUnderEpollAndRearms) {
  Fixture f;
  auto fd = f.box->notify_fd();
  ASSERT_TRUE(fd) << fd.error().message();
  const int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(epoll, 0);
  epoll_event interest{};
  interest.events = EPOLLIN;
  ASSERT_EQ(::epoll_ctl(epoll, EPOLL_CTL_ADD, *fd, &interest), 0);
  epoll_event event{};
  EXPECT_EQ(::epoll_wait(epoll, &event, 1, 0), 0) << "nothing sent yet";
  auto sender = Mailbox::open(f.name);
  ASSERT_TRUE(sender);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(sender->send(bytes("ping")));
    ASSERT_EQ(::epoll_wait(epoll, &event, 1, 10000), 1) << "round " << round;
    std::size_t got = 0;
    while (auto message = *f.box->try_receive()) ++got;
    EXPECT_EQ(got, 1u);
    EXPECT_EQ(::epoll_wait(epoll, &event, 1, 0), 0) << "drained: not readable any more";
  }
  ::close(epoll);
}

TEST(Mailbox, SetReturnsFromWhicheverSourceGotAMessage) {
  Fixture first, second;
  const std::string channel_name = unique_name("chn");
  auto channel = ferry::Channel::create(channel_name);
  ASSERT_TRUE(channel);
  auto tx = channel->sender();
  auto rx = channel->receiver();
  ASSERT_TRUE(tx && rx);
  ferry::MailboxSet set;
  const auto a = set.add(*first.box);
  const auto b = set.add(*second.box);
  const auto c = set.add(*rx);
  EXPECT_FALSE(set.try_receive()->has_value());
  auto nothing = set.receive_for(std::chrono::milliseconds(30));
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().code(), errc::timed_out);

  auto to_second = Mailbox::open(second.name);
  ASSERT_TRUE(to_second->send(bytes("for b")));
  auto got = set.receive_for(std::chrono::seconds(10));
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->source, b);
  EXPECT_EQ(text(got->message), "for b");

  ASSERT_TRUE(tx->send(bytes("for c")));
  got = set.receive_for(std::chrono::seconds(10));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->source, c);
  EXPECT_EQ(text(got->message), "for c");

  // A sleeping set (block strategy: futex_waitv) is woken by another process.
  ferry::test::Child child = ferry::test::Child::spawn([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto opened = Mailbox::open(first.name);
    FERRY_CHILD_CHECK(opened && opened->send(bytes("for a")));
    return 0;
  });
  got = set.receive_for(std::chrono::seconds(10), ferry::WaitStrategy::block());
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->source, a);
  EXPECT_EQ(got->message.sender().pid, child.pid());
  EXPECT_EQ(child.wait(), 0);
  (void)ferry::Channel::destroy(channel_name);
}

}  // namespace

namespace {

std::uint64_t allocated_bytes(const std::string& path) {
  struct stat facts{};
  if (::stat(path.c_str(), &facts) != 0) return 0;
  return static_cast<std::uint64_t>(facts.st_blocks) * 512;
}

TEST(Mailbox, UnboundedGrowsWithoutBlockingAndStopsAtItsLimitWithAClearError) {
  constexpr std::size_t kLimit = 4u << 20;
  Fixture f({.capacity = Capacity::unbounded(kLimit, 4096)});
  const std::string dir = "/dev/shm/ferry." + f.name;
  const std::string payload(4096, 'u');
  ASSERT_TRUE(f.box->send(bytes(payload)));
  std::string log;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().starts_with("sender.")) log = entry.path();
  }
  ASSERT_FALSE(log.empty());
  const std::uint64_t small = allocated_bytes(log);
  EXPECT_LT(small, kLimit / 2) << "memory is allocated as messages come, not up front";
  std::size_t sent = 1;
  for (;;) {
    auto more = f.box->try_send(bytes(payload));
    if (!more) {
      EXPECT_EQ(more.error().code(), errc::limit_reached);
      EXPECT_NE(more.error().message().find("memory limit of 4194304 bytes"), std::string::npos)
          << more.error().message();
      break;
    }
    ASSERT_TRUE(*more) << "unbounded never reports a plain 'full'";
    ++sent;
    ASSERT_LE(sent, kLimit / payload.size()) << "sent past the limit";
  }
  EXPECT_EQ(sent, kLimit / payload.size());
  EXPECT_GT(allocated_bytes(log), small) << "it grew";
  auto blocking = f.box->send(bytes(payload));
  ASSERT_FALSE(blocking) << "send does not wait either";
  EXPECT_EQ(blocking.error().code(), errc::limit_reached);
  // Drained, it takes messages again, and gives memory back as it goes.
  for (std::size_t i = 0; i < sent; ++i) ASSERT_TRUE(f.box->receive()) << i;
  for (std::size_t i = 0; i < 3 * sent; ++i) {
    ASSERT_TRUE(f.box->send(bytes(payload))) << i;
    ASSERT_TRUE(f.box->receive()) << i;
  }
  EXPECT_LT(allocated_bytes(log), kLimit) << "freed chunks were given back";
}

TEST(Mailbox, ABoundedMailboxOfLargeMessagesHoldsMemoryOnlyForWhatIsQueued) {
  // 32 messages of up to 1 MiB: a log ring of 64 MiB per sender, virtual.
  constexpr std::size_t kMessage = 1u << 20;
  Fixture f({.capacity = Capacity::bounded(32, kMessage)});
  const std::string payload(kMessage, 'b');
  ASSERT_TRUE(f.box->send(bytes(payload)));
  std::string log;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm/ferry." + f.name)) {
    if (entry.path().filename().string().starts_with("sender.")) log = entry.path();
  }
  ASSERT_FALSE(log.empty());
  ASSERT_GE(std::filesystem::file_size(log), std::uintmax_t{33} * kMessage) << "the ring itself is that large";
  ASSERT_EQ(text(*f.box->receive()), payload);
  // Past the end of the ring and around again, one message at a time.
  for (int i = 0; i < 70; ++i) {
    ASSERT_TRUE(f.box->send(bytes(payload))) << i;
    auto received = f.box->receive();
    ASSERT_TRUE(received) << i << ": " << received.error().message();
    ASSERT_EQ(received->size(), kMessage);
  }
  EXPECT_LT(allocated_bytes(log), std::uint64_t{8} * kMessage) << "memory follows the messages queued";
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(f.box->try_send(bytes(payload))) << i;
  EXPECT_EQ(f.box->try_send(bytes(payload)).value(), false) << "still bounded at 32";
}

}  // namespace

namespace {

// Garbage in a sender's log (its owner may write there) must give corrupt
// errors to receivers, never a crash or a read out of bounds (ASan build).
TEST(Mailbox, GarbageInASenderLogGivesCorruptNeverACrash) {
  for (int variant = 0; variant < 4; ++variant) {
    Fixture f({.capacity = Capacity::bounded(8, 64)});
    ASSERT_TRUE(f.box->send(bytes("first")));
    ASSERT_TRUE(f.box->send(bytes("second")));
    std::string log;
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm/ferry." + f.name)) {
      if (entry.path().filename().string().starts_with("sender.")) log = entry.path();
    }
    auto raw = ferry::Segment::open(log, {.kind = ferry::SegmentKind::file});
    ASSERT_TRUE(raw) << raw.error().message();
    std::byte* records = raw->data().data() + ferry::detail::kSenderLogRecords;
    auto* header = reinterpret_cast<ferry::detail::SenderLogHeader*>(raw->data().data());
    switch (variant) {
      case 0: {  // a length far beyond the maximum
        const std::uint64_t commit = (std::uint64_t{ferry::detail::log_record_tag(0)} << 32) | 0x7fff'ffffu;
        std::memcpy(records, &commit, 8);
        break;
      }
      case 1:  // no record where the log says one is
        std::memset(records + 64, 0xA5, 64);
        break;
      case 2:  // published beyond the log
        header->published.store(header->capacity * 4);
        break;
      case 3: {  // a wrap record of the wrong length
        const std::uint64_t commit =
            (std::uint64_t{ferry::detail::log_record_tag(0) | ferry::detail::kLogWrapBit} << 32) | 3u;
        std::memcpy(records, &commit, 8);
        break;
      }
    }
    // The first message may still be readable (variant 1 spoils the second).
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto received = f.box->try_receive();
      if (!received) {
        EXPECT_EQ(received.error().code(), errc::corrupt) << variant << ": " << received.error().message();
        break;
      }
      ASSERT_LT(attempt, 2) << "variant " << variant << ": garbage went unnoticed";
    }
  }
}

}  // namespace

namespace {

TEST(Mailbox, StatsCountUnsortedMessagesAndUrgentKeepsItsPriority) {
  Fixture f;
  auto sender = Mailbox::open(f.name);
  ASSERT_TRUE(sender->send(bytes("a"), {.priority = 3}));
  ASSERT_TRUE(sender->send(bytes("b"), {.priority = 7, .urgent = true}));
  auto stats = f.box->stats();
  EXPECT_EQ(stats.queued + stats.unsorted, 2u) << "no receiver has looked yet";
  auto first = f.box->receive();
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->urgent());
  EXPECT_EQ(first->priority(), 7u);
  stats = f.box->stats();
  EXPECT_EQ(stats.queued, 1u);
  EXPECT_EQ(stats.unsorted, 0u);
  EXPECT_EQ(stats.depth[3], 1u);
}

}  // namespace
