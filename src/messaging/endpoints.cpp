#include "ferry/messaging/endpoints.hpp"

#include <vector>

namespace ferry {
namespace {

WaitStrategy blocking() { return {}; }

class MailboxSender final : public Sender {
 public:
  MailboxSender(Endpoint endpoint, Mailbox mailbox) : endpoint_(std::move(endpoint)), mailbox_(std::move(mailbox)) {}

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }
  [[nodiscard]] std::size_t max_message() const noexcept override { return mailbox_.max_message(); }

 protected:
  result<void> send_checked(std::span<const std::byte> message, EndpointSendOptions options,
                            detail::WaitLimit limit) override {
    const SendOptions how{.priority = options.priority, .urgent = options.urgent};
    switch (limit.kind) {
      case detail::WaitLimit::Kind::forever: return mailbox_.send(message, how);
      case detail::WaitLimit::Kind::until: return mailbox_.send_until(message, limit.until_time, how);
      case detail::WaitLimit::Kind::none: break;
    }
    auto sent = mailbox_.try_send(message, how);
    if (!sent) return std::move(sent).error();
    if (!*sent) return error(errc::would_block, mailbox_.name(), "the mailbox is full");
    return {};
  }

 private:
  Endpoint endpoint_;
  Mailbox mailbox_;
};

class MailboxReceiver final : public Receiver {
 public:
  MailboxReceiver(Endpoint endpoint, Mailbox mailbox) : endpoint_(std::move(endpoint)), mailbox_(std::move(mailbox)) {}

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }

 protected:
  result<EndpointMessage> receive_next(detail::WaitLimit limit) override {
    switch (limit.kind) {
      case detail::WaitLimit::Kind::forever: return convert(mailbox_.receive(blocking()));
      case detail::WaitLimit::Kind::until: return convert(mailbox_.receive_until(limit.until_time, blocking()));
      case detail::WaitLimit::Kind::none: break;
    }
    auto next = mailbox_.try_receive();
    if (!next) return std::move(next).error();
    if (!*next) return error(errc::would_block, mailbox_.name(), "no message");
    return convert(std::move(**next));
  }

 private:
  static result<EndpointMessage> convert(result<Message> message) {
    if (!message) return std::move(message).error();
    const auto bytes = message->data();
    return EndpointMessage(Frame(bytes.begin(), bytes.end()), 0, message->sender(),
                           message->priority(), message->urgent(), static_cast<std::uint64_t>(message->sender().pid));
  }

  Endpoint endpoint_;
  Mailbox mailbox_;
};

}  // namespace

result<std::unique_ptr<Sender>> open_sender(const Endpoint& endpoint, const EndpointOptions& options) {
  if (endpoint.scheme != Endpoint::Scheme::shm) return open_transport_sender(endpoint, options);
  auto mailbox = Mailbox::open(endpoint.name);
  if (!mailbox) return std::move(mailbox).error();
  return std::unique_ptr<Sender>(std::make_unique<MailboxSender>(endpoint, std::move(*mailbox)));
}

result<std::unique_ptr<Sender>> open_sender(std::string_view endpoint, const EndpointOptions& options) {
  auto parsed = Endpoint::parse(endpoint);
  if (!parsed) return std::move(parsed).error();
  return open_sender(*parsed, options);
}

result<std::unique_ptr<Receiver>> open_receiver(const Endpoint& endpoint, const EndpointOptions& options,
                                                const MailboxOptions& mailbox) {
  if (endpoint.scheme != Endpoint::Scheme::shm) return open_transport_receiver(endpoint, options);
  MailboxOptions create = mailbox;
  if (endpoint.name.front() == '/') create.persistence = Persistence::filesystem;
  auto opened = Mailbox::open_or_create(endpoint.name, create);  // another receiver may create it at the same moment
  if (!opened) return std::move(opened).error();
  return std::unique_ptr<Receiver>(std::make_unique<MailboxReceiver>(endpoint, std::move(*opened)));
}

result<std::unique_ptr<Receiver>> open_receiver(std::string_view endpoint, const EndpointOptions& options,
                                                const MailboxOptions& mailbox) {
  auto parsed = Endpoint::parse(endpoint);
  if (!parsed) return std::move(parsed).error();
  return open_receiver(*parsed, options, mailbox);
}

}  // namespace ferry
