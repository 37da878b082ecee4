#include "ferry/transport/socket.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace ferry {

using detail::WaitLimit;

// ---- addresses ---------------------------------------------------------------

result<SocketAddress> SocketAddress::unix_path(std::string_view path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path)
    return error(errc::invalid_argument, "unix socket '" + std::string(path) + "'",
                 "a path of 1 to " + std::to_string(sizeof address.sun_path - 1) + " bytes is needed");
  std::memcpy(address.sun_path, path.data(), path.size());
  if (path.front() == '@') address.sun_path[0] = '\0';  // abstract namespace
  const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path.front() == '@' ? 0 : 1));
  return from_raw(reinterpret_cast<const sockaddr*>(&address), size);
}

result<std::vector<SocketAddress>> SocketAddress::resolve(std::string_view host, std::uint16_t port, int socket_type,
                                                          bool passive) {
  std::string name = host.empty() ? std::string("*") : std::string(host);
  name.append(":").append(std::to_string(port));  // appends: g++ 12 -O3 misreads `"x" + string` (-Wrestrict)
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socket_type;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* found = nullptr;
  const std::string host_text(host);
  const std::string port_text = std::to_string(port);
  const int failed = ::getaddrinfo(host.empty() ? nullptr : host_text.c_str(), port_text.c_str(), &hints, &found);
  if (failed != 0) {
    const errc code = failed == EAI_NONAME ? errc::not_found : failed == EAI_SYSTEM ? errc_from_errno(errno) : errc::system;
    return error(code, name, std::string("getaddrinfo: ") + ::gai_strerror(failed), failed == EAI_SYSTEM ? errno : 0);
  }
  std::vector<SocketAddress> addresses;
  for (const addrinfo* each = found; each != nullptr; each = each->ai_next)
    addresses.push_back(from_raw(each->ai_addr, each->ai_addrlen));
  ::freeaddrinfo(found);
  if (addresses.empty()) return error(errc::not_found, name, "getaddrinfo gave no address");
  return addresses;
}

SocketAddress SocketAddress::from_raw(const sockaddr* address, socklen_t size) noexcept {
  SocketAddress made;
  made.size_ = std::min<socklen_t>(size, sizeof made.storage_);
  std::memcpy(&made.storage_, address, made.size_);
  return made;
}

std::uint16_t SocketAddress::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string SocketAddress::filesystem_path() const {
  if (family() != AF_UNIX) return {};
  const auto* address = reinterpret_cast<const sockaddr_un*>(&storage_);
  const std::size_t length = size_ - offsetof(sockaddr_un, sun_path);
  if (length == 0 || address->sun_path[0] == '\0') return {};
  return std::string(address->sun_path, strnlen(address->sun_path, length));
}

std::string SocketAddress::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, text, sizeof text);
    return std::string(text).append(":").append(std::to_string(port()));
  }
  if (family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, text, sizeof text);
    return std::string("[").append(text).append("]:").append(std::to_string(port()));
  }
  if (family() == AF_UNIX) {
    const auto* address = reinterpret_cast<const sockaddr_un*>(&storage_);
    const std::size_t length = size_ > offsetof(sockaddr_un, sun_path) ? size_ - offsetof(sockaddr_un, sun_path) : 0;
    if (length == 0) return "(unnamed)";
    if (address->sun_path[0] == '\0') return std::string("@").append(address->sun_path + 1, length - 1);
    return std::string(address->sun_path, strnlen(address->sun_path, length));
  }
  return "(unknown family " + std::to_string(family()) + ")";
}

namespace detail {

BoundPath& BoundPath::operator=(BoundPath&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, {});
    device_ = other.device_;
    inode_ = other.inode_;
  }
  return *this;
}

