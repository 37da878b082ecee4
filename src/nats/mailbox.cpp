#include "ferry/nats/mailbox.hpp"

#include <sys/random.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <thread>

#include "nats_internal.hpp"

namespace ferry::nats {
namespace {

using detail::administer;
using detail::Backoff;
using detail::Limit;
using detail::nanoseconds;
using detail::nats_error;
using detail::valid_name;
using detail::OwnedMessage;
using detail::OwnedSubscription;

constexpr std::string_view kDescription = "ferry mailbox 1";
constexpr const char* kPriorityHeader = "Ferry-Priority";
constexpr const char* kOriginalSenderHeader = "Ferry-Original-Sender";
constexpr const char* kDeliveriesHeader = "Ferry-Deliveries";
constexpr const char* kMessageIdHeader = "Nats-Msg-Id";
constexpr unsigned kPriorities = 32;
// An idle receiver looks at every band this often: a message given back by
// an expired lease rings no doorbell.
constexpr auto kRecheck = std::chrono::milliseconds(100);
// Room left beside a message for its headers within the server's max_payload.
constexpr std::size_t kHeaderRoom = 1024;

std::string stream_of(std::string_view name) { return "FERRY_MBX_" + std::string(name); }
std::string subject_of(std::string_view name, unsigned band, std::string_view user) {
  return "ferry.mbx." + std::string(name) + "." + std::to_string(band) + "." + std::string(user);
}
std::string filter_of(std::string_view name, unsigned band) { return subject_of(name, band, "*"); }
std::string consumer_of(unsigned band) { return "band" + std::to_string(band); }
std::string bell_of(std::string_view name, unsigned band) {
  return "ferry.bell." + std::string(name) + "." + std::to_string(band);
}
std::string object_of(const Address& address, std::string_view name) {
  return "nats mailbox " + address.with_name(name).to_string();
}


// What a mailbox keeps in its stream's description, so openers know it.
struct Layout {
  unsigned levels = 1;
  unsigned max_deliver = 0;
  std::string dead_letter;
  std::size_t max_message = 0;
};

std::string describe(const Layout& layout) {
  return std::string(kDescription) + " levels=" + std::to_string(layout.levels) +
         " max_message=" + std::to_string(layout.max_message) + " max_deliver=" + std::to_string(layout.max_deliver) +
         " dead_letter=" + layout.dead_letter;
}

std::optional<Layout> parse_description(std::string_view text) {
  if (!text.starts_with(kDescription)) return std::nullopt;
  Layout layout;
  char dead_letter[256] = {};
  const std::string copy(text.substr(kDescription.size()));
  unsigned long max_message = 0;
  if (std::sscanf(copy.c_str(), " levels=%u max_message=%lu max_deliver=%u dead_letter=%255s", &layout.levels,
                  &max_message, &layout.max_deliver, dead_letter) < 3) {
    return std::nullopt;
  }
  if (layout.levels == 0 || layout.levels > kMaxLevels || max_message == 0) return std::nullopt;
  layout.max_message = max_message;
  layout.dead_letter = dead_letter;
  return layout;
}




std::string random_prefix() {
  std::uint64_t value = 0;
  if (::getrandom(&value, sizeof value, 0) != sizeof value) {
    value = static_cast<std::uint64_t>(steady_clock::now().time_since_epoch().count()) ^ static_cast<std::uint64_t>(::getpid());
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}


// Where a delivered message stands, from the subject its acks go to:
// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
// (servers with domains put <domain>.<account hash> before the stream).
struct Delivery {
  std::uint64_t deliveries = 0;
  std::uint64_t sequence = 0;
};

std::optional<Delivery> parse_ack_subject(std::string_view reply) {
  constexpr std::string_view kPrefix = "$JS.ACK.";
  if (!reply.starts_with(kPrefix)) return std::nullopt;
  std::vector<std::string_view> tokens;
  for (std::string_view rest = reply.substr(kPrefix.size()); !rest.empty();) {
    const auto dot = rest.find('.');
    tokens.push_back(rest.substr(0, dot));
    rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
  }
  const std::size_t first = tokens.size() == 7 ? 2 : tokens.size() >= 9 ? 4 : tokens.size();
  if (first + 1 >= tokens.size()) return std::nullopt;
  Delivery delivery;
  const auto number = [](std::string_view text, std::uint64_t& value) {
    const auto [end, failure] = std::from_chars(text.data(), text.data() + text.size(), value);
    return failure == std::errc{} && end == text.data() + text.size();
  };
  if (!number(tokens[first], delivery.deliveries) || !number(tokens[first + 1], delivery.sequence)) return std::nullopt;
  return delivery;
}

// Answers a delivery on its ack subject: "+ACK" confirmed by the server
// (a request), "-NAK" and "+WPI" (in progress) sent and not waited for.
natsStatus answer_delivery(const Connection& connection, const char* reply, std::string_view verb, bool confirm) {
  natsConnection* nats = connection.state().connection;
  if (!confirm) return natsConnection_Publish(nats, reply, verb.data(), static_cast<int>(verb.size()));
  natsMsg* raw = nullptr;
  const natsStatus status = natsConnection_Request(&raw, nats, reply, verb.data(), static_cast<int>(verb.size()),
                                                   connection.address().timeout.count());
  const OwnedMessage confirmation(raw);
  return status;
}

}  // namespace

// ---------------------------------------------------------------- Message

struct Message::Held {
  Connection connection;
  OwnedMessage message;
  std::string bell;       // rung on nack, so waiting receivers look again
  std::string object;
  bool settled = false;
};

Message::Message(std::unique_ptr<Held> held) : held_(std::move(held)) {}
Message::Message(Message&&) noexcept = default;
Message& Message::operator=(Message&& other) noexcept {
  if (this != &other) {
    if (held_ && !held_->settled) (void)nack();
    held_ = std::move(other.held_);
    sender_ = std::move(other.sender_);
    priority_ = other.priority_;
    message_id_ = std::move(other.message_id_);
    deliveries_ = other.deliveries_;
    sequence_ = other.sequence_;
  }
  return *this;
}
Message::~Message() {
  if (held_ && !held_->settled) (void)nack();
}

std::span<const std::byte> Message::data() const noexcept {
  if (!held_) return {};
  const auto* bytes = reinterpret_cast<const std::byte*>(natsMsg_GetData(held_->message.get()));
  return {bytes, static_cast<std::size_t>(natsMsg_GetDataLength(held_->message.get()))};
}

std::optional<std::string> Message::header(std::string_view key) const {
  if (!held_) return std::nullopt;
  const char* value = nullptr;
  const std::string name(key);
  if (natsMsgHeader_Get(held_->message.get(), name.c_str(), &value) != NATS_OK || value == nullptr) return std::nullopt;
  return std::string(value);
}

result<void> Message::settle(std::string_view what, bool final_step) {
  if (!held_) return error(errc::invalid_argument, "nats message", "moved from");
  if (held_->settled) {
    return error(errc::invalid_argument, held_->object, "message " + message_id_ + " was already acked or nacked");
  }
  const char* reply = natsMsg_GetReply(held_->message.get());
  natsStatus status = NATS_OK;
  if (what == "ack") {
    status = answer_delivery(held_->connection, reply, "+ACK", true);
  } else if (what == "nack") {
    status = answer_delivery(held_->connection, reply, "-NAK", false);
    if (status == NATS_OK) {
      (void)natsConnection_Publish(held_->connection.state().connection, held_->bell.c_str(), nullptr, 0);
    }
  } else {
    status = answer_delivery(held_->connection, reply, "+WPI", false);
  }
  if (final_step) held_->settled = true;
  if (status != NATS_OK) {
    return nats_error(status, held_->object, std::string(what) + " of message " + message_id_);
  }
  return {};
}

result<void> Message::ack() { return settle("ack", true); }
result<void> Message::nack() { return settle("nack", true); }
result<void> Message::in_progress() { return settle("in progress", false); }

// ---------------------------------------------------------------- Mailbox

struct Mailbox::State {
  explicit State(Connection opened) : connection(std::move(opened)) {}

