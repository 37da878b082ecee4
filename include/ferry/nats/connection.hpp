// nats:// addresses and connections: how ferry reaches a NATS server.
//
//   nats://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]/NAME[?OPTION=VALUE&...]
//
//   auto address = ferry::nats::Address::parse("nats://alice:secret@10.0.0.1:4222,10.0.0.2:4222/orders");
//   auto connection = ferry::nats::Connection::connect(*address);
//
// Several servers are a failover list: the client connects to one of them and
// moves to another when it fails (nats.c reconnects; a call made meanwhile
// waits for it within its own deadline). NAME is the mailbox's name
// (letters, digits, '-' and '_').
//
// Options (each at most once):
//   creds=FILE            JWT + NKey credentials file (nats.c SetUserCredentialsFromFiles)
//   nkey=PUBLIC&seed=FILE an NKey user: its public key and the file holding its seed
//   tls=1                 require TLS; tls_ca=FILE, tls_cert=FILE, tls_key=FILE are
//                         passed through to nats.c (any of them implies tls=1)
//   as=USER               the user this client sends as (see Sender identity in
//                         mailbox.hpp): defaults to USER of the address; needed
//                         with creds or nkey, where the address names no user
//   replicas=N            copies of a stream a create makes (1..5; 3 in production)
//   timeout_ms=N          how long one request to the server may take (default 5000)
//
// A Connection is shared: copies (and the mailboxes opened on it) use one
// TCP connection and its nats.c threads. It is safe to use from several
// threads. It must not cross fork(): a child connects anew.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/os/error.hpp"

namespace ferry::nats {

/// A parsed nats:// address.
struct Address {
  std::vector<std::string> servers;  ///< "host:port", in the order given
  std::string user;
  std::string password;
  std::string name;  ///< the object (mailbox) name; may be empty for a bare server address
  std::string credentials_file;
  std::string nkey;
  std::string seed_file;
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string send_as;  ///< as=
  int replicas = 1;
  std::chrono::milliseconds timeout{5000};

  /// Errors: invalid_argument naming the text and what is wrong with it.
  static result<Address> parse(std::string_view text);
  /// The canonical form, without the password ("alice:***@…" when there is one).
  [[nodiscard]] std::string to_string() const;
  /// The user messages are sent as: send_as, else user, else "anonymous".
  [[nodiscard]] std::string identity() const;
  /// The same servers and credentials with another object name.
  [[nodiscard]] Address with_name(std::string_view other) const;
};

namespace detail {
struct ConnectionState;
}

/// One connection to a NATS server (or cluster) with JetStream.
class Connection {
 public:
  /// Connects to one of address.servers. Errors: invalid_argument (options
  /// nats.c refuses, unreadable credentials), permission_denied
  /// (authentication failed), peer_gone (no server answered), timed_out.
  static result<Connection> connect(const Address& address);

  [[nodiscard]] const Address& address() const noexcept;
  /// The server this connection is on now ("nats://127.0.0.1:4222").
  [[nodiscard]] std::string connected_url() const;

  /// Internal: the nats.c handles (src/nats).
  [[nodiscard]] detail::ConnectionState& state() const noexcept { return *state_; }

 private:
  explicit Connection(std::shared_ptr<detail::ConnectionState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::ConnectionState> state_;
};

}  // namespace ferry::nats