void BoundPath::remove() noexcept {
  if (path_.empty()) return;
  struct stat status {};
  // Someone may have replaced the file since; only ours is removed.
  if (::lstat(path_.c_str(), &status) == 0 && status.st_dev == device_ && status.st_ino == inode_)
    ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace detail

namespace {

std::string kind_name(int family, int type) {
  const char* domain = family == AF_UNIX ? "unix" : type == SOCK_DGRAM ? "udp" : "tcp";
  const char* what = family == AF_UNIX ? (type == SOCK_DGRAM ? " datagram socket" : " socket") : "";
  return std::string(domain) + what;
}

std::string socket_name(const SocketAddress& address, int type) {
  return kind_name(address.family(), type) + " '" + address.to_string() + "'";
}

// Stream sockets are non-blocking (epoll, timed connects). Datagram sockets
// block, and every call but a waiting-forever one passes MSG_DONTWAIT: a
// receive that waits is then one recvmsg the kernel wakes, not poll + recvmsg.
result<Fd> make_socket(int family, int type, std::string_view name) {
  const int fd = ::socket(family, type | SOCK_CLOEXEC | (type == SOCK_STREAM ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return error::from_errno(errno, name, "socket");
  return Fd(fd);
}

error connect_error(int sys_errno, std::string_view name) {
  if (sys_errno == ECONNREFUSED) return error(errc::not_found, name, "nobody listens (connection refused)", sys_errno);
  return error::from_errno(sys_errno, name, "connect");
}

result<void> set_flag(int fd, int level, int option, bool on, std::string_view name, const char* what) {
  const int value = on ? 1 : 0;
  if (::setsockopt(fd, level, option, &value, sizeof value) != 0)
    return error::from_errno(errno, name, std::string("setsockopt ") + what);
  return {};
}

// Binds `fd` to `address`; a filesystem UNIX path then gets exactly `mode`
// (bind applies the umask) and is remembered for removal.
result<detail::BoundPath> bind_to(int fd, const SocketAddress& address, mode_t mode, std::string_view name) {
  if (::bind(fd, address.get(), address.size()) != 0) {
    if (errno == EADDRINUSE) return error(errc::already_exists, name, "address in use", errno);
    return error::from_errno(errno, name, "bind");
  }
  const std::string path = address.filesystem_path();
  if (path.empty()) return detail::BoundPath();
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) return error::from_errno(errno, name, "lstat after bind");
  detail::BoundPath bound(path, status.st_dev, status.st_ino);
  if (::chmod(path.c_str(), mode) != 0) return error::from_errno(errno, name, "chmod");
  return bound;
}

result<SocketAddress> socket_address(int fd, bool peer, std::string_view name) {
  sockaddr_storage storage{};
  socklen_t size = sizeof storage;
  auto* raw = reinterpret_cast<sockaddr*>(&storage);
  if ((peer ? ::getpeername(fd, raw, &size) : ::getsockname(fd, raw, &size)) != 0)
    return error::from_errno(errno, name, peer ? "getpeername" : "getsockname");
  return SocketAddress::from_raw(raw, size);
}

}  // namespace

// ---- stream sockets ---------------------------------------------------------

StreamSocket::StreamSocket(Fd connected, std::string_view name)
    : ByteStream(std::move(connected), Kind::socket, std::make_shared<const std::string>(name)) {}

result<SenderIdentity> StreamSocket::peer_identity() const {
  ucred credentials{};
  socklen_t size = sizeof credentials;
  if (::getsockopt(fd().get(), SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0)
    return error::from_errno(errno, name(), "getsockopt SO_PEERCRED");
  if (credentials.pid == 0) return error(errc::unsupported, name(), "no peer credentials (not a UNIX socket)");
  return SenderIdentity{credentials.uid, credentials.gid, credentials.pid, true};
}

result<void> StreamSocket::shutdown_write() {
  if (::shutdown(fd().get(), SHUT_WR) != 0) return error::from_errno(errno, name(), "shutdown");
  return {};
}

result<void> StreamSocket::send_descriptor(const Fd& descriptor, std::span<const std::byte> message,
                                           detail::WaitLimit limit) {
  if (message.empty()) return error(errc::invalid_argument, name(), "a descriptor travels with at least one byte");
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec piece{const_cast<std::byte*>(message.data()), message.size()};
  msghdr header{};
  header.msg_iov = &piece;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  cmsghdr* rights = CMSG_FIRSTHDR(&header);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(sizeof(int));
  const int sent_fd = descriptor.get();
  std::memcpy(CMSG_DATA(rights), &sent_fd, sizeof sent_fd);
  for (;;) {
    const ssize_t sent = ::sendmsg(fd().get(), &header, MSG_NOSIGNAL);
    if (sent >= 0) return write_all(message.subspan(static_cast<std::size_t>(sent)), limit);  // the descriptor went with the first byte
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) {
      return error(errc::peer_gone, name(), "no reader: the other end is closed", errno);
    }
    if (errno != EAGAIN) return error::from_errno(errno, name(), "sendmsg SCM_RIGHTS");
    if (auto ready = detail::wait_ready(fd().get(), POLLOUT, limit, name(), "no room to write"); !ready) {
      return std::move(ready).error();
    }
  }
}

result<Fd> StreamSocket::receive_descriptor(std::span<std::byte> message, detail::WaitLimit limit) {
  if (message.empty()) return error(errc::invalid_argument, name(), "a descriptor travels with at least one byte");
  for (;;) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
    iovec piece{message.data(), message.size()};
    msghdr header{};
    header.msg_iov = &piece;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    const ssize_t got = ::recvmsg(fd().get(), &header, MSG_CMSG_CLOEXEC);
    if (got > 0) {
      std::vector<Fd> received;  // every descriptor that came is ours to close
      for (cmsghdr* part = CMSG_FIRSTHDR(&header); part != nullptr; part = CMSG_NXTHDR(&header, part)) {
        if (part->cmsg_level != SOL_SOCKET || part->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (part->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int one = -1;
          std::memcpy(&one, CMSG_DATA(part) + i * sizeof(int), sizeof one);
          received.emplace_back(one);
        }
      }
      if (header.msg_flags & MSG_CTRUNC) {
        return error(errc::invalid_argument, name(), "more descriptors came than one message carries");
      }
      if (received.size() != 1) {
        return error(errc::invalid_argument, name(),
                     std::to_string(received.size()) + " descriptors came with the message, not 1");
      }
      if (auto rest = read_exact(message.subspan(static_cast<std::size_t>(got)), limit); !rest) {
        return std::move(rest).error();
      }
      return std::move(received.front());
    }
    if (got == 0) return error(errc::peer_gone, name(), "end of stream before a descriptor came");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return error::from_errno(errno, name(), "recvmsg SCM_RIGHTS");
    if (auto ready = detail::wait_ready(fd().get(), POLLIN, limit, name(), "nothing to read"); !ready) {
      return std::move(ready).error();
    }
  }
}

result<SocketAddress> StreamSocket::local_address() const { return socket_address(fd().get(), false, name()); }

result<SocketAddress> StreamSocket::peer_address() const { return socket_address(fd().get(), true, name()); }

result<void> StreamSocket::set_no_delay(bool on) {
  return set_flag(fd().get(), IPPROTO_TCP, TCP_NODELAY, on, name(), "TCP_NODELAY");
}

result<StreamSocket> StreamSocket::connect(const SocketAddress& address, WaitLimit limit) {
  const std::string name = socket_name(address, SOCK_STREAM);
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    auto fd = make_socket(address.family(), SOCK_STREAM, name);
    if (!fd) return std::move(fd).error();
    if (address.family() != AF_UNIX) {
      if (auto set = set_flag(fd->get(), IPPROTO_TCP, TCP_NODELAY, true, name, "TCP_NODELAY"); !set)
        return std::move(set).error();
    }
    if (::connect(fd->get(), address.get(), address.size()) == 0) return StreamSocket(std::move(*fd), name);
    if (errno == EINPROGRESS || errno == EINTR) {
      if (auto ready = detail::wait_ready(fd->get(), POLLOUT, limit, name, "connection not made in time"); !ready)
        return std::move(ready).error();
      int failure = 0;
      socklen_t size = sizeof failure;
      if (::getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &failure, &size) != 0) failure = errno;
      if (failure != 0) return connect_error(failure, name);
      return StreamSocket(std::move(*fd), name);
    }
    // A UNIX listener whose backlog is full refuses a non-blocking connect
    // with EAGAIN; there is nothing to poll on, so retry with a backoff.
    if (errno != EAGAIN) return connect_error(errno, name);
    const auto now = steady_clock::now();
    if (limit.kind == WaitLimit::Kind::none || (limit.kind == WaitLimit::Kind::until && now >= limit.until_time))
      return error(limit.reached_code(), name, "the listener's backlog is full", EAGAIN);
    auto sleep = steady_clock::duration(pause);
    if (limit.kind == WaitLimit::Kind::until) sleep = std::min(sleep, limit.until_time - now);
    std::this_thread::sleep_for(sleep);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

result<Listener> Listener::listen(const SocketAddress& address, const ListenOptions& options) {
  Listener made;
  made.name_ = socket_name(address, SOCK_STREAM) + " (listener)";
  made.options_ = options;
  auto fd = make_socket(address.family(), SOCK_STREAM, made.name_);
  if (!fd) return std::move(fd).error();
  if (address.family() != AF_UNIX) {
    if (auto set = set_flag(fd->get(), SOL_SOCKET, SO_REUSEADDR, true, made.name_, "SO_REUSEADDR"); !set)
      return std::move(set).error();
  }
  auto bound = bind_to(fd->get(), address, options.mode, made.name_);
  if (!bound) return std::move(bound).error();
  made.bound_path_ = std::move(*bound);
  if (::listen(fd->get(), options.backlog) != 0) return error::from_errno(errno, made.name_, "listen");
  auto local = socket_address(fd->get(), false, made.name_);
  if (!local) return std::move(local).error();
  made.address_ = *local;
  made.name_ = socket_name(made.address_, SOCK_STREAM) + " (listener)";
  made.fd_ = std::move(*fd);
  return made;
}

void Listener::close() noexcept {
  fd_.reset();
  bound_path_.remove();
}

result<StreamSocket> Listener::accept(WaitLimit limit) {
  for (;;) {
    sockaddr_storage storage{};
    socklen_t size = sizeof storage;
    const int fd = ::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&storage), &size, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      Fd owned(fd);
      const SocketAddress peer = SocketAddress::from_raw(reinterpret_cast<const sockaddr*>(&storage), size);
      std::string name = kind_name(address_.family(), SOCK_STREAM) + " '" + address_.to_string() + "'";
      if (address_.family() == AF_UNIX) {
        name += " (connection " + std::to_string(fd) + ")";
      } else {
        name += " from " + peer.to_string();
        if (options_.no_delay) {
          if (auto set = set_flag(fd, IPPROTO_TCP, TCP_NODELAY, true, name, "TCP_NODELAY"); !set)
            return std::move(set).error();
        }
      }
      return StreamSocket(std::move(owned), name);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN) return error::from_errno(errno, name_, "accept");
    if (auto ready = detail::wait_ready(fd_.get(), POLLIN, limit, name_, "no connection to accept"); !ready)
      return std::move(ready).error();
  }
}

