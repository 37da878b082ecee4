// ferry send / recv to endpoint strings, listen and pipe: the Sender and
// Receiver interface (ferry/messaging/endpoints.hpp) from the command line.
// A bare NAME is a mailbox: send and recv keep their mailbox code
// (mailboxes.cpp, with leases); listen and pipe open it as shm://NAME.
#include <signal.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "commands.hpp"
#include "ferry/messaging/endpoints.hpp"
#include "format.hpp"

namespace ferry::cli {
namespace {

// listen and pipe run until a signal; SIGINT and SIGTERM end them as their
// count or timeout would (a UNIX socket file is removed, the tally printed).
volatile std::sig_atomic_t stop_requested = 0;

extern "C" void request_stop(int) { stop_requested = 1; }

void stop_on_signals() {
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  for (const int signal_number : {SIGINT, SIGTERM}) (void)::sigaction(signal_number, &action, nullptr);
}

// How often a wait looks at stop_requested: a receiver retries its wait
// after EINTR, so a signal alone does not end it.
constexpr auto kSignalCheck = std::chrono::milliseconds(100);

// The next message by `until` (none: for ever) as `receive(receiver, slice)`
// gives it: timed_out once `until` passed; nothing once a signal asked to stop.
template <class Received, class Receive>
result<std::optional<Received>> next_within(Receiver& receiver, std::optional<deadline> until, Receive&& receive) {
  for (;;) {
    if (stop_requested) return std::optional<Received>();
    deadline slice = deadline_after(kSignalCheck);
    if (until && *until < slice) slice = *until;
    result<Received> message = receive(receiver, slice);
    if (message) return std::optional<Received>(std::move(*message));
    if (message.error().code() != errc::timed_out || (until && steady_clock::now() >= *until)) {
      return std::move(message).error();
    }
  }
}

result<std::optional<EndpointMessage>> next_message(Receiver& receiver, std::optional<deadline> until) {
  return next_within<EndpointMessage>(receiver, until,
                                      [](Receiver& from, deadline slice) { return from.receive_until(slice); });
}

// As next_message, with the message left at the source until it is acked.
result<std::optional<HeldMessage>> next_held(Receiver& receiver, std::optional<deadline> until) {
  return next_within<HeldMessage>(receiver, until, [](Receiver& from, deadline slice) {
    return from.receive_held(detail::WaitLimit::at(slice));
  });
}

// An endpoint string, or a mailbox name as shm://NAME (it must exist, as
// for send and recv: a shm:// receiver would create it).
result<Endpoint> endpoint_of(const std::string& target) {
  if (is_endpoint(target)) return Endpoint::parse(target);
  auto mailbox = Mailbox::open(target, {.allow_foreign_owner = true});
  if (!mailbox) return std::move(mailbox).error();
  Endpoint endpoint;
  endpoint.scheme = Endpoint::Scheme::shm;
  endpoint.name = target;
  return endpoint;
}

result<std::unique_ptr<Receiver>> open_receiver_at(const std::string& target) {
  auto endpoint = endpoint_of(target);
  if (!endpoint) return std::move(endpoint).error();
  return open_receiver(*endpoint);
}

// Says where a receiver listens (a tcp or udp port 0 is the bound port
// now), on stderr: stdout carries the messages.
void announce(const char* command, const Receiver& receiver) {
  std::fprintf(stderr, "%s: listening at %s\n", command, receiver.endpoint().to_string().c_str());
  std::fflush(stderr);
}

result<void> write_message(const EndpointMessage& message, bool json) {
  if (!json) return print_message(message.data(), nullptr);
  nlohmann::json fields{{"priority", message.priority()},
                        {"urgent", message.urgent()},
                        {"sender", message.sender() ? sender_json(*message.sender()) : nlohmann::json()},
                        {"origin", message.origin()}};
  if (!message.user().empty()) fields["user"] = message.user();  // nats: the attested NATS user
  if (!message.message_id().empty()) fields["message_id"] = message.message_id();
  return print_message(message.data(), &fields);
}

// Messages until `count` (0: no limit), `until` or a signal; a pipe whose
// writers all closed ends it too. `handle` takes each (an EndpointMessage,
// or a HeldMessage when `Held`).
template <class Message>
int receive_until_done(const char* command, Receiver& receiver, std::size_t count, std::optional<deadline> until,
                       const std::function<result<void>(Message&)>& handle) {
  for (std::size_t received = 0; count == 0 || received < count; ++received) {
    auto next = [&] {
      if constexpr (std::is_same_v<Message, HeldMessage>) {
        return next_held(receiver, until);
      } else {
        return next_message(receiver, until);
      }
    }();
    if (!next) {
      const errc code = next.error().code();
      // The time is up, or every writer of a pipe is gone: a normal end.
      if (code == errc::timed_out || (code == errc::peer_gone && receiver.endpoint().scheme == Endpoint::Scheme::pipe)) {
        return 0;
      }
      return fail(command, next.error());
    }
    if (!*next) return 0;
    if (auto handled = handle(**next); !handled) return fail(command, handled.error());
  }
  return 0;
}

std::optional<deadline> deadline_of(const std::optional<double>& timeout_seconds) {
  if (!timeout_seconds) return std::nullopt;
  return deadline_after(to_duration(*timeout_seconds));
}

}  // namespace

bool is_endpoint(const std::string& target) {
  return target.find("://") != std::string::npos || target.starts_with("pipe:");
}

int send_to_endpoint(const SendMessagesOptions& options) {
  auto sender = open_sender(options.name);
  if (!sender) return fail("ferry send", sender.error());
  const EndpointSendOptions how{.priority = options.priority, .urgent = options.urgent};
  return send_each(options, [&](std::span<const std::byte> bytes) {
    return options.timeout_seconds ? (*sender)->send_for(bytes, to_duration(*options.timeout_seconds), how)
                                   : (*sender)->send(bytes, how);
  });
}

int receive_from_endpoint(const ReceiveMessagesOptions& options) {
  auto receiver = open_receiver(options.name);
  if (!receiver) return fail("ferry recv", receiver.error());
  announce("ferry recv", **receiver);
  return receive_each(options, [&]() -> result<bool> {
    // As for mailboxes: --timeout bounds the wait for each message; --count 0
    // without it ends once nothing waits.
    auto next = options.timeout_seconds || options.count != 0
                    ? next_message(**receiver, deadline_of(options.timeout_seconds))
                    : (*receiver)->try_receive();
    if (!next) return std::move(next).error();
    if (!*next) return false;
    if (auto written = write_message(**next, options.json); !written) return std::move(written).error();
    return true;
  });
}

int listen_endpoint(const ListenEndpointOptions& options) {
  const std::optional<deadline> until = deadline_of(options.timeout_seconds);
  auto receiver = open_receiver_at(options.endpoint);
  if (!receiver) return fail("ferry listen", receiver.error());
  stop_on_signals();
  announce("ferry listen", **receiver);
  return receive_until_done<EndpointMessage>(
      "ferry listen", **receiver, options.count, until,
      [&](EndpointMessage& message) { return write_message(message, options.json); });
}

int pipe_endpoints(const PipeEndpointsOptions& options) {
  const std::optional<deadline> until = deadline_of(options.timeout_seconds);
  auto receiver = open_receiver_at(options.source);
  if (!receiver) return fail("ferry pipe", receiver.error());
  auto destination = is_endpoint(options.destination) ? Endpoint::parse(options.destination)
                                                      : Endpoint::parse("shm://" + options.destination);
  if (!destination) return fail("ferry pipe", destination.error());
  auto sender = open_sender(*destination);
  if (!sender) return fail("ferry pipe", sender.error());
  stop_on_signals();
  announce("ferry pipe", **receiver);
  std::size_t forwarded = 0;
  // Each message goes on with its priority, urgency and id, and leaves the
  // source (shm and nats: its lease is acked) only after the destination took
  // it: a bridge killed at any point loses nothing; what it had sent but not
  // acked comes again, and a nats destination stores it once (by its id). A
  // destination that cannot take a message (an urgent one to udp) ends the
  // pipe with the error, the message back at the source.
  const int status = receive_until_done<HeldMessage>(
      "ferry pipe", **receiver, options.count, until, [&](HeldMessage& held) -> result<void> {
        const EndpointMessage& message = held.message();
        auto sent = (*sender)->send(message.data(), {.priority = message.priority(),
                                                     .urgent = message.urgent(),
                                                     .message_id = message.message_id()});
        if (!sent) return sent;
        if (auto acked = held.ack(); !acked) return acked;
        ++forwarded;
        return {};
      });
  if (options.json) {
    std::printf("%s\n", nlohmann::json{{"forwarded", forwarded}}.dump().c_str());
  } else {
    std::printf("forwarded %zu message%s from %s to %s\n", forwarded, forwarded == 1 ? "" : "s",
                (*receiver)->endpoint().to_string().c_str(), (*sender)->endpoint().to_string().c_str());
  }
  return status;
}

}  // namespace ferry::cli
