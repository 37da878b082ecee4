// Loans on a Mailbox between real processes: several senders sending random
// sizes by loan and by automatic send to two receivers, senders SIGKILLed
// mid-loan and receivers SIGKILLed holding leases, many times: every payload
// arrives byte-exact, nothing the dead held stays held (their slabs go when
// their logs are retired), and a sender's pool returns to nothing in use.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"
#include "loan_payload.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::Capacity;
using ferry::errc;
using ferry::Mailbox;
using ferry::WaitStrategy;
using ferry::test::Child;
using ferry::test::SharedAnonymous;

constexpr auto kWatchdog = 300s;

struct Name {
  Name() : name(ferry::test::unique_name("mbxloans")), dir("/dev/shm/ferry." + name) {}
  ~Name() { (void)Mailbox::destroy(name); }
  std::size_t slab_files() const {
    std::size_t count = 0;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ignored)) {
      count += entry.path().filename().string().find(".chunks-") != std::string::npos ? 1 : 0;
    }
    return count;
  }
  std::string name;
  std::string dir;
};

// A payload names its origin and sequence in its first 16 bytes and every
// byte after depends on both: a torn, stale or recycled payload fails the check.
// Receives (plain or leased, alternately, or leased only) until `stop()`;
// every payload is checked and its (origin, sequence) handed to `record`
// (under a lease: before the ack). Errors: the mailbox's, or corrupt when
// `record` refused a payload.
template <class Stop, class Record>
ferry::result<void> receive_checked(Mailbox& box, std::uint64_t& turn, bool leased_only, Stop&& stop, Record&& record) {
  const auto refused = [] { return ferry::error(errc::corrupt, "the test's ledger", "a payload failed its check"); };
  while (!stop()) {
    if (++turn % 2 == 0 && !leased_only) {
      auto message = box.receive_for(100ms);
      if (!message) {
        if (message.error().code() != errc::timed_out) return message.error();
        continue;
      }
      const auto checked = ferry::test::check_payload(message->data());
      if (!record(checked, message->delivery_count())) return refused();
    } else {
      auto lease = box.receive_leased_for(100ms);
      if (!lease) {
        if (lease.error().code() != errc::timed_out) return lease.error();
        continue;
      }
      const auto checked = ferry::test::check_payload(lease->data());  // in place
      if (!record(checked, lease->delivery_count())) return refused();
      if (auto acked = lease->ack(); !acked) return acked.error();
    }
  }
  return {};
}