result<Listener> UnixSocket::listen(std::string_view path, const ListenOptions& options) {
  auto address = SocketAddress::unix_path(path);
  if (!address) return std::move(address).error();
  return Listener::listen(*address, options);
}

result<StreamSocket> UnixSocket::connect(std::string_view path, WaitLimit limit) {
  auto address = SocketAddress::unix_path(path);
  if (!address) return std::move(address).error();
  return StreamSocket::connect(*address, limit);
}

result<std::pair<StreamSocket, StreamSocket>> UnixSocket::pair() {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, ends) != 0)
    return error::from_errno(errno, "unix socket pair", "socketpair");
  return std::pair<StreamSocket, StreamSocket>(StreamSocket(Fd(ends[0]), "unix socket pair (first)"),
                                               StreamSocket(Fd(ends[1]), "unix socket pair (second)"));
}

result<Listener> TcpSocket::listen(std::string_view host, std::uint16_t port, const ListenOptions& options) {
  auto addresses = SocketAddress::resolve(host, port, SOCK_STREAM, true);
  if (!addresses) return std::move(addresses).error();
  std::optional<error> first_failure;
  for (const SocketAddress& address : *addresses) {
    auto listening = Listener::listen(address, options);
    if (listening) return listening;
    if (!first_failure) first_failure = std::move(listening).error();
  }
  return std::move(*first_failure);
}