  Connection connection;
  std::string name;
  std::string stream;
  std::string object;
  Layout layout;
  std::string identity;
  std::string id_prefix = random_prefix();
  std::uint64_t next_id = 0;
  std::unique_ptr<Mailbox> dead_letter;  // opened at the first poison message

  // Receiving, set up at the first receive.
  OwnedSubscription bell;
  std::vector<bool> maybe_waiting;
  deadline last_full_look{};

  jsCtx* jetstream() const { return connection.state().jetstream; }
  natsConnection* nats() const { return connection.state().connection; }

  using Headers = std::vector<std::pair<std::string, std::string>>;
  result<SendReceipt> send(std::span<const std::byte> message, const SendOptions& options, const Limit& limit,
                           const Headers& headers = {});
  result<std::optional<Message>> receive(const Limit& limit);
  result<void> start_receiving();
  // A fetched message as the caller gets it, or nothing when it was poison
  // and went to the dead-letter mailbox.
  result<std::optional<Message>> take(unsigned band, OwnedMessage message);
  result<void> bury(const natsMsg* message, unsigned band, const std::string& sender, std::uint64_t deliveries,
                    const std::string& message_id);
  // Marks the bands whose doorbell rang since the last look.
  void hear_bells();
  void hear(OwnedMessage ring);
  // The next message of a band's consumer, or nothing when it has none to
  // hand out now. Errors: peer_gone while JetStream does not answer.
  result<std::optional<OwnedMessage>> pull(unsigned band);
};

Mailbox::Mailbox(std::unique_ptr<State> state) : state_(std::move(state)) {}
Mailbox::Mailbox(Mailbox&&) noexcept = default;
Mailbox& Mailbox::operator=(Mailbox&&) noexcept = default;
Mailbox::~Mailbox() = default;

const std::string& Mailbox::name() const noexcept { return state_->name; }
unsigned Mailbox::levels() const noexcept { return state_->layout.levels; }
std::size_t Mailbox::max_message() const noexcept { return state_->layout.max_message; }
const Connection& Mailbox::connection() const noexcept { return state_->connection; }

result<Mailbox> Mailbox::open(const Connection& connection, std::string_view name) {
  const std::string object = object_of(connection.address(), name);
  if (!valid_name(name)) return error(errc::invalid_argument, object, "a name holds letters, digits, '-' and '_'");
  const std::string stream = stream_of(name);
  auto read = detail::read_stream(connection, stream, object);
  if (!read) return std::move(read).error();
  const detail::OwnedStreamInfo info = std::move(*read);
  const char* description = info->Config->Description != nullptr ? info->Config->Description : "";
  auto layout = parse_description(description);
  if (!layout) {
    return error(errc::corrupt, object,
                 "stream " + stream + " is not a ferry mailbox (description '" + std::string(description) + "')");
  }
  auto state = std::make_unique<State>(connection);
  state->name = name;
  state->stream = stream;
  state->object = object;
  state->layout = std::move(*layout);
  state->identity = connection.address().identity();
  return Mailbox(std::move(state));
}

result<Mailbox> Mailbox::create(const Connection& connection, std::string_view name, const MailboxOptions& options) {
  const std::string object = object_of(connection.address(), name);
  const auto refuse = [&](std::string why) -> result<Mailbox> {
    return error(errc::invalid_argument, object, std::move(why));
  };
  if (!valid_name(name)) return refuse("a name holds letters, digits, '-' and '_'");
  if (options.levels == 0 || options.levels > kMaxLevels) return refuse("levels must be 1 to 32");
  const auto server_limit = static_cast<std::size_t>(natsConnection_GetMaxPayload(connection.state().connection));
  if (options.max_message == 0 || options.max_message + kHeaderRoom > server_limit) {
    return refuse("max_message must be 1 to " + std::to_string(server_limit - kHeaderRoom) +
                  " (the server's max_payload less room for headers)");
  }
  if (options.lease < std::chrono::milliseconds(1)) return refuse("the lease must be at least 1 ms");
  if ((options.max_deliver == 0) != options.dead_letter.empty()) {
    return refuse("max_deliver and dead_letter go together");
  }
  if (!options.dead_letter.empty() && (!valid_name(options.dead_letter) || options.dead_letter == name)) {
    return refuse("dead_letter must name another mailbox");
  }
  if (auto existing = open(connection, name); existing || existing.error().code() != errc::not_found) {
    if (existing) return error(errc::already_exists, object, "stream " + stream_of(name) + " exists");
    return std::move(existing).error();
  }
  if (!options.dead_letter.empty()) {
    MailboxOptions dead_letter_options = options;
    dead_letter_options.max_deliver = 0;
    dead_letter_options.dead_letter.clear();
    if (auto dead_letter = open_or_create(connection, options.dead_letter, dead_letter_options); !dead_letter) {
      return std::move(dead_letter).error();
    }
  }

  const Layout layout{options.levels, options.max_deliver, options.dead_letter, options.max_message};
  const std::string stream = stream_of(name);
  const detail::StreamSpec spec{
      .name = stream,
      .description = describe(layout),
      .subjects = "ferry.mbx." + std::string(name) + ".*.*",
      .retention = js_WorkQueuePolicy,
      .max_messages = options.capacity == 0 ? -1 : static_cast<std::int64_t>(options.capacity),
      .discard = js_DiscardNew,  // a full mailbox refuses: send waits
      .max_message_size = options.max_message + kHeaderRoom,
      .memory = options.memory,
      .duplicate_window = options.duplicate_window};
  if (auto made = detail::add_stream(connection, spec, object); !made) return std::move(made).error();

  for (unsigned band = 0; band < options.levels; ++band) {
    const std::string consumer = consumer_of(band);
    const std::string filter = filter_of(name, band);
    jsConsumerConfig consumer_config;
    jsConsumerConfig_Init(&consumer_config);
    consumer_config.Durable = consumer.c_str();
    consumer_config.AckPolicy = js_AckExplicit;
    consumer_config.AckWait = nanoseconds(options.lease);
    consumer_config.MaxDeliver = -1;  // poison messages are moved by the receiver (max_deliver)
    consumer_config.FilterSubject = filter.c_str();
    consumer_config.MaxAckPending = 1 << 16;
    jsConsumerInfo* raw_consumer = nullptr;
    jsErrCode js_code{};
    const natsStatus status = administer(connection, js_code, [&] {
      return js_AddConsumer(&raw_consumer, connection.state().jetstream, stream.c_str(), &consumer_config, nullptr,
                            &js_code);
    });
    detail::OwnedConsumerInfo consumer_info(raw_consumer);
    if (status != NATS_OK) return nats_error(status, js_code, object, "cannot make consumer " + consumer);
  }
  return open(connection, name);
}

result<Mailbox> Mailbox::open_or_create(const Connection& connection, std::string_view name,
                                        const MailboxOptions& options) {
  for (int attempt = 0;; ++attempt) {
    auto opened = open(connection, name);
    if (opened || opened.error().code() != errc::not_found) return opened;
    auto created = create(connection, name, options);
    // Another process made it between our open and our create: open theirs.
    if (created || created.error().code() != errc::already_exists || attempt == 2) return created;
  }
}

result<void> Mailbox::destroy(const Connection& connection, std::string_view name) {
  const std::string object = object_of(connection.address(), name);
  if (!valid_name(name)) return error(errc::invalid_argument, object, "a name holds letters, digits, '-' and '_'");
  return detail::delete_stream(connection, stream_of(name), object);
}

result<std::vector<std::string>> Mailbox::list(const Connection& connection) {
  return detail::stream_names(connection, stream_of(""),
                              "nats mailboxes at " + connection.address().with_name("").to_string());
}

result<Mailbox> Mailbox::create(std::string_view address, const MailboxOptions& options) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) {
    return create(connection, name, options);
  });
}
result<Mailbox> Mailbox::open(std::string_view address) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) { return open(connection, name); });
}
result<Mailbox> Mailbox::open_or_create(std::string_view address, const MailboxOptions& options) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) {
    return open_or_create(connection, name, options);
  });
}
result<void> Mailbox::destroy(std::string_view address) {
  return detail::with_connection(address, [&](Connection& connection, const std::string& name) {
    return destroy(connection, name);
  });
}

