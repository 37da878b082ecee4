// Topic: publish/subscribe. Every subscriber sees every message published
// after it subscribed, in publish order.
//
//   auto topic = ferry::Topic::create("prices", {.capacity = 1024, .max_message = 256,
//                                                .policy = ferry::SlowSubscriber::drop_oldest,
//                                                .history = 16});
//   auto publisher = topic->publisher();                   // any number, in any processes
//   publisher->publish(std::as_bytes(std::span(quote)));
//
//   auto subscriber = ferry::Topic::open("prices")->subscribe({.history = 16});
//   std::array<std::byte, 256> buffer;
//   auto got = subscriber->receive(buffer);   // got->size bytes; got->lost overwritten before it
//
// Design: one broadcast ring of `capacity` fixed-size slots in a segment;
// message s goes into slot s % capacity, then the write cursor is advanced
// (release). Each subscriber has its own read cursor in a table of 64
// entries in the segment. Publishers are serialised by a robust Mutex; one
// killed while publishing never exposes a partial message and never blocks
// the others (see detail/topic_layout.hpp).
//
// Slow subscribers, as chosen at creation:
//   block        a publisher waits (try_publish returns false) while the
//                slowest live subscriber is `capacity` messages behind. A
//                subscriber that dies stops holding publishers back within
//                ~100 ms, and its entry is freed.
//   drop_oldest  publishers never wait; a subscriber that was lapped jumps
//                to the oldest message still in the ring, and the number it
//                missed is reported with its next message (TopicDelivery::lost)
//                and counted (TopicSubscriber::lost(), stats()). Never silent.
//
// Loans (zero-copy, as on a Channel; see ferry/messaging/loan.hpp):
//
//   auto loan = publisher->loan(64 << 20);      // a chunk of shared memory
//   fill(loan->data());
//   publisher->publish(std::move(*loan));       // every subscriber gets a reference
//
//   auto view = subscriber->peek();             // read in place
//   use(view->data);
//   subscriber->release();                      // true: intact (see below)
//
// publish(bytes) copies a message larger than max_message (or of at least
// loans.threshold bytes) into a chunk by itself. A chunk returns to the pool
// once every live subscriber read past its message and it left the history.
// Under drop_oldest a publisher short of chunks takes the oldest message's
// chunk: a subscriber that had not read that message counts it lost, and one
// reading it in place learns at release() (false: discard what you read).
// The topic's history holds loaned messages only as far as the pool's limit
// allows; a late subscriber counts the ones given up as lost.
//
// History: the topic keeps its last `history` messages for late subscribers;
// subscribe({.history = n}) starts at the last n of them (fewer if fewer
// were published).
//
// Waiting: every blocking call takes a WaitStrategy (adaptive by default).
// A publisher makes no system call unless a subscriber sleeps, and a
// subscriber none unless a publisher is blocked. A subscriber learns that no
// publisher is left only by its timeout: publishers come and go.
// subscribe({.coalesce = 1ms}) makes a subscriber that need not see each
// message at once (a recorder, a logger) sleep until half the ring waits
// for it, a publisher needs the room it holds, or 1 ms passed: publishers
// wake it once per half ring instead of at every message, and the CPU it
// leaves goes to the others.
//
// Thread-safety: a TopicPublisher or TopicSubscriber is used by one thread at
// a time; a Topic may hand out any number of them, to any threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/messaging/loan.hpp"
#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/registry.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

/// What happens to a subscriber that falls `capacity` messages behind.
enum class SlowSubscriber : std::uint8_t { block, drop_oldest };

std::string_view to_string(SlowSubscriber policy) noexcept;

struct TopicOptions {
  /// Messages the ring holds (1 .. 2^24).
  std::size_t capacity = 1024;
  /// The largest message, in bytes (1 .. 1 GiB).
  std::size_t max_message = 4096;
  SlowSubscriber policy = SlowSubscriber::block;
  /// How many of the last messages a late subscriber may ask for (<= capacity).
  std::size_t history = 0;
  SegmentKind kind = SegmentKind::posix;
  std::optional<Persistence> persistence;
  mode_t mode = 0600;
  int sysv_project_id = 1;
  /// Chunks for loans and for messages larger than max_message (posix and
  /// file topics only).
  LoanOptions loans;
};

struct SubscribeOptions {
  /// Start with the last `history` messages published (<= the topic's history).
  std::size_t history = 0;
  /// Coalesced wake-ups, for a subscriber that may take messages in bursts
  /// (a recorder, a logger): when it has to wait, it sleeps until half the
  /// ring waits for it, a publisher needs the room it holds, or `coalesce`
  /// has passed, instead of being woken by every publish; a message may so
  /// wait up to `coalesce` longer. Publishers then wake it once per half
  /// ring, and the CPU it leaves goes to the rest (on a machine with fewer
  /// cores than processes, to the subscribers that need each message at
  /// once). It never spins, whatever WaitStrategy a receive names; idle, it
  /// wakes once per `coalesce`. Under drop_oldest it loses what a publisher
  /// overwrites while it has not been woken yet. From 1 us to 10 s.
  std::optional<std::chrono::microseconds> coalesce;
};

