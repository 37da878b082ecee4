// Endpoint, Sender, Receiver: one messaging interface over every transport,
// so that a program moves from shm:// to unix:// to tcp:// by changing a string.
//
//   auto receiver = ferry::open_receiver("tcp://127.0.0.1:7000");   // ferry/messaging/endpoints.hpp
//   auto sender = ferry::open_sender("tcp://127.0.0.1:7000");
//   (*sender)->send(bytes);
//   (*sender)->send(alarm, {.urgent = true});     // overtakes what is queued
//   auto message = (*receiver)->receive_for(1s);
//   message->data();  message->sender();  message->urgent();
//
// Endpoints (Endpoint::parse; to_string gives the canonical form back):
//   shm://NAME             a ferry Mailbox; shm:///abs/dir is a filesystem-persistent one
//   unix:///abs/path       UNIX stream socket; unix://@name: abstract namespace
//   unixgram:///abs/path   UNIX datagram socket (also unixgram://@name)
//   tcp://HOST:PORT        TCP; HOST is a name, an IPv4 literal or [IPv6]
//   udp://HOST:PORT        UDP
//   pipe:fd=N              framed messages over inherited descriptor N (a pipe
//   pipe:fd=N,M            or a stream socket); M, if given, is the urgent lane
//   pipe:stdin, pipe:stdout  the same as pipe:fd=0 and pipe:fd=1
//   nats://HOST:PORT[,HOST:PORT]/NAME[?OPTIONS]  a Mailbox on NATS JetStream
//                          (ferry/nats/connection.hpp; needs the ferry::nats library)
// Port 0 is accepted for receivers (any free port; endpoint() then tells it).
//
// This layer opens every transport but shm and nats (open_transport_sender/
// receiver); ferry/messaging/endpoints.hpp adds shm:// (the Mailbox sits
// above transports) and nats:// when the ferry::nats library is linked.
//
// What each receiver is:
//   unix, tcp  a listener: any number of senders connect; framed messages
//              from all of them are delivered (epoll). A sender that sends a
//              malformed or oversized frame is disconnected and counted in
//              stats(), never disturbing the others.
//   unixgram, udp  one message per datagram; a datagram that is not a ferry
//              message is dropped and counted.
//   pipe       framed over the inherited descriptor(s); end of stream (the
//              writer closed or died) is errc::peer_gone.
// Senders of unix and tcp connect within EndpointOptions::connect_timeout and
// do not reconnect: after the receiver is gone, sends fail with peer_gone.
//
// Sender identity: a message carries sender() when the kernel attests it
// (shm: the Mailbox's; unix: SO_PEERCRED of the connection; unixgram:
// SCM_CREDENTIALS of the datagram), and std::nullopt when the transport
// cannot (tcp, udp, pipe): never a value a peer could forge. nats:// has no
// uid: user() is the NATS user the server's permissions attest.
//
// Held receive (receive_held): the message stays at the source until ack()
// — on shm (a lease) and nats (JetStream's ack); other transports have no
// way to give a message back, so there it is taken as it is received and
// ack() has nothing to do. `ferry bridge` acks only after the destination
// took the message.
//
// Order and the urgent lane: FIFO per sender per lane. An urgent send
// overtakes the normal messages of every sender still queued at the receiver,
// including those in the kernel's socket buffers: stream senders open a second
// connection for urgent messages on their first urgent send (tied to the
// first by a token in its hello frame), and a receiver always serves urgent
// connections first. pipe has an urgent lane when given two descriptors; udp
// and unixgram have none (an urgent send there is errc::unsupported). The
// priority of a message is delivered (priority()) on every transport, but
// only shm orders by it.
//
// Wire format (unix, tcp, pipe): FramedStream frames (framing.hpp) whose
// payload starts with a 4-byte envelope; datagrams carry the same envelope.
//   hello   'H' 0x01 lane(0 normal, 1 urgent) 0x00, then the sender's token (u64, little-endian)
//   message 'M' priority 0x00 0x00, then the message bytes
// A stream connection sends one hello first; pipes and datagrams send none.
//
// Thread-safety: one Sender or Receiver per thread, or external locking.
// Receivers run no threads of their own.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"
#include "ferry/transport/framing.hpp"
#include "ferry/transport/stream.hpp"

namespace ferry {

/// A parsed endpoint string.
struct Endpoint {
  enum class Scheme : std::uint8_t { shm, unix_stream, unix_datagram, tcp, udp, pipe, nats };

  Scheme scheme = Scheme::shm;
  /// shm: the mailbox name (or directory path); unix, unixgram: the socket
  /// path or "@name"; tcp, udp: the host, without brackets; nats: everything
  /// after nats:// (the nats backend parses it: ferry::nats::Address).
  std::string name;
  std::uint16_t port = 0;
  /// pipe: the descriptor of the normal lane, and of the urgent lane (-1: none).
  int fd = -1;
  int urgent_fd = -1;