// ---------------------------------------------------------------- sending

result<SendReceipt> Mailbox::State::send(std::span<const std::byte> message, const SendOptions& options,
                                         const Limit& limit, const Headers& headers) {
  if (message.size() > layout.max_message) {
    return error(errc::invalid_argument, object,
                 std::to_string(message.size()) + " bytes is more than max_message " + std::to_string(layout.max_message));
  }
  if (options.priority >= kPriorities) {
    return error(errc::invalid_argument, object, "priority " + std::to_string(options.priority) + " (0 to 31)");
  }
  const unsigned band = std::min(options.priority, layout.levels - 1);
  const std::string subject = subject_of(name, band, identity);
  SendReceipt receipt;
  receipt.message_id = options.message_id.empty() ? identity + "-" + id_prefix + "-" + std::to_string(++next_id)
                                                  : options.message_id;
  const std::string priority = std::to_string(options.priority);
  const auto timeout = connection.address().timeout;
  Backoff full_backoff(std::chrono::milliseconds(1), std::chrono::milliseconds(20));
  Backoff failover_backoff(std::chrono::milliseconds(50), std::chrono::milliseconds(500));
  for (;;) {
    // A fresh nats.c message each attempt: a retry carries the same id, so
    // the stream stores it once whatever became of the attempt before.
    natsMsg* raw = nullptr;
    natsStatus status = natsMsg_Create(&raw, subject.c_str(), nullptr, reinterpret_cast<const char*>(message.data()),
                                       static_cast<int>(message.size()));
    if (status != NATS_OK) return nats_error(status, object, "cannot make a message");
    const OwnedMessage outgoing(raw);
    if (options.priority != band) status = natsMsgHeader_Set(raw, kPriorityHeader, priority.c_str());
    for (const auto& [key, value] : headers) {
      if (status == NATS_OK) status = natsMsgHeader_Set(raw, key.c_str(), value.c_str());
    }
    if (status != NATS_OK) return nats_error(status, object, "cannot set the message's headers");
    jsPubOptions publish_options;
    jsPubOptions_Init(&publish_options);
    publish_options.MsgId = receipt.message_id.c_str();
    publish_options.MaxWait = limit.kind == Limit::Kind::none ? timeout.count() : limit.wait(timeout).count();
    jsPubAck* raw_ack = nullptr;
    jsErrCode js_code{};
    status = js_PublishMsg(&raw_ack, jetstream(), raw, &publish_options, &js_code);
    const detail::OwnedPubAck ack(raw_ack);
    if (status == NATS_OK) {
      receipt.sequence = ack->Sequence;
      receipt.duplicate = ack->Duplicate;
      if (!receipt.duplicate) (void)natsConnection_Publish(nats(), bell_of(name, band).c_str(), nullptr, 0);
      return receipt;
    }
    if (js_code == JSStreamStoreFailedErr) {  // "maximum messages exceeded": full
      if (limit.passed()) return error(limit.reached(), object, "the mailbox is full");
      full_backoff.pause(limit);
      continue;
    }
    if (status == NATS_TIMEOUT) {
      // A publish the server refuses for permissions is dropped with an
      // asynchronous -ERR: the only trace of it is the connection's last error.
      if (auto refusal = detail::refused_publish(nats(), subject)) {
        return error(errc::permission_denied, object,
                     "the server refuses user '" + identity + "' to publish on " + subject + ": " + *refusal);
      }
    }
    if ((status == NATS_TIMEOUT || detail::transient(status, js_code)) && !limit.passed()) {
      failover_backoff.pause(limit);
      continue;
    }
    return nats_error(status, js_code, object, "cannot store message " + receipt.message_id);
  }
}

