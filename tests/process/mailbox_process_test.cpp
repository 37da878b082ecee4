// Mailbox between real processes: many senders and receivers with integrity
// checks, identity and access across users, rendezvous, leases of killed
// receivers, and SIGKILL torture of both sides.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "checked_message.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Capacity;
using ferry::errc;
using ferry::Mailbox;
using ferry::test::Child;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 300s;

// Messages of at most kMessageWords words (the mailboxes take 128 bytes).
constexpr std::size_t kMessageWords = 16;

std::size_t encode(std::uint64_t sender, std::uint64_t sequence, std::uint64_t* out) {
  return ferry::test::encode_checked(sender, sequence, kMessageWords, out);
}

struct Decoded {
  std::uint64_t sender;
  std::uint64_t sequence;
  bool intact;
};

Decoded decode(std::span<const std::byte> message) {
  const auto checked = ferry::test::decode_checked(message, kMessageWords);
  return {checked.origin, checked.sequence, checked.intact};
}

struct Name {
  Name() : name(ferry::test::unique_name("mbx")) {}
  ~Name() { (void)Mailbox::destroy(name); }
  std::string name;
};

// ------------------------------------------------------------------ volume

constexpr std::size_t kSenders = 4;
constexpr std::size_t kMaxPerSender = 100000;

struct VolumeLedger {
  std::atomic<std::uint64_t> seen[kSenders * kMaxPerSender / 64 + 1];
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint64_t> duplicates;
  std::atomic<std::uint64_t> damaged;
  std::atomic<std::uint64_t> out_of_order;
  std::atomic<std::uint64_t> per_receiver[2];
};

TEST(MailboxProcess, FourSendersTwoReceiversEveryMessageExactlyOnceInOrder) {
  Name n;
  auto box = Mailbox::create(n.name, {.capacity = Capacity::bounded(256, 128)});
  ASSERT_TRUE(box) << box.error().message();
  const std::size_t per_sender = std::min(kMaxPerSender, ferry::test::scaled(kMaxPerSender));
  const std::uint64_t total = kSenders * per_sender;
  SharedAnonymous<VolumeLedger> ledger;

  std::vector<Child> children;
  for (int r = 0; r < 2; ++r) {
    children.push_back(Child::spawn([&, r] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      std::uint64_t last[kSenders] = {};
      while (ledger->received.load() < total) {
        auto message = opened->receive_for(100ms);
        if (!message) {
          FERRY_CHILD_CHECK(message.error().code() == errc::timed_out);
          continue;
        }
        const Decoded d = decode(message->data());
        if (!d.intact || d.sender >= kSenders || d.sequence == 0 || d.sequence > per_sender) {
          ledger->damaged.fetch_add(1);
          continue;
        }
        if (d.sequence <= last[d.sender]) ledger->out_of_order.fetch_add(1);
        last[d.sender] = d.sequence;
        FERRY_CHILD_CHECK(message->sender().pid != 0 && message->sender().pid_attested);
        const std::uint64_t bit = d.sender * per_sender + (d.sequence - 1);
        if (ledger->seen[bit / 64].fetch_or(std::uint64_t{1} << (bit % 64)) & (std::uint64_t{1} << (bit % 64))) {
          ledger->duplicates.fetch_add(1);
        }
        ledger->per_receiver[r].fetch_add(1);
        ledger->received.fetch_add(1);
      }
      return 0;
    }));
  }
  for (std::size_t s = 0; s < kSenders; ++s) {
    children.push_back(Child::spawn([&, s] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      std::uint64_t words[kMessageWords];
      for (std::uint64_t sequence = 1; sequence <= per_sender; ++sequence) {
        const std::size_t size = encode(s, sequence, words);
        auto sent = opened->send(std::as_bytes(std::span(words, size / 8)));
        FERRY_CHILD_CHECK(sent);
      }
      return 0;
    }));
  }
  for (auto& child : children) EXPECT_EQ(child.wait_for(kWatchdog), 0);
  EXPECT_EQ(ledger->received.load(), total);
  EXPECT_EQ(ledger->duplicates.load(), 0u);
  EXPECT_EQ(ledger->damaged.load(), 0u);
  EXPECT_EQ(ledger->out_of_order.load(), 0u) << "per-sender FIFO";
  for (std::uint64_t bit = 0; bit < total; ++bit) {
    ASSERT_TRUE(ledger->seen[bit / 64].load() & (std::uint64_t{1} << (bit % 64))) << "lost: sender "
                                                                                   << bit / per_sender << " #"
                                                                                   << bit % per_sender + 1;
  }
  EXPECT_GT(ledger->per_receiver[0].load(), 0u) << "both receivers share the load";
  EXPECT_GT(ledger->per_receiver[1].load(), 0u) << "both receivers share the load";
  const auto stats = box->stats();
  EXPECT_EQ(stats.sent, total);
  EXPECT_EQ(stats.received, total);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_LE(stats.high_water, 256u);
}

