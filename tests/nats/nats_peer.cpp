// A separate process for the nats:// process tests (exec'd, never forked: a
// process with nats.c's threads must not fork and go on using it).
//
//   ferry_nats_peer hold URL OUT        receive one message, write "ID DELIVERIES\n" to OUT, then wait to be killed
//   ferry_nats_peer drain URL OUT MS    receive and ack until nothing came for MS ms; one "ID DELIVERIES\n" per message
//   ferry_nats_peer send URL COUNT TAG [OUT]  send COUNT messages "TAG-i" (ids TAG-i); each one the
//                                       mailbox confirmed stored is written to OUT ("ID 0\n")
//   ferry_nats_peer drain-until URL OUT STOP  as drain, until the file STOP exists
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ferry/nats/mailbox.hpp"

namespace {

int fail(const ferry::error& failure) {
  std::fprintf(stderr, "ferry_nats_peer: %s\n", failure.message().c_str());
  return 2;
}

std::span<const std::byte> bytes(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: ferry_nats_peer hold|drain|send URL ...\n");
    return 2;
  }
  const std::string_view role = argv[1];
  auto mailbox = ferry::nats::Mailbox::open(argv[2]);
  if (!mailbox) return fail(mailbox.error());

  if (role == "send") {
    const long count = std::atol(argv[3]);
    std::FILE* confirmed = argc > 5 ? std::fopen(argv[5], "w") : nullptr;
    for (long i = 0; i < count; ++i) {
      const std::string text = std::string(argv[4]) + "-" + std::to_string(i);
      if (auto sent = mailbox->send(bytes(text), {.message_id = text}); !sent) return fail(sent.error());
      if (confirmed != nullptr) {
        std::fprintf(confirmed, "%s 0\n", text.c_str());
        std::fflush(confirmed);
      }
    }
    if (confirmed != nullptr) std::fclose(confirmed);
    return 0;
  }

  std::FILE* out = std::fopen(argv[3], "w");
  if (out == nullptr) return 2;
  if (role == "hold") {
    auto message = mailbox->receive_for(std::chrono::seconds(30));
    if (!message) return fail(message.error());
    std::fprintf(out, "%s %llu\n", message->message_id().c_str(),
                 static_cast<unsigned long long>(message->delivery_count()));
    std::fclose(out);
    for (;;) ::pause();  // holding the lease until SIGKILL
  }
  if ((role == "drain" || role == "drain-until") && argc == 5) {
    const bool until_stopped = role == "drain-until";
    const auto idle = until_stopped ? std::chrono::milliseconds(200) : std::chrono::milliseconds(std::atol(argv[4]));
    for (;;) {
      auto message = mailbox->receive_for(idle);
      if (!message) {
        if (message.error().code() != ferry::errc::timed_out) return fail(message.error());
        if (!until_stopped || ::access(argv[4], F_OK) == 0) break;
        continue;
      }
      // The payload must be the id (the senders make it so): a mismatch is a torn or misrouted message.
      const std::string_view payload(reinterpret_cast<const char*>(message->data().data()), message->size());
      if (payload != message->message_id()) {
        std::fprintf(stderr, "payload '%.*s' under id '%s'\n", static_cast<int>(payload.size()), payload.data(),
                     message->message_id().c_str());
        return 3;
      }
      // An ack lost in a failover: the message may come again (at-least-once); it was received all the same.
      if (auto acked = message->ack(); !acked) std::fprintf(stderr, "ack: %s\n", acked.error().message().c_str());
      std::fprintf(out, "%s %llu\n", message->message_id().c_str(),
                   static_cast<unsigned long long>(message->delivery_count()));
      std::fflush(out);
    }
    std::fclose(out);
    return 0;
  }
  std::fprintf(stderr, "ferry_nats_peer: unknown role %s\n", argv[1]);
  return 2;
}
