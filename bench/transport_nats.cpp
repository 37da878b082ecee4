// ferry.mailbox.nats: ferry::nats::Mailbox (include/ferry/nats/mailbox.hpp) on
// the nats-server the coordinator starts for the run (ipc_bench.cpp: loopback,
// a free port, JetStream with file storage, the default, in a temporary
// directory). Built only when the nats backend is (ferry::nats, nats.c found).
//
// The shape of ferry.mailbox.*: one mailbox per direction, each message sent
// with send() (a JetStream publish that returns once the server stored it),
// and taken by receive() (a pull from the mailbox's consumer, woken by its
// doorbell) and acked at once, the ack confirmed by the server (as the shm
// Mailbox's receive() is a lease acknowledged at once). The received copy is
// read in place until the next receive.
//
// Mailboxes are made with the defaults a user gets (4 priority bands, file
// storage, one replica) except for a capacity of queue_depth(spec) messages
// (like ferry.mailbox.*): a sender ahead of its receiver waits for room, so a
// stream's backlog, drained after the timed part, stays small.
//
// nats.c's connection (and its threads) must not cross fork(): prepare() only
// chooses the names; each process connects in open(), after the fork. A
// creates both mailboxes there (before B opens them) and removes them in
// close(), after B is done. Whatever a killed measurement leaves on the
// server goes with the server's directory at the end of the run.
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "ferry/nats/connection.hpp"
#include "ferry/nats/mailbox.hpp"
#include "ipc_transports.hpp"

namespace ferry::bench {
namespace {

// nats-server's default max_payload (the bench starts it with the defaults),
// less the room a nats Mailbox keeps for its headers.
constexpr std::size_t kMaxNatsMessage = (std::size_t{1} << 20) - 1024;

struct NatsMailboxTransport : TransportBase {
  static std::string not_applicable(Pattern, std::size_t size) {
    if (size > kMaxNatsMessage) {
      return "above what a nats Mailbox carries with nats-server's default max_payload (1 MiB, less 1 KiB for headers)";
    }
    return {};
  }

  void prepare(const Spec& spec) {
    const std::string base = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(spec.serial);
    names_[0] = base + "-ab";
    names_[1] = base + "-ba";
  }

  void open(Side side, const Spec& spec) {
    if (spec.nats_url.empty()) fail("no nats-server for this run (the coordinator did not start one)");
    auto address = nats::Address::parse(spec.nats_url);
    if (!address) fail("%s", address.error().message().c_str());
    auto connection = nats::Connection::connect(*address);
    if (!connection) fail("%s", connection.error().message().c_str());
    connection_.emplace(std::move(*connection));
    const nats::MailboxOptions options{.capacity = queue_depth(spec),
                                       .max_message = std::max<std::size_t>(spec.size, 64)};
    for (int direction = 0; direction < 2; ++direction) {
      auto box = side == Side::initiator ? nats::Mailbox::create(*connection_, names_[direction], options)
                                         : nats::Mailbox::open(*connection_, names_[direction]);
      if (!box) fail("%s", box.error().message().c_str());
      boxes_[direction].emplace(std::move(*box));
    }
    out_ = side == Side::initiator ? 0 : 1;
  }

  void send(const std::byte* message, std::size_t size) {
    if (auto sent = boxes_[out_]->send({message, size}); !sent) fail("%s", sent.error().message().c_str());
  }

  const std::byte* receive(std::byte*, std::size_t size) {
    auto message = boxes_[1 - out_]->receive();
    if (!message) fail("%s", message.error().message().c_str());
    if (auto acked = message->ack(); !acked) fail("%s", acked.error().message().c_str());
    if (message->size() != size) fail("received %zu bytes, expected %zu", message->size(), size);
    last_.emplace(std::move(*message));  // acked; its bytes stay valid until the next receive
    return last_->data().data();
  }

  void close(Side side) {
    last_.reset();
    for (auto& box : boxes_) box.reset();
    if (side == Side::initiator && connection_) {
      for (const std::string& name : names_) (void)nats::Mailbox::destroy(*connection_, name);
    }
    connection_.reset();
  }

  std::string names_[2];
  std::optional<nats::Connection> connection_;
  std::optional<nats::Mailbox> boxes_[2];
  std::optional<nats::Message> last_;
  int out_ = 0;
};

TransportInfo with_nats_server(TransportInfo info) {
  info.needs_nats_server = true;
  return info;
}

}  // namespace

void add_nats_transport(std::vector<TransportInfo>& list) {
  list.push_back(with_nats_server(make_transport<NatsMailboxTransport>(
      "ferry.mailbox.nats", Group::ferry,
      "ferry::nats::Mailbox on JetStream (file storage, nats-server on loopback): send stored, receive + ack confirmed")));
}

}  // namespace ferry::bench