// ---------------------------------------------------------- open_or_create

constexpr int kRacers = 6;

struct Race {
  std::atomic<int> go{0};
  std::atomic<int> ready{0};  // racers holding the mailbox
  std::atomic<pid_t> pid[kRacers];
};

// Racers call open_or_create on one fresh name at the same moment: none may
// see a creation half done as an error, and all must hold the same mailbox,
// shown by each receiving the message its neighbour sent.
TEST(MailboxProcess, RacingOpenOrCreateAllShareOneMailbox) {
  const std::size_t rounds = ferry::test::scaled(10);
  for (std::size_t round = 0; round < rounds; ++round) {
    Name n;
    SharedAnonymous<Race> race;
    std::vector<Child> racers;
    for (int i = 0; i < kRacers; ++i) {
      racers.push_back(Child::spawn([&, i] {
        race->pid[i].store(::getpid());
        while (race->go.load() == 0) std::this_thread::yield();
        auto box = Mailbox::open_or_create(n.name, {.capacity = Capacity::bounded(2 * kRacers, 64)});
        if (!box) std::fprintf(stderr, "racer %d: %s\n", i, box.error().message().c_str());
        FERRY_CHILD_CHECK(box);
        race->ready.fetch_add(1);
        while (race->ready.load() < kRacers) std::this_thread::yield();
        FERRY_CHILD_CHECK(box->send(std::as_bytes(std::span(&i, 1))));
        const int neighbour = (i + 1) % kRacers;
        auto message = box->receive_from_for(race->pid[neighbour].load(), 20s);
        FERRY_CHILD_CHECK(message);
        FERRY_CHILD_CHECK(message->size() == sizeof(int));
        int sent_by = -1;
        std::memcpy(&sent_by, message->data().data(), sizeof sent_by);
        FERRY_CHILD_CHECK(sent_by == neighbour);
        return 0;
      }));
    }
    for (int i = 0; i < kRacers; ++i) {
      while (race->pid[i].load() == 0) std::this_thread::yield();
    }
    race->go.store(1);
    for (auto& racer : racers) ASSERT_EQ(racer.wait_for(kWatchdog), 0) << "round " << round;
    auto box = Mailbox::open(n.name);
    ASSERT_TRUE(box) << box.error().message();
    const auto stats = box->stats();
    EXPECT_EQ(stats.sent, static_cast<std::uint64_t>(kRacers));
    EXPECT_EQ(stats.received, static_cast<std::uint64_t>(kRacers));
  }
}

// -------------------------------------------------------- identity, access

