// The kernel's own IPC mechanisms, each used the plain way: blocking calls,
// default buffer sizes unless a message would not fit otherwise.
#include <arpa/inet.h>
#include <fcntl.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

long read_proc_number(const char* path) {
  std::ifstream file(path);
  long value = -1;
  if (!(file >> value)) return -1;
  return value;
}

bool has_capability(int capability) {
  std::ifstream file("/proc/self/status");
  std::string line;
  while (std::getline(file, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      const unsigned long long mask = std::strtoull(line.c_str() + 7, nullptr, 16);
      return (mask >> capability) & 1u;
    }
  }
  return false;
}

constexpr int kCapSysResource = 24;


// A byte stream carries fixed-size messages: both sides know the size.
struct StreamIo {
  int out = -1;
  int in = -1;

  void send(const std::byte* message, std::size_t size) {
    if (!write_full(out, message, size)) fail_errno("write");
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    if (!read_full(in, scratch, size)) {
      if (errno == EPIPE) fail("read: the peer closed its end");
      fail_errno("read");
    }
    return scratch;
  }
};

// ---------------------------------------------------------------------------

struct EventFd : TransportBase {
  static std::string not_applicable(Pattern pattern, std::size_t) {
    if (pattern == Pattern::throughput) return "eventfd carries no payload (a counter): ping-pong only";
    return {};
  }
  void prepare(const Spec&) {
    for (int& fd : fds_) {
      fd = ::eventfd(0, EFD_CLOEXEC);
      if (fd < 0) fail_errno("eventfd");
    }
  }
  void open(Side side, const Spec&) {
    out_ = fds_[side == Side::initiator ? 0 : 1];
    in_ = fds_[side == Side::initiator ? 1 : 0];
  }
  // The counter carries the message's stamp + 1 (a counter of 0 cannot be read).
  void send(const std::byte* message, std::size_t) {
    std::uint64_t value = 0;
    std::memcpy(&value, message, sizeof value);
    ++value;
    if (!write_full(out_, &value, sizeof value)) fail_errno("write (eventfd)");
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    std::uint64_t value = 0;
    if (!read_full(in_, &value, sizeof value)) fail_errno("read (eventfd)");
    stamp(scratch, size, value - 1);
    return scratch;
  }
  int fds_[2] = {-1, -1};  // initiator → responder, responder → initiator
  int out_ = -1;
  int in_ = -1;
};

// A byte stream per direction, each used one way: made by `kMakeStream` in
// A before B exists (ends[0] is read, ends[1] written; both are inherited and
// each side closes the ends it does not use).
template <void (*kMakeStream)(int ends[2])>
struct OneWayStreams : TransportBase, StreamIo {
  void prepare(const Spec&) {
    kMakeStream(to_responder_);
    kMakeStream(to_initiator_);
  }
  void open(Side side, const Spec&) {
    const bool initiator = side == Side::initiator;
    out = initiator ? to_responder_[1] : to_initiator_[1];
    in = initiator ? to_initiator_[0] : to_responder_[0];
    ::close(initiator ? to_responder_[0] : to_responder_[1]);
    ::close(initiator ? to_initiator_[1] : to_initiator_[0]);
  }
  int to_responder_[2] = {-1, -1};
  int to_initiator_[2] = {-1, -1};
};

// The same streams, but the receiving side waits in epoll_wait before each
// read: the calls a receiver that serves any number of senders makes, and
// so the same calls ferry's stream endpoints make (the baseline of their
// wrapper cost; against a bare blocking read they also pay for the wait).
template <void (*kMakeStream)(int ends[2])>
struct OneWayStreamsEpoll : OneWayStreams<kMakeStream> {
  void open(Side side, const Spec& spec) {
    OneWayStreams<kMakeStream>::open(side, spec);
    const int flags = ::fcntl(this->in, F_GETFL);
    if (flags < 0 || ::fcntl(this->in, F_SETFL, flags | O_NONBLOCK) != 0) fail_errno("fcntl (O_NONBLOCK)");
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) fail_errno("epoll_create1");
    epoll_event event{};
    event.events = EPOLLIN;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, this->in, &event) != 0) fail_errno("epoll_ctl");
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    for (std::size_t done = 0; done < size;) {
      epoll_event event{};
      if (::epoll_wait(epoll_, &event, 1, -1) < 0) {
        if (errno == EINTR) continue;
        fail_errno("epoll_wait");
      }
      const ssize_t got = ::read(this->in, scratch + done, size - done);
      if (got == 0) fail("read: the peer closed its end");
      if (got < 0 && errno != EAGAIN && errno != EINTR) fail_errno("read");
      if (got > 0) done += static_cast<std::size_t>(got);
    }
    return scratch;
  }
  int epoll_ = -1;
};

