#include "ferry/nats/topic.hpp"

#include <cstdio>

#include "nats_internal.hpp"

namespace ferry::nats {
namespace {

using detail::administer;
using detail::Limit;
using detail::nanoseconds;
using detail::nats_error;
using detail::OwnedMessage;
using detail::OwnedSubscription;
using detail::valid_name;

constexpr std::string_view kDescription = "ferry topic 1";
constexpr std::size_t kHeaderRoom = 1024;
// A blocking receive waits in slices of this (nats.c takes a finite timeout).
constexpr auto kSlice = std::chrono::milliseconds(60'000);

std::string stream_of(std::string_view name) { return "FERRY_TOPIC_" + std::string(name); }
std::string subjects_of(std::string_view name) { return "ferry.topic." + std::string(name) + ".*"; }
std::string object_of(const Address& address, std::string_view name) {
  return "nats topic " + address.with_name(name).to_string();
}

struct Layout {
  std::size_t history = 0;
  std::size_t max_message = 0;
};

std::optional<Layout> parse_description(std::string_view text) {
  if (!text.starts_with(kDescription)) return std::nullopt;
  unsigned long history = 0;
  unsigned long max_message = 0;
  const std::string rest(text.substr(kDescription.size()));
  if (std::sscanf(rest.c_str(), " history=%lu max_message=%lu", &history, &max_message) != 2 || history == 0 ||
      max_message == 0) {
    return std::nullopt;
  }
  return Layout{history, max_message};
}

// The stream of a history topic, or nothing for a core topic.
result<std::optional<Layout>> find_layout(const Connection& connection, std::string_view name, const std::string& object) {
  const std::string stream = stream_of(name);
  auto read = detail::read_stream(connection, stream, object);
  if (!read) {
    if (read.error().code() == errc::not_found) return std::optional<Layout>{};
    return std::move(read).error();
  }
  const detail::OwnedStreamInfo info = std::move(*read);
  const char* description = info->Config->Description != nullptr ? info->Config->Description : "";
  auto layout = parse_description(description);
  if (!layout) {
    return error(errc::corrupt, object,
                 "stream " + stream + " is not a ferry topic (description '" + std::string(description) + "')");
  }
  return std::optional<Layout>(*layout);
}

}  // namespace

// ---------------------------------------------------------------- messages

struct TopicMessage::Held {
  OwnedMessage message;
};

TopicMessage::TopicMessage(std::unique_ptr<Held> held, std::string sender, std::uint64_t sequence)
    : held_(std::move(held)), sender_(std::move(sender)), sequence_(sequence) {}
TopicMessage::TopicMessage(TopicMessage&&) noexcept = default;
TopicMessage& TopicMessage::operator=(TopicMessage&&) noexcept = default;
TopicMessage::~TopicMessage() = default;

std::span<const std::byte> TopicMessage::data() const noexcept {
  if (!held_) return {};
  return {reinterpret_cast<const std::byte*>(natsMsg_GetData(held_->message.get())),
          static_cast<std::size_t>(natsMsg_GetDataLength(held_->message.get()))};
}

// ---------------------------------------------------------------- subscriber

struct TopicSubscriber::State {
  explicit State(Connection opened) : connection(std::move(opened)) {}
  Connection connection;
  std::string object;
  OwnedSubscription subscription;
  bool history = false;

  result<std::optional<TopicMessage>> receive(const Limit& limit) {
    for (;;) {
      if (limit.kind == Limit::Kind::none) {
        int pending = 0;
        if (natsSubscription_GetPending(subscription.get(), &pending, nullptr) != NATS_OK || pending <= 0) {
          return std::optional<TopicMessage>{};
        }
      }
      natsMsg* raw = nullptr;
      const natsStatus status = natsSubscription_NextMsg(&raw, subscription.get(), limit.wait(kSlice).count());
      if (status == NATS_TIMEOUT) {
        if (limit.kind == Limit::Kind::forever) continue;
        if (limit.passed()) return error(errc::timed_out, object, "no message");
        continue;
      }
      // A slow subscriber's dropped messages are counted (dropped()), not an error.
      if (status == NATS_SLOW_CONSUMER) continue;
      if (status != NATS_OK) return nats_error(status, object, "cannot receive");
      OwnedMessage message(raw);
      const std::string_view subject = natsMsg_GetSubject(raw);
      std::string sender(subject.substr(subject.rfind('.') + 1));
      std::uint64_t sequence = 0;
      if (history) {
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, raw) == NATS_OK) {
          sequence = meta->Sequence.Stream;
          jsMsgMetaData_Destroy(meta);
        }
      }
      return std::optional<TopicMessage>(TopicMessage(
          std::make_unique<TopicMessage::Held>(TopicMessage::Held{std::move(message)}), std::move(sender), sequence));
    }
  }
};

