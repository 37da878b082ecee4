// nng.ipc: NNG (Debian: libnng-dev), a pair1 socket over ipc:// in the
// measurement's directory; the initiator listens, the responder dials. The
// sender copies with nng_send; the receiver takes an nng_msg and reads it in
// place. Buffers hold the common queue depth (about 4 MiB of messages, 4..256);
// the receive size limit is lifted (its default is 1 MiB including headers);
// timeouts equal the watchdog, so a lost peer is an error, never a hang.
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

[[noreturn]] void fail_nng(const char* what, int error) { fail("%s: %s", what, nng_strerror(error)); }

struct Nng : TransportBase {
  void open(Side side, const Spec& spec) {
    int error = nng_pair1_open(&socket_);
    if (error != 0) fail_nng("nng_pair1_open", error);
    const int depth = static_cast<int>(queue_depth(spec));
    const nng_duration timeout_ms = static_cast<nng_duration>(spec.watchdog_s * 1000);
    if ((error = nng_socket_set_int(socket_, NNG_OPT_SENDBUF, depth)) != 0 ||
        (error = nng_socket_set_int(socket_, NNG_OPT_RECVBUF, depth)) != 0 ||
        (error = nng_socket_set_ms(socket_, NNG_OPT_SENDTIMEO, timeout_ms)) != 0 ||
        (error = nng_socket_set_ms(socket_, NNG_OPT_RECVTIMEO, timeout_ms)) != 0 ||
        (error = nng_socket_set_ms(socket_, NNG_OPT_RECONNMINT, 1)) != 0 ||
        (error = nng_socket_set_size(socket_, NNG_OPT_RECVMAXSZ, 0)) != 0) {
      fail_nng("nng_socket_set", error);
    }
    url_ = "ipc://" + spec.dir + "/nng.sock";
    if (side == Side::initiator && (error = nng_listen(socket_, url_.c_str(), nullptr, 0)) != 0) {
      fail_nng("nng_listen", error);
    }
  }
  void connect(Side side, const Spec&) {
    if (side == Side::responder) {
      const int error = nng_dial(socket_, url_.c_str(), nullptr, 0);
      if (error != 0) fail_nng("nng_dial", error);
    }
  }
  void send(const std::byte* message, std::size_t size) {
    // nng_send takes a non-const pointer but only reads it without NNG_FLAG_ALLOC.
    const int error = nng_send(socket_, const_cast<std::byte*>(message), size, 0);
    if (error != 0) fail_nng("nng_send", error);
  }
  const std::byte* receive(std::byte*, std::size_t size) {
    if (incoming_ != nullptr) nng_msg_free(incoming_);
    incoming_ = nullptr;
    const int error = nng_recvmsg(socket_, &incoming_, 0);
    if (error != 0) fail_nng("nng_recvmsg", error);
    if (nng_msg_len(incoming_) != size) fail("nng_recvmsg: %zu bytes, expected %zu", nng_msg_len(incoming_), size);
    return static_cast<const std::byte*>(nng_msg_body(incoming_));
  }
  void close(Side) {
    if (incoming_ != nullptr) nng_msg_free(incoming_);
    incoming_ = nullptr;
    nng_close(socket_);
  }
  nng_socket socket_ = NNG_SOCKET_INITIALIZER;
  nng_msg* incoming_ = nullptr;
  std::string url_;
};

}  // namespace

void add_nng_transport(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<Nng>("nng.ipc", Group::peer, "NNG pair1 over ipc://; receive in place (nng_recvmsg)"));
}

}  // namespace ferry::bench