  /// Errors: invalid_argument naming the string and what is wrong with it.
  static result<Endpoint> parse(std::string_view text);
  /// The canonical string: parse(to_string()) gives this endpoint back.
  [[nodiscard]] std::string to_string() const;
  /// unix, tcp and pipe: messages are framed on a byte stream.
  [[nodiscard]] bool streamed() const noexcept {
    return scheme == Scheme::unix_stream || scheme == Scheme::tcp || scheme == Scheme::pipe;
  }
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

/// "shm", "unix", "unixgram", "tcp", "udp", "pipe", "nats".
std::string_view to_string(Endpoint::Scheme scheme) noexcept;

struct EndpointOptions {
  /// The largest message sent or accepted. Datagrams are also held to what
  /// one datagram carries: udp 65,503 bytes; unixgram what the socket's
  /// send buffer allows, less 36 bytes (212,956 with the default
  /// net.core.wmem_default); a receiver drops and counts a larger datagram.
  /// shm: the mailbox's max_message.
  std::size_t max_message = std::size_t{16} << 20;
  /// How long a sender may take to connect (unix, tcp; also the urgent lane).
  steady_clock::duration connect_timeout = std::chrono::seconds(5);
  /// Mode of a UNIX socket file a receiver makes (who may send).
  mode_t mode = 0600;
};

/// How to send one message (the same fields as the Mailbox's SendOptions).
struct EndpointSendOptions {
  /// 0 (lowest) .. 31; shm orders by it, the others deliver it as sent.
  unsigned priority = 0;
  /// Overtakes the normal messages queued at the receiver.
  bool urgent = false;
  /// nats: the id the stream de-duplicates by (empty: a fresh one); a
  /// forwarded message keeps its source's id. Other transports ignore it.
  std::string_view message_id;
};

inline constexpr unsigned kEndpointPriorities = 32;

/// A received message: a copy, owned by the caller.
class EndpointMessage {
 public:
  EndpointMessage() = default;
  /// The message is `bytes` from `offset` on (so a received frame is kept without copying).
  EndpointMessage(Frame bytes, std::size_t offset, std::optional<SenderIdentity> sender,
                  unsigned priority, bool urgent, std::uint64_t origin) noexcept
      : bytes_(std::move(bytes)), offset_(offset), sender_(sender), priority_(priority), urgent_(urgent),
        origin_(origin) {}

  [[nodiscard]] std::span<const std::byte> data() const noexcept { return std::span(bytes_).subspan(offset_); }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size() - offset_; }
  /// Who sent it, as the kernel attests it; nullopt: this transport cannot say.
  [[nodiscard]] const std::optional<SenderIdentity>& sender() const noexcept { return sender_; }
  [[nodiscard]] bool attested() const noexcept { return sender_.has_value(); }
  [[nodiscard]] unsigned priority() const noexcept { return priority_; }
  [[nodiscard]] bool urgent() const noexcept { return urgent_; }
  /// Which sender it came from, as this receiver numbers them (both lanes of
  /// a stream sender share one number; shm: the sender's pid). FIFO holds per origin and lane.
  [[nodiscard]] std::uint64_t origin() const noexcept { return origin_; }
  /// nats: the NATS user that sent it, attested by the server; empty elsewhere.
  [[nodiscard]] const std::string& user() const noexcept { return user_; }
  /// An id that names this message at its source (shm: mailbox, sender and
  /// sequence; nats: its JetStream message id); empty where there is none.
  [[nodiscard]] const std::string& message_id() const noexcept { return message_id_; }
  EndpointMessage& set_source(std::string user, std::string message_id) {
    user_ = std::move(user);
    message_id_ = std::move(message_id);
    return *this;
  }

 private:
  Frame bytes_;
  std::size_t offset_ = 0;
  std::optional<SenderIdentity> sender_;
  unsigned priority_ = 0;
  bool urgent_ = false;
  std::uint64_t origin_ = 0;
  std::string user_;
  std::string message_id_;
};

/// A message received with receive_held(): it stays at its source until
/// ack(); nack() (or dropping it unsettled) gives it back for the next receive.
class HeldMessage {
 public:
  /// `settle(true)` acks, `settle(false)` nacks; empty: nothing to settle.
  HeldMessage(EndpointMessage message, std::function<result<void>(bool)> settle)
      : message_(std::move(message)), settle_(std::move(settle)) {}
  HeldMessage(HeldMessage&&) noexcept = default;
  HeldMessage& operator=(HeldMessage&& other) noexcept {
    if (this != &other) {
      (void)nack();
      message_ = std::move(other.message_);
      settle_ = std::move(other.settle_);
    }
    return *this;
  }
  ~HeldMessage() { (void)nack(); }

  [[nodiscard]] const EndpointMessage& message() const noexcept { return message_; }
  result<void> ack() { return settle(true); }
  result<void> nack() { return settle(false); }

 private:
  result<void> settle(bool acknowledge) {
    if (!settle_) return {};
    auto settle = std::move(settle_);
    settle_ = nullptr;
    return settle(acknowledge);
  }
  EndpointMessage message_;
  std::function<result<void>(bool)> settle_;
};

/// Sends messages to one endpoint.
class Sender {
 public:
  Sender() = default;
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;
  virtual ~Sender() = default;