result<SendReceipt> Mailbox::send(std::span<const std::byte> message, const SendOptions& options) {
  return state_->send(message, options, Limit::forever());
}
result<SendReceipt> Mailbox::try_send(std::span<const std::byte> message, const SendOptions& options) {
  return state_->send(message, options, Limit::none());
}
result<SendReceipt> Mailbox::send_until(std::span<const std::byte> message, deadline until, const SendOptions& options) {
  return state_->send(message, options, Limit::at(until));
}

// ---------------------------------------------------------------- receiving

result<void> Mailbox::State::start_receiving() {
  if (bell) return {};
  natsSubscription* raw_bell = nullptr;
  const std::string bells = "ferry.bell." + name + ".*";
  natsStatus status = natsConnection_SubscribeSync(&raw_bell, nats(), bells.c_str());
  if (status != NATS_OK) return nats_error(status, object, "cannot subscribe to " + bells);
  bell = OwnedSubscription(raw_bell, {nats()});
  // The server must know of the doorbell before a band is first found
  // empty, or a message sent in between would ring unheard.
  status = natsConnection_FlushTimeout(nats(), connection.address().timeout.count());
  if (status != NATS_OK) return nats_error(status, object, "cannot subscribe to " + bells);
  maybe_waiting.assign(layout.levels, true);
  last_full_look = steady_clock::now();
  return {};
}

