// Mailbox: a named queue many processes send to and many receive from; each
// message goes to exactly one receiver (indirect communication).
//
//   auto box = ferry::Mailbox::create("orders", {.capacity = ferry::Capacity::bounded(1024, 4096)});
//   box->send(std::as_bytes(std::span(order)), {.priority = 5});        // any process
//
//   auto opened = ferry::Mailbox::open("orders");                        // another process
//   auto message = opened->receive();
//   message->data();      // the bytes, as sent
//   message->sender();    // uid, gid and pid of the sending process, attested by the kernel
//
// Order: higher priority first (0..31), FIFO per sender within a priority;
// an urgent send overtakes everything queued. A redelivered message (its
// lease was nacked, or its receiver died) carries its delivery count and may
// arrive after later ones.
//
// Capacity: rendezvous (send returns once a receiver took the message),
// bounded(count, max_message), unbounded(memory_limit, max_message). A full
// mailbox makes send wait (or try_send return false); a message larger than
// both max_message and the loan limit is invalid_argument naming the sizes.
//
// Leases: receive_leased() hands out a message that stays in the mailbox
// until ack(); nack(), dropping the Lease, or the death of the receiving
// process make it available again. receive() is a lease acknowledged at once.
//
// Loans (zero copy, see loan.hpp): loan() hands out a chunk of shared memory
// that send(Loan&&) passes by reference; send(bytes) copies a message into a
// chunk when it is larger than max_message or at least loans.threshold.
// Messages up to loans.limit then fit. A Lease of a loaned message reads it
// in place, until ack or nack; receive() copies it out once. Each sender has
// its own pool of chunks; a chunk is free again once its message is
// finished (acked, received or flushed). For the capacity a loaned message
// counts its payload bytes, as a copied one does.
//
// Access: the mode (default 0600) works as for POSIX mq: read permission is
// receiving, write permission is sending. Each sender writes into a file of
// its own that nobody else may write, so no participant can change another's
// messages or claim another's identity; sender() comes from the kernel (the
// file's owner and the sender's record lock), never from the message.
//
// Persistence: kernel (default; /dev/shm/ferry.<name>/), process (destroyed
// with the last participant), filesystem (a name starting with '/' is a
// directory path; messages survive a reboot; sync() flushes them).
//
// Thread-safety: one Mailbox object per thread, or external locking; a
// process may hold several.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/messaging/loan.hpp"
#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"  // SenderIdentity
#include "ferry/messaging/detail/wait_source.hpp"
#include "ferry/os/segment.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {

/// How many messages a mailbox holds before send waits.
struct Capacity {
  enum class Kind : std::uint8_t { rendezvous, bounded, unbounded };
  Kind kind = Kind::bounded;
  std::size_t count = 256;               // bounded: messages
  std::size_t max_message = 4096;        // bytes
  std::size_t memory_limit = 64u << 20;  // unbounded: bytes of payload queued at most

  static Capacity rendezvous(std::size_t max_message = 4096) noexcept {
    return {Kind::rendezvous, 0, max_message, 0};
  }
  static Capacity bounded(std::size_t count, std::size_t max_message = 4096) noexcept {
    return {Kind::bounded, count, max_message, 0};
  }
  static Capacity unbounded(std::size_t memory_limit, std::size_t max_message = 4096) noexcept {
    return {Kind::unbounded, 0, max_message, memory_limit};
  }
};

struct MailboxOptions {
  Capacity capacity;
  Persistence persistence = Persistence::kernel;
  /// Read = may receive, write = may send, for owner, group and others.
  mode_t mode = 0600;
  /// How many processes may send at once (each holds a slot while it lives).
  std::uint32_t max_senders = 32;
  /// Chunks for large messages, per sender; the limit (4 KiB .. 2 GiB) is
  /// also the largest message.
  LoanOptions loans;
};

struct MailboxOpenOptions {
  /// Open a mailbox created by another user (refused by default).
  bool allow_foreign_owner = false;
};

struct SendOptions {
  /// 0 (lowest) .. 31.
  unsigned priority = 0;
  /// Overtakes everything queued (and is not discarded by flush()).
  bool urgent = false;
};

namespace detail {

// A message's bytes: small ones inline, so that receiving them allocates
// nothing; larger ones on the heap.
class MessageBytes {
 public:
  static constexpr std::size_t kInline = 96;