  /// Sends a copy of `message`, waiting for room. Errors: invalid_argument
  /// (too large, priority), unsupported (urgent without an urgent lane),
  /// peer_gone (the receiver left), and those of the transport.
  result<void> send(std::span<const std::byte> message, EndpointSendOptions options = {}) {
    return send(message, options, detail::WaitLimit::forever());
  }
  /// As send without waiting: false when there is no room now (nothing was sent).
  result<bool> try_send(std::span<const std::byte> message, EndpointSendOptions options = {});
  /// As send; errors also timed_out (nothing was sent).
  result<void> send_for(std::span<const std::byte> message, steady_clock::duration timeout,
                        EndpointSendOptions options = {}) {
    return send(message, options, detail::WaitLimit::after(timeout));
  }
  result<void> send_until(std::span<const std::byte> message, deadline until, EndpointSendOptions options = {}) {
    return send(message, options, detail::WaitLimit::at(until));
  }
  /// Within `limit`: would_block or timed_out when it is reached.
  result<void> send(std::span<const std::byte> message, EndpointSendOptions options, detail::WaitLimit limit);

  [[nodiscard]] virtual const Endpoint& endpoint() const noexcept = 0;
  /// The largest message this sender can send.
  [[nodiscard]] virtual std::size_t max_message() const noexcept = 0;

 protected:
  /// `message` fits and `options` are valid; the transport sends it within `limit`.
  virtual result<void> send_checked(std::span<const std::byte> message, EndpointSendOptions options,
                                    detail::WaitLimit limit) = 0;
  /// "sender to tcp://host:port", for errors.
  [[nodiscard]] std::string description() const;
  /// A failed `attempt` with description() in its context, unless it names
  /// this sender already (a socket's error names the socket, not the endpoint).
  [[nodiscard]] result<void> named(result<void> attempt) const;
};

/// What a receiver has seen of its senders (listeners and datagram receivers).
struct ReceiverStats {
  std::uint64_t accepted = 0;          ///< connections accepted (unix, tcp)
  std::uint64_t closed_by_peer = 0;    ///< connections the sender closed (or died)
  std::uint64_t closed_mid_message = 0;  ///< of those: ended inside a message, which was dropped
  std::uint64_t closed_malformed = 0;  ///< disconnected: a bad frame header or envelope
  std::uint64_t closed_oversized = 0;  ///< disconnected: announced a frame above max_message
  std::uint64_t dropped_datagrams = 0;  ///< datagrams that were not ferry messages, or too large
};

/// Receives messages at one endpoint.
class Receiver {
 public:
  Receiver() = default;
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;
  virtual ~Receiver() = default;

  /// The next message: urgent ones first, then FIFO per sender.
  result<EndpointMessage> receive() { return receive(detail::WaitLimit::forever()); }
  /// Nothing waiting: an empty optional at once.
  result<std::optional<EndpointMessage>> try_receive();
  /// As receive; errors also timed_out.
  result<EndpointMessage> receive_for(steady_clock::duration timeout) {
    return receive(detail::WaitLimit::after(timeout));
  }
  result<EndpointMessage> receive_until(deadline until) { return receive(detail::WaitLimit::at(until)); }
  /// Within `limit`: would_block or timed_out when it is reached.
  result<EndpointMessage> receive(detail::WaitLimit limit) { return receive_next(limit); }
  /// As receive, but the message stays at the source until the HeldMessage
  /// is acked (shm, nats; elsewhere it is taken at once).
  result<HeldMessage> receive_held(detail::WaitLimit limit) { return receive_next_held(limit); }

  /// Where it receives; a tcp or udp port 0 is replaced by the bound one.
  [[nodiscard]] virtual const Endpoint& endpoint() const noexcept = 0;
  [[nodiscard]] virtual ReceiverStats stats() const noexcept { return {}; }

 protected:
  virtual result<EndpointMessage> receive_next(detail::WaitLimit limit) = 0;
  virtual result<HeldMessage> receive_next_held(detail::WaitLimit limit) {
    auto message = receive_next(limit);
    if (!message) return std::move(message).error();
    return HeldMessage(std::move(*message), nullptr);
  }
};

/// Opens a sender for any endpoint but shm (unsupported: see
/// ferry/messaging/endpoints.hpp). unix and tcp connect within
/// options.connect_timeout (not_found: nobody listens); pipe adopts the
/// descriptors (they must be open for writing).
result<std::unique_ptr<Sender>> open_transport_sender(const Endpoint& endpoint, const EndpointOptions& options = {});
/// Opens a receiver for any endpoint but shm: listens (unix, tcp: a UNIX
/// socket file is created with options.mode, already_exists if the path is
/// taken), binds (unixgram, udp) or adopts the descriptors (pipe: open for reading).
result<std::unique_ptr<Receiver>> open_transport_receiver(const Endpoint& endpoint,
                                                          const EndpointOptions& options = {});

}  // namespace ferry