// Waits until receivers retired every log whose sender is gone: its slabs go with it.
void expect_slabs_removed(Mailbox& box, const Name& n, std::size_t remaining) {
  const auto give_up = ferry::deadline_after(kWatchdog);
  while (n.slab_files() > remaining && ferry::steady_clock::now() < give_up) {
    auto nothing = box.try_receive();
    ASSERT_TRUE(nothing) << nothing.error().message();
    ASSERT_FALSE(nothing->has_value()) << "a message left over";
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(n.slab_files(), remaining) << "slabs of gone senders are removed with their logs";
}

constexpr std::size_t kSenders = 3;
constexpr std::size_t kMaxPerSender = 4000;

struct Ledger {
  std::atomic<std::uint64_t> seen[kSenders * kMaxPerSender / 64 + 1];
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint64_t> duplicates;
  std::atomic<std::uint64_t> damaged;
  std::atomic<std::uint64_t> out_of_order;
  std::atomic<std::uint64_t> per_receiver[2];
  std::atomic<std::uint64_t> senders_done;
};

TEST(MailboxLoanProcess, SendersSendRandomSizesToTwoReceiversEveryPayloadByteExactOnce) {
  Name n;
  auto box = Mailbox::create(n.name, {.capacity = Capacity::bounded(64, 1024), .loans = {.limit = 16 << 20}});
  ASSERT_TRUE(box) << box.error().message();
  const std::size_t per_sender = std::min(kMaxPerSender, ferry::test::scaled(2000));
  const std::uint64_t total = kSenders * per_sender;
  SharedAnonymous<Ledger> ledger;

  std::vector<Child> children;
  for (int r = 0; r < 2; ++r) {
    children.push_back(Child::spawn([&, r] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      std::uint64_t last[kSenders] = {};
      std::uint64_t turn = static_cast<std::uint64_t>(r);
      const auto ok = receive_checked(
          *opened, turn, false, [&] { return ledger->received.load() >= total; },
          [&](const ferry::test::CheckedPayload& d, std::uint32_t) {
            if (!d.intact || d.origin >= kSenders || d.sequence == 0 || d.sequence > per_sender) {
              ledger->damaged.fetch_add(1);
              return true;
            }
            if (d.sequence <= last[d.origin]) ledger->out_of_order.fetch_add(1);
            last[d.origin] = d.sequence;
            const std::uint64_t bit = d.origin * per_sender + (d.sequence - 1);
            if (ledger->seen[bit / 64].fetch_or(std::uint64_t{1} << (bit % 64)) & (std::uint64_t{1} << (bit % 64))) {
              ledger->duplicates.fetch_add(1);
            }
            ledger->per_receiver[r].fetch_add(1);
            ledger->received.fetch_add(1);
            return true;
          });
      FERRY_CHILD_CHECK(ok);
      return 0;
    }));
  }
  for (std::size_t s = 0; s < kSenders; ++s) {
    children.push_back(Child::spawn([&, s] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      std::mt19937_64 random(s + 1);
      std::vector<std::byte> copy;
      for (std::uint64_t sequence = 1; sequence <= per_sender; ++sequence) {
        // Small ones travel in the log, the rest in chunks: by loan or by send(bytes).
        const std::size_t size = random() % 4 == 0 ? ferry::test::random_payload_size(random, 1024) : ferry::test::random_payload_size(random, 1 << 20);
        if (sequence % 2 == 0) {
          auto loan = opened->loan(size);
          FERRY_CHILD_CHECK(loan);
          ferry::test::write_payload(loan->data(), s, sequence);
          FERRY_CHILD_CHECK(opened->send(std::move(*loan)));
        } else {
          copy.resize(size);
          ferry::test::write_payload(copy, s, sequence);
          FERRY_CHILD_CHECK(opened->send(std::span<const std::byte>(copy)));
        }
      }
      // Once everything is received, nothing of this sender's pool is in use.
      const auto give_up = ferry::deadline_after(kWatchdog);
      for (;;) {
        const auto stats = opened->stats();
        if (stats.queued + stats.unsorted + stats.leased == 0 && ledger->received.load() >= total) break;
        FERRY_CHILD_CHECK(ferry::steady_clock::now() < give_up);
        std::this_thread::sleep_for(1ms);
      }
      auto usage = opened->loan_usage();
      FERRY_CHILD_CHECK(usage && usage->in_use == 0);
      return 0;
    }));
  }
  for (auto& child : children) EXPECT_EQ(child.wait_for(kWatchdog), 0);
  EXPECT_EQ(ledger->received.load(), total);
  EXPECT_EQ(ledger->duplicates.load(), 0u);
  EXPECT_EQ(ledger->damaged.load(), 0u);
  EXPECT_EQ(ledger->out_of_order.load(), 0u) << "per-sender FIFO";
  for (std::uint64_t bit = 0; bit < total; ++bit) {
    ASSERT_TRUE(ledger->seen[bit / 64].load() & (std::uint64_t{1} << (bit % 64)))
        << "lost: sender " << bit / per_sender << " #" << bit % per_sender + 1;
  }
  EXPECT_GT(ledger->per_receiver[0].load(), 0u);
  EXPECT_GT(ledger->per_receiver[1].load(), 0u);
  expect_slabs_removed(*box, n, 0);
}