  MessageBytes() noexcept = default;
  MessageBytes(const MessageBytes& other) { assign(other.view()); }
  MessageBytes(MessageBytes&& other) noexcept { take(other); }
  MessageBytes& operator=(const MessageBytes& other) {
    if (this != &other) assign(other.view());
    return *this;
  }
  MessageBytes& operator=(MessageBytes&& other) noexcept {
    if (this != &other) take(other);
    return *this;
  }
  ~MessageBytes() = default;

  void assign(std::span<const std::byte> bytes) {
    borrowed_ = nullptr;
    if (bytes.size() > kInline) {
      heap_ = std::make_unique_for_overwrite<std::byte[]>(bytes.size());
    } else {
      heap_.reset();
    }
    if (!bytes.empty()) std::memcpy(storage(), bytes.data(), bytes.size());
    size_ = bytes.size();
  }
  /// Refers to `bytes` without copying (a leased chunk, read in place).
  void borrow(std::span<const std::byte> bytes) noexcept {
    heap_.reset();
    borrowed_ = bytes.data();
    size_ = bytes.size();
  }
  [[nodiscard]] std::span<const std::byte> view() const noexcept {
    return {borrowed_ ? borrowed_ : heap_ ? heap_.get() : inline_, size_};
  }

 private:
  std::byte* storage() noexcept { return heap_ ? heap_.get() : inline_; }
  void take(MessageBytes& other) noexcept {
    heap_ = std::move(other.heap_);
    borrowed_ = std::exchange(other.borrowed_, nullptr);
    size_ = std::exchange(other.size_, 0);
    if (!heap_ && !borrowed_ && size_ != 0) std::memcpy(inline_, other.inline_, size_);
  }

  std::size_t size_ = 0;
  const std::byte* borrowed_ = nullptr;
  std::unique_ptr<std::byte[]> heap_;
  std::byte inline_[kInline];
};

}  // namespace detail

/// A received message: a copy, owned by the caller.
class Message {
 public:
  [[nodiscard]] std::span<const std::byte> data() const noexcept { return bytes_.view(); }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.view().size(); }
  [[nodiscard]] const SenderIdentity& sender() const noexcept { return sender_; }
  [[nodiscard]] unsigned priority() const noexcept { return priority_; }
  [[nodiscard]] bool urgent() const noexcept { return urgent_; }
  /// 1 the first time; more when an earlier lease was nacked or its receiver died.
  [[nodiscard]] std::uint32_t delivery_count() const noexcept { return deliveries_; }
  /// The sender's own message number (1, 2, ...): per-sender order.
  [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }

 private:
  friend class Mailbox;
  friend class MailboxSet;
  friend class Lease;
  detail::MessageBytes bytes_;
  SenderIdentity sender_;
  unsigned priority_ = 0;
  bool urgent_ = false;
  std::uint32_t deliveries_ = 0;
  std::uint64_t sequence_ = 0;
};

namespace detail {
struct MailboxShared;
}

class Mailbox;

/// A leased message: it stays in the mailbox until ack(). Dropping a Lease
/// that was neither acked nor nacked nacks it.
class Lease {
 public:
  Lease(Lease&&) noexcept;
  Lease& operator=(Lease&&) noexcept;
  ~Lease();

  /// A loaned message's data() spans its chunk in place, until ack or nack
  /// (empty after); copying the Message copies the bytes.
  [[nodiscard]] const Message& message() const noexcept { return message_; }
  [[nodiscard]] std::span<const std::byte> data() const noexcept { return message_.data(); }
  [[nodiscard]] const SenderIdentity& sender() const noexcept { return message_.sender(); }
  [[nodiscard]] std::uint32_t delivery_count() const noexcept { return message_.delivery_count(); }

  /// Removes the message for good. Errors: invalid_argument (already acked
  /// or nacked), busy (the lease was taken back: this process was thought
  /// dead), corrupt (a loaned message's chunk was reused while leased: what
  /// was read is not the message; it is removed all the same).
  result<void> ack();
  /// Gives the message back for the next receiver.
  result<void> nack();

 private:
  friend class Mailbox;
  Lease(std::shared_ptr<detail::MailboxShared> shared, Message message, std::uint32_t descriptor,
        std::uint64_t lease) noexcept;
  result<void> finish(bool acknowledged);