/// One received message.
struct TopicDelivery {
  std::size_t size = 0;        ///< bytes copied into the caller's buffer
  std::uint64_t sequence = 0;  ///< its place in the topic's publish order, from 0
  std::uint64_t lost = 0;      ///< messages overwritten unread since the previous receive (drop_oldest)
};

/// A message read in place (TopicSubscriber::peek), valid until release()
/// or the next peek.
struct TopicView {
  std::span<const std::byte> data;
  std::uint64_t sequence = 0;
  std::uint64_t lost = 0;  ///< as TopicDelivery::lost
};

/// A snapshot of a topic for inspection (`ferry stat`), not for synchronisation.
struct TopicStats {
  struct Publisher {
    pid_t pid = 0;
    bool alive = false;
    std::uint64_t published = 0;
  };
  struct Subscriber {
    pid_t pid = 0;
    bool alive = false;
    std::uint64_t lag = 0;  ///< messages published it has not read yet
    std::uint64_t lost = 0;
    std::uint64_t received = 0;
  };
  std::string name;
  SlowSubscriber policy = SlowSubscriber::block;
  std::size_t capacity = 0;
  std::size_t max_message = 0;
  std::size_t history = 0;
  std::uint64_t published = 0;  ///< messages ever (the write cursor)
  std::vector<Publisher> publishers;
  std::vector<Subscriber> subscribers;
};

namespace detail {
struct TopicShared;
}

class TopicPublisher;
class TopicSubscriber;

class Topic {
 public:
  /// Subscribers (and publishers) a topic can have at once.
  static constexpr std::size_t kMaxSubscribers = 64;
  static constexpr std::size_t kMaxPublishers = 64;

  /// Errors: as Segment::create, and invalid_argument for sizes or history.
  static result<Topic> create(std::string_view name, const TopicOptions& options = {});
  /// Errors: as Segment::open, and corrupt for a topic header that fails its checks.
  static result<Topic> open(std::string_view name, OpenOptions options = {});
  static result<void> destroy(std::string_view name, SegmentKind kind = SegmentKind::posix,
                              int sysv_project_id = 1);

  /// A publisher. Errors: limit_reached (kMaxPublishers live ones),
  /// permission_denied (opened read-only), corrupt.
  result<TopicPublisher> publisher();
  /// A subscriber starting after the last message published, or at the last
  /// `options.history` messages. Errors: invalid_argument (history beyond the
  /// topic's), limit_reached (kMaxSubscribers live ones), permission_denied
  /// (opened read-only), corrupt.
  result<TopicSubscriber> subscribe(SubscribeOptions options = {});

  /// Publishers, subscribers (with lag and losses) and counters, from shared memory.
  [[nodiscard]] TopicStats stats() const;

  [[nodiscard]] std::size_t capacity() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept;
  [[nodiscard]] std::size_t history() const noexcept;
  [[nodiscard]] SlowSubscriber policy() const noexcept;
  [[nodiscard]] const Segment& segment() const noexcept;

 private:
  explicit Topic(std::shared_ptr<detail::TopicShared> shared) noexcept : shared_(std::move(shared)) {}
  std::shared_ptr<detail::TopicShared> shared_;
};

class TopicPublisher {
 public:
  TopicPublisher(TopicPublisher&&) noexcept;
  TopicPublisher& operator=(TopicPublisher&&) noexcept;
  ~TopicPublisher();  ///< leaves the publisher table

  /// Copies `message` into the ring (into a chunk when larger than
  /// max_message or at least loans.threshold) and publishes it; under
  /// `block`, waits while the slowest live subscriber is `capacity` messages
  /// behind. Errors: invalid_argument (larger than max_message on a topic
  /// without loans, or than the loan limit), limit_reached, corrupt.
  result<void> publish(std::span<const std::byte> message, WaitStrategy strategy = {});
  /// As publish, without waiting for subscribers: false if the ring is full for one.
  result<bool> try_publish(std::span<const std::byte> message);
  /// As publish; errors also timed_out.
  result<void> publish_until(std::span<const std::byte> message, deadline until, WaitStrategy strategy = {});
  result<void> publish_for(std::span<const std::byte> message, steady_clock::duration timeout,
                           WaitStrategy strategy = {}) {
    return publish_until(message, deadline_after(timeout), strategy);
  }