TEST(MailboxProcess, AnotherUsersMessageCarriesItsUidAndCannotBeForgedOrRead) {
  Name n;
  auto box = Mailbox::create(n.name, {.mode = 0622});  // others may send, not receive
  ASSERT_TRUE(box) << box.error().message();
  ASSERT_TRUE(box->send(std::as_bytes(std::span("from root", 9))));
  std::string root_log;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm/ferry." + n.name)) {
    if (entry.path().filename().string().starts_with("sender.")) root_log = entry.path();
  }
  ASSERT_FALSE(root_log.empty());

  Child other = Child::spawn([&] {
    ferry::test::become_other_user();
    FERRY_CHILD_CHECK(Mailbox::open(n.name).error().code() == errc::permission_denied);  // foreign owner
    auto opened = Mailbox::open(n.name, {.allow_foreign_owner = true});
    FERRY_CHILD_CHECK(opened);
    // May send; may not receive, nor touch root's log.
    FERRY_CHILD_CHECK(opened->send(std::as_bytes(std::span("from nobody", 11))));
    FERRY_CHILD_CHECK(opened->try_receive().error().code() == errc::permission_denied);
    FERRY_CHILD_CHECK(::open(root_log.c_str(), O_RDWR) < 0 && errno == EACCES);
    FERRY_CHILD_CHECK(::open(root_log.c_str(), O_RDONLY) < 0 && errno == EACCES);
    FERRY_CHILD_CHECK(::unlink(root_log.c_str()) != 0);
    return 0;
  });
  const pid_t other_pid = other.pid();
  ASSERT_EQ(other.wait_for(kWatchdog), 0);
  auto first = box->receive_for(5s);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->sender().uid, 0u);
  auto second = box->receive_for(5s);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(second->data().data()), second->size()), "from nobody");
  EXPECT_EQ(second->sender().uid, ferry::test::kOtherUid);
  EXPECT_EQ(second->sender().pid, other_pid);
  // The child may have exited before the receiver looked: then the pid is
  // the one its log's name was bound with, and not claimed as attested.
  if (second->sender().pid_attested) {
    EXPECT_EQ(second->sender().gid, ferry::test::kOtherGid);
  }
}

TEST(MailboxProcess, APrivateMailboxCannotBeOpenedByAnotherUser) {
  Name n;
  auto box = Mailbox::create(n.name);  // 0600
  ASSERT_TRUE(box);
  Child other = Child::spawn([&] {
    ferry::test::become_other_user();
    auto opened = Mailbox::open(n.name, {.allow_foreign_owner = true});
    FERRY_CHILD_CHECK(!opened && opened.error().code() == errc::permission_denied);
    return 0;
  });
  EXPECT_EQ(other.wait_for(kWatchdog), 0);
}

TEST(MailboxProcess, TheSenderPidIsAttestedWhileItLives) {
  Name n;
  auto box = Mailbox::create(n.name);
  ASSERT_TRUE(box);
  ferry::test::Event sent, may_exit;
  Child sender = Child::spawn([&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened && opened->send(std::as_bytes(std::span("hi", 2))));
    sent.signal();
    may_exit.wait();
    return 0;
  });
  ASSERT_TRUE(sent.wait());
  auto message = box->receive_for(5s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message->sender().pid, sender.pid());
  EXPECT_TRUE(message->sender().pid_attested);
  EXPECT_EQ(message->sender().gid, ::getegid());
  may_exit.signal();
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
}

// -------------------------------------------------------------- rendezvous

struct Flag {
  std::atomic<int> returned{0};
};

TEST(MailboxProcess, RendezvousSendReturnsOnlyOnceAReceiverTookTheMessage) {
  Name n;
  auto box = Mailbox::create(n.name, {.capacity = Capacity::rendezvous(64)});
  ASSERT_TRUE(box);
  SharedAnonymous<Flag> flag;
  Child sender = Child::spawn([&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened);
    FERRY_CHILD_CHECK(opened->send(std::as_bytes(std::span("meet", 4))));
    flag->returned.store(1);
    return 0;
  });
  // Until we receive, the send cannot have returned, however long we wait.
  while (box->stats().sent == 0) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(flag->returned.load(), 0) << "send returned before any receiver took the message";
  auto message = box->receive_for(5s);
  ASSERT_TRUE(message);
  EXPECT_EQ(sender.wait_for(kWatchdog), 0);
  EXPECT_EQ(flag->returned.load(), 1);
}

// ------------------------------------------------------------------ leases

