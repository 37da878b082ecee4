// nats:// for ferry::open_sender / open_receiver: a Sender and a Receiver
// over ferry::nats::Mailbox, registered with the core library when this
// library is loaded.
#include "ferry/messaging/endpoints.hpp"

#include <functional>

#include "ferry/nats/mailbox.hpp"

// Linking ferry::nats pulls this file in (the target asks the linker for
// this symbol), so its registration runs in every program that links it.
extern "C" {
extern const int ferry_nats_endpoints;
const int ferry_nats_endpoints = 1;
}

namespace ferry::nats {
namespace {

// Urgent messages have no lane of their own on JetStream: they go to the
// highest band, ahead of everything below it.
constexpr unsigned kUrgentPriority = kEndpointPriorities - 1;

result<Address> address_of(const Endpoint& endpoint) { return Address::parse(endpoint.to_string()); }

class NatsSender final : public Sender {
 public:
  NatsSender(Endpoint endpoint, Mailbox mailbox) : endpoint_(std::move(endpoint)), mailbox_(std::move(mailbox)) {}

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }
  [[nodiscard]] std::size_t max_message() const noexcept override { return mailbox_.max_message(); }

 protected:
  result<void> send_checked(std::span<const std::byte> message, EndpointSendOptions options,
                            ferry::detail::WaitLimit limit) override {
    const SendOptions how{.priority = options.urgent ? kUrgentPriority : options.priority,
                          .message_id = std::string(options.message_id)};
    result<SendReceipt> sent = limit.kind == ferry::detail::WaitLimit::Kind::forever ? mailbox_.send(message, how)
                               : limit.kind == ferry::detail::WaitLimit::Kind::until
                                   ? mailbox_.send_until(message, limit.until_time, how)
                                   : mailbox_.try_send(message, how);
    if (!sent) return std::move(sent).error();
    return {};
  }

 private:
  Endpoint endpoint_;
  Mailbox mailbox_;
};

class NatsReceiver final : public Receiver {
 public:
  NatsReceiver(Endpoint endpoint, Mailbox mailbox) : endpoint_(std::move(endpoint)), mailbox_(std::move(mailbox)) {}

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }

 protected:
  // Copied out, then acked: at-least-once (a receiver that dies in between
  // leaves the message to the next one).
  result<EndpointMessage> receive_next(ferry::detail::WaitLimit limit) override {
    auto held = receive_next_held(limit);
    if (!held) return std::move(held).error();
    if (auto acked = held->ack(); !acked) return std::move(acked).error();
    return held->message();
  }

  result<HeldMessage> receive_next_held(ferry::detail::WaitLimit limit) override {
    std::optional<Message> next;
    if (limit.kind == ferry::detail::WaitLimit::Kind::none) {
      auto taken = mailbox_.try_receive();
      if (!taken) return std::move(taken).error();
      if (!*taken) return error(errc::would_block, endpoint_.to_string(), "no message");
      next = std::move(*taken);
    } else {
      auto taken = limit.kind == ferry::detail::WaitLimit::Kind::forever ? mailbox_.receive()
                                                                         : mailbox_.receive_until(limit.until_time);
      if (!taken) return std::move(taken).error();
      next = std::move(*taken);
    }
    const auto bytes = next->data();
    EndpointMessage message(Frame(bytes.begin(), bytes.end()), 0, std::nullopt, next->priority(),
                            next->priority() == kUrgentPriority, std::hash<std::string>{}(next->sender()));
    message.set_source(next->sender(), next->message_id());
    auto held = std::make_shared<Message>(std::move(*next));
    return HeldMessage(std::move(message), [held](bool acknowledge) { return acknowledge ? held->ack() : held->nack(); });
  }

 private:
  Endpoint endpoint_;
  Mailbox mailbox_;
};

result<std::unique_ptr<Sender>> open_nats_sender(const Endpoint& endpoint, const EndpointOptions&) {
  auto mailbox = Mailbox::open(endpoint.to_string());
  if (!mailbox) return std::move(mailbox).error();
  return std::unique_ptr<Sender>(std::make_unique<NatsSender>(endpoint, std::move(*mailbox)));
}

result<std::unique_ptr<Receiver>> open_nats_receiver(const Endpoint& endpoint, const EndpointOptions& options) {
  MailboxOptions create;
  auto address = address_of(endpoint);
  if (!address) return std::move(address).error();
  auto connection = Connection::connect(*address);
  if (!connection) return std::move(connection).error();
  // The endpoint's size limit, as far as the server allows.
  create.max_message = std::min(options.max_message, create.max_message);
  auto mailbox = Mailbox::open_or_create(*connection, address->name, create);
  if (!mailbox) return std::move(mailbox).error();
  return std::unique_ptr<Receiver>(std::make_unique<NatsReceiver>(endpoint, std::move(*mailbox)));
}

const bool registered = [] {
  ferry::detail::register_nats_backend({.open_sender = open_nats_sender, .open_receiver = open_nats_receiver});
  return true;
}();

}  // namespace
}  // namespace ferry::nats
