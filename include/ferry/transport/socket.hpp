// Sockets: UNIX and internet domain, stream and datagram.
//
// Stream sockets are ByteStreams (see stream.hpp for reads, writes and EOF):
//
//   auto listener = ferry::UnixSocket::listen("/run/app.sock");          // mode 0600
//   auto client = ferry::UnixSocket::connect_for("/run/app.sock", 1s);
//   auto server_side = listener->accept_for(1s);
//   server_side->peer_identity();       // uid, gid, pid of the client (SO_PEERCRED)
//
//   auto tcp_listener = ferry::TcpSocket::listen("127.0.0.1", 0);        // port 0: any free port
//   auto tcp = ferry::TcpSocket::connect("localhost", tcp_listener->port());
//
// UNIX paths: a filesystem path, or "@name" for the abstract namespace (no
// file, gone with the last descriptor). A filesystem listener is created with
// exactly the listen mode (default 0600: only the owner may connect), fails
// with already_exists if the path is taken, and removes its socket file when
// destroyed (if the file is still the one it made).
//
// TCP: hosts are resolved with getaddrinfo (names, IPv4 and IPv6 literals);
// connect tries each address in turn within the one deadline. TCP_NODELAY is
// on for every connected and accepted TCP socket (framed request/reply traffic
// must not wait for Nagle); listeners set SO_REUSEADDR.
//
// Errors: nobody listening (ECONNREFUSED) is not_found; a connect or accept
// that reaches its deadline is timed_out; a try_accept with no one waiting is
// would_block.
//
// Datagram sockets carry one message per datagram, never a part of one: a
// datagram larger than the receive buffer is consumed and reported as
// errc::limit_reached naming both sizes (MSG_TRUNC); `next_size` tells the
// size of the next one first, if wanted.
//
// Thread-safety: as ByteStream for the stream sockets. A Listener may be
// accepted from by several threads. A datagram socket holds no state but its
// descriptor; concurrent sends and receives are whole datagrams each.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"
#include "ferry/os/process.hpp"
#include "ferry/transport/stream.hpp"

namespace ferry {

/// A socket address of any family: UNIX path, IPv4 or IPv6 with a port.
class SocketAddress {
 public:
  SocketAddress() noexcept = default;
  /// A UNIX address; "@name" is abstract. invalid_argument if too long.
  static result<SocketAddress> unix_path(std::string_view path);
  /// The addresses `host` resolves to for `port` (getaddrinfo). With
  /// `passive` and an empty host: the wildcard addresses, for binding.
  static result<std::vector<SocketAddress>> resolve(std::string_view host, std::uint16_t port,
                                                    int socket_type = SOCK_STREAM, bool passive = false);
  /// Wraps what accept/recvfrom/getsockname returned.
  static SocketAddress from_raw(const sockaddr* address, socklen_t size) noexcept;

  [[nodiscard]] int family() const noexcept { return storage_.ss_family; }
  [[nodiscard]] const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  [[nodiscard]] socklen_t size() const noexcept { return size_; }
  /// The port of an internet address (0 for UNIX).
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// For a filesystem UNIX address, its path (empty otherwise).
  [[nodiscard]] std::string filesystem_path() const;
  /// "127.0.0.1:7000", "[::1]:7000", "/run/app.sock", "@name", "(unnamed)".
  [[nodiscard]] std::string to_string() const;

 private:
  sockaddr_storage storage_{};
  socklen_t size_ = 0;
};

namespace detail {
// A socket file this process bound: removed when its owner is destroyed, if
// the path still names the same file.
class BoundPath {
 public:
  BoundPath() noexcept = default;
  BoundPath(std::string path, dev_t device, ino_t inode) : path_(std::move(path)), device_(device), inode_(inode) {}
  BoundPath(BoundPath&& other) noexcept
      : path_(std::exchange(other.path_, {})), device_(other.device_), inode_(other.inode_) {}
  BoundPath& operator=(BoundPath&& other) noexcept;
  BoundPath(const BoundPath&) = delete;
  BoundPath& operator=(const BoundPath&) = delete;
  ~BoundPath() { remove(); }
  void remove() noexcept;

 private:
  std::string path_;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};
}  // namespace detail

/// A connected stream socket, UNIX or TCP.
class StreamSocket : public ByteStream {
 public:
  StreamSocket() = default;
  /// Takes a connected stream socket made with SOCK_NONBLOCK | SOCK_CLOEXEC.
  StreamSocket(Fd connected, std::string_view name);

