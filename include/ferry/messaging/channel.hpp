// Channel: the direct link between two processes — a pipe with message
// boundaries and no kernel on the data path.
//
// One sender and one receiver at a time share a lock-free circular buffer in
// a segment. Messages are variable-size (up to `max_message`), delivered in
// order, whole or not at all.
//
//   auto channel = ferry::Channel::create("ticks", {.capacity = 1 << 20, .max_message = 4096});
//   auto tx = channel->sender();                           // in the producer
//   tx->send(std::as_bytes(std::span(payload)));
//
//   auto rx = ferry::Channel::open("ticks")->receiver();  // in the consumer
//   std::array<std::byte, 4096> buffer;
//   auto size = rx->receive(buffer);                       // blocks (adaptive)
//
// Roles: `sender()`/`receiver()` claim the role; a second claimant gets
// errc::busy naming the holder; the role of a process that died (or left) is
// taken over, and the newcomer resumes where the old one last published
// (sender) or released (receiver).
//
// Waiting: every blocking call takes a WaitStrategy (adaptive by default).
// The sender makes no system call unless the receiver is asleep in the
// kernel. A side waiting for the other learns it is gone (errc::peer_gone)
// within ~100 ms of its death or departure, after the data it left behind.
//
// Zero copy: `reserve(n)` gives the sender the bytes in the ring to write,
// `commit(used)` publishes them; `peek()` gives the receiver the next message
// in place and `release()` frees it. Batching: `commit(used, Publish::later)`
// (and `send_batch`) publish several messages with one index store, packed
// (8-byte aligned) instead of a cache line or more each. For
// messages of a cache line or two, copying `send()` is the faster path: it
// writes the line the receiver polls last (see copy_record_payload).
//
// Loans (loan.hpp): `loan(n)` gives the sender a chunk of shared memory
// outside the ring; `send(std::move(loan))` hands it over by reference, and
// the receiver's peek()/receive() see its bytes like any message. A plain
// send() of more than max_message (or of `loans.threshold` bytes or more,
// when set) goes through a chunk by itself. Loans need a posix or file channel (the
// chunks' segments are named after it); up to `loans.limit` bytes.
//
// Thread-safety: a ChannelSender or ChannelReceiver is used by one thread at a
// time. Different processes (or threads) hold the two roles.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/messaging/detail/wait_source.hpp"
#include "ferry/messaging/loan.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

struct ChannelOptions {
  /// Bytes of the ring (rounded up to a power of two, at least 2 x the largest record).
  /// A stream wants a large ring; request/response, a few messages' worth
  /// (a 64-byte message sent on its own takes 128 bytes): its lines stay in
  /// both CPUs' caches, where a large ring's messages each land on a line
  /// last touched a lap ago (64 B round trip 90-110 ns with 512 bytes,
  /// 185-190 ns with 1 MiB, on the benchmark machine).
  std::size_t capacity = std::size_t{1} << 20;
  /// The largest message copied into the ring, in bytes, up to 1 GiB (larger ones travel as loans).
  std::size_t max_message = 64 * 1024;
  LoanOptions loans;
  SegmentKind kind = SegmentKind::posix;
  std::optional<Persistence> persistence;
  mode_t mode = 0600;
  int sysv_project_id = 1;
};

enum class Publish : std::uint8_t { now, later };

namespace detail {
struct ChannelShared;
}

class ChannelSender;
class ChannelReceiver;

class Channel {
 public:
  /// Errors: as Segment::create, and invalid_argument for sizes.
  static result<Channel> create(std::string_view name, const ChannelOptions& options = {});
  /// Errors: as Segment::open, and corrupt for a channel header that fails its checks.
  static result<Channel> open(std::string_view name, OpenOptions options = {});
  /// A memfd channel, from a descriptor received from its creator.
  static result<Channel> attach(Fd memfd, OpenOptions options = {});
  /// Removes the channel and the segments of its loan chunks.
  static result<void> destroy(std::string_view name, SegmentKind kind = SegmentKind::posix,
                              int sysv_project_id = 1);

  /// Claims the sender role. Errors: busy (a live process holds it).
  result<ChannelSender> sender();
  /// Claims the receiver role. Errors: busy (a live process holds it).
  result<ChannelReceiver> receiver();

  [[nodiscard]] std::size_t capacity() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept;
  [[nodiscard]] const Segment& segment() const noexcept;

 private:
  explicit Channel(std::shared_ptr<detail::ChannelShared> shared) noexcept : shared_(std::move(shared)) {}
  std::shared_ptr<detail::ChannelShared> shared_;
};

class ChannelSender {
 public:
  ChannelSender(ChannelSender&&) noexcept;
  ChannelSender& operator=(ChannelSender&&) noexcept;
  ~ChannelSender();  ///< publishes what was committed, then leaves the role

  /// Copies `message` in and publishes it, waiting for room: into the ring,
  /// or into a loaned chunk when larger than max_message (or from
  /// `loans.threshold` bytes on).
  /// Errors: invalid_argument (larger than max_message and than the loan
  /// limit), peer_gone, corrupt, and those of loan().
  result<void> send(std::span<const std::byte> message, WaitStrategy strategy = {});
  /// As send, without waiting: false if there is no room now.
  result<bool> try_send(std::span<const std::byte> message);
  /// As send; errors also timed_out.
  result<void> send_until(std::span<const std::byte> message, deadline until, WaitStrategy strategy = {});
  result<void> send_for(std::span<const std::byte> message, steady_clock::duration timeout,
                        WaitStrategy strategy = {}) {
    return send_until(message, deadline_after(timeout), strategy);
  }

