#include "ferry/messaging/endpoints.hpp"

#include <vector>

namespace ferry {
namespace detail {
namespace {
// Constant-initialised: set by a backend's static initialiser, read later.
constinit EndpointBackend nats_backend{};
}  // namespace
void register_nats_backend(EndpointBackend backend) noexcept { nats_backend = backend; }
}  // namespace detail

namespace {

error no_nats_backend(std::string_view role, const Endpoint& endpoint) {
  return error(errc::unsupported, std::string(role) + " " + endpoint.to_string(),
               "nats:// needs the ferry::nats library (built when nats.c is found): link it");
}

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

  result<HeldMessage> receive_next_held(detail::WaitLimit limit) override {
    std::optional<Lease> lease;
    switch (limit.kind) {
      case detail::WaitLimit::Kind::forever:
      case detail::WaitLimit::Kind::until: {
        auto next = limit.kind == detail::WaitLimit::Kind::forever
                        ? mailbox_.receive_leased(blocking())
                        : mailbox_.receive_leased_until(limit.until_time, blocking());
        if (!next) return std::move(next).error();
        lease.emplace(std::move(*next));
        break;
      }
      case detail::WaitLimit::Kind::none: {
        auto next = mailbox_.try_receive_leased();
        if (!next) return std::move(next).error();
        if (!*next) return error(errc::would_block, mailbox_.name(), "no message");
        lease.emplace(std::move(**next));
      }
    }
    auto message = convert(lease->message());
    auto held = std::make_shared<Lease>(std::move(*lease));
    return HeldMessage(std::move(message), [held](bool acknowledge) { return acknowledge ? held->ack() : held->nack(); });
  }

 private:
  EndpointMessage convert(const Message& message) const {
    const auto bytes = message.data();
    EndpointMessage converted(Frame(bytes.begin(), bytes.end()), 0, message.sender(), message.priority(),
                              message.urgent(), static_cast<std::uint64_t>(message.sender().pid));
    // Stable across redeliveries: what a bridge gives the destination to de-duplicate by.
    converted.set_source({}, "shm-" + mailbox_.name() + "-" + std::to_string(message.sender().pid) + "-" +
                                 std::to_string(message.sequence()));
    return converted;
  }
  result<EndpointMessage> convert(result<Message> message) const {
    if (!message) return std::move(message).error();
    return convert(*message);
  }

  Endpoint endpoint_;
  Mailbox mailbox_;
};

}  // namespace

result<std::unique_ptr<Sender>> open_sender(const Endpoint& endpoint, const EndpointOptions& options) {
  if (endpoint.scheme == Endpoint::Scheme::nats) {
    if (detail::nats_backend.open_sender == nullptr) return no_nats_backend("sender to", endpoint);
    return detail::nats_backend.open_sender(endpoint, options);
  }
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
  if (endpoint.scheme == Endpoint::Scheme::nats) {
    if (detail::nats_backend.open_receiver == nullptr) return no_nats_backend("receiver at", endpoint);
    return detail::nats_backend.open_receiver(endpoint, options);
  }
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
