// Test support for endpoint tests: a receiver on each transport, at a fresh
// address, and senders to it. Loopback only; unique names and port 0, so
// tests running side by side never meet.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/messaging/endpoints.hpp"
#include "ferry/transport/framing.hpp"
#include "ferry/transport/socket.hpp"
#include "ferry_test.hpp"

namespace ferry::test {

/// The transports every endpoint test body runs against.
inline const std::vector<std::string>& endpoint_schemes() {
  static const std::vector<std::string> schemes{"shm", "unix", "unixgram", "tcp", "udp", "pipe"};
  return schemes;
}

inline std::string scheme_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

/// A receiver at a fresh endpoint of one scheme, and the way to reach it.
/// A shm:// case owns its mailbox and destroys it, also when a test fails.
class EndpointCase {
 public:
  /// What the shm:// mailbox is sized for. Each sender's log is a ring of
  /// (count + 1) * max_message rounded up to a power of two in /dev/shm
  /// (RAM): large messages get a count of 2 (a 64 MiB ring), small ones
  /// a count of 64 (an 8 MiB ring).
  enum class Messages : std::uint8_t { small, large };
  static constexpr std::size_t kSmallMaximum = (std::size_t{64} << 10) + 64;
  static constexpr std::size_t kLargeMaximum = (std::size_t{16} << 20) + 64;
  static constexpr std::size_t kSmallCount = 64;

  explicit EndpointCase(std::string scheme, Messages messages = Messages::small)
      : scheme_(std::move(scheme)), messages_(messages) {}
  ~EndpointCase() {
    if (scheme_ == "shm") (void)Mailbox::destroy(mailbox_);
    for (const int fd : unadopted_) ::close(fd);
  }
  EndpointCase(const EndpointCase&) = delete;
  EndpointCase& operator=(const EndpointCase&) = delete;

  /// Opens the receiver (call once); its sender endpoint is then known.
  result<std::unique_ptr<Receiver>> open_receiver(const EndpointOptions& options = {}) {
    if (scheme_ == "pipe") {
      int normal[2];
      int urgent[2];
      if (::pipe2(normal, O_CLOEXEC) != 0) return error::from_errno(errno, "test pipes", "pipe2");
      if (::pipe2(urgent, O_CLOEXEC) != 0) {
        const int saved = errno;
        ::close(normal[0]);
        ::close(normal[1]);
        return error::from_errno(saved, "test pipes", "pipe2");
      }
      // Until a receiver and a sender adopt them, the ends are this case's to close.
      unadopted_ = {normal[0], urgent[0], normal[1], urgent[1]};
      sender_endpoint_ = "pipe:fd=" + std::to_string(normal[1]) + "," + std::to_string(urgent[1]);
      auto receiver =
          ferry::open_receiver("pipe:fd=" + std::to_string(normal[0]) + "," + std::to_string(urgent[0]), options);
      if (receiver) unadopted_.erase(unadopted_.begin(), unadopted_.begin() + 2);
      return receiver;
    }
    std::string text;
    if (scheme_ == "shm") text = "shm://" + mailbox_;
    if (scheme_ == "unix" || scheme_ == "unixgram") text = scheme_ + "://" + directory_.file("socket");
    if (scheme_ == "tcp" || scheme_ == "udp") text = scheme_ + "://127.0.0.1:0";
    // A bound, so that try_send can find the mailbox full.
    const MailboxOptions mailbox{.capacity = messages_ == Messages::large ? Capacity::bounded(2, kLargeMaximum)
                                                                          : Capacity::bounded(kSmallCount, kSmallMaximum)};
    auto receiver = ferry::open_receiver(text, options, mailbox);
    if (receiver) sender_endpoint_ = (*receiver)->endpoint().to_string();
    return receiver;
  }

  /// A new sender to the receiver (pipe: only one, it takes the descriptors).
  result<std::unique_ptr<Sender>> open_sender() {
    auto sender = ferry::open_sender(sender_endpoint_);
    if (sender && scheme_ == "pipe") unadopted_.clear();
    return sender;
  }

  /// pipe: closes this process's copies of the write ends (after a child
  /// that sends took them over), so the receiver sees the child's end of stream.
  void close_sender_ends() {
    for (const int fd : unadopted_) ::close(fd);
    unadopted_.clear();
  }

  [[nodiscard]] const std::string& scheme() const { return scheme_; }
  [[nodiscard]] const std::string& sender_endpoint() const { return sender_endpoint_; }
  [[nodiscard]] bool urgent_lane() const { return scheme_ != "udp" && scheme_ != "unixgram"; }
  [[nodiscard]] bool attested() const { return scheme_ == "shm" || scheme_ == "unix" || scheme_ == "unixgram"; }
  [[nodiscard]] bool many_senders() const { return scheme_ != "pipe"; }
  /// Small messages a receiver surely holds before a sender must wait (or,
  /// for udp, loses them): a unix datagram queue holds 10 (net.unix.max_dgram_qlen).
  [[nodiscard]] std::size_t holds() const {
    if (scheme_ == "shm" && messages_ == Messages::large) return 2;
    return scheme_ == "unixgram" ? 8 : 50;
  }
  /// A receiver that does not read makes senders wait (udp drops instead).
  [[nodiscard]] bool backpressure() const { return scheme_ != "udp"; }

 private:
  std::string scheme_;
  Messages messages_;
  std::string mailbox_ = unique_name("ep");
  TempDir directory_;
  std::string sender_endpoint_;
  std::vector<int> unadopted_;  // pipe ends nobody adopted yet
};

/// A raw connection to a unix or tcp receiver, for writing bytes no Sender would.
inline result<StreamSocket> raw_client(const Endpoint& endpoint) {
  using namespace std::chrono_literals;
  if (endpoint.scheme == Endpoint::Scheme::tcp) return TcpSocket::connect_for(endpoint.name, endpoint.port, 30s);
  return UnixSocket::connect_for(endpoint.name, 30s);
}

/// `payload` as one frame on the wire.
inline std::vector<std::byte> frame(std::span<const std::byte> payload) {
  const auto header = frame_header(static_cast<std::uint32_t>(payload.size()));
  std::vector<std::byte> bytes(header.begin(), header.end());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

/// The hello frame a stream sender opens its normal lane with (token 0x0707...).
inline std::vector<std::byte> hello_frame() {
  std::vector<std::byte> bytes{std::byte{'H'}, std::byte{1}, std::byte{0}, std::byte{0}};
  bytes.resize(12, std::byte{7});
  return frame(bytes);
}

/// `size` bytes that differ with `seed` and position.
inline std::vector<std::byte> pattern(std::size_t size, std::size_t seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i * 131 + seed * 7 + (i >> 12)) & 0xFF);
  return bytes;
}

inline std::span<const std::byte> text_bytes(std::string_view text) { return std::as_bytes(std::span(text)); }

inline std::string text_of(const EndpointMessage& message) {
  return {reinterpret_cast<const char*>(message.data().data()), message.size()};
}

}  // namespace ferry::test