void make_pipe(int ends[2]) {
  if (::pipe2(ends, O_CLOEXEC) != 0) fail_errno("pipe2");
}

void make_unix_stream(int ends[2]) {
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) fail_errno("socketpair (AF_UNIX, SOCK_STREAM)");
}

using Pipe = OneWayStreams<make_pipe>;
// A connection per direction: the shape of a ferry endpoint Sender/Receiver
// pair at the OS level (the baseline of ferry.endpoint.unix).
using UnixStreamOneWay = OneWayStreams<make_unix_stream>;
using PipeEpoll = OneWayStreamsEpoll<make_pipe>;
using UnixStreamEpoll = OneWayStreamsEpoll<make_unix_stream>;

// Named pipes in the measurement's directory. Each side opens its reading end
// first (non-blocking, so that open does not wait for a writer), then its
// writing end once the other side's reader exists; then both names go.
struct Fifo : TransportBase, StreamIo {
  void prepare(const Spec& spec) {
    to_responder_ = spec.dir + "/to-responder.fifo";
    to_initiator_ = spec.dir + "/to-initiator.fifo";
    if (::mkfifo(to_responder_.c_str(), 0600) != 0 || ::mkfifo(to_initiator_.c_str(), 0600) != 0) {
      fail_errno("mkfifo");
    }
  }
  void open(Side side, const Spec&) {
    const std::string& path = side == Side::initiator ? to_initiator_ : to_responder_;
    in = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (in < 0) fail_errno("open (fifo, reading end)");
  }
  void connect(Side side, const Spec&) {
    const std::string& path = side == Side::initiator ? to_responder_ : to_initiator_;
    out = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (out < 0) fail_errno("open (fifo, writing end)");
    const int flags = ::fcntl(in, F_GETFL);
    if (flags < 0 || ::fcntl(in, F_SETFL, flags & ~O_NONBLOCK) != 0) fail_errno("fcntl (fifo)");
    if (side == Side::initiator) {  // the responder has both ends open by now
      ::unlink(to_responder_.c_str());
      ::unlink(to_initiator_.c_str());
    }
  }
  std::string to_responder_;
  std::string to_initiator_;
};

// One byte stream (made by `kMakeStream` in A) used both ways: each side keeps one end.
template <void (*kMakeStream)(int ends[2])>
struct DuplexStream : TransportBase, StreamIo {
  void prepare(const Spec&) { kMakeStream(ends_); }
  void open(Side side, const Spec&) {
    const int mine = side == Side::initiator ? 0 : 1;
    in = out = ends_[mine];
    ::close(ends_[1 - mine]);
  }
  int ends_[2] = {-1, -1};
};

using UnixStream = DuplexStream<make_unix_stream>;