void Mailbox::State::hear_bells() {
  for (;;) {
    int pending = 0;
    if (natsSubscription_GetPending(bell.get(), &pending, nullptr) != NATS_OK || pending <= 0) return;
    natsMsg* raw = nullptr;
    if (natsSubscription_NextMsg(&raw, bell.get(), 1) != NATS_OK) return;
    hear(OwnedMessage(raw));
  }
}

void Mailbox::State::hear(OwnedMessage ring) {
  const std::string_view subject = natsMsg_GetSubject(ring.get());
  const auto dot = subject.rfind('.');
  unsigned band = 0;
  const auto [end, failure] = std::from_chars(subject.data() + dot + 1, subject.data() + subject.size(), band);
  if (failure == std::errc{} && band < layout.levels) maybe_waiting[band] = true;
}

result<std::optional<OwnedMessage>> Mailbox::State::pull(unsigned band) {
  // The JetStream pull API itself: nats.c 3.4's NoWait fetch waits out its
  // expiry when the consumer is empty instead of taking the server's "404 No
  // Messages" answer.
  static constexpr std::string_view kRequest = R"({"batch":1,"no_wait":true})";
  const std::string api = "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer_of(band);
  natsMsg* raw = nullptr;
  const natsStatus status = natsConnection_Request(&raw, nats(), api.c_str(), kRequest.data(),
                                                   static_cast<int>(kRequest.size()), connection.address().timeout.count());
  OwnedMessage reply(raw);
  if (status == NATS_TIMEOUT || status == NATS_NO_RESPONDERS || status == NATS_CONNECTION_DISCONNECTED) {
    return error(errc::peer_gone, object, "JetStream does not answer for consumer " + consumer_of(band));
  }
  if (status != NATS_OK) return nats_error(status, object, "cannot pull from consumer " + consumer_of(band));
  const char* code = nullptr;
  if (natsMsgHeader_Get(raw, "Status", &code) == NATS_OK && code != nullptr) {
    const std::string_view answer(code);
    if (answer == "404" || answer == "408") return std::optional<OwnedMessage>{};  // nothing to hand out now
    const char* description = nullptr;
    (void)natsMsgHeader_Get(raw, "Description", &description);
    const std::string said = "consumer " + consumer_of(band) + " answered " + std::string(answer) + " " +
                             (description != nullptr ? description : "");
    if (description != nullptr && std::string_view(description).find("Deleted") != std::string_view::npos) {
      return error(errc::not_found, object, said);
    }
    // Anything else (a leadership change, a server going down): try again.
    return error(errc::peer_gone, object, said);
  }
  return std::optional<OwnedMessage>(std::move(reply));
}

