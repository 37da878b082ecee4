// ZeroMQ (libzmq; Debian: libzmq3-dev) over ipc:// in the measurement's
// directory. Each process makes its own context after the fork (contexts do
// not survive fork). The sender copies with zmq_send; the receiver takes the
// message with zmq_msg_recv and reads it in place. High-water marks are set
// to the common queue depth (about 4 MiB of messages, 4..256), timeouts to
// the watchdog so that a lost peer is an error, never a hang.
//
// zmq.ipc: a ZMQ_PAIR socket each side (the initiator binds, the responder
// connects), the generic patterns.
// zmq.reqrep: ZMQ_REQ callers and one ZMQ_REP server that binds, measured as
// ferry's rpc is (transports_rpc.cpp; kServes in ipc_worker.hpp): send() is
// a whole request/reply exchange, the server echoes each request. Every
// calling process opens its own REQ socket at its first call, so that the
// senders the initiator forks for a stream never share one.
#include <zmq.h>

#include <cerrno>
#include <optional>
#include <string>

#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

[[noreturn]] void fail_zmq(const char* what) { fail("%s: %s", what, zmq_strerror(zmq_errno())); }

// A context with one socket of `type`, set up as the comment above says.
class ZmqSocket {
 public:
  ZmqSocket(int type, const Spec& spec) : context_(zmq_ctx_new()) {
    if (context_ == nullptr) fail_zmq("zmq_ctx_new");
    socket_ = zmq_socket(context_, type);
    if (socket_ == nullptr) fail_zmq("zmq_socket");
    const int depth = static_cast<int>(queue_depth(spec));
    const int timeout_ms = static_cast<int>(spec.watchdog_s * 1000);
    // A REP server's last reply may still be on its way out when the server
    // closes (a 1 MiB one was dropped and its caller waited for it until the
    // watchdog): its close waits for it to go, as long as the watchdog would.
    // Everything else is dropped at once.
    const int linger = type == ZMQ_REP ? timeout_ms : 0;
    const int reconnect_ms = 1;
    if (zmq_setsockopt(socket_, ZMQ_SNDHWM, &depth, sizeof depth) != 0 ||
        zmq_setsockopt(socket_, ZMQ_RCVHWM, &depth, sizeof depth) != 0 ||
        zmq_setsockopt(socket_, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
        zmq_setsockopt(socket_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
        zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(socket_, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms) != 0) {
      fail_zmq("zmq_setsockopt");
    }
    if (zmq_msg_init(&incoming_) != 0) fail_zmq("zmq_msg_init");
  }
  ~ZmqSocket() {
    zmq_msg_close(&incoming_);
    zmq_close(socket_);
    zmq_ctx_term(context_);
  }
  ZmqSocket(const ZmqSocket&) = delete;
  ZmqSocket& operator=(const ZmqSocket&) = delete;

  static std::string address(const Spec& spec) { return "ipc://" + spec.dir + "/zmq.sock"; }
  void bind(const Spec& spec) {
    if (zmq_bind(socket_, address(spec).c_str()) != 0) fail_zmq("zmq_bind");
  }
  void connect(const Spec& spec) {
    if (zmq_connect(socket_, address(spec).c_str()) != 0) fail_zmq("zmq_connect");
  }

  void send(const std::byte* message, std::size_t size) {
    while (zmq_send(socket_, message, size, 0) < 0) {
      if (zmq_errno() == EAGAIN) fail("zmq_send: no progress within the watchdog time");
      if (zmq_errno() != EINTR) fail_zmq("zmq_send");
    }
  }
  const std::byte* receive(std::size_t size) {
    int received = 0;
    while ((received = zmq_msg_recv(&incoming_, socket_, 0)) < 0) {
      if (zmq_errno() == EAGAIN) fail("zmq_msg_recv: nothing within the watchdog time");
      if (zmq_errno() != EINTR) fail_zmq("zmq_msg_recv");
    }
    if (static_cast<std::size_t>(received) != size) fail("zmq_msg_recv: %d bytes, expected %zu", received, size);
    return static_cast<const std::byte*>(zmq_msg_data(&incoming_));
  }

 private:
  void* context_;
  void* socket_ = nullptr;
  zmq_msg_t incoming_{};
};

struct ZmqPair : TransportBase {
  void open(Side side, const Spec& spec) {
    socket_.emplace(ZMQ_PAIR, spec);
    if (side == Side::initiator) socket_->bind(spec);
  }
  void connect(Side side, const Spec& spec) {
    if (side == Side::responder) socket_->connect(spec);
  }
  void send(const std::byte* message, std::size_t size) { socket_->send(message, size); }
  const std::byte* receive(std::byte*, std::size_t size) { return socket_->receive(size); }
  void close(Side) { socket_.reset(); }
  std::optional<ZmqSocket> socket_;
};

struct ZmqReqRep : TransportBase {
  static constexpr bool kServes = true;
  static constexpr bool kManySenders = true;

  void open(Side side, const Spec& spec) {
    spec_ = &spec;
    if (side == Side::responder) {
      socket_.emplace(ZMQ_REP, spec);
      socket_->bind(spec);
    }
  }
  // The server: each request taken and echoed at once.
  void serve(const Spec& spec, SharedArea& area) {
    detail::ResponderTally tally(spec);
    for (bool last = false; !last;) {
      const std::byte* request = socket_->receive(spec.size);
      last = tally.take(request);
      socket_->send(request, spec.size);
    }
    tally.record(area);
  }
  // A call: the request out, the reply in (handed out by receive()).
  void send(const std::byte* message, std::size_t size) {
    if (!socket_) {
      socket_.emplace(ZMQ_REQ, *spec_);
      socket_->connect(*spec_);
    }
    socket_->send(message, size);
    reply_ = socket_->receive(size);
  }
  const std::byte* receive(std::byte*, std::size_t) { return reply_; }
  void close(Side) { socket_.reset(); }

  const Spec* spec_ = nullptr;
  std::optional<ZmqSocket> socket_;
  const std::byte* reply_ = nullptr;
};

}  // namespace

void add_zmq_transports(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<ZmqPair>("zmq.ipc", Group::peer, "ZeroMQ ZMQ_PAIR over ipc://; receive in place (zmq_msg_recv)"));
  list.push_back(make_transport<ZmqReqRep>("zmq.reqrep", Group::peer,
                                           "ZeroMQ ZMQ_REQ callers, a ZMQ_REP echo server, over ipc://; calls back to back"));
}

}  // namespace ferry::bench