TopicSubscriber::TopicSubscriber(std::unique_ptr<State> state) : state_(std::move(state)) {}
TopicSubscriber::TopicSubscriber(TopicSubscriber&&) noexcept = default;
TopicSubscriber& TopicSubscriber::operator=(TopicSubscriber&&) noexcept = default;
TopicSubscriber::~TopicSubscriber() = default;

result<TopicMessage> TopicSubscriber::receive() {
  return detail::found(state_->receive(Limit::forever()));
}
result<std::optional<TopicMessage>> TopicSubscriber::try_receive() { return state_->receive(Limit::none()); }
result<TopicMessage> TopicSubscriber::receive_until(deadline until) {
  return detail::found(state_->receive(Limit::at(until)));
}
std::uint64_t TopicSubscriber::dropped() const {
  int64_t dropped = 0;
  if (natsSubscription_GetDropped(state_->subscription.get(), &dropped) != NATS_OK) return 0;
  return static_cast<std::uint64_t>(dropped);
}

// ---------------------------------------------------------------- topic

struct Topic::State {
  explicit State(Connection opened) : connection(std::move(opened)) {}
  Connection connection;
  std::string name;
  std::string object;
  std::string subject;  // ferry.topic.NAME.USER: where this client publishes
  Layout layout;

  // A publish the server refused (it says so asynchronously: the connection's last error).
  std::optional<error> refusal() const {
    auto refused = detail::refused_publish(connection.state().connection, subject);
    if (!refused) return std::nullopt;
    return error(errc::permission_denied, object,
                 "the server refuses user '" + connection.address().identity() + "' to publish on " + subject + ": " +
                     *refused);
  }
};

Topic::Topic(std::unique_ptr<State> state) : state_(std::move(state)) {}
Topic::Topic(Topic&&) noexcept = default;
Topic& Topic::operator=(Topic&&) noexcept = default;
Topic::~Topic() = default;

const std::string& Topic::name() const noexcept { return state_->name; }
std::size_t Topic::history() const noexcept { return state_->layout.history; }

result<TopicStats> Topic::stats() const {
  const State& state = *state_;
  const std::string stream = stream_of(state.name);
  if (state.layout.history == 0) {
    return error(errc::not_found, state.object, "a topic without history keeps nothing on the servers");
  }
  auto read = detail::read_stream(state.connection, stream, state.object);
  if (!read) return std::move(read).error();
  const detail::OwnedStreamInfo info = std::move(*read);
  return TopicStats{.name = state.name,
                    .stream = stream,
                    .history = state.layout.history,
                    .stored = info->State.Msgs,
                    .bytes = info->State.Bytes,
                    .first_sequence = info->State.FirstSeq,
                    .last_sequence = info->State.LastSeq,
                    .subscribers = static_cast<std::uint64_t>(info->State.Consumers),
                    .replicas = static_cast<int>(info->Config->Replicas),
                    .leader = detail::stream_leader(*info)};
}

result<std::vector<std::string>> Topic::list(const Connection& connection) {
  return detail::stream_names(connection, stream_of(""),
                              "nats topics at " + connection.address().with_name("").to_string());
}

result<Topic> Topic::open(const Connection& connection, std::string_view name) {
  const std::string object = object_of(connection.address(), name);
  if (!valid_name(name)) return error(errc::invalid_argument, object, "a name holds letters, digits, '-' and '_'");
  auto found = find_layout(connection, name, object);
  if (!found) return std::move(found).error();
  auto state = std::make_unique<State>(connection);
  state->name = name;
  state->object = object;
  state->subject = "ferry.topic." + std::string(name) + "." + connection.address().identity();
  if (*found) {
    state->layout = **found;
  } else {
    const auto server_limit = static_cast<std::size_t>(natsConnection_GetMaxPayload(connection.state().connection));
    state->layout.max_message = server_limit - kHeaderRoom;
  }
  return Topic(std::move(state));
}

result<Topic> Topic::create(const Connection& connection, std::string_view name, const TopicOptions& options) {
  const std::string object = object_of(connection.address(), name);
  if (!valid_name(name)) return error(errc::invalid_argument, object, "a name holds letters, digits, '-' and '_'");
  const auto server_limit = static_cast<std::size_t>(natsConnection_GetMaxPayload(connection.state().connection));
  if (options.max_message == 0 || options.max_message + kHeaderRoom > server_limit) {
    return error(errc::invalid_argument, object,
                 "max_message must be 1 to " + std::to_string(server_limit - kHeaderRoom) +
                     " (the server's max_payload less room for headers)");
  }
  auto found = find_layout(connection, name, object);
  if (!found) return std::move(found).error();
  if (*found) return error(errc::already_exists, object, "stream " + stream_of(name) + " exists");
  if (options.history == 0) return open(connection, name);

  const detail::StreamSpec spec{
      .name = stream_of(name),
      .description = std::string(kDescription) + " history=" + std::to_string(options.history) +
                     " max_message=" + std::to_string(options.max_message),
      .subjects = subjects_of(name),
      .retention = js_LimitsPolicy,
      .max_messages = static_cast<std::int64_t>(options.history),
      .discard = js_DiscardOld,  // the oldest gives way: the last `history` stay
      .max_message_size = options.max_message + kHeaderRoom,
      .memory = options.memory};
  if (auto made = detail::add_stream(connection, spec, object); !made) return std::move(made).error();
  return open(connection, name);
}