  std::shared_ptr<detail::MailboxShared> shared_;
  Message message_;
  std::uint32_t descriptor_ = 0;
  std::uint64_t lease_ = 0;
  // A loaned message: the reader whose mapping message_ borrows, and the chunk.
  std::shared_ptr<detail::ChunkReader> chunk_reader_;
  detail::ChunkRef chunk_{};
};

/// What a mailbox holds and has done, read without disturbing traffic.
struct MailboxStats {
  std::string name;
  Capacity capacity;
  mode_t mode = 0;
  uid_t owner_uid = 0;
  std::uint64_t queued = 0;     // waiting for a receiver, sorted by priority (depth[])
  std::uint64_t unsorted = 0;   // waiting too, sent since a receiver last looked
  std::uint64_t leased = 0;     // handed out, not yet acked
  std::uint64_t depth[33] = {};  // queued per priority; [32] = urgent
  std::uint64_t high_water = 0;
  std::uint64_t sent = 0;
  std::uint64_t received = 0;    // acked (plain receives included)
  std::uint64_t redelivered = 0;
  std::uint64_t flushed = 0;
  struct Peer {
    pid_t pid;
    uid_t uid;
    bool alive;
  };
  std::vector<Peer> senders;
  std::vector<Peer> receivers;  // those that have received (up to 64 at once)
};

class Mailbox {
 public:
  static constexpr unsigned kPriorities = 32;

  /// Errors: invalid_argument (name, sizes, mode), already_exists, permission_denied, no_space.
  static result<Mailbox> create(std::string_view name, const MailboxOptions& options = {});
  /// Errors: not_found, permission_denied (the mode, or another user's
  /// mailbox without allow_foreign_owner), corrupt, version_mismatch.
  static result<Mailbox> open(std::string_view name, const MailboxOpenOptions& options = {});
  /// Creates the mailbox, or opens it when it exists: safe when several
  /// processes do it at once (one creates, the others open the same one; an
  /// open that finds a creation half done waits for it, at most
  /// kCreationWait). The options apply only if this call creates it.
  /// Errors: those of create and open; timed_out naming the mailbox when its
  /// creation never completes (a creator died midway: `ferry rm` it).
  ///
  ///   auto box = ferry::Mailbox::open_or_create("jobs", {.capacity = ferry::Capacity::bounded(64)});
  static result<Mailbox> open_or_create(std::string_view name, const MailboxOptions& options = {});
  static constexpr std::chrono::seconds kCreationWait{5};
  /// Removes the mailbox's files; processes that have it open keep working
  /// with what they mapped.
  static result<void> destroy(std::string_view name);

  Mailbox(Mailbox&&) noexcept;
  Mailbox& operator=(Mailbox&&) noexcept;
  ~Mailbox();

  /// Sends a copy of `message`, waiting while the mailbox is full (and, for
  /// rendezvous, until a receiver took it). Errors: invalid_argument (too
  /// large, priority), permission_denied (the mode does not allow sending),
  /// limit_reached (no free sender slot), corrupt.
  result<void> send(std::span<const std::byte> message, SendOptions options = {}, WaitStrategy strategy = {});
  /// As send, without waiting for room: false when full.
  result<bool> try_send(std::span<const std::byte> message, SendOptions options = {});
  /// As send; errors also timed_out.
  result<void> send_until(std::span<const std::byte> message, deadline until, SendOptions options = {},
                          WaitStrategy strategy = {});
  result<void> send_for(std::span<const std::byte> message, steady_clock::duration timeout,
                        SendOptions options = {}, WaitStrategy strategy = {}) {
    return send_until(message, deadline_after(timeout), options, strategy);
  }

  /// A writable chunk of `size` bytes for send(Loan&&), waiting while this
  /// sender's chunks are all loaned or in messages not yet finished.
  /// Errors: invalid_argument (larger than loans.limit), limit_reached
  /// (this sender's own unsent loans hold what the limit allows),
  /// permission_denied, no_space, corrupt.
  result<Loan> loan(std::size_t size, WaitStrategy strategy = {});
  /// As loan, without waiting: empty when no chunk is free.
  result<std::optional<Loan>> try_loan(std::size_t size);
  /// As loan; errors also timed_out.
  result<Loan> loan_until(std::size_t size, deadline until, WaitStrategy strategy = {});
  result<Loan> loan_for(std::size_t size, steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return loan_until(size, deadline_after(timeout), strategy);
  }
  /// Sends a loan made by this Mailbox by reference, as send(bytes) sends
  /// bytes. Until it is sent (a false try_send, an error other than a
  /// rendezvous timed_out) the loan stays the caller's.
  /// Errors: those of send; invalid_argument (a loan of another sender).
  result<void> send(Loan&& loan, SendOptions options = {}, WaitStrategy strategy = {});
  result<bool> try_send(Loan&& loan, SendOptions options = {});
  result<void> send_until(Loan&& loan, deadline until, SendOptions options = {}, WaitStrategy strategy = {});
  result<void> send_for(Loan&& loan, steady_clock::duration timeout, SendOptions options = {},
                        WaitStrategy strategy = {}) {
    return send_until(std::move(loan), deadline_after(timeout), options, strategy);
  }
  /// What this sender's chunks occupy (as ChannelSender::loan_usage).
  result<LoanUsage> loan_usage();