result<std::optional<Message>> Mailbox::State::receive(const Limit& limit) {
  if (auto started = start_receiving(); !started) return std::move(started).error();
  Backoff failover_backoff(std::chrono::milliseconds(50), std::chrono::milliseconds(500));
  for (;;) {
    hear_bells();
    if (steady_clock::now() - last_full_look >= kRecheck) {
      maybe_waiting.assign(layout.levels, true);
      last_full_look = steady_clock::now();
    }
    bool failing_over = false;
    for (unsigned band = layout.levels; band-- > 0;) {
      if (!maybe_waiting[band]) continue;
      auto fetched = pull(band);
      if (!fetched) {
        if (fetched.error().code() != errc::peer_gone) return std::move(fetched).error();
        failing_over = true;
        continue;
      }
      if (!*fetched) {
        maybe_waiting[band] = false;
        continue;
      }
      auto taken = take(band, std::move(**fetched));
      if (!taken || *taken) return taken;
      band = layout.levels;  // it was poison, or another band's: look from the top again
    }
    if (limit.kind == Limit::Kind::none) return std::optional<Message>{};
    if (limit.passed()) return error(errc::timed_out, object, "no message");
    if (failing_over) {
      failover_backoff.pause(limit);
      continue;
    }
    natsMsg* raw = nullptr;
    const natsStatus rung = natsSubscription_NextMsg(&raw, bell.get(), limit.wait(kRecheck).count());
    if (rung == NATS_OK) {
      hear(OwnedMessage(raw));
    } else if (rung != NATS_TIMEOUT) {
      failover_backoff.pause(limit);
    }
  }
}