// Datagrams keep message boundaries; a datagram must fit the sender's socket
// buffer, so the buffer is raised (up to net.core.wmem_max) for big messages.
struct UnixDatagram : TransportBase {
  void prepare(const Spec& spec) {
    if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair_) != 0) fail_errno("socketpair (AF_UNIX, SOCK_DGRAM)");
    for (const int fd : pair_) {
      int current = 0;
      socklen_t length = sizeof current;
      if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &current, &length) != 0) fail_errno("getsockopt (SO_SNDBUF)");
      if (static_cast<std::size_t>(current) < spec.size + 4096) {
        const int wanted = static_cast<int>(std::min<std::size_t>(spec.size + 4096, INT32_MAX / 2));
        // SO_SNDBUFFORCE goes past wmem_max but needs CAP_NET_ADMIN; then the plain one.
        if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &wanted, sizeof wanted) != 0) {
          ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &wanted, sizeof wanted);
        }
      }
    }
  }
  void open(Side side, const Spec&) {
    const int mine = side == Side::initiator ? 0 : 1;
    fd_ = pair_[mine];
    ::close(pair_[1 - mine]);
  }
  void send(const std::byte* message, std::size_t size) {
    for (;;) {
      const ssize_t sent = ::send(fd_, message, size, 0);
      if (sent == static_cast<ssize_t>(size)) return;
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && errno == ENOBUFS && size > (std::size_t{1} << 20)) {
        fail_not_applicable("the kernel cannot allocate a %s datagram (ENOBUFS)", size_text(size).c_str());
      }
      if (sent < 0 && errno == EMSGSIZE) {
        int buffer = 0;
        socklen_t length = sizeof buffer;
        ::getsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &buffer, &length);
        fail_not_applicable("a %s datagram does not fit the socket's send buffer (%d bytes; net.core.wmem_max is %ld)",
                       size_text(size).c_str(), buffer, read_proc_number("/proc/sys/net/core/wmem_max"));
      }
      if (sent < 0) fail_errno("send (datagram)");
      fail("send (datagram): %zd of %zu bytes", sent, size);
    }
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    for (;;) {
      const ssize_t received = ::recv(fd_, scratch, size, MSG_TRUNC);
      if (received == static_cast<ssize_t>(size)) return scratch;
      if (received < 0 && errno == EINTR) continue;
      if (received < 0) fail_errno("recv (datagram)");
      fail("recv (datagram): a %zd-byte datagram, expected %zu", received, size);
    }
  }
  int pair_[2] = {-1, -1};
  int fd_ = -1;
};

// Datagrams the way unrelated processes exchange them, and the shape of a
// ferry unixgram:// endpoint (the baseline of ferry.endpoint.unixgram): each
// side binds a receiving socket to a path in the measurement's directory and
// connects a second, unbound socket to the other's path. The receiver asks
// for the sender's credentials (SO_PASSCRED) and takes them with recvmsg, as
// an endpoint attesting its senders does. Unlike a socketpair's, this
// receiver is not connected back to its sender, so the kernel holds a sender
// once net.unix.max_dgram_qlen (10) datagrams wait, instead of only when
// the send buffer is full.
struct UnixDatagramBound : TransportBase {
  static std::string path(const Spec& spec, Side side) {
    return spec.dir + (side == Side::initiator ? "/initiator.dgram" : "/responder.dgram");
  }
  void open(Side side, const Spec& spec) {
    in_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (in_ < 0) fail_errno("socket (AF_UNIX, SOCK_DGRAM)");
    const sockaddr_un address = address_of(path(spec, side));
    if (::bind(in_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      fail_errno("bind (unix datagram)");
    }
    const int one = 1;
    if (::setsockopt(in_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) fail_errno("setsockopt (SO_PASSCRED)");
  }
  void connect(Side side, const Spec& spec) {
    out_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (out_ < 0) fail_errno("socket (AF_UNIX, SOCK_DGRAM)");
    const sockaddr_un address = address_of(path(spec, side == Side::initiator ? Side::responder : Side::initiator));
    if (::connect(out_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      fail_errno("connect (unix datagram)");
    }
  }
  void send(const std::byte* message, std::size_t size) {
    for (;;) {
      const ssize_t sent = ::send(out_, message, size, MSG_NOSIGNAL);
      if (sent == static_cast<ssize_t>(size)) return;
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && errno == EMSGSIZE) {
        fail_not_applicable("a %s datagram does not fit the socket's send buffer", size_text(size).c_str());
      }
      if (sent < 0) fail_errno("send (datagram)");
      fail("send (datagram): %zd of %zu bytes", sent, size);
    }
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    for (;;) {
      iovec piece{scratch, size};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
      msghdr message{};
      message.msg_iov = &piece;
      message.msg_iovlen = 1;
      message.msg_control = control;
      message.msg_controllen = sizeof control;
      const ssize_t received = ::recvmsg(in_, &message, MSG_TRUNC | MSG_CMSG_CLOEXEC);
      if (received == static_cast<ssize_t>(size)) {
        const cmsghdr* header = CMSG_FIRSTHDR(&message);
        if (!header || header->cmsg_type != SCM_CREDENTIALS) fail("recvmsg (datagram): no SCM_CREDENTIALS");
        return scratch;
      }
      if (received < 0 && errno == EINTR) continue;
      if (received < 0) fail_errno("recvmsg (datagram)");
      fail("recvmsg (datagram): a %zd-byte datagram, expected %zu", received, size);
    }
  }
  static sockaddr_un address_of(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof address.sun_path) fail("socket path too long: %s", path.c_str());
    std::memcpy(address.sun_path, path.data(), path.size());
    return address;
  }
  int in_ = -1;
  int out_ = -1;
};

void set_no_delay(int fd) {
  const int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) fail_errno("setsockopt (TCP_NODELAY)");
}