TEST(MailboxLoanCrash, SendersKilledMidLoanLeaveNoChunkBehindAndNoTornPayload) {
  Name n;
  auto box = Mailbox::create(n.name, {.capacity = Capacity::bounded(16, 256), .loans = {.limit = 8 << 20}});
  ASSERT_TRUE(box) << box.error().message();
  std::mt19937 random(5);
  const std::size_t kills = ferry::test::scaled(40);
  std::uint64_t received = 0;
  std::uint64_t turn = 0;
  for (std::uint64_t origin = 1; origin <= kills; ++origin) {
    ferry::test::Event started;
    auto sender = Child::spawn([&] {
      auto opened = Mailbox::open(n.name);
      FERRY_CHILD_CHECK(opened);
      std::mt19937_64 sizes(origin);
      started.signal();
      for (std::uint64_t sequence = 1;; ++sequence) {
        // Now and then a loan held across another's send, so that the kill
        // finds loans in every state: taken, written, sent and not yet published.
        std::optional<ferry::Loan> held;
        if (sequence % 3 == 0) {
          auto extra = opened->loan(ferry::test::random_payload_size(sizes, 64 << 10));
          FERRY_CHILD_CHECK(extra);
          held.emplace(std::move(*extra));
        }
        auto loan = opened->loan(ferry::test::random_payload_size(sizes, 256 << 10));
        FERRY_CHILD_CHECK(loan);
        ferry::test::write_payload(loan->data(), origin, sequence);
        FERRY_CHILD_CHECK(opened->send(std::move(*loan)));
      }
    });
    ASSERT_TRUE(started.wait());
    const auto kill_at = ferry::steady_clock::now() + std::chrono::microseconds(500 + random() % 20000);
    std::uint64_t expected = 1;
    // Killed once it sent something, at a random moment after.
    const auto ok = receive_checked(
        *box, turn, false,
        [&] {
          const auto now = ferry::steady_clock::now();
          return (expected > 1 && now >= kill_at) || now >= kill_at + kWatchdog;
        },
        [&](const ferry::test::CheckedPayload& d, std::uint32_t) {
          EXPECT_TRUE(d.intact) << "origin " << origin << " message " << expected;
          EXPECT_EQ(d.origin, origin);
          EXPECT_EQ(d.sequence, expected);
          ++expected;
          ++received;
          return d.intact;
        });
    ASSERT_TRUE(ok) << ok.error().message();
    ASSERT_GT(expected, 1u) << "sender " << origin << " never sent";
    sender.kill(SIGKILL);
    ASSERT_EQ(sender.wait_for(kWatchdog), 128 + SIGKILL);
    // What the dead published is all there, whole, in order.
    for (;;) {
      auto message = box->try_receive();
      ASSERT_TRUE(message) << message.error().message();
      if (!*message) break;
      const auto checked = ferry::test::check_payload((*message)->data());
      ASSERT_TRUE(checked.intact) << "origin " << origin << " message " << expected;
      ASSERT_EQ(checked.origin, origin);
      ASSERT_EQ(checked.sequence, expected);
      ++expected;
      ++received;
    }
  }
  // The dead had loaned chunks, written them and sent some in records never
  // published: all went with their slabs.
  expect_slabs_removed(*box, n, 0);
  // A fresh sender's pool: what it sends and is received leaves nothing in use.
  for (std::uint64_t sequence = 1; sequence <= 8; ++sequence) {
    auto loan = box->loan(100000);
    ASSERT_TRUE(loan) << loan.error().message();
    ferry::test::write_payload(loan->data(), 99, sequence);
    ASSERT_TRUE(box->send(std::move(*loan)));
    auto message = box->receive();
    ASSERT_TRUE(message);
    EXPECT_TRUE(ferry::test::check_payload(message->data()).intact);
  }
  auto usage = box->loan_usage();
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->in_use, 0u);
  std::printf("%zu senders killed mid-loan; %llu intact payloads received\n", kills,
              static_cast<unsigned long long>(received));
}