result<std::optional<Message>> Mailbox::State::take(unsigned band, OwnedMessage fetched) {
  natsMsg* raw = fetched.get();
  const char* reply = natsMsg_GetReply(raw);
  const auto delivery = parse_ack_subject(reply != nullptr ? reply : "");
  if (!delivery) {
    return error(errc::corrupt, object,
                 "a message from consumer " + consumer_of(band) + " without a JetStream ack subject ('" +
                     std::string(reply != nullptr ? reply : "") + "')");
  }
  const std::string_view subject = natsMsg_GetSubject(raw);
  const std::string expected = "ferry.mbx." + name + "." + std::to_string(band) + ".";
  if (!subject.starts_with(expected) || subject.size() == expected.size()) {
    // Another band's message: the late answer to a pull of that band which
    // timed out while JetStream failed over (seen when a stream leader is
    // killed). Handed back at once (-NAK), it is taken when its band's turn comes.
    if (subject.starts_with("ferry.mbx." + name + ".")) {
      (void)answer_delivery(connection, reply, "-NAK", false);
      return std::optional<Message>{};
    }
    return error(errc::corrupt, object, "a message on subject '" + std::string(subject) + "' in consumer " + consumer_of(band));
  }
  std::string sender(subject.substr(expected.size()));
  const char* id = nullptr;
  std::string message_id;
  if (natsMsgHeader_Get(raw, kMessageIdHeader, &id) == NATS_OK && id != nullptr) message_id = id;
  if (layout.max_deliver != 0 && delivery->deliveries > layout.max_deliver) {
    if (auto buried = bury(raw, band, sender, delivery->deliveries, message_id); !buried) return std::move(buried).error();
    if (const natsStatus status = answer_delivery(connection, reply, "+ACK", true); status != NATS_OK) {
      return nats_error(status, object, "cannot remove poison message " + message_id);
    }
    return std::optional<Message>{};
  }
  unsigned priority = band;
  const char* priority_text = nullptr;
  if (natsMsgHeader_Get(raw, kPriorityHeader, &priority_text) == NATS_OK && priority_text != nullptr) {
    unsigned claimed = 0;
    const std::string_view text(priority_text);
    const auto [end, failure] = std::from_chars(text.data(), text.data() + text.size(), claimed);
    if (failure == std::errc{} && claimed < kPriorities && std::min(claimed, layout.levels - 1) == band) priority = claimed;
  }
  Message message(std::make_unique<Message::Held>(
      Message::Held{connection, std::move(fetched), bell_of(name, band), object, false}));
  message.sender_ = std::move(sender);
  message.priority_ = priority;
  message.message_id_ = std::move(message_id);
  message.deliveries_ = delivery->deliveries;
  message.sequence_ = delivery->sequence;
  return std::optional<Message>(std::move(message));
}