  /// The next message (highest priority first). Errors: permission_denied
  /// (the mode does not allow receiving), corrupt.
  result<Message> receive(WaitStrategy strategy = {});
  /// Nothing waiting: an empty optional at once.
  result<std::optional<Message>> try_receive();
  /// As receive; errors also timed_out.
  result<Message> receive_until(deadline until, WaitStrategy strategy = {});
  result<Message> receive_for(steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return receive_until(deadline_after(timeout), strategy);
  }

  /// The next message sent by process `sender` (receive(Q, msg) of the OS
  /// model), leaving the others queued; the pid is the one the kernel
  /// attested (SenderIdentity::pid).
  result<Message> receive_from(pid_t sender, WaitStrategy strategy = {});
  result<std::optional<Message>> try_receive_from(pid_t sender);
  result<Message> receive_from_until(pid_t sender, deadline until, WaitStrategy strategy = {});
  result<Message> receive_from_for(pid_t sender, steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return receive_from_until(sender, deadline_after(timeout), strategy);
  }

  /// As receive, but the message stays in the mailbox until the Lease is acked.
  result<Lease> receive_leased(WaitStrategy strategy = {});
  result<std::optional<Lease>> try_receive_leased();
  result<Lease> receive_leased_until(deadline until, WaitStrategy strategy = {});
  result<Lease> receive_leased_for(steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return receive_leased_until(deadline_after(timeout), strategy);
  }

  /// Discards queued messages of a priority below `below` (default: every
  /// priority; urgent messages stay) and returns how many.
  result<std::size_t> flush(unsigned below = kPriorities);

  /// A descriptor that polls readable while messages wait (poll, epoll,
  /// io_uring): mq_notify's purpose without signals. After it fired, call
  /// the try_ forms until they return nothing; that re-arms it. A watcher
  /// thread keeps it, so create it before fork() only if the child will
  /// not use this Mailbox.
  result<int> notify_fd();

  [[nodiscard]] MailboxStats stats() const;
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept;
  /// Writes queued messages to the backing files (filesystem persistence).
  result<void> sync();

 private:
  friend detail::WaitSource detail::wait_source(Mailbox&);
  explicit Mailbox(std::shared_ptr<detail::MailboxShared> shared) noexcept : shared_(std::move(shared)) {}
  result<bool> send_impl(std::span<const std::byte> message, SendOptions options, std::optional<deadline> until,
                         WaitStrategy strategy, bool wait);
  // Sends `payload` copied into the log, or the loan `loan` by reference (payload empty).
  result<bool> send_record(std::span<const std::byte> payload, Loan* loan, SendOptions options,
                           std::optional<deadline> until, WaitStrategy strategy, bool wait);
  result<std::optional<Loan>> loan_impl(std::size_t size, std::optional<deadline> until, WaitStrategy strategy,
                                        bool wait);
  struct ReceiveRequest {
    std::optional<deadline> until;
    WaitStrategy strategy;
    bool wait = true;
    bool leased = false;
    std::optional<pid_t> from;  // only messages of this sender process
  };
  // What a leased receive hands to its Lease.
  struct Leased {
    std::uint32_t descriptor = 0;
    std::uint64_t lease = 0;
    std::shared_ptr<detail::ChunkReader> chunk_reader;  // a loaned message, read in place
    detail::ChunkRef chunk{};
  };
  result<std::optional<Message>> receive_impl(const ReceiveRequest& request, Leased* leased);
  Lease make_lease(Message message, Leased leased);

  std::shared_ptr<detail::MailboxShared> shared_;
};

}  // namespace ferry
