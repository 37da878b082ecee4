// unixgram:// and udp:// endpoints: one message per datagram, with the
// sender's credentials (SCM_CREDENTIALS) on UNIX datagrams.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "endpoint_internal.hpp"
#include "ferry/transport/socket.hpp"

namespace ferry::detail {
namespace {

// The largest UDP payload over IPv4 (65535 - IP and UDP headers).
constexpr std::size_t kMaxUdpDatagram = 65507;

// The largest UNIX datagram `fd` may send: Linux refuses one longer than the
// socket's send buffer less 32 bytes (EMSGSIZE). The buffer starts at
// net.core.wmem_default (212992 bytes unless tuned), the same for the
// receiver's socket, which so knows the largest datagram a sender on this
// machine sends without raising its own buffer.
result<std::size_t> unix_datagram_limit(int fd, std::string_view object) {
  int buffer = 0;
  socklen_t size = sizeof buffer;
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, &size) != 0) {
    return error::from_errno(errno, object, "getsockopt SO_SNDBUF");
  }
  constexpr int kKernelReserve = 32;
  if (buffer <= kKernelReserve + static_cast<int>(kEnvelopeSize)) {
    return error(errc::invalid_argument, object, "a send buffer of " + std::to_string(buffer) + " bytes holds no message");
  }
  return static_cast<std::size_t>(buffer - kKernelReserve);
}

// The largest message in a datagram of at most `datagram_limit` bytes.
std::size_t largest_message(const EndpointOptions& options, std::size_t datagram_limit) noexcept {
  return std::min(options.max_message, datagram_limit - kEnvelopeSize);
}

class DatagramSender final : public Sender {
 public:
  DatagramSender(Endpoint endpoint, DatagramSocket socket, std::size_t max_message)
      : endpoint_(std::move(endpoint)), socket_(std::move(socket)), max_message_(max_message) {}

  static result<std::unique_ptr<Sender>> open(const Endpoint& endpoint, const EndpointOptions& options) {
    const std::string object = endpoint_object("sender to", endpoint);
    if (endpoint.scheme == Endpoint::Scheme::unix_datagram) {
      auto socket = UnixDatagram::unbound();
      if (!socket) return std::move(socket).error();
      if (auto connected = socket->connect(endpoint.name); !connected) return std::move(connected).error().add_context(object);
      auto limit = unix_datagram_limit(socket->fd().get(), object);
      if (!limit) return std::move(limit).error();
      return std::unique_ptr<Sender>(
          std::make_unique<DatagramSender>(endpoint, std::move(*socket), largest_message(options, *limit)));
    }
    if (endpoint.port == 0) return error(errc::invalid_argument, object, "port 0: a sender needs the receiver's port");
    auto addresses = SocketAddress::resolve(endpoint.name, endpoint.port, SOCK_DGRAM);
    if (!addresses) return std::move(addresses).error().add_context(object);
    const SocketAddress& peer = addresses->front();
    auto socket = UdpSocket::bind(peer.family() == AF_INET6 ? "::" : "0.0.0.0", 0);
    if (!socket) return std::move(socket).error();
    if (auto connected = socket->connect(peer); !connected) return std::move(connected).error().add_context(object);
    return std::unique_ptr<Sender>(
        std::make_unique<DatagramSender>(endpoint, std::move(*socket), largest_message(options, kMaxUdpDatagram)));
  }

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }
  [[nodiscard]] std::size_t max_message() const noexcept override { return max_message_; }

 protected:
  result<void> send_checked(std::span<const std::byte> message, EndpointSendOptions options, WaitLimit limit) override {
    if (options.urgent) {
      return error(errc::unsupported, description(), "datagrams have no urgent lane (stream and shm endpoints do)");
    }
    const auto envelope = encode_envelope(options.priority);
    const std::span<const std::byte> parts[] = {envelope, message};
    return named(socket_.send_parts(nullptr, parts, limit));
  }

 private:
  Endpoint endpoint_;
  DatagramSocket socket_;
  std::size_t max_message_;
};

