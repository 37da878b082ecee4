// A Mailbox on NATS JetStream: the indirect message passing of ferry's
// Mailbox (ferry/messaging/mailbox.hpp) across machines.
//
//   auto mailbox = ferry::nats::Mailbox::open_or_create("nats://alice:pw@127.0.0.1:4222/orders");
//   auto receipt = mailbox->send(bytes, {.priority = 2});      // stored (replicated) when it returns
//   auto message = mailbox->receive_for(5s);                   // leased to this receiver
//   use(message->data(), message->sender(), message->message_id());
//   message->ack();                                            // gone for good
//
// What the network changes (read this before relying on it):
// - At-least-once. A message is stored once its send() returns. It is handed
//   to one receiver at a time under a lease (MailboxOptions::lease, JetStream's
//   AckWait); a receiver that dies or stalls past its lease without ack()
//   loses it to the next receiver, so a message may be handed out twice.
//   Every message carries a message_id(): receivers that must act once
//   de-duplicate by it. A retried send() with the same id (SendOptions::
//   message_id; send() itself retries with it after a timeout or a failover)
//   is stored once, within MailboxOptions::duplicate_window.
// - Priorities: `levels` bands (default 4), each a durable pull consumer;
//   a receive takes from the highest non-empty band. Priority p goes to band
//   min(p, levels - 1). Within a band: the stream's order, except that a
//   message given back (nack, expired lease) comes again before newer ones.
//   Between receivers there is no global order (as with the shm Mailbox).
// - Poison messages: with max_deliver set, a message handed out more often
//   than that is moved to the dead_letter mailbox (its original sender and
//   delivery count in headers Ferry-Original-Sender / Ferry-Deliveries)
//   instead of to a receiver.
// - Persistence: file storage on the servers, `replicas` copies (1 in tests,
//   3 in production: nats-server 2.9 fsyncs on a timer, so only R3 survives
//   a power loss of one node). A failover stalls sends and receives for
//   seconds; calls wait for it within their deadline.
// - Sender identity (Message::sender()): the NATS user the sender
//   authenticated as, attested by the server: a message is published on the
//   subject ferry.mbx.NAME.BAND.USER, and the server configuration gives each
//   user publish permission on its own subjects only (docs/nats.md shows the
//   configuration). A client cannot pick another user's subject: the server
//   refuses it (send() fails with permission_denied). Without such a
//   configuration the name is only claimed.
//
// Streams and subjects (for operators; `ferry stat` shows them):
//   stream FERRY_MBX_<name>, work-queue retention, subjects ferry.mbx.<name>.*.*
//   consumers band0 .. band<levels-1>, filter ferry.mbx.<name>.<band>.*
//   doorbell ferry.bell.<name>.<band> (core NATS, empty messages: wakes
//   waiting receivers without polling)
//
// Thread-safety: one Mailbox handle per thread (handles may share a
// Connection). A received Message may be acked from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/nats/connection.hpp"
#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"

namespace ferry::nats {

inline constexpr unsigned kMaxLevels = 32;

struct MailboxOptions {
  /// Priority bands, 1 .. kMaxLevels.
  unsigned levels = 4;
  /// Messages held at most (0: no bound). A full mailbox makes send wait
  /// (try_send: would_block).
  std::size_t capacity = 0;
  /// Bytes; the server's max_payload (1 MiB by default) bounds it, less room for headers.
  std::size_t max_message = 1'000'000;
  /// How long a received message stays leased without ack or in_progress.
  std::chrono::milliseconds lease{30'000};
  /// Deliveries before a message counts as poison (0: no limit); needs dead_letter.
  unsigned max_deliver = 0;
  /// The mailbox (on the same servers) that takes poison messages; made
  /// with this mailbox's levels if it does not exist.
  std::string dead_letter;
  /// How long a message id is remembered for de-duplication.
  std::chrono::seconds duplicate_window{120};
  /// Memory storage instead of files (faster, lost when the server stops).
  bool memory = false;
};

struct SendOptions {
  /// 0 (lowest) .. 31; see the bands above.
  unsigned priority = 0;
  /// Empty: a fresh unique id. Give the id of a message you forward or
  /// retry so that it is stored once.
  std::string message_id;
};

/// What the server said about a stored message.
struct SendReceipt {
  std::string message_id;
  std::uint64_t sequence = 0;  ///< in the stream
  bool duplicate = false;      ///< the id was seen before: nothing new was stored
};

/// A received message, leased to this receiver until ack() or nack().
/// Dropping it unsettled nacks it.
class Message {
 public:
  Message(Message&&) noexcept;
  Message& operator=(Message&&) noexcept;
  ~Message();