TEST(MailboxProcess, ALeaseOfAKilledReceiverIsRedeliveredWithItsCount) {
  Name n;
  auto box = Mailbox::create(n.name);
  ASSERT_TRUE(box);
  ASSERT_TRUE(box->send(std::as_bytes(std::span("work", 4))));
  ferry::test::Event leased;
  Child receiver = Child::spawn([&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened);
    auto lease = opened->receive_leased();
    FERRY_CHILD_CHECK(lease);
    leased.signal();
    ::pause();  // holds the lease until killed
    return 0;
  });
  ASSERT_TRUE(leased.wait());
  const auto receivers_are = [&](std::vector<std::pair<pid_t, bool>> expected) {
    std::vector<std::pair<pid_t, bool>> seen;
    for (const auto& peer : box->stats().receivers) seen.emplace_back(peer.pid, peer.alive);
    std::sort(seen.begin(), seen.end());
    std::sort(expected.begin(), expected.end());
    if (seen != expected) {
      for (const auto& [pid, alive] : seen) ADD_FAILURE() << "listed: pid " << pid << (alive ? " alive" : " dead");
      for (const auto& [pid, alive] : expected) ADD_FAILURE() << "expected: pid " << pid << (alive ? " alive" : " dead");
    }
    return seen == expected;
  };
  const pid_t receiver_pid = receiver.pid();
  EXPECT_TRUE(receivers_are({{receiver_pid, true}}));
  EXPECT_FALSE(box->try_receive()->has_value()) << "leased elsewhere";
  EXPECT_TRUE(receivers_are({{receiver_pid, true}, {::getpid(), true}}));
  receiver.kill(SIGKILL);
  receiver.wait();
  EXPECT_TRUE(receivers_are({{receiver_pid, false}, {::getpid(), true}})) << "listed dead until its entry is reused";
  auto again = box->receive_for(10s);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->delivery_count(), 2u);
  EXPECT_EQ(box->stats().redelivered, 1u);
  EXPECT_EQ(box->stats().receivers.size(), 2u);
}

TEST(MailboxProcess, AReceiverLeavesTheListWhenItClosesAndADeadOnesEntryIsReused) {
  Name n;
  auto box = Mailbox::create(n.name);
  ASSERT_TRUE(box);
  ferry::test::Event received;
  Child receiver = Child::spawn([&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened);
    FERRY_CHILD_CHECK(opened->try_receive());
    received.signal();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(received.wait());
  ASSERT_EQ(box->stats().receivers.size(), 1u);
  EXPECT_EQ(box->stats().receivers[0].pid, receiver.pid());
  EXPECT_TRUE(box->stats().receivers[0].alive);
  EXPECT_EQ(box->stats().receivers[0].uid, ::geteuid());
  receiver.kill(SIGKILL);
  receiver.wait();
  {
    auto second = Mailbox::open(n.name);
    ASSERT_TRUE(second);
    ASSERT_TRUE(second->try_receive());
    ASSERT_EQ(box->stats().receivers.size(), 1u) << "the dead receiver's entry was taken";
    EXPECT_EQ(box->stats().receivers[0].pid, ::getpid());
    EXPECT_TRUE(box->stats().receivers[0].alive);
  }
  EXPECT_TRUE(box->stats().receivers.empty()) << "a receiver that closed the mailbox is not listed";
}

// A slot is held while its sender lives or its messages wait. Here every
// receive happened before the senders' deaths were looked for: the next
// sender finds the slots taken and must look itself.
TEST(MailboxProcess, SlotsOfKilledSendersWhoseMessagesWereReceivedAreReused) {
  Name n;
  auto box = Mailbox::create(n.name, {.max_senders = 2});
  ASSERT_TRUE(box) << box.error().message();
  std::vector<Child> senders;
  for (int i = 0; i < 2; ++i) {
    ferry::test::Event sent;
    senders.push_back(Child::spawn([&] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      FERRY_CHILD_CHECK(opened->send(std::as_bytes(std::span("one", 3))));
      sent.signal();
      ::pause();
      return 0;
    }));
    ASSERT_TRUE(sent.wait());
  }
  // Received while the senders live: their slots stay theirs.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(box->receive_for(5s));
  for (auto& sender : senders) {
    sender.kill(SIGKILL);
    sender.wait();
  }
  Child late = Child::spawn([&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened);
    auto sent = opened->send(std::as_bytes(std::span("late", 4)));
    if (!sent) std::fprintf(stderr, "%s\n", sent.error().message().c_str());
    FERRY_CHILD_CHECK(sent);
    return 0;
  });
  ASSERT_EQ(late.wait(), 0) << "a sender found the slots of dead senders taken";
  auto message = box->receive_for(5s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message->size(), 4u);
}