  /// The peer's uid, gid and pid as the kernel recorded them when the
  /// connection was made (SO_PEERCRED). UNIX sockets only: unsupported otherwise.
  [[nodiscard]] result<SenderIdentity> peer_identity() const;
  /// Sends end of stream while still reading (shutdown SHUT_WR).
  result<void> shutdown_write();
  /// Sends `descriptor` with `message` (at least one byte) in one go
  /// (SCM_RIGHTS; UNIX sockets only): the peer gets its own descriptor for
  /// the same open file, e.g. a SealedPayload's memfd.
  result<void> send_descriptor(const Fd& descriptor, std::span<const std::byte> message,
                               detail::WaitLimit limit = detail::WaitLimit::forever());
  /// Receives what send_descriptor sent: exactly `message.size()` bytes into
  /// `message`, and the descriptor (close-on-exec). Errors: invalid_argument
  /// when no descriptor (or more than one) came with the message, peer_gone.
  result<Fd> receive_descriptor(std::span<std::byte> message, detail::WaitLimit limit = detail::WaitLimit::forever());
  [[nodiscard]] result<SocketAddress> local_address() const;
  [[nodiscard]] result<SocketAddress> peer_address() const;
  /// TCP_NODELAY (on by default for TCP).
  result<void> set_no_delay(bool on);

  /// Connects to `address` (any family) within `limit`.
  static result<StreamSocket> connect(const SocketAddress& address, detail::WaitLimit limit);
};

struct ListenOptions {
  int backlog = 128;
  /// Mode of a filesystem UNIX socket file (who may connect).
  mode_t mode = 0600;
  /// TCP_NODELAY on accepted TCP connections.
  bool no_delay = true;
};

/// A listening stream socket, UNIX or TCP; made by UnixSocket::listen or TcpSocket::listen.
class Listener {
 public:
  Listener() = default;

  result<StreamSocket> accept() { return accept(detail::WaitLimit::forever()); }
  result<StreamSocket> try_accept() { return accept(detail::WaitLimit::none()); }
  result<StreamSocket> accept_for(steady_clock::duration timeout) { return accept(detail::WaitLimit::after(timeout)); }
  result<StreamSocket> accept_until(deadline when) { return accept(detail::WaitLimit::at(when)); }
  result<StreamSocket> accept(detail::WaitLimit limit);

  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }
  [[nodiscard]] const SocketAddress& address() const noexcept { return address_; }
  /// The bound TCP port (useful after listening on port 0); 0 for UNIX.
  [[nodiscard]] std::uint16_t port() const noexcept { return address_.port(); }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// Stops listening; a filesystem socket file is removed.
  void close() noexcept;

  static result<Listener> listen(const SocketAddress& address, const ListenOptions& options);

 private:
  Fd fd_;
  SocketAddress address_;
  std::string name_;
  ListenOptions options_;
  detail::BoundPath bound_path_;
};

/// UNIX domain stream sockets.
class UnixSocket : public StreamSocket {
 public:
  static result<Listener> listen(std::string_view path, const ListenOptions& options = {});
  static result<StreamSocket> connect(std::string_view path) { return connect(path, detail::WaitLimit::forever()); }
  static result<StreamSocket> connect_for(std::string_view path, steady_clock::duration timeout) {
    return connect(path, detail::WaitLimit::after(timeout));
  }
  static result<StreamSocket> connect_until(std::string_view path, deadline when) {
    return connect(path, detail::WaitLimit::at(when));
  }
  static result<StreamSocket> connect(std::string_view path, detail::WaitLimit limit);
  /// Two connected sockets (socketpair), e.g. to hand one to a child.
  static result<std::pair<StreamSocket, StreamSocket>> pair();
};

/// TCP stream sockets over IPv4 or IPv6.
class TcpSocket : public StreamSocket {
 public:
  /// Listens on the first address `host` resolves to ("" = any, "::" or "0.0.0.0").
  static result<Listener> listen(std::string_view host, std::uint16_t port, const ListenOptions& options = {});
  static result<StreamSocket> connect(std::string_view host, std::uint16_t port) {
    return connect(host, port, detail::WaitLimit::forever());
  }
  static result<StreamSocket> connect_for(std::string_view host, std::uint16_t port, steady_clock::duration timeout) {
    return connect(host, port, detail::WaitLimit::after(timeout));
  }
  static result<StreamSocket> connect_until(std::string_view host, std::uint16_t port, deadline when) {
    return connect(host, port, detail::WaitLimit::at(when));
  }
  static result<StreamSocket> connect(std::string_view host, std::uint16_t port, detail::WaitLimit limit);
};

/// One received datagram: its size and who sent it.
struct Datagram {
  std::size_t size = 0;
  SocketAddress from;
  /// The sender as the kernel attests it (SCM_CREDENTIALS): on a UNIX
  /// datagram socket that asked for it (UnixDatagram::pass_credentials); otherwise none.
  std::optional<SenderIdentity> sender;
};