// A connected TCP socket pair over 127.0.0.1 with TCP_NODELAY, made in A
// before B exists (both ends are inherited; each side keeps one).
void make_tcp_stream(int ends[2]) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) fail_errno("socket (AF_INET, SOCK_STREAM)");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) fail_errno("bind (127.0.0.1)");
  if (::listen(listener, 1) != 0) fail_errno("listen");
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) fail_errno("getsockname");
  ends[0] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ends[0] < 0) fail_errno("socket (AF_INET, SOCK_STREAM)");
  // The handshake completes in the kernel's backlog: connect, then accept.
  while (::connect(ends[0], reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    if (errno != EINTR) fail_errno("connect (127.0.0.1)");
  }
  while ((ends[1] = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC)) < 0) {
    if (errno != EINTR) fail_errno("accept");
  }
  ::close(listener);
  for (int i = 0; i < 2; ++i) set_no_delay(ends[i]);
}

// TCP over loopback with TCP_NODELAY: one connection used both ways.
using Tcp = DuplexStream<make_tcp_stream>;

// TCP with a connection per direction, as a ferry endpoint Sender/Receiver
// pair uses (the baseline of ferry.endpoint.tcp). This costs more than one
// connection used both ways: each direction's acknowledgements travel alone.
using TcpOneWay = OneWayStreams<make_tcp_stream>;
using TcpEpoll = OneWayStreamsEpoll<make_tcp_stream>;

// UDP over 127.0.0.1: two sockets bound to ephemeral ports and connected to
// each other. A datagram that finds the receiver's buffer full is dropped by
// the kernel, so this carries only what fits one datagram and ping-pong
// keeps at most one in flight; throughput is not measured (it would measure loss).
struct Udp : TransportBase {
  static std::string not_applicable(Pattern pattern, std::size_t size) {
    if (pattern == Pattern::throughput) return "UDP drops what the receiver has no room for: round trips only";
    if (size > 65507) return "larger than a UDP datagram (65507 bytes)";
    return {};
  }
  void prepare(const Spec&) {
    sockaddr_in addresses[2]{};
    for (int i = 0; i < 2; ++i) {
      fds_[i] = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fds_[i] < 0) fail_errno("socket (AF_INET, SOCK_DGRAM)");
      addresses[i].sin_family = AF_INET;
      addresses[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t length = sizeof addresses[i];
      if (::bind(fds_[i], reinterpret_cast<sockaddr*>(&addresses[i]), length) != 0) fail_errno("bind (udp)");
      if (::getsockname(fds_[i], reinterpret_cast<sockaddr*>(&addresses[i]), &length) != 0) fail_errno("getsockname");
    }
    for (int i = 0; i < 2; ++i) {
      if (::connect(fds_[i], reinterpret_cast<sockaddr*>(&addresses[1 - i]), sizeof addresses[0]) != 0) {
        fail_errno("connect (udp)");
      }
    }
  }
  void open(Side side, const Spec&) {
    const int mine = side == Side::initiator ? 0 : 1;
    fd_ = fds_[mine];
    ::close(fds_[1 - mine]);
  }
  void send(const std::byte* message, std::size_t size) {
    while (::send(fd_, message, size, 0) != static_cast<ssize_t>(size)) {
      if (errno != EINTR) fail_errno("send (udp)");
    }
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    for (;;) {
      const ssize_t received = ::recv(fd_, scratch, size, MSG_TRUNC);
      if (received == static_cast<ssize_t>(size)) return scratch;
      if (received < 0 && errno == EINTR) continue;
      if (received < 0) fail_errno("recv (udp)");
      fail("recv (udp): a %zd-byte datagram, expected %zu", received, size);
    }
  }
  int fds_[2] = {-1, -1};
  int fd_ = -1;
};