class DatagramReceiver final : public Receiver {
 public:
  // `largest`: the largest datagram it takes; a larger one is dropped.
  DatagramReceiver(Endpoint endpoint, DatagramSocket socket, std::size_t largest)
      : endpoint_(std::move(endpoint)),
        socket_(std::move(socket)),
        largest_(largest),
        expected_(std::min(largest, kSmallBuffer)),
        spare_(largest),
        object_(endpoint_object("receiver at", endpoint_)) {}

  static result<std::unique_ptr<Receiver>> open(const Endpoint& endpoint, const EndpointOptions& options) {
    const std::string object = endpoint_object("receiver at", endpoint);
    if (endpoint.scheme == Endpoint::Scheme::unix_datagram) {
      auto socket = UnixDatagram::bind(endpoint.name, options.mode);
      if (!socket) return std::move(socket).error().add_context(object);
      if (auto passing = socket->pass_credentials(); !passing) return std::move(passing).error().add_context(object);
      auto limit = unix_datagram_limit(socket->fd().get(), object);
      if (!limit) return std::move(limit).error();
      const std::size_t largest = largest_message(options, *limit) + kEnvelopeSize;
      return std::unique_ptr<Receiver>(std::make_unique<DatagramReceiver>(endpoint, std::move(*socket), largest));
    }
    auto socket = UdpSocket::bind(endpoint.name, endpoint.port);
    if (!socket) return std::move(socket).error().add_context(object);
    auto local = socket->local_address();
    if (!local) return std::move(local).error();
    Endpoint bound = endpoint;
    bound.port = local->port();
    const std::size_t largest = largest_message(options, kMaxUdpDatagram) + kEnvelopeSize;
    return std::unique_ptr<Receiver>(std::make_unique<DatagramReceiver>(bound, std::move(*socket), largest));
  }

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }
  [[nodiscard]] ReceiverStats stats() const noexcept override { return stats_; }

 protected:
  // A datagram lands in the message's own buffer, sized as the last one
  // was: no copy while sizes stay alike. What a larger one has beyond that
  // spills into spare_ and is appended; a small one in a large buffer is
  // copied into one of its size rather than hold the large one.
  result<EndpointMessage> receive_next(WaitLimit limit) override {
    for (;;) {
      Frame frame;
      frame.resize(expected_);
      auto datagram = socket_.receive(frame, spare_, limit);
      if (!datagram) {
        if (datagram.error().code() != errc::limit_reached) return std::move(datagram).error().add_context(object_);
        ++stats_.dropped_datagrams;  // larger than any ferry message: discarded
        continue;
      }
      const std::size_t size = datagram->size;
      if (size > largest_) {
        ++stats_.dropped_datagrams;  // larger than any ferry message (it fit only the spare room)
        continue;
      }
      if (size > frame.size()) {
        const std::size_t head = frame.size();
        frame.resize(size);
        std::memcpy(frame.data() + head, spare_.data(), size - head);
      } else if (frame.size() > 2 * size + kSmallBuffer) {
        frame = Frame(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(size));
      } else {
        frame.resize(size);
      }
      expected_ = std::min(std::max(size, kSmallBuffer), largest_);  // (largest_ may be below kSmallBuffer)
      const auto priority = decode_message(frame);
      if (!priority) {
        ++stats_.dropped_datagrams;  // not a ferry message: never delivered
        continue;
      }
      const auto& sender = datagram->sender;
      const std::uint64_t origin = sender ? static_cast<std::uint64_t>(sender->pid) : datagram->from.port();
      return EndpointMessage(std::move(frame), kEnvelopeSize, sender, *priority, false, origin);
    }
  }

 private:
  // A message buffer never starts smaller than this, nor is one this much too large kept.
  static constexpr std::size_t kSmallBuffer = 256;

  Endpoint endpoint_;
  DatagramSocket socket_;
  std::size_t largest_;
  std::size_t expected_;
  std::vector<std::byte> spare_;
  std::string object_;
  ReceiverStats stats_;
};

}  // namespace

result<std::unique_ptr<Sender>> open_datagram_sender(const Endpoint& endpoint, const EndpointOptions& options) {
  return DatagramSender::open(endpoint, options);
}

result<std::unique_ptr<Receiver>> open_datagram_receiver(const Endpoint& endpoint, const EndpointOptions& options) {
  return DatagramReceiver::open(endpoint, options);
}

}  // namespace ferry::detail