/// A datagram socket, UNIX or UDP: one message per datagram.
class DatagramSocket {
 public:
  DatagramSocket() = default;

  /// Sends one datagram to the connected peer.
  result<void> send(std::span<const std::byte> message) { return send(message, detail::WaitLimit::forever()); }
  result<void> try_send(std::span<const std::byte> message) { return send(message, detail::WaitLimit::none()); }
  result<void> send_for(std::span<const std::byte> message, steady_clock::duration timeout) {
    return send(message, detail::WaitLimit::after(timeout));
  }
  result<void> send_until(std::span<const std::byte> message, deadline when) {
    return send(message, detail::WaitLimit::at(when));
  }
  result<void> send(std::span<const std::byte> message, detail::WaitLimit limit) {
    return send_to(nullptr, message, limit);
  }
  /// Sends one datagram to `to`.
  result<void> send_to(const SocketAddress& to, std::span<const std::byte> message) {
    return send_to(&to, message, detail::WaitLimit::forever());
  }
  result<void> try_send_to(const SocketAddress& to, std::span<const std::byte> message) {
    return send_to(&to, message, detail::WaitLimit::none());
  }
  result<void> send_to(const SocketAddress* to, std::span<const std::byte> message, detail::WaitLimit limit) {
    const std::span<const std::byte> parts[] = {message};
    return send_parts(to, parts, limit);
  }
  /// Sends one datagram made of `parts` one after the other (a gathered
  /// send: no copy into one buffer), to `to` or (null) the connected peer.
  result<void> send_parts(const SocketAddress* to, std::span<const std::span<const std::byte>> parts,
                          detail::WaitLimit limit);

  /// Receives one datagram into `buffer`; limit_reached if it did not fit
  /// (the datagram is then gone: ask next_size first to avoid that).
  result<Datagram> receive(std::span<std::byte> buffer) { return receive(buffer, detail::WaitLimit::forever()); }
  result<Datagram> try_receive(std::span<std::byte> buffer) { return receive(buffer, detail::WaitLimit::none()); }
  result<Datagram> receive_for(std::span<std::byte> buffer, steady_clock::duration timeout) {
    return receive(buffer, detail::WaitLimit::after(timeout));
  }
  result<Datagram> receive_until(std::span<std::byte> buffer, deadline when) {
    return receive(buffer, detail::WaitLimit::at(when));
  }
  result<Datagram> receive(std::span<std::byte> buffer, detail::WaitLimit limit);
  /// Scattered: the datagram's first bytes into `head`, the rest into `rest`
  /// (a buffer of its own for the usual size, spare room for a larger one).
  result<Datagram> receive(std::span<std::byte> head, std::span<std::byte> rest, detail::WaitLimit limit);
  /// The size of the next datagram, without taking it.
  result<std::size_t> next_size(detail::WaitLimit limit = detail::WaitLimit::forever());

  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] result<SocketAddress> local_address() const;
  /// Sends to and receives from only `peer` from now on.
  result<void> connect(const SocketAddress& peer);

 protected:
  DatagramSocket(Fd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  static result<DatagramSocket> bound(const SocketAddress& address, mode_t mode);

 private:
  Fd fd_;
  std::string name_;
  detail::BoundPath bound_path_;
};

/// UNIX domain datagram sockets.
class UnixDatagram : public DatagramSocket {
 public:
  /// Bound to `path` ("@name" abstract); a filesystem path gets exactly `mode`.
  static result<UnixDatagram> bind(std::string_view path, mode_t mode = 0600);
  /// Unbound: can send (and receive replies only if connected or paired).
  static result<UnixDatagram> unbound();
  static result<std::pair<UnixDatagram, UnixDatagram>> pair();
  using DatagramSocket::connect;
  result<void> connect(std::string_view path);
  /// From now on the kernel attaches each sender's uid, gid and pid to its
  /// datagrams (SO_PASSCRED): received Datagrams carry `sender`.
  result<void> pass_credentials();

 private:
  using DatagramSocket::DatagramSocket;
  explicit UnixDatagram(DatagramSocket&& socket) : DatagramSocket(std::move(socket)) {}
};

/// UDP over IPv4 or IPv6.
class UdpSocket : public DatagramSocket {
 public:
  /// Bound to `host`:`port` (port 0: any free port; see local_address()).
  static result<UdpSocket> bind(std::string_view host, std::uint16_t port);
  using DatagramSocket::connect;
  result<void> connect(std::string_view host, std::uint16_t port);

 private:
  explicit UdpSocket(DatagramSocket&& socket) : DatagramSocket(std::move(socket)) {}
};

}  // namespace ferry