// POSIX message queues: one per direction, unlinked as soon as they exist.
struct PosixMq : TransportBase {
  static constexpr bool kManySenders = true;
  static std::string not_applicable(Pattern, std::size_t size) {
    const long maximum = read_proc_number("/proc/sys/fs/mqueue/msgsize_max");
    if (maximum > 0 && size > static_cast<std::size_t>(maximum) && !has_capability(kCapSysResource)) {
      char text[200];
      std::snprintf(text, sizeof text,
                    "%s exceeds fs.mqueue.msgsize_max (%ld); a larger queue needs CAP_SYS_RESOURCE, which this "
                    "process lacks",
                    size_text(size).c_str(), maximum);
      return text;
    }
    return {};
  }
  void prepare(const Spec& spec) {
    long depth = static_cast<long>(queue_depth(spec));
    const long msg_max = read_proc_number("/proc/sys/fs/mqueue/msg_max");
    if (msg_max > 0 && !has_capability(kCapSysResource)) depth = std::min(depth, msg_max);
    mq_attr attributes{};
    attributes.mq_maxmsg = depth;
    attributes.mq_msgsize = static_cast<long>(spec.size);
    for (int i = 0; i < 2; ++i) {
      char name[96];
      std::snprintf(name, sizeof name, "/ferry-bench.%d.%llu.%d", static_cast<int>(::getpid()),
                    static_cast<unsigned long long>(spec.serial), i);
      queues_[i] = ::mq_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &attributes);
      if (queues_[i] == static_cast<mqd_t>(-1)) {
        const int error = errno;
        if (error == EINVAL || error == EMFILE || error == ENOMEM) {
          fail_not_applicable("mq_open (%ld messages of %s): %s", depth, size_text(spec.size).c_str(), std::strerror(error));
        }
        errno = error;
        fail_errno("mq_open");
      }
      ::mq_unlink(name);  // the descriptors (inherited by fork) keep them alive
    }
  }
  void open(Side side, const Spec&) {
    out_ = queues_[side == Side::initiator ? 0 : 1];
    in_ = queues_[side == Side::initiator ? 1 : 0];
  }
  void send(const std::byte* message, std::size_t size) {
    while (::mq_send(out_, reinterpret_cast<const char*>(message), size, 0) != 0) {
      if (errno != EINTR) fail_errno("mq_send");
    }
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    for (;;) {
      const ssize_t received = ::mq_receive(in_, reinterpret_cast<char*>(scratch), size, nullptr);
      if (received == static_cast<ssize_t>(size)) return scratch;
      if (received < 0 && errno == EINTR) continue;
      if (received < 0) fail_errno("mq_receive");
      fail("mq_receive: %zd bytes, expected %zu", received, size);
    }
  }
  mqd_t queues_[2] = {static_cast<mqd_t>(-1), static_cast<mqd_t>(-1)};
  mqd_t out_ = static_cast<mqd_t>(-1);
  mqd_t in_ = static_cast<mqd_t>(-1);
};

