// zmq.ipc: ZeroMQ (libzmq; Debian: libzmq3-dev), a ZMQ_PAIR socket over
// ipc:// in the measurement's directory. Each process makes its own context
// after the fork (contexts do not survive fork). The initiator binds, the
// responder connects. The sender copies with zmq_send; the receiver takes the
// message with zmq_msg_recv and reads it in place. High-water marks are set to
// the common queue depth (about 4 MiB of messages, 4..256), timeouts to the
// watchdog so that a lost peer is an error, never a hang.
#include <zmq.h>

#include <cerrno>

#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

[[noreturn]] void fail_zmq(const char* what) { fail("%s: %s", what, zmq_strerror(zmq_errno())); }

struct Zmq : TransportBase {
  void open(Side side, const Spec& spec) {
    context_ = zmq_ctx_new();
    if (context_ == nullptr) fail_zmq("zmq_ctx_new");
    socket_ = zmq_socket(context_, ZMQ_PAIR);
    if (socket_ == nullptr) fail_zmq("zmq_socket(ZMQ_PAIR)");
    const int depth = static_cast<int>(queue_depth(spec.size));
    const int timeout_ms = static_cast<int>(spec.watchdog_s * 1000);
    const int linger = 0;
    const int reconnect_ms = 1;
    if (zmq_setsockopt(socket_, ZMQ_SNDHWM, &depth, sizeof depth) != 0 ||
        zmq_setsockopt(socket_, ZMQ_RCVHWM, &depth, sizeof depth) != 0 ||
        zmq_setsockopt(socket_, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
        zmq_setsockopt(socket_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
        zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(socket_, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms) != 0) {
      fail_zmq("zmq_setsockopt");
    }
    endpoint_ = "ipc://" + spec.dir + "/zmq.sock";
    if (side == Side::initiator && zmq_bind(socket_, endpoint_.c_str()) != 0) fail_zmq("zmq_bind");
    if (zmq_msg_init(&incoming_) != 0) fail_zmq("zmq_msg_init");
  }
  void connect(Side side, const Spec&) {
    if (side == Side::responder && zmq_connect(socket_, endpoint_.c_str()) != 0) fail_zmq("zmq_connect");
  }
  void send(const std::byte* message, std::size_t size) {
    while (zmq_send(socket_, message, size, 0) < 0) {
      if (zmq_errno() == EAGAIN) fail("zmq_send: no progress within the watchdog time");
      if (zmq_errno() != EINTR) fail_zmq("zmq_send");
    }
  }
  const std::byte* receive(std::byte*, std::size_t size) {
    int received = 0;
    while ((received = zmq_msg_recv(&incoming_, socket_, 0)) < 0) {
      if (zmq_errno() == EAGAIN) fail("zmq_msg_recv: nothing within the watchdog time");
      if (zmq_errno() != EINTR) fail_zmq("zmq_msg_recv");
    }
    if (static_cast<std::size_t>(received) != size) fail("zmq_msg_recv: %d bytes, expected %zu", received, size);
    return static_cast<const std::byte*>(zmq_msg_data(&incoming_));
  }
  void close(Side) {
    zmq_msg_close(&incoming_);
    zmq_close(socket_);
    zmq_ctx_term(context_);
  }
  void* context_ = nullptr;
  void* socket_ = nullptr;
  zmq_msg_t incoming_{};
  std::string endpoint_;
};

}  // namespace

void add_zmq_transport(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<Zmq>("zmq.ipc", Group::peer, "ZeroMQ ZMQ_PAIR over ipc://; receive in place (zmq_msg_recv)"));
}

}  // namespace ferry::bench