// ------------------------------------------------------------------ torture

struct TortureLedger {
  static constexpr std::size_t kMaxMessages = 1u << 20;
  std::atomic<std::uint64_t> sent_done[kMaxMessages / 64];   // send() returned
  std::atomic<std::uint64_t> ack_begun[kMaxMessages / 64];   // ack() called (it may not have happened)
  std::atomic<std::uint64_t> ack_done[kMaxMessages / 64];    // ack() returned: must never come back
  std::atomic<std::uint64_t> torn;
  std::atomic<std::uint64_t> after_ack;
  std::atomic<std::uint64_t> bad_sender;
};

bool test_bit(const std::atomic<std::uint64_t>* bits, std::uint64_t bit) {
  return bits[bit / 64].load() & (std::uint64_t{1} << (bit % 64));
}
void set_bit(std::atomic<std::uint64_t>* bits, std::uint64_t bit) {
  bits[bit / 64].fetch_or(std::uint64_t{1} << (bit % 64));
}

// Each round: a sender and a receiver process run, and one or both are
// killed with SIGKILL at a random moment. A message is identified by
// (round, sequence); the ledger tells what the invariants need.
TEST(MailboxProcess, SigkillSendersAndReceiversAtRandomLosesAndTearsNothing) {
  Name n;
  auto box = Mailbox::create(n.name, {.capacity = Capacity::bounded(64, 128), .max_senders = 64});
  ASSERT_TRUE(box) << box.error().message();
  SharedAnonymous<TortureLedger> ledger;
  const std::size_t rounds = ferry::test::scaled(300);
  constexpr std::uint64_t kPerRound = 1000;  // sequence numbers per round
  std::mt19937 random(12345);
  const auto check_message = [&](const ferry::Message& message) -> std::uint64_t {
    const Decoded d = decode(message.data());
    if (!d.intact || d.sequence == 0 || d.sequence >= kPerRound || d.sender >= rounds) {
      ledger->torn.fetch_add(1);
      return ~std::uint64_t{0};
    }
    if (message.sender().uid != ::geteuid()) ledger->bad_sender.fetch_add(1);
    const std::uint64_t id = d.sender * kPerRound + d.sequence;
    if (test_bit(ledger->ack_done, id)) ledger->after_ack.fetch_add(1);
    return id;
  };
  for (std::size_t round = 0; round < rounds; ++round) {
    Child sender = Child::spawn([&] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      std::uint64_t words[kMessageWords];
      for (std::uint64_t sequence = 1; sequence < kPerRound; ++sequence) {
        const std::size_t size = encode(round, sequence, words);
        auto sent = opened->send_for(std::as_bytes(std::span(words, size / 8)), 2s);
        if (!sent) return 0;  // full for long: the round is over
        set_bit(ledger->sent_done, round * kPerRound + sequence);
      }
      return 0;
    });
    Child receiver = Child::spawn([&] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      for (;;) {
        auto lease = opened->receive_leased_for(2s);
        if (!lease) return 0;
        const std::uint64_t id = check_message(lease->message());
        if (id == ~std::uint64_t{0}) continue;
        set_bit(ledger->ack_begun, id);
        if (lease->ack()) set_bit(ledger->ack_done, id);
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
    if (random() % 2 == 0) {
      sender.kill(SIGKILL);
      receiver.kill(SIGKILL);
    } else {
      receiver.kill(SIGKILL);
      sender.kill(SIGKILL);
    }
    sender.wait();
    receiver.wait();
  }
  // Drain: everything sent and not acknowledged must still be there.
  std::vector<bool> drained(rounds * kPerRound, false);
  for (;;) {
    auto message = box->receive_for(1s);
    if (!message) {
      ASSERT_EQ(message.error().code(), errc::timed_out) << message.error().message();
      break;
    }
    const std::uint64_t id = check_message(*message);
    if (id != ~std::uint64_t{0}) drained[id] = true;
  }
  EXPECT_EQ(ledger->torn.load(), 0u) << "a torn or invented message was seen";
  EXPECT_EQ(ledger->after_ack.load(), 0u) << "an acknowledged message came back";
  EXPECT_EQ(ledger->bad_sender.load(), 0u);
  std::size_t lost = 0;
  for (std::uint64_t id = 0; id < rounds * kPerRound; ++id) {
    if (test_bit(ledger->sent_done, id) && !test_bit(ledger->ack_begun, id) && !drained[id]) ++lost;
  }
  EXPECT_EQ(lost, 0u) << "messages sent, never acknowledged, and gone";
  // The mailbox still works, without any daemon.
  auto sent_after = box->send(std::as_bytes(std::span("after", 5)));
  ASSERT_TRUE(sent_after) << sent_after.error().message();
  auto after = box->receive_for(5s);
  ASSERT_TRUE(after) << after.error().message();
  // Receivers killed inside a step on the queue left counters that add up.
  const auto stats = box->stats();
  EXPECT_EQ(stats.queued + stats.leased + stats.unsorted, 0u)
      << stats.queued << " queued, " << stats.leased << " leased, " << stats.unsorted << " unsorted";
}

}  // namespace