result<StreamSocket> TcpSocket::connect(std::string_view host, std::uint16_t port, WaitLimit limit) {
  auto addresses = SocketAddress::resolve(host, port, SOCK_STREAM, false);
  if (!addresses) return std::move(addresses).error();
  std::optional<error> first_failure;
  for (const SocketAddress& address : *addresses) {
    auto connected = StreamSocket::connect(address, limit);
    if (connected) return connected;
    if (connected.error().code() == errc::timed_out || connected.error().code() == errc::would_block) return connected;
    if (!first_failure) first_failure = std::move(connected).error();
  }
  return std::move(*first_failure);
}

// ---- datagram sockets ---------------------------------------------------------

namespace {
// A datagram socket blocks (see make_socket): every call that may not wait
// forever passes MSG_DONTWAIT (detail::dont_wait_unless_forever).

// The SCM_CREDENTIALS a received datagram carries (SO_PASSCRED), if any.
std::optional<SenderIdentity> attested_sender(msghdr& message) {
  for (cmsghdr* each = CMSG_FIRSTHDR(&message); each != nullptr; each = CMSG_NXTHDR(&message, each)) {
    if (each->cmsg_level == SOL_SOCKET && each->cmsg_type == SCM_CREDENTIALS && each->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred credentials{};
      std::memcpy(&credentials, CMSG_DATA(each), sizeof credentials);
      return SenderIdentity{credentials.uid, credentials.gid, credentials.pid, true};
    }
  }
  return std::nullopt;
}
}  // namespace