result<void> Mailbox::State::bury(const natsMsg* message, unsigned band, const std::string& sender,
                                  std::uint64_t deliveries, const std::string& message_id) {
  if (!dead_letter) {
    auto opened = Mailbox::open(connection, layout.dead_letter);
    if (!opened) return std::move(opened).error();
    dead_letter = std::make_unique<Mailbox>(std::move(*opened));
  }
  natsMsg* raw = const_cast<natsMsg*>(message);
  const std::span<const std::byte> data(reinterpret_cast<const std::byte*>(natsMsg_GetData(raw)),
                                        static_cast<std::size_t>(natsMsg_GetDataLength(raw)));
  const Headers headers{{kOriginalSenderHeader, sender}, {kDeliveriesHeader, std::to_string(deliveries)}};
  auto moved = dead_letter->state_->send(data, {.priority = band, .message_id = message_id},
                                         Limit::at(deadline_after(connection.address().timeout)), headers);
  if (!moved) return std::move(moved).error();
  return {};
}

result<Message> Mailbox::receive() {
  return detail::found(state_->receive(Limit::forever()));
}
result<std::optional<Message>> Mailbox::try_receive() { return state_->receive(Limit::none()); }
result<Message> Mailbox::receive_until(deadline until) {
  return detail::found(state_->receive(Limit::at(until)));
}

// ---------------------------------------------------------------- stats

result<MailboxStats> Mailbox::stats() const {
  const State& state = *state_;
  MailboxStats stats;
  stats.name = state.name;
  stats.stream = state.stream;
  auto read = detail::read_stream(state.connection, state.stream, state.object);
  if (!read) return std::move(read).error();
  const detail::OwnedStreamInfo info = std::move(*read);
  jsErrCode js_code{};
  natsStatus status = NATS_OK;
  stats.stored = info->State.Msgs;
  stats.bytes = info->State.Bytes;
  stats.last_sequence = info->State.LastSeq;
  stats.replicas = static_cast<int>(info->Config->Replicas);
  stats.leader = detail::stream_leader(*info);
  for (unsigned band = 0; band < state.layout.levels; ++band) {
    const std::string consumer = consumer_of(band);
    jsConsumerInfo* raw_consumer = nullptr;
    status = administer(state.connection, js_code, [&] {
      return js_GetConsumerInfo(&raw_consumer, state.jetstream(), state.stream.c_str(), consumer.c_str(), nullptr,
                                &js_code);
    });
    const detail::OwnedConsumerInfo consumer_info(raw_consumer);
    if (status != NATS_OK) return nats_error(status, js_code, state.object, "cannot read consumer " + consumer);
    stats.levels.push_back({.waiting = consumer_info->NumPending,
                            .leased = static_cast<std::uint64_t>(consumer_info->NumAckPending),
                            .redelivered = static_cast<std::uint64_t>(consumer_info->NumRedelivered)});
  }
  return stats;
}

}  // namespace ferry::nats