namespace {

// ------------------------------------------------------- direct addressing

TEST(MailboxProcess, SendToPidReachesThatProcesssInboxAndReceiveFromFilters) {
  ferry::test::Event ready;
  const pid_t parent = ::getpid();
  SharedAnonymous<Flag> done;
  Child child = Child::spawn([&] {
    auto inbox = ferry::Inbox::self({.name = "t" + std::to_string(parent) + "-registry"});
    FERRY_CHILD_CHECK(inbox);
    ready.signal();
    // receive(Q, msg): the parent's message, though another came first.
    auto from_parent = (*inbox)->receive_from_for(parent, 10s);
    FERRY_CHILD_CHECK(from_parent);
    FERRY_CHILD_CHECK(from_parent->sender().pid == parent);
    FERRY_CHILD_CHECK(std::string(reinterpret_cast<const char*>(from_parent->data().data()), from_parent->size()) ==
                      "by pid");
    auto other = (*inbox)->receive_for(10s);
    FERRY_CHILD_CHECK(other && other->sender().pid != parent);
    auto by_name = (*inbox)->receive_from_for(parent, 10s);
    FERRY_CHILD_CHECK(by_name);
    FERRY_CHILD_CHECK(std::string(reinterpret_cast<const char*>(by_name->data().data()), by_name->size()) ==
                      "by name");
    done->returned.store(1);
    ferry::Inbox::close();  // a test child leaves with _exit: no atexit
    return 0;
  });
  ASSERT_TRUE(ready.wait());
  Child third = Child::spawn([&] {
    FERRY_CHILD_CHECK(ferry::send_to(child.pid(), std::as_bytes(std::span("from a third", 12))));
    return 0;
  });
  ASSERT_EQ(third.wait_for(kWatchdog), 0);
  ASSERT_TRUE(ferry::send_to(child.pid(), std::as_bytes(std::span("by pid", 6))));
  ASSERT_TRUE(ferry::send_to("t" + std::to_string(parent) + "-registry", std::as_bytes(std::span("by name", 7))));
  EXPECT_EQ(child.wait_for(kWatchdog), 0);
  EXPECT_EQ(done->returned.load(), 1);
  // The inbox and its name went with the process.
  EXPECT_EQ(ferry::send_to(child.pid(), std::as_bytes(std::span("late", 4))).error().code(), errc::not_found);
  EXPECT_EQ(ferry::send_to("t" + std::to_string(parent) + "-registry", std::as_bytes(std::span("late", 4)))
                .error()
                .code(),
            errc::not_found);
  EXPECT_EQ(ferry::send_to(::getpid(), std::as_bytes(std::span("x", 1))).error().code(), errc::not_found)
      << "this process made no inbox";
}

}  // namespace