result<void> DatagramSocket::send_parts(const SocketAddress* to, std::span<const std::span<const std::byte>> parts,
                                        WaitLimit limit) {
  constexpr std::size_t kMaxParts = 4;
  if (parts.size() > kMaxParts) return error(errc::invalid_argument, name_, "a datagram of more than 4 parts");
  iovec pieces[kMaxParts];
  std::size_t size = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    pieces[i] = {const_cast<std::byte*>(parts[i].data()), parts[i].size()};
    size += parts[i].size();
  }
  msghdr message{};
  if (to) {
    message.msg_name = const_cast<sockaddr*>(to->get());
    message.msg_namelen = to->size();
  }
  message.msg_iov = pieces;
  message.msg_iovlen = parts.size();
  const int flags = MSG_NOSIGNAL | detail::dont_wait_unless_forever(limit);
  for (;;) {
    if (::sendmsg(fd_.get(), &message, flags) >= 0) return {};  // a datagram goes whole or not at all
    if (errno == EINTR) continue;
    if (errno == EMSGSIZE)
      return error(errc::invalid_argument, name_,
                   "a datagram of " + std::to_string(size) + " bytes is larger than the socket allows", errno);
    if (errno == ECONNREFUSED || errno == ENOENT)
      return error(errc::peer_gone, name_, "no socket receives at the destination", errno);
    if (errno != EAGAIN) return error::from_errno(errno, name_, "send");
    if (auto ready = detail::wait_ready(fd_.get(), POLLOUT, limit, name_, "no room to send"); !ready)
      return std::move(ready).error();
  }
}

result<Datagram> DatagramSocket::receive(std::span<std::byte> buffer, WaitLimit limit) {
  return receive(buffer, {}, limit);
}

result<Datagram> DatagramSocket::receive(std::span<std::byte> head, std::span<std::byte> rest, WaitLimit limit) {
  const std::size_t room = head.size() + rest.size();
  for (;;) {
    sockaddr_storage storage{};
    iovec pieces[2] = {{head.data(), head.size()}, {rest.data(), rest.size()}};
    msghdr message{};
    message.msg_name = &storage;
    message.msg_namelen = sizeof storage;
    message.msg_iov = pieces;
    message.msg_iovlen = rest.empty() ? 1 : 2;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    // MSG_TRUNC: the return value is the datagram's real size even when the
    // buffer was smaller, so truncation is seen instead of silently cut.
    const ssize_t got =
        ::recvmsg(fd_.get(), &message, MSG_TRUNC | MSG_CMSG_CLOEXEC | detail::dont_wait_unless_forever(limit));
    if (got >= 0) {
      const auto size = static_cast<std::size_t>(got);
      if (size > room || (message.msg_flags & MSG_TRUNC) != 0)
        return error(errc::limit_reached, name_,
                     "a datagram of " + std::to_string(size) + " bytes did not fit the buffer of " +
                         std::to_string(room) + " bytes; it was discarded");
      return Datagram{size, SocketAddress::from_raw(reinterpret_cast<const sockaddr*>(&storage), message.msg_namelen),
                      attested_sender(message)};
    }
    if (errno == EINTR) continue;
    if (errno == ECONNREFUSED) return error(errc::peer_gone, name_, "the connected peer is gone", errno);
    if (errno != EAGAIN) return error::from_errno(errno, name_, "recvmsg");
    if (auto ready = detail::wait_ready(fd_.get(), POLLIN, limit, name_, "nothing to receive"); !ready)
      return std::move(ready).error();
  }
}