result<void> Topic::destroy(const Connection& connection, std::string_view name) {
  const std::string object = object_of(connection.address(), name);
  if (!valid_name(name)) return error(errc::invalid_argument, object, "a name holds letters, digits, '-' and '_'");
  return detail::delete_stream(connection, stream_of(name), object);  // not_found also for a topic without history
}

result<Topic> Topic::create(std::string_view address, const TopicOptions& options) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) {
    return create(connection, name, options);
  });
}
result<Topic> Topic::open(std::string_view address) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) { return open(connection, name); });
}
result<void> Topic::destroy(std::string_view address) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) {
    return destroy(connection, name);
  });
}

result<void> Topic::flush() {
  const State& state = *state_;
  const natsStatus status =
      natsConnection_FlushTimeout(state.connection.state().connection, state.connection.address().timeout.count());
  if (auto refusal = state.refusal()) return *refusal;
  if (status != NATS_OK) return nats_error(status, state.object, "cannot flush");
  return {};
}

result<void> Topic::publish(std::span<const std::byte> message) {
  State& state = *state_;
  if (message.size() > state.layout.max_message) {
    return error(errc::invalid_argument, state.object,
                 std::to_string(message.size()) + " bytes is more than max_message " +
                     std::to_string(state.layout.max_message));
  }
  // A publish the server refused earlier shows only now.
  if (auto refusal = state.refusal()) return *refusal;
  if (state.layout.history == 0) {
    const natsStatus status = natsConnection_Publish(state.connection.state().connection, state.subject.c_str(),
                                                     message.data(), static_cast<int>(message.size()));
    if (status != NATS_OK) return nats_error(status, state.object, "cannot publish");
    return {};
  }
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = state.connection.address().timeout.count();
  jsPubAck* raw = nullptr;
  jsErrCode js_code{};
  const natsStatus status = js_Publish(&raw, state.connection.state().jetstream, state.subject.c_str(), message.data(),
                                       static_cast<int>(message.size()), &options, &js_code);
  const detail::OwnedPubAck ack(raw);
  if (status == NATS_OK) return {};
  if (auto refusal = state.refusal()) return *refusal;
  return nats_error(status, js_code, state.object, "cannot store the message");
}

result<TopicSubscriber> Topic::subscribe() {
  const State& state = *state_;
  auto subscriber = std::make_unique<TopicSubscriber::State>(state.connection);
  subscriber->object = state.object;
  subscriber->history = state.layout.history != 0;
  const std::string subjects = subjects_of(state.name);
  natsSubscription* raw = nullptr;
  if (!subscriber->history) {
    natsStatus status = natsConnection_SubscribeSync(&raw, state.connection.state().connection, subjects.c_str());
    if (status != NATS_OK) return nats_error(status, state.object, "cannot subscribe to " + subjects);
    subscriber->subscription = OwnedSubscription(raw, {state.connection.state().connection});
    // Messages published after subscribe() returns must reach it: the server has the subscription.
    status = natsConnection_FlushTimeout(state.connection.state().connection, state.connection.address().timeout.count());
    if (status != NATS_OK) return nats_error(status, state.object, "cannot subscribe to " + subjects);
    return TopicSubscriber(std::move(subscriber));
  }
  // An ordered consumer: the stored messages, then live ones, in order; the
  // client recreates it if it misses one.
  const std::string stream = stream_of(state.name);
  jsSubOptions options;
  jsSubOptions_Init(&options);
  options.Stream = stream.c_str();
  options.Ordered = true;
  options.Config.DeliverPolicy = js_DeliverAll;
  jsErrCode js_code{};
  const natsStatus status = administer(state.connection, js_code, [&] {
    return js_SubscribeSync(&raw, state.connection.state().jetstream, subjects.c_str(), nullptr, &options, &js_code);
  });
  if (status != NATS_OK) return nats_error(status, js_code, state.object, "cannot subscribe to stream " + stream);
  subscriber->subscription = OwnedSubscription(raw, {state.connection.state().connection});
  return TopicSubscriber(std::move(subscriber));
}

}  // namespace ferry::nats