struct KillLedger {
  std::atomic<std::uint64_t> seen[kMaxPerSender / 64 + 1];
  std::atomic<std::uint64_t> redelivered;
  std::atomic<std::uint64_t> damaged;
  std::atomic<std::uint64_t> duplicates;
  std::atomic<std::uint64_t> deliveries;  // leases taken and checked, redeliveries included
  std::atomic<std::uint64_t> failures;    // receivers that got an error
  char last_failure[256];
  char last_damage[256];
  // Messages seen: counted from the bits, as a receiver may be killed
  // between setting its bit and any count of its own.
  std::uint64_t distinct() const {
    std::uint64_t n = 0;
    for (const auto& word : seen) n += static_cast<std::uint64_t>(std::popcount(word.load()));
    return n;
  }
};

TEST(MailboxLoanCrash, ReceiversKilledHoldingLeasesLeaveTheMessageToOthersByteExact) {
  Name n;
  auto box = Mailbox::create(n.name, {.capacity = Capacity::bounded(32, 256), .loans = {.limit = 8 << 20}});
  ASSERT_TRUE(box) << box.error().message();
  const std::uint64_t count = std::min(kMaxPerSender, ferry::test::scaled(3000));
  SharedAnonymous<KillLedger> ledger;
  // The sender is a process of its own: the test forks receivers, and a
  // process that forks should have no other threads.
  auto sender = Child::spawn([&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened);
    std::mt19937_64 sizes(3);
    for (std::uint64_t sequence = 1; sequence <= count; ++sequence) {
      auto loan = opened->loan(ferry::test::random_payload_size(sizes, 16 << 10), WaitStrategy::block());
      FERRY_CHILD_CHECK(loan);
      ferry::test::write_payload(loan->data(), 7, sequence);
      FERRY_CHILD_CHECK(opened->send(std::move(*loan), {}, WaitStrategy::block()));
    }
    // Once every message is received, nothing of the pool is in use.
    const auto give_up = ferry::deadline_after(kWatchdog);
    for (;;) {
      const auto stats = opened->stats();
      if (stats.queued + stats.unsorted + stats.leased == 0 && ledger->distinct() == count) break;
      FERRY_CHILD_CHECK(ferry::steady_clock::now() < give_up);
      std::this_thread::sleep_for(1ms);
    }
    auto usage = opened->loan_usage();
    FERRY_CHILD_CHECK(usage && usage->in_use == 0);
    return 0;
  });
  const auto receive = [&] {
    auto opened = Mailbox::open(n.name);
    FERRY_CHILD_CHECK(opened);
    std::uint64_t turn = 0;
    // Leased only: a receiver killed after its ack must not take a message
    // out of the ledger's sight (the mailbox is done with it then).
    const auto ok = receive_checked(
        *opened, turn, true, [&] { return ledger->distinct() >= count; },
        [&](const ferry::test::CheckedPayload& d, std::uint32_t deliveries) {
          if (!d.intact || d.origin != 7 || d.sequence == 0 || d.sequence > count) {
            ledger->damaged.fetch_add(1);
            std::snprintf(ledger->last_damage, sizeof ledger->last_damage,
                          "intact %d, origin %llu, sequence %llu, delivery %u", d.intact ? 1 : 0,
                          static_cast<unsigned long long>(d.origin), static_cast<unsigned long long>(d.sequence),
                          deliveries);
            return true;
          }
          if (deliveries > 1) ledger->redelivered.fetch_add(1);
          ledger->deliveries.fetch_add(1);
          const std::uint64_t bit = d.sequence - 1;
          const bool was = ledger->seen[bit / 64].fetch_or(std::uint64_t{1} << (bit % 64)) & (std::uint64_t{1} << (bit % 64));
          // Seen before: only by a receiver killed before its ack went through.
          if (was && deliveries == 1) ledger->duplicates.fetch_add(1);
          return true;
        });
    if (!ok) {
      ledger->failures.fetch_add(1);
      std::snprintf(ledger->last_failure, sizeof ledger->last_failure, "%s", ok.error().message().c_str());
    }
    FERRY_CHILD_CHECK(ok);
    return 0;
  };
  const auto describe = [&] {
    const auto stats = box->stats();
    return std::to_string(ledger->distinct()) + " of " + std::to_string(count) + " messages seen; " +
           std::to_string(stats.queued) + " queued, " + std::to_string(stats.unsorted) + " unsorted, " +
           std::to_string(stats.leased) + " leased, " + std::to_string(stats.sent) + " sent, " +
           std::to_string(stats.received) + " received, " + std::to_string(stats.redelivered) + " redelivered; " +
           std::to_string(ledger->failures.load()) + " receivers failed (last: " + ledger->last_failure + "); " +
           std::to_string(ledger->damaged.load()) + " damaged (last: " + ledger->last_damage + "), " +
           std::to_string(ledger->duplicates.load()) + " duplicates";
  };
  std::mt19937 random(8);
  int receivers = 0;
  // Pairs of receivers killed mid-read, then pairs that read the rest. The
  // whole stays under ctest's limit so that a failure says what it saw; a
  // pair that makes no progress for a while is replaced (a forked child of
  // a ThreadSanitizer process can stall in the runtime).
  const std::size_t kill_rounds = ferry::test::scaled(150);
  const auto give_up = ferry::deadline_after(std::chrono::seconds(240));
  constexpr auto kStall = std::chrono::seconds(10);
  for (std::size_t round = 0; ledger->distinct() < count; ++round) {
    ASSERT_LT(ferry::steady_clock::now(), give_up) << describe() << "; " << receivers << " receivers";
    std::vector<Child> pair;
    for (int i = 0; i < 2; ++i) pair.push_back(Child::spawn(receive));
    receivers += 2;
    const bool killing = round < kill_rounds;
    // Killed at a random moment of their reading, once they read.
    std::uint64_t progress = ledger->deliveries.load();
    auto stalled_at = ferry::deadline_after(kStall);
    while (ledger->distinct() < count && ferry::steady_clock::now() < stalled_at &&
           (!killing || ledger->deliveries.load() == progress)) {
      if (!killing && ledger->deliveries.load() != progress) {
        progress = ledger->deliveries.load();
        stalled_at = ferry::deadline_after(kStall);
      }
      std::this_thread::sleep_for(100us);
    }
    if (killing) std::this_thread::sleep_for(std::chrono::microseconds(random() % 5000));
    if (ledger->distinct() >= count) {
      for (auto& child : pair) EXPECT_EQ(child.wait_for(std::chrono::seconds(60)), 0);
      break;
    }
    for (auto& child : pair) {
      child.kill(SIGKILL);
      child.wait_for(kWatchdog);
    }
  }
  // Leases of the last killed receivers come back after all was seen: whole.
  for (;;) {
    const auto stats = box->stats();
    if (stats.queued + stats.unsorted + stats.leased == 0) break;
    ASSERT_LT(ferry::steady_clock::now(), give_up) << describe();
    auto lease = box->receive_leased_for(200ms);
    if (!lease) {
      ASSERT_EQ(lease.error().code(), errc::timed_out) << lease.error().message();
      continue;
    }
    const auto checked = ferry::test::check_payload(lease->data());
    EXPECT_TRUE(checked.intact && checked.origin == 7);
    EXPECT_GT(lease->delivery_count(), 1u);
    ASSERT_TRUE(lease->ack());
  }
  EXPECT_EQ(sender.wait_for(std::chrono::seconds(30)), 0) << "its pool returned to nothing in use";
  EXPECT_EQ(ledger->distinct(), count);
  EXPECT_EQ(ledger->damaged.load(), 0u);
  EXPECT_EQ(ledger->duplicates.load(), 0u);
  const auto stats = box->stats();
  EXPECT_EQ(stats.queued + stats.unsorted + stats.leased, 0u);
  expect_slabs_removed(*box, n, 0);
  std::printf("%d receivers, all but the last two killed mid-read; %llu redeliveries\n", receivers,
              static_cast<unsigned long long>(ledger->redelivered.load()));
}

}  // namespace