// System V message queue: one private queue, message type 1 towards the
// responder, 2 towards the initiator.
struct SysvMq : TransportBase {
  static constexpr bool kManySenders = true;
  static std::string not_applicable(Pattern, std::size_t size) {
    const long maximum = read_proc_number("/proc/sys/kernel/msgmax");
    const long queue_bytes = read_proc_number("/proc/sys/kernel/msgmnb");
    if (maximum > 0 && size > static_cast<std::size_t>(maximum)) {
      char text[160];
      std::snprintf(text, sizeof text, "%s exceeds kernel.msgmax (%ld)", size_text(size).c_str(), maximum);
      return text;
    }
    if (queue_bytes > 0 && size > static_cast<std::size_t>(queue_bytes)) {
      char text[160];
      std::snprintf(text, sizeof text, "%s exceeds kernel.msgmnb (%ld)", size_text(size).c_str(), queue_bytes);
      return text;
    }
    return {};
  }
  void prepare(const Spec& spec) {
    queue_ = ::msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (queue_ < 0) fail_errno("msgget");
    detail::register_sysv_queue(queue_);
    outgoing_.resize(sizeof(long) + spec.size);
    incoming_.resize(sizeof(long) + spec.size);
  }
  void open(Side side, const Spec&) {
    out_type_ = side == Side::initiator ? 1 : 2;
    in_type_ = side == Side::initiator ? 2 : 1;
    std::memcpy(outgoing_.data(), &out_type_, sizeof out_type_);
  }
  void send(const std::byte* message, std::size_t size) {
    std::memcpy(outgoing_.data() + sizeof(long), message, size);
    while (::msgsnd(queue_, outgoing_.data(), size, 0) != 0) {
      if (errno == EINVAL) fail_not_applicable("msgsnd (%s): %s", size_text(size).c_str(), std::strerror(errno));
      if (errno != EINTR) fail_errno("msgsnd");
    }
  }
  const std::byte* receive(std::byte*, std::size_t size) {
    for (;;) {
      const ssize_t received = ::msgrcv(queue_, incoming_.data(), size, in_type_, 0);
      if (received == static_cast<ssize_t>(size)) return incoming_.data() + sizeof(long);
      if (received < 0 && errno == EINTR) continue;
      if (received < 0) fail_errno("msgrcv");
      fail("msgrcv: %zd bytes, expected %zu", received, size);
    }
  }
  void close(Side side) {
    if (side == Side::initiator) ::msgctl(queue_, IPC_RMID, nullptr);
  }
  int queue_ = -1;
  long out_type_ = 1;
  long in_type_ = 2;
  std::vector<std::byte> outgoing_;  // long mtype, then the payload
  std::vector<std::byte> incoming_;
};

}  // namespace

void add_os_transports(std::vector<TransportInfo>& list) {
  auto eventfd = make_transport<EventFd>("eventfd", Group::os,
                                         "two eventfds; the counter carries the sequence number (no payload)");
  list.push_back(std::move(eventfd));
  list.push_back(make_transport<Pipe>("pipe", Group::os, "two anonymous pipes, default capacity (64 KiB)"));
  list.push_back(make_transport<PipeEpoll>("pipe.epoll", Group::os,
                                         "two anonymous pipes; the reader waits in epoll_wait before each read"));
  list.push_back(make_transport<Fifo>("fifo", Group::os, "two named pipes in a private temporary directory"));
  list.push_back(make_transport<UnixStream>("unix.stream", Group::os, "socketpair(AF_UNIX, SOCK_STREAM)"));
  list.push_back(make_transport<UnixDatagram>(
      "unix.dgram", Group::os, "socketpair(AF_UNIX, SOCK_DGRAM); SO_SNDBUF raised when a datagram needs it"));
  list.push_back(make_transport<UnixDatagramBound>(
      "unix.dgram.bound", Group::os,
      "AF_UNIX datagrams to a bound path from a connected socket; SO_PASSCRED, recvmsg (unixgram:// endpoints' calls)"));
  list.push_back(make_transport<UnixStreamOneWay>(
      "unix.stream.oneway", Group::os, "a socketpair(AF_UNIX, SOCK_STREAM) per direction, each used one way"));
  list.push_back(make_transport<UnixStreamEpoll>(
      "unix.stream.epoll", Group::os, "as unix.stream.oneway; the reader waits in epoll_wait before each read"));
  list.push_back(make_transport<Tcp>("tcp", Group::os, "TCP over 127.0.0.1, TCP_NODELAY"));
  list.push_back(make_transport<TcpOneWay>("tcp.oneway", Group::os,
                                           "TCP over 127.0.0.1, TCP_NODELAY, a connection per direction"));
  list.push_back(make_transport<TcpEpoll>("tcp.epoll", Group::os,
                                          "as tcp.oneway; the reader waits in epoll_wait before each read"));
  list.push_back(make_transport<Udp>("udp", Group::os, "two connected UDP sockets on 127.0.0.1"));
  list.push_back(make_transport<PosixMq>("posix.mq", Group::os,
                                         "two POSIX message queues, as deep as fs.mqueue.msg_max allows"));
  list.push_back(make_transport<SysvMq>("sysv.mq", Group::os, "one System V queue, a message type per direction"));
}

}  // namespace ferry::bench
