// What the nats:// backend shares between its files: the nats.c handles of a
// Connection, owners for nats.c objects, and the mapping of nats.c statuses
// to ferry errors.
#pragma once

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "ferry/nats/connection.hpp"
#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"

namespace ferry::nats {
namespace detail {

struct ConnectionState {
  Address address;
  natsConnection* connection = nullptr;
  jsCtx* jetstream = nullptr;

  ConnectionState() = default;
  ConnectionState(const ConnectionState&) = delete;
  ConnectionState& operator=(const ConnectionState&) = delete;
  ~ConnectionState();
};

// Owners of nats.c objects.
template <class T, void (*Destroy)(T*)>
struct Destroyer {
  void operator()(T* object) const noexcept { Destroy(object); }
};
template <class T, void (*Destroy)(T*)>
using Owned = std::unique_ptr<T, Destroyer<T, Destroy>>;

using OwnedMessage = Owned<natsMsg, natsMsg_Destroy>;
// Ends a subscription. nats.c 3.4 (Debian 12's) may free a subscription
// while its reader thread is handing it a message (nats-io/nats.c#637,
// fixed in 3.6; TSan saw it as a use after free): the subscription is first
// taken off the connection, and a flush then returns once the reader has
// passed every message that came before, so nothing holds it when it goes.
struct SubscriptionCloser {
  natsConnection* connection = nullptr;  // the subscription's, alive until it is closed
  void operator()(natsSubscription* subscription) const noexcept;
};
using OwnedSubscription = std::unique_ptr<natsSubscription, SubscriptionCloser>;
using OwnedStreamInfo = Owned<jsStreamInfo, jsStreamInfo_Destroy>;
using OwnedConsumerInfo = Owned<jsConsumerInfo, jsConsumerInfo_Destroy>;
using OwnedPubAck = Owned<jsPubAck, jsPubAck_Destroy>;

/// A ferry error for a failed nats.c call: the code from the status and the
/// JetStream error code, the detail from `what` and nats.c's last error text.
error nats_error(natsStatus status, jsErrCode js_code, std::string_view object, std::string_view what);
inline error nats_error(natsStatus status, std::string_view object, std::string_view what) {
  return nats_error(status, static_cast<jsErrCode>(0), object, what);
}

inline std::int64_t nanoseconds(std::chrono::nanoseconds duration) { return static_cast<std::int64_t>(duration.count()); }

/// Mailbox, topic and stream names: letters, digits, '-' and '_' (a subject token and part of a stream name).
inline bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= 200 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

// How long a call may still wait: for ever, until a deadline, or not at all.
struct Limit {
  enum class Kind { none, until, forever } kind = Kind::forever;
  deadline until{};

  static Limit none() { return {Kind::none, {}}; }
  static Limit forever() { return {Kind::forever, {}}; }
  static Limit at(deadline when) { return {Kind::until, when}; }

  [[nodiscard]] bool passed() const {
    return kind == Kind::none || (kind == Kind::until && steady_clock::now() >= until);
  }
  /// At most `cap`, and no later than the deadline (at least 1 ms: nats.c refuses 0).
  [[nodiscard]] std::chrono::milliseconds wait(std::chrono::milliseconds cap) const {
    if (kind != Kind::until) return cap;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now());
    return std::clamp(left, std::chrono::milliseconds(1), cap);
  }
  [[nodiscard]] errc reached() const { return kind == Kind::none ? errc::would_block : errc::timed_out; }
};

// Sleeps before a retry, a little longer each time, never past the limit.
class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds first, std::chrono::milliseconds most) : next_(first), most_(most) {}
  void pause(const Limit& limit) {
    std::this_thread::sleep_for(limit.wait(next_));
    next_ = std::min(next_ * 2, most_);
  }

 private:
  std::chrono::milliseconds next_;
  std::chrono::milliseconds most_;
};

/// The server's text when it refused this connection a publish on `subject`
/// (it drops such a publish and reports it asynchronously: the connection's
/// last error is the only trace).
std::optional<std::string> refused_publish(natsConnection* connection, std::string_view subject);

/// The stream `stream`'s information. Errors: not_found ("no stream …"), and
/// those of the server; `object` names what is asked for in them.
result<OwnedStreamInfo> read_stream(const Connection& connection, const std::string& stream, const std::string& object);
/// The names after `prefix` of the streams whose names start with it, sorted.
result<std::vector<std::string>> stream_names(const Connection& connection, std::string_view prefix,
                                              const std::string& object);
/// The server leading the stream ("" outside a cluster).
std::string stream_leader(const jsStreamInfo& info);

/// A stream ferry makes (a mailbox's or a topic's): what differs between
/// them. The rest of the configuration keeps nats.c's defaults; the replicas
/// come from the connection's address.
struct StreamSpec {
  std::string name;
  std::string description;
  std::string subjects;  ///< one subject pattern
  jsRetentionPolicy retention = js_LimitsPolicy;
  std::int64_t max_messages = -1;  ///< -1: no limit
  jsDiscardPolicy discard = js_DiscardOld;
  std::size_t max_message_size = 0;  ///< payload and headers
  bool memory = false;
  std::chrono::nanoseconds duplicate_window{0};  ///< 0: the server's default
};
/// Makes the stream. Errors: those of the server, naming `object`.
result<void> add_stream(const Connection& connection, const StreamSpec& spec, const std::string& object);
/// Removes the stream. Errors: not_found, and those of the server.
result<void> delete_stream(const Connection& connection, const std::string& stream, const std::string& object);

/// Parses `text` (a nats:// address that must name an object), connects,
/// and calls then(connection, name): the address forms of open, create, destroy.
template <class Then>
auto with_connection(std::string_view text, Then&& then) -> decltype(then(std::declval<Connection&>(), std::string())) {
  auto address = Address::parse(text);
  if (!address) return std::move(address).error();
  if (address->name.empty()) {
    return error(errc::invalid_argument, std::string(text), "no object name: write nats://HOST:PORT/NAME");
  }
  auto connection = Connection::connect(*address);
  if (!connection) return std::move(connection).error();
  return then(*connection, address->name);
}

/// What a blocking receive returns: the message a receive with a limit found
/// (one with a limit always finds one, or fails).
template <class Message>
result<Message> found(result<std::optional<Message>> next) {
  if (!next) return std::move(next).error();
  return std::move(**next);
}

/// JetStream's "not enabled" answer also comes while a cluster elects a
/// leader (and "no responders" while a server restarts), and a write to a
/// server that just died fails with an I/O error before the connection
/// knows it is reconnecting: all worth retrying.
bool transient(natsStatus status, jsErrCode js_code) noexcept;

// Runs a JetStream administration call again while the cluster is electing a
// leader or the connection is failing over, until the connection's timeout.
template <class Call>
natsStatus administer(const Connection& connection, jsErrCode& js_code, Call&& call) {
  const Limit limit = Limit::at(deadline_after(connection.address().timeout));
  Backoff backoff(std::chrono::milliseconds(50), std::chrono::milliseconds(500));
  for (;;) {
    js_code = static_cast<jsErrCode>(0);
    const natsStatus status = call();
    if (status == NATS_OK || !detail::transient(status, js_code) || limit.passed()) return status;
    backoff.pause(limit);
  }
}

}  // namespace detail
}  // namespace ferry::nats