  [[nodiscard]] std::span<const std::byte> data() const noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return data().size(); }
  /// The NATS user that sent it (attested by the server's permissions).
  [[nodiscard]] const std::string& sender() const noexcept { return sender_; }
  /// The sender's priority (its band is min(priority, levels - 1)).
  [[nodiscard]] unsigned priority() const noexcept { return priority_; }
  [[nodiscard]] const std::string& message_id() const noexcept { return message_id_; }
  /// 1 the first time; more after a lease ran out or a nack.
  [[nodiscard]] std::uint64_t delivery_count() const noexcept { return deliveries_; }
  [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }
  /// Headers other than NATS's own, e.g. Ferry-Original-Sender in a dead-letter mailbox.
  [[nodiscard]] std::optional<std::string> header(std::string_view key) const;

  /// Removes the message for good, confirmed by the server. Errors:
  /// invalid_argument (already settled), timed_out / peer_gone (the ack may
  /// not have arrived: the message may come again).
  result<void> ack();
  /// Gives it back now, for the next receive (delivery_count + 1).
  result<void> nack();
  /// Renews the lease: the message stays this receiver's for another `lease`.
  result<void> in_progress();

 private:
  friend class Mailbox;
  struct Held;
  explicit Message(std::unique_ptr<Held> held);
  result<void> settle(std::string_view what, bool final_step);

  std::unique_ptr<Held> held_;
  std::string sender_;
  unsigned priority_ = 0;
  std::string message_id_;
  std::uint64_t deliveries_ = 0;
  std::uint64_t sequence_ = 0;
};

struct LevelStats {
  std::uint64_t waiting = 0;      ///< not yet handed out
  std::uint64_t leased = 0;       ///< handed out, not acked
  std::uint64_t redelivered = 0;  ///< of those leased: handed out more than once
};

struct MailboxStats {
  std::string name;
  std::string stream;
  std::uint64_t stored = 0;  ///< messages in the stream (waiting + leased)
  std::uint64_t bytes = 0;
  std::uint64_t last_sequence = 0;
  std::vector<LevelStats> levels;
  int replicas = 1;
  std::string leader;  ///< the server leading the stream (clusters)
};

class Mailbox {
 public:
  /// Makes the stream and its consumers (and the dead-letter mailbox if it
  /// is missing). `address` names the mailbox (nats://…/NAME); the
  /// Connection forms name it apart, to share one connection between
  /// mailboxes. Errors: already_exists, invalid_argument (options, name),
  /// those of Connection::connect.
  static result<Mailbox> create(std::string_view address, const MailboxOptions& options = {});
  static result<Mailbox> create(const Connection& connection, std::string_view name, const MailboxOptions& options = {});
  /// Errors: not_found, corrupt (a stream of that name that is not a ferry mailbox).
  static result<Mailbox> open(std::string_view address);
  static result<Mailbox> open(const Connection& connection, std::string_view name);
  /// Opens it, or makes it with `options` when it does not exist.
  static result<Mailbox> open_or_create(std::string_view address, const MailboxOptions& options = {});
  static result<Mailbox> open_or_create(const Connection& connection, std::string_view name,
                                        const MailboxOptions& options = {});
  /// Removes the stream with every message in it. Errors: not_found.
  static result<void> destroy(std::string_view address);
  static result<void> destroy(const Connection& connection, std::string_view name);
  /// The names of the ferry mailboxes on these servers (streams FERRY_MBX_*), sorted.
  static result<std::vector<std::string>> list(const Connection& connection);

  Mailbox(Mailbox&&) noexcept;
  Mailbox& operator=(Mailbox&&) noexcept;
  ~Mailbox();

  /// Stores a copy of `message`, waiting for room and riding out failovers.
  /// Errors: invalid_argument (too large, priority), permission_denied (this
  /// user may not send here, or as this name), timed_out, peer_gone.
  result<SendReceipt> send(std::span<const std::byte> message, const SendOptions& options = {});
  /// As send, but a full mailbox is would_block at once.
  result<SendReceipt> try_send(std::span<const std::byte> message, const SendOptions& options = {});
  result<SendReceipt> send_until(std::span<const std::byte> message, deadline until, const SendOptions& options = {});
  result<SendReceipt> send_for(std::span<const std::byte> message, steady_clock::duration timeout,
                               const SendOptions& options = {}) {
    return send_until(message, deadline_after(timeout), options);
  }

  /// The next message from the highest non-empty band, leased to this receiver.
  result<Message> receive();
  /// Nothing waiting: an empty optional.
  result<std::optional<Message>> try_receive();
  result<Message> receive_until(deadline until);
  result<Message> receive_for(steady_clock::duration timeout) { return receive_until(deadline_after(timeout)); }

  /// Read from the servers: counts per band, the stream's state.
  result<MailboxStats> stats() const;
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] unsigned levels() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept;
  [[nodiscard]] const Connection& connection() const noexcept;

 private:
  struct State;
  explicit Mailbox(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ferry::nats
