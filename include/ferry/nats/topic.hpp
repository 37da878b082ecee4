// A Topic on NATS: publish/subscribe across machines, every subscriber gets
// every message (ferry/patterns/topic.hpp is the shared-memory one).
//
//   auto topic = ferry::nats::Topic::open_or_create("nats://127.0.0.1:4222/prices", {.history = 100});
//   auto subscriber = topic->subscribe();            // the last 100 messages first, then live ones
//   topic->publish(bytes);
//   auto message = subscriber->receive_for(1s);      // message->data(), ->sender(), ->sequence()
//
// Two kinds, chosen when the topic is made:
// - No history (history = 0): core NATS subjects, at-most-once. publish()
//   hands the message to the server and returns; subscribers that are
//   connected get it; nothing is stored, a subscriber that is too slow loses
//   messages (dropped() counts them) and one that subscribes later sees only
//   later messages. The fastest form: no disk, no acknowledgement.
// - History (history = N > 0): a limits-retention stream keeps the last N
//   messages; publish() returns once the stream stored the message, a new
//   subscriber first gets the stored ones (sequence() tells each one's place),
//   then live ones, in order, none lost while it keeps up.
//
// Sender identity: as for the Mailbox (docs/nats.md), a message is published
// on ferry.topic.NAME.USER and the server's per-user permissions make the
// subject proof of the sender. Stream FERRY_TOPIC_NAME (history only),
// subjects ferry.topic.NAME.*.
//
// Thread-safety: a Topic or TopicSubscriber per thread.
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

struct TopicOptions {
  /// Messages kept for late subscribers (0: none, core NATS).
  std::size_t history = 0;
  /// Bytes; the server's max_payload bounds it, less room for headers.
  std::size_t max_message = 1'000'000;
  /// History in memory instead of files.
  bool memory = false;
};

/// What the servers hold of a history topic.
struct TopicStats {
  std::string name;
  std::string stream;
  std::size_t history = 0;  ///< messages kept for late subscribers
  std::uint64_t stored = 0;
  std::uint64_t bytes = 0;
  std::uint64_t first_sequence = 0;  ///< the oldest message kept
  std::uint64_t last_sequence = 0;   ///< the newest one: messages published so far
  std::uint64_t subscribers = 0;     ///< live history subscribers (each an ordered consumer)
  int replicas = 1;
  std::string leader;  ///< the server leading the stream (clusters)
};

/// A received topic message: owned by the caller.
class TopicMessage {
 public:
  TopicMessage(TopicMessage&&) noexcept;
  TopicMessage& operator=(TopicMessage&&) noexcept;
  ~TopicMessage();

  [[nodiscard]] std::span<const std::byte> data() const noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return data().size(); }
  /// The NATS user that published it (attested by the server's permissions).
  [[nodiscard]] const std::string& sender() const noexcept { return sender_; }
  /// Its place in the topic's history (1, 2, ...); 0 without history.
  [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }

 private:
  friend class TopicSubscriber;
  struct Held;
  TopicMessage(std::unique_ptr<Held> held, std::string sender, std::uint64_t sequence);
  std::unique_ptr<Held> held_;
  std::string sender_;
  std::uint64_t sequence_ = 0;
};

class TopicSubscriber {
 public:
  TopicSubscriber(TopicSubscriber&&) noexcept;
  TopicSubscriber& operator=(TopicSubscriber&&) noexcept;
  ~TopicSubscriber();

  result<TopicMessage> receive();
  /// Nothing waiting: an empty optional.
  result<std::optional<TopicMessage>> try_receive();
  result<TopicMessage> receive_until(deadline until);
  result<TopicMessage> receive_for(steady_clock::duration timeout) { return receive_until(deadline_after(timeout)); }
  /// Messages the client dropped because this subscriber fell behind
  /// (core topics; a history topic's subscriber is paced by the server).
  [[nodiscard]] std::uint64_t dropped() const;

 private:
  friend class Topic;
  struct State;
  explicit TopicSubscriber(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class Topic {
 public:
  /// A history topic makes its stream; a topic without history needs
  /// nothing on the server and create only checks there is no history
  /// topic of that name. Errors: already_exists, invalid_argument.
  static result<Topic> create(std::string_view address, const TopicOptions& options = {});
  static result<Topic> create(const Connection& connection, std::string_view name, const TopicOptions& options = {});
  /// A topic is there once made: open finds a history topic's stream, or
  /// takes the name as a core topic (which needs nothing on the server).
  static result<Topic> open(std::string_view address);
  static result<Topic> open(const Connection& connection, std::string_view name);
  /// Removes a history topic's stream (and its messages). Errors: not_found.
  static result<void> destroy(std::string_view address);
  static result<void> destroy(const Connection& connection, std::string_view name);
  /// The names of the history topics on these servers (streams
  /// FERRY_TOPIC_*), sorted; topics without history leave nothing to list.
  static result<std::vector<std::string>> list(const Connection& connection);

  Topic(Topic&&) noexcept;
  Topic& operator=(Topic&&) noexcept;
  ~Topic();

  /// Errors: invalid_argument (too large), permission_denied (this user may
  /// not publish here), peer_gone, timed_out (history: not stored in time).
  result<void> publish(std::span<const std::byte> message);
  /// Waits until the server has processed every publish so far. Errors:
  /// permission_denied when it refused one (core publishes are refused
  /// asynchronously: this, or the next publish, reports it), timed_out.
  result<void> flush();
  /// A subscriber from now on (history: from the oldest stored message).
  result<TopicSubscriber> subscribe();

  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::size_t history() const noexcept;
  /// Errors: not_found for a topic without history (the servers keep
  /// nothing of it), and those of the server.
  result<TopicStats> stats() const;

 private:
  struct State;
  explicit Topic(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ferry::nats