result<std::size_t> DatagramSocket::next_size(WaitLimit limit) {
  for (;;) {
    const ssize_t got = ::recv(fd_.get(), nullptr, 0, MSG_PEEK | MSG_TRUNC | detail::dont_wait_unless_forever(limit));
    if (got >= 0) return static_cast<std::size_t>(got);
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return error::from_errno(errno, name_, "recv MSG_PEEK");
    if (auto ready = detail::wait_ready(fd_.get(), POLLIN, limit, name_, "nothing to receive"); !ready)
      return std::move(ready).error();
  }
}

result<SocketAddress> DatagramSocket::local_address() const { return socket_address(fd_.get(), false, name_); }

result<void> DatagramSocket::connect(const SocketAddress& peer) {
  if (::connect(fd_.get(), peer.get(), peer.size()) != 0) return connect_error(errno, name_ + " to " + peer.to_string());
  return {};
}

result<DatagramSocket> DatagramSocket::bound(const SocketAddress& address, mode_t mode) {
  const std::string name = socket_name(address, SOCK_DGRAM);
  auto fd = make_socket(address.family(), SOCK_DGRAM, name);
  if (!fd) return std::move(fd).error();
  auto bound_path = bind_to(fd->get(), address, mode, name);
  if (!bound_path) return std::move(bound_path).error();
  auto local = socket_address(fd->get(), false, name);
  if (!local) return std::move(local).error();
  DatagramSocket made(std::move(*fd), socket_name(*local, SOCK_DGRAM));
  made.bound_path_ = std::move(*bound_path);
  return made;
}

result<UnixDatagram> UnixDatagram::bind(std::string_view path, mode_t mode) {
  auto address = SocketAddress::unix_path(path);
  if (!address) return std::move(address).error();
  auto made = bound(*address, mode);
  if (!made) return std::move(made).error();
  return UnixDatagram(std::move(*made));
}

result<void> UnixDatagram::pass_credentials() {
  const int on = 1;
  if (::setsockopt(fd().get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0)
    return error::from_errno(errno, name(), "setsockopt SO_PASSCRED");
  return {};
}

result<UnixDatagram> UnixDatagram::unbound() {
  auto fd = make_socket(AF_UNIX, SOCK_DGRAM, "unix datagram socket");
  if (!fd) return std::move(fd).error();
  return UnixDatagram(std::move(*fd), "unix datagram socket (unbound)");
}

result<std::pair<UnixDatagram, UnixDatagram>> UnixDatagram::pair() {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ends) != 0)
    return error::from_errno(errno, "unix datagram pair", "socketpair");
  return std::pair<UnixDatagram, UnixDatagram>(UnixDatagram(Fd(ends[0]), "unix datagram pair (first)"),
                                               UnixDatagram(Fd(ends[1]), "unix datagram pair (second)"));
}

result<void> UnixDatagram::connect(std::string_view path) {
  auto address = SocketAddress::unix_path(path);
  if (!address) return std::move(address).error();
  return DatagramSocket::connect(*address);
}

result<UdpSocket> UdpSocket::bind(std::string_view host, std::uint16_t port) {
  auto addresses = SocketAddress::resolve(host, port, SOCK_DGRAM, true);
  if (!addresses) return std::move(addresses).error();
  auto made = bound(addresses->front(), 0);
  if (!made) return std::move(made).error();
  return UdpSocket(std::move(*made));
}

result<void> UdpSocket::connect(std::string_view host, std::uint16_t port) {
  auto addresses = SocketAddress::resolve(host, port, SOCK_DGRAM, false);
  if (!addresses) return std::move(addresses).error();
  auto local = local_address();
  if (!local) return std::move(local).error();
  // "localhost" may name ::1 first; a socket bound to IPv4 needs 127.0.0.1.
  for (const SocketAddress& address : *addresses)
    if (address.family() == local->family()) return DatagramSocket::connect(address);
  return error(errc::not_found, name(), std::string("'").append(host).append("' has no address of this socket's family"));
}

}  // namespace ferry