  /// A writable chunk of `size` bytes; waits (block) for subscribers to
  /// release one when the pool is at its limit. Errors: invalid_argument
  /// (larger than the limit), limit_reached (unsent loans hold the limit),
  /// unsupported (a System V or memfd topic), corrupt.
  result<Loan> loan(std::size_t size, WaitStrategy strategy = {});
  /// As loan, without waiting: empty if no chunk is free now.
  result<std::optional<Loan>> try_loan(std::size_t size);
  /// As loan; errors also timed_out.
  result<Loan> loan_until(std::size_t size, deadline until, WaitStrategy strategy = {});
  result<Loan> loan_for(std::size_t size, steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return loan_until(size, deadline_after(timeout), strategy);
  }
  /// Publishes a loan by reference, as publish(bytes) does a copy.
  /// Errors: invalid_argument (a loan of another publisher), corrupt.
  result<void> publish(Loan&& loan, WaitStrategy strategy = {});
  result<bool> try_publish(Loan&& loan);
  result<void> publish_until(Loan&& loan, deadline until, WaitStrategy strategy = {});
  /// The topic's chunks: slabs, bytes, and how many are in use (loaned, or
  /// held for a subscriber or the history).
  result<LoanUsage> loan_usage();

  [[nodiscard]] std::size_t max_message() const noexcept;

 private:
  friend class Topic;
  struct State;
  explicit TopicPublisher(std::unique_ptr<State> state) noexcept;
  result<bool> publish_impl(std::span<const std::byte> message, std::optional<deadline> until,
                            WaitStrategy strategy, bool wait);
  result<std::optional<Loan>> loan_impl(std::size_t size, std::optional<deadline> until, WaitStrategy strategy,
                                        bool wait);
  result<bool> publish_loan(Loan& loan, std::optional<deadline> until, WaitStrategy strategy, bool wait);
  std::unique_ptr<State> state_;
};

class TopicSubscriber {
 public:
  TopicSubscriber(TopicSubscriber&&) noexcept;
  TopicSubscriber& operator=(TopicSubscriber&&) noexcept;
  ~TopicSubscriber();  ///< leaves the subscriber table (no longer holds publishers back)

  /// Copies the next message into `buffer`, waiting for one.
  /// Errors: invalid_argument (buffer too small; the message stays), corrupt.
  result<TopicDelivery> receive(std::span<std::byte> buffer, WaitStrategy strategy = {});
  /// As receive, without waiting: empty if no message is waiting now.
  result<std::optional<TopicDelivery>> try_receive(std::span<std::byte> buffer);
  /// As receive; errors also timed_out.
  result<TopicDelivery> receive_until(std::span<std::byte> buffer, deadline until, WaitStrategy strategy = {});
  result<TopicDelivery> receive_for(std::span<std::byte> buffer, steady_clock::duration timeout,
                                    WaitStrategy strategy = {}) {
    return receive_until(buffer, deadline_after(timeout), strategy);
  }

  /// The next message, in place: in the ring or in its chunk (a copy of
  /// its own under drop_oldest for one in the ring, which a publisher may
  /// overwrite). The same message again until release(). Errors: corrupt.
  result<TopicView> peek(WaitStrategy strategy = {});
  result<std::optional<TopicView>> try_peek();
  result<TopicView> peek_until(deadline until, WaitStrategy strategy = {});
  result<TopicView> peek_for(steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return peek_until(deadline_after(timeout), strategy);
  }
  /// Done with the peeked message. True: it stayed intact while held; false
  /// (drop_oldest only): its chunk was taken for a newer message meanwhile,
  /// so what was read must be discarded, and it counts as lost.
  /// Errors: invalid_argument (nothing peeked).
  result<bool> release();

  /// Messages this subscriber lost (overwritten before it read them), in all.
  [[nodiscard]] std::uint64_t lost() const noexcept;
  /// The sequence of the next message it will read.
  [[nodiscard]] std::uint64_t position() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept;

 private:
  friend class Topic;
  struct State;
  explicit TopicSubscriber(std::unique_ptr<State> state) noexcept;
  result<std::optional<TopicDelivery>> receive_impl(std::span<std::byte> buffer, std::optional<deadline> until,
                                                    WaitStrategy strategy, bool wait);
  result<std::optional<TopicView>> peek_impl(std::optional<deadline> until, WaitStrategy strategy, bool wait);
  std::unique_ptr<State> state_;
};

/// What `ferry ls` says about a topic (policy, capacity, publishers,
/// subscribers with lag and losses): an ObjectInspector of the patterns
/// layer. Reads a snapshot; never writes.
void describe_topic_object(ObjectRecord& record, std::span<const std::byte> data);

}  // namespace ferry