  /// Copies in as many of `messages` as fit now and publishes them with one
  /// index store; returns how many.
  result<std::size_t> try_send_batch(std::span<const std::span<const std::byte>> messages);
  /// Sends all of `messages`, publishing once per run that fits.
  result<void> send_batch(std::span<const std::span<const std::byte>> messages, WaitStrategy strategy = {});

  /// A chunk of `size` bytes to write a message into, waiting while the
  /// receiver holds all the chunks the limit allows. Errors: invalid_argument
  /// (larger than the limit), limit_reached (this sender's unsent loans hold
  /// it all), unsupported (a memfd or sysv channel), peer_gone, no_space.
  result<Loan> loan(std::size_t size, WaitStrategy strategy = {});
  result<std::optional<Loan>> try_loan(std::size_t size);
  result<Loan> loan_until(std::size_t size, deadline until, WaitStrategy strategy = {});
  /// Hands a loan over by reference. The loan is consumed only on success
  /// (after an error or a false try_send it is still the caller's).
  result<void> send(Loan&& loan, WaitStrategy strategy = {});
  result<bool> try_send(Loan&& loan);
  result<void> send_until(Loan&& loan, deadline until, WaitStrategy strategy = {});

  /// The chunks this sender's pool holds (a new sender first frees what a dead one left).
  result<LoanUsage> loan_usage();

  /// Room for a message of up to `size` bytes, in place; write it, then commit().
  result<std::span<std::byte>> reserve(std::size_t size, WaitStrategy strategy = {});
  result<std::optional<std::span<std::byte>>> try_reserve(std::size_t size);
  result<std::span<std::byte>> reserve_until(std::size_t size, deadline until, WaitStrategy strategy = {});
  /// Makes the reserved message `used` bytes long (<= reserved) and publishes
  /// it (Publish::now) or keeps it for the next publish() (Publish::later).
  result<void> commit(std::size_t used, Publish when = Publish::now);
  /// Publishes every message committed with Publish::later, with one store.
  void publish() noexcept;
  /// Whether the receiver has taken (released) every message published so
  /// far: false means some were never read, by a receiver alive or dead.
  [[nodiscard]] bool drained() noexcept;

  [[nodiscard]] std::size_t max_message() const noexcept;

 private:
  friend class Channel;
  struct State;
  explicit ChannelSender(std::unique_ptr<State> state) noexcept;
  result<std::optional<std::span<std::byte>>> reserve_impl(std::size_t size, std::optional<deadline> until,
                                                            WaitStrategy strategy, bool wait);
  result<std::optional<std::span<std::byte>>> reserve_record(std::size_t size, std::optional<deadline> until,
                                                            WaitStrategy strategy, bool wait);
  result<bool> send_impl(std::span<const std::byte> message, std::optional<deadline> until,
                         WaitStrategy strategy, bool wait, Publish when);
  result<std::optional<Loan>> loan_impl(std::size_t size, std::optional<deadline> until, WaitStrategy strategy,
                                        bool wait);
  result<bool> send_loan(Loan& loan, std::optional<deadline> until, WaitStrategy strategy, bool wait,
                         Publish when);
  result<void> commit_record(std::size_t used, std::uint32_t flags, Publish when);
  result<void> ensure_chunk_pool();
  std::unique_ptr<State> state_;
};

class ChannelReceiver {
 public:
  ChannelReceiver(ChannelReceiver&&) noexcept;
  ChannelReceiver& operator=(ChannelReceiver&&) noexcept;
  ~ChannelReceiver();  ///< releases what was released, then leaves the role

  /// Copies the next message into `buffer` and returns its size, waiting for one.
  /// Errors: invalid_argument (buffer too small; the message stays), peer_gone
  /// (the sender died or left and nothing is left to read), corrupt.
  result<std::size_t> receive(std::span<std::byte> buffer, WaitStrategy strategy = {});
  /// As receive, without waiting: empty if there is no message now.
  result<std::optional<std::size_t>> try_receive(std::span<std::byte> buffer);
  /// As receive; errors also timed_out.
  result<std::size_t> receive_until(std::span<std::byte> buffer, deadline until, WaitStrategy strategy = {});
  result<std::size_t> receive_for(std::span<std::byte> buffer, steady_clock::duration timeout,
                                  WaitStrategy strategy = {}) {
    return receive_until(buffer, deadline_after(timeout), strategy);
  }

  /// The next message, in place (in the ring, or in a loaned chunk); valid until release().
  result<std::span<const std::byte>> peek(WaitStrategy strategy = {});
  result<std::optional<std::span<const std::byte>>> try_peek();
  result<std::span<const std::byte>> peek_until(deadline until, WaitStrategy strategy = {});
  /// Frees the peeked message (the sender may reuse its bytes). Errors:
  /// corrupt if a loaned chunk was reused while it was read (a sender that
  /// breaks the protocol): what was read must be dropped.
  result<void> release();

  /// A descriptor that polls readable while a message is waiting, for event
  /// loops (poll/epoll/io_uring). After it polls readable, receive with the
  /// try_ forms until they come back empty; the descriptor is cleared then.
  /// Served by a watcher thread of this process (like mq_notify's
  /// SIGEV_THREAD); it exists only once notify_fd() was called.
  result<int> notify_fd();

  [[nodiscard]] std::size_t max_message() const noexcept;

 private:
  friend class Channel;
  friend detail::WaitSource detail::wait_source(ChannelReceiver&);
  struct State;
  explicit ChannelReceiver(std::unique_ptr<State> state) noexcept;
  result<std::optional<std::span<const std::byte>>> peek_impl(std::optional<deadline> until,
                                                               WaitStrategy strategy, bool wait);
  result<std::optional<std::size_t>> receive_impl(std::span<std::byte> buffer, std::optional<deadline> until,
                                                  WaitStrategy strategy, bool wait);
  std::unique_ptr<State> state_;
};

}  // namespace ferry
