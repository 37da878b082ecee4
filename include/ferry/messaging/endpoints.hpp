// Senders and receivers for every endpoint, shm:// (a Mailbox) included:
// the factories a program calls, so that moving from shm:// to unix:// to
// tcp:// is a change of the string (see ferry/transport/endpoint.hpp for the
// endpoints, the Sender/Receiver interface and the guarantees).
//
//   auto receiver = ferry::open_receiver("shm://orders");   // opens or creates the mailbox
//   auto sender = ferry::open_sender("shm://orders");       // opens it
//
// shm:// receivers open the mailbox, or create it with `mailbox` (when it
// does not exist yet); it stays (kernel persistence) after the receiver is
// gone, until Mailbox::destroy or `ferry rm`. shm:// senders open it:
// not_found when nobody created it. A shm message carries the Mailbox's
// attested sender, its priority orders delivery, and urgent overtakes.
//
// nats:// endpoints are Mailboxes on NATS JetStream (ferry/nats/mailbox.hpp):
// they open when the program links the ferry::nats library (CMake target
// ferry::nats; it registers itself), and are errc::unsupported otherwise.
// A nats receiver opens the mailbox or creates it with default options.
//
// Thread-safety: the factories may be called from any thread.
#pragma once

#include <memory>
#include <string_view>

#include "ferry/messaging/mailbox.hpp"
#include "ferry/os/error.hpp"
#include "ferry/transport/endpoint.hpp"

namespace ferry {

namespace detail {
/// How a backend outside the core library opens its endpoints.
struct EndpointBackend {
  result<std::unique_ptr<Sender>> (*open_sender)(const Endpoint&, const EndpointOptions&) = nullptr;
  result<std::unique_ptr<Receiver>> (*open_receiver)(const Endpoint&, const EndpointOptions&) = nullptr;
};
/// Called by the ferry::nats library when it is loaded (src/nats/endpoints.cpp).
void register_nats_backend(EndpointBackend backend) noexcept;
}  // namespace detail

/// Errors: those of Endpoint::parse, Mailbox::open, and the transport's.
result<std::unique_ptr<Sender>> open_sender(const Endpoint& endpoint, const EndpointOptions& options = {});
result<std::unique_ptr<Sender>> open_sender(std::string_view endpoint, const EndpointOptions& options = {});

/// `mailbox`: the options of a shm:// mailbox this call creates.
result<std::unique_ptr<Receiver>> open_receiver(const Endpoint& endpoint, const EndpointOptions& options = {},
                                                const MailboxOptions& mailbox = {});
result<std::unique_ptr<Receiver>> open_receiver(std::string_view endpoint, const EndpointOptions& options = {},
                                                const MailboxOptions& mailbox = {});

}  // namespace ferry
